"""Persona: who the agent is, and the instructions template it is prompted with."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, StringConstraints, ValidationInfo, field_validator

from core.schemas.common import LongText, ShortText, Slug, StrictModel

VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
VariableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]

# `user_name` and `channel` render as fixed words, never the names themselves: the persona
# block holds admin text only, and each user message names its speaker in a fenced block
# (core/personas/prompt.py).
BUILTIN_VARIABLES: dict[str, str] = {
    "user_name": "'the current speaker' (the name itself comes, fenced, with each message)",
    "channel": "'the current channel' (the name itself comes, fenced, with each message)",
    "date": "today's date (UTC, ISO 8601)",
    "agent_name": "the agent's name",
}


def template_variables(template: str) -> list[str]:
    """Variables a template uses, in order of first use."""
    seen: dict[str, None] = {}
    for match in VARIABLE.finditer(template):
        seen.setdefault(match.group(1), None)
    return list(seen)


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill `{{name}}` placeholders; unknown names were refused when the persona was saved."""
    return VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), template)


class PersonaVariable(StrictModel):
    default: Annotated[str, StringConstraints(max_length=2_000)] = ""
    description: ShortText | None = None


class PersonaSpec(StrictModel):
    """A persona as admins write it (REST body, YAML document)."""

    name: Slug
    role: ShortText = Field(description="One line: what the agent is, e.g. 'Sales assistant'.")
    tone: ShortText = Field(default="", description="How it speaks, e.g. 'warm and concise'.")
    # Declared before `instructions` so the template check below can see them.
    variables: dict[VariableName, PersonaVariable] = Field(default_factory=dict)
    instructions: LongText = Field(
        default="",
        description="Instructions template; `{{variable}}` placeholders are filled per turn.",
    )

    @field_validator("variables")
    @classmethod
    def _no_builtin_shadowing(
        cls, value: dict[str, PersonaVariable], info: ValidationInfo
    ) -> dict[str, PersonaVariable]:
        check_not_builtin(value)
        # role and tone are templates too; they are declared first, so checked here.
        for name in ("role", "tone"):
            if name in info.data:
                check_variables(info.data[name], value, field=name)
        return value

    @field_validator("instructions")
    @classmethod
    def _variables_are_declared(cls, value: str, info: ValidationInfo) -> str:
        if "variables" in info.data:  # else `variables` itself failed and is reported
            check_variables(value, info.data["variables"])
        return value


def check_not_builtin(variables: dict[str, PersonaVariable]) -> None:
    shadowed = sorted(set(variables) & set(BUILTIN_VARIABLES))
    if shadowed:
        raise ValueError(f"{', '.join(shadowed)} are built-in variables and cannot be redeclared")


def check_variables(
    template: str, variables: dict[str, PersonaVariable], *, field: str = "instructions"
) -> None:
    """Refuse a template that uses a variable nobody will fill."""
    unknown = [
        v for v in template_variables(template) if v not in variables and v not in BUILTIN_VARIABLES
    ]
    if unknown:
        builtins = ", ".join(sorted(BUILTIN_VARIABLES))
        names = ", ".join("{{" + v + "}}" for v in unknown)
        raise ValueError(
            f"{field} uses undeclared variable(s) {names}; declare each as a variable with "
            f"a default (`variables` in a config file or REST body, the Variables rows of "
            f"/agent persona in Slack), or use a built-in ({builtins})"
        )


class PersonaPatch(StrictModel):
    """Partial update; fields left out keep their value."""

    name: Slug | None = None
    role: ShortText | None = None
    tone: ShortText | None = None
    instructions: LongText | None = None
    variables: dict[VariableName, PersonaVariable] | None = None
