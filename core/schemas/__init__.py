"""pydantic models at every boundary: what admins, Slack and the API send us."""

from core.schemas.agent import AgentLimits, AgentPatch, AgentSpec, SkillList, WebhookSpec
from core.schemas.persona import BUILTIN_VARIABLES, PersonaPatch, PersonaSpec, PersonaVariable
from core.schemas.skill import (
    BuiltinExecutor,
    HttpExecutor,
    McpExecutor,
    SkillKind,
    SkillPatch,
    SkillSpec,
)

__all__ = [
    "BUILTIN_VARIABLES",
    "AgentLimits",
    "AgentPatch",
    "AgentSpec",
    "BuiltinExecutor",
    "HttpExecutor",
    "McpExecutor",
    "PersonaPatch",
    "PersonaSpec",
    "PersonaVariable",
    "SkillKind",
    "SkillList",
    "SkillPatch",
    "SkillSpec",
    "WebhookSpec",
]
