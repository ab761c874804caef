"""What the operator lets skills reach, checked when a skill is saved and again when it runs.

A skill spec can be well-formed and still not runnable *here*: a built-in function this
build does not have, a stdio MCP server the operator did not configure, a secret the
operator does not let skills read. `SkillPolicy` answers that question for the REST API and
config documents (a 422 naming the field and the rule) and for stored rows (the skill is
marked unusable with the reason; agents answer without it).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from core.errors import FieldError, ValidationFailed
from core.schemas.skill import BuiltinExecutor, HttpExecutor, McpExecutor, SkillSpec
from core.schemas.validation import field_errors
from core.secret_names import SecretNameRule
from core.skills.mcp_servers import McpServers, describe_servers

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class UnusableSkill:
    """A stored skill that cannot run here, and why (safe to show any admin)."""

    name: str
    reason: str


@dataclass(frozen=True)
class SkillPolicy:
    """The operator's limits on skills: built-ins that exist, MCP servers, secret names."""

    builtins: Collection[str] = ()
    mcp_servers: McpServers = field(default_factory=dict)
    secrets: SecretNameRule = field(default_factory=SecretNameRule)

    def problems(self, spec: SkillSpec) -> list[FieldError]:
        """Every rule `spec` breaks, each at its field (paths relative to the skill)."""
        config = spec.executor
        if isinstance(config, BuiltinExecutor):
            function = config.function or spec.name
            if function not in self.builtins:
                where: Loc = ("executor", "function") if config.function else ("name",)
                available = ", ".join(sorted(self.builtins)) or "(none)"
                return [
                    FieldError(
                        where,
                        f"there is no built-in function {function!r}; available: {available}",
                    )
                ]
            return []
        if isinstance(config, HttpExecutor):
            return [
                FieldError(("executor", "secret_headers", header), reason)
                for header, variable in sorted(config.secret_headers.items())
                if (reason := self.secrets.refusal(variable)) is not None
            ]
        server = config.server if isinstance(config, McpExecutor) else None
        if server is not None and server not in self.mcp_servers:
            return [
                FieldError(
                    ("executor", "server"),
                    f"no MCP server named {server!r} is configured; configured: "
                    f"{describe_servers(self.mcp_servers)}",
                )
            ]
        return []

    def check(self, spec: SkillSpec, prefix: Loc = ("body",)) -> None:
        """Raise `ValidationFailed` (a 422) when `spec` cannot run here."""
        problems = self.problems(spec)
        if problems:
            raise ValidationFailed([FieldError(prefix + p.loc, p.msg) for p in problems])

    def stored(self, name: str, fields: dict[str, Any]) -> SkillSpec | UnusableSkill:
        """A stored skill as a spec, or why it cannot run (rows may predate today's rules)."""
        try:
            spec = SkillSpec.model_validate(fields)
        except ValidationError as exc:
            return UnusableSkill(name, _reason(field_errors(exc)))
        problems = self.problems(spec)
        return UnusableSkill(name, _reason(problems)) if problems else spec


_EXECUTOR_TAGS = frozenset({"builtin", "http", "mcp"})


def _reason(errors: list[FieldError]) -> str:
    """`executor.command: ...`: the union's tag (`executor.mcp.command`) says nothing here."""
    parts = []
    for e in errors:
        loc = [p for i, p in enumerate(e.loc) if not (i == 1 and p in _EXECUTOR_TAGS)]
        parts.append(f"{'.'.join(map(str, loc)) or '(root)'}: {e.msg}")
    return "; ".join(parts)
