"""What core returns to adapters: read models of stored configuration."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.schemas.agent import AgentLimits
from core.schemas.approval import ApprovalPolicy
from core.schemas.persona import PersonaVariable
from core.schemas.skill import Executor, SkillKind


class View(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PersonaView(View):
    id: str
    tenant_id: str
    name: str
    role: str
    tone: str
    instructions: str
    variables: dict[str, PersonaVariable]
    created_at: datetime
    updated_at: datetime


class SkillView(View):
    id: str
    tenant_id: str
    name: str
    description: str
    input_schema: dict[str, Any]
    kind: SkillKind
    is_automatable: bool
    idempotent: bool = False
    approval: ApprovalPolicy | None = None
    grantable: bool = False
    executor: Executor | None = Field(
        description="None when the stored executor is no longer accepted (see `problem`)."
    )
    usable: bool = True
    problem: str | None = Field(
        default=None,
        description="Why this skill cannot run here (agents answer without it until an "
        "admin fixes it); None when it can.",
    )
    version: int = 1
    created_at: datetime
    updated_at: datetime


class UnusableSkillView(BaseModel):
    """A skill an agent has but cannot use here, and why."""

    name: str
    reason: str


class WebhookView(BaseModel):
    url: str
    secret_set: bool
    secret_env: str | None = None
    secret: str | None = None
    """Only present in the response that generated it: shown once, never again."""


class AgentView(View):
    id: str
    tenant_id: str
    name: str
    description: str
    persona: str
    persona_id: str
    model: str | None
    skills: list[str]
    knowledge_bases: list[str]
    memory_enabled: bool
    limits: AgentLimits
    approvers: list[str]
    allow_self_approval: bool
    require_distinct_editor_approver: bool = False
    accept_asserted_decisions: bool = True
    approval_channel: str | None
    approval: ApprovalPolicy | None = None
    webhook: WebhookView | None
    is_active: bool
    version: int
    created_at: datetime
    updated_at: datetime
    unusable_skills: list[UnusableSkillView] = Field(
        default_factory=list,
        description="Skills of this agent that cannot run here: it answers without them.",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Saved, but worth a look: e.g. a model name the pricing table does not "
        "know (a typo, or a model newer than this release; its turns cost $0 here).",
    )


class AgentVersionView(View):
    id: str
    agent_id: str
    version: int
    change: str
    created_by: str
    created_at: datetime
    snapshot: dict[str, Any]
