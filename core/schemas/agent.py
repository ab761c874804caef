"""Agent: persona + skills + knowledge + memory + limits + approvers + webhook."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, SecretStr, StringConstraints, field_validator, model_validator

from core.db.ids import AGENT_ID_PREFIX
from core.schemas.approval import ApprovalPolicy
from core.schemas.common import (
    SLACK_CHANNEL,
    SLACK_PRINCIPAL,
    ShortText,
    Slug,
    StrictModel,
    refuse_id_shaped,
)
from core.schemas.skill import EnvName
from core.webhooks.url_guard import MAX_URL_LENGTH

ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")]


class AgentLimits(StrictModel):
    """Per-agent quotas per UTC day; `None` means unlimited."""

    daily_output_limit: int | None = Field(default=None, ge=0, le=1_000_000)
    daily_token_budget: int | None = Field(default=None, ge=0, le=10_000_000_000)


class WebhookSpec(StrictModel):
    """Where output events go. The secret is write-only: it is never returned or exported."""

    url: Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_URL_LENGTH)]
    secret: SecretStr | None = Field(
        default=None,
        description="Standard Webhooks secret (`whsec_...`). Left out on update: keep the "
        "stored one. Left out on create: one is generated and returned once.",
    )
    secret_env: EnvName | None = Field(
        default=None, description="Read the secret from this environment variable instead."
    )

    @field_validator("url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/?#]+", value):
            raise ValueError("must be an absolute https:// URL")
        return value

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("whsec_"):
            raise ValueError("must be a Standard Webhooks secret starting with 'whsec_'")
        return value

    @model_validator(mode="after")
    def _one_secret_source(self) -> WebhookSpec:
        if self.secret is not None and self.secret_env is not None:
            raise ValueError("give either `secret` or `secret_env`, not both")
        return self


def _check_principals(values: list[str]) -> list[str]:
    bad = [v for v in values if not SLACK_PRINCIPAL.match(v)]
    if bad:
        raise ValueError(
            f"{', '.join(bad)}: approvers are Slack user ids (U…/W…) or user-group ids (S…)"
        )
    return list(dict.fromkeys(values))


def _check_channel(value: str | None) -> str | None:
    if value is not None and not SLACK_CHANNEL.match(value):
        raise ValueError("must be a Slack channel id such as C0123ABCD")
    return value


class AgentSpec(StrictModel):
    """An agent as admins write it. `persona` and `skills` refer to entities by name."""

    name: Slug
    description: ShortText = ""
    persona: Slug = Field(description="Name of the persona this agent speaks as.")
    model: ModelName | None = Field(default=None, description="Claude model; default COSMO_MODEL.")
    skills: list[Slug] = Field(default_factory=list, description="Names of enabled skills.")
    knowledge_bases: list[Slug] = Field(default_factory=list)
    memory_enabled: bool = True
    limits: AgentLimits = Field(default_factory=AgentLimits)
    approvers: list[str] = Field(
        default_factory=list, description="Slack user or user-group ids; empty: anyone."
    )
    allow_self_approval: bool = False
    require_distinct_editor_approver: bool = Field(
        default=False,
        description="A reviewer who edited an output may not also approve it.",
    )
    accept_asserted_decisions: bool = Field(
        default=True,
        description="Accept decisions whose decider is only asserted (a webhook callback's "
        "userId, a REST user_id); when false only Slack clicks and keys bound to a Slack "
        "user may decide.",
    )
    approval_channel: str | None = Field(default=None, description="Slack channel id.")
    approval: ApprovalPolicy | None = Field(
        default=None,
        description="Defaults of the approval lifecycle for this agent's action skills "
        "(a skill's own `approval` overrides them field by field).",
    )
    webhook: WebhookSpec | None = None
    is_active: bool = True

    @field_validator("name")
    @classmethod
    def _not_an_id(cls, value: str) -> str:
        return refuse_id_shaped(value, AGENT_ID_PREFIX, "an agent")

    @field_validator("skills", "knowledge_bases")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, value: list[str]) -> list[str]:
        return _check_principals(value)

    @field_validator("approval_channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        return _check_channel(value)


class AgentPatch(StrictModel):
    """Partial update; fields left out keep their value. `null` clears optional fields."""

    name: Slug | None = None
    description: ShortText | None = None
    persona: Slug | None = None
    model: ModelName | None = None
    skills: list[Slug] | None = None
    knowledge_bases: list[Slug] | None = None
    memory_enabled: bool | None = None
    limits: AgentLimits | None = None
    approvers: list[str] | None = None
    allow_self_approval: bool | None = None
    require_distinct_editor_approver: bool | None = None
    accept_asserted_decisions: bool | None = None
    approval_channel: str | None = None
    approval: ApprovalPolicy | None = None
    webhook: WebhookSpec | None = None
    is_active: bool | None = None

    @field_validator("name")
    @classmethod
    def _not_an_id(cls, value: str | None) -> str | None:
        return None if value is None else refuse_id_shaped(value, AGENT_ID_PREFIX, "an agent")

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_principals(value)

    @field_validator("approval_channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        return _check_channel(value)


class SkillList(StrictModel):
    """Body of `PUT /agents/{id}/skills`: the complete list of enabled skills."""

    skills: list[Slug]
