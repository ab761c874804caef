"""Skill: a tool the model can call, its JSON Schema, and how it is executed."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import Field, StringConstraints, field_validator, model_validator

from core.schemas.common import ShortText, Slug, StrictModel, check_storable

ENV_NAME = r"^[A-Z_][A-Z0-9_]{0,127}$"
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME)]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,100}$")]

# Headers that carry credentials: their values must come from the environment
# (`secret_headers`), so a config file or an export never holds a secret.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-auth-token"}
)


class SkillKind(StrEnum):
    READ = "read"  # runs at once during the chat
    ACTION = "action"  # becomes an output that needs approval


class BuiltinExecutor(StrictModel):
    """A Python callable registered in core under `function` (defaults to the skill name)."""

    type: Literal["builtin"] = "builtin"
    function: Slug | None = None


class HttpExecutor(StrictModel):
    """Calls an HTTP endpoint (a CRM, a ticketing system) with the validated arguments."""

    type: Literal["http"] = "http"
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: Annotated[str, StringConstraints(max_length=2_000)] = Field(
        description="URL template; `{{arg}}` placeholders are filled (URL-encoded)."
    )
    headers: dict[HeaderName, Annotated[str, StringConstraints(max_length=1_000)]] = Field(
        default_factory=dict, description="Plain, non-secret headers."
    )
    secret_headers: dict[HeaderName, EnvName] = Field(
        default_factory=dict,
        description="Header name -> environment variable holding its value "
        "(`Authorization: CRM_AUTH_HEADER`). Values are read at call time, never stored.",
    )
    body_template: Any = Field(
        default=None, description="JSON body; string leaves may contain `{{arg}}` placeholders."
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    max_response_bytes: int = Field(default=262_144, gt=0, le=10_485_760)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an absolute http(s) URL")
        return value

    @field_validator("headers")
    @classmethod
    def _no_credentials_in_plain_headers(cls, value: dict[str, str]) -> dict[str, str]:
        leaked = sorted(h for h in value if h.lower() in CREDENTIAL_HEADERS)
        if leaked:
            raise ValueError(
                f"{', '.join(leaked)} carries credentials: declare it under secret_headers "
                "with the name of an environment variable instead"
            )
        return value


class McpExecutor(StrictModel):
    """A tool on an MCP server, reached over stdio (a command) or streamable HTTP (a URL)."""

    type: Literal["mcp"] = "mcp"
    transport: Literal["stdio", "http"] = "stdio"
    command: list[Annotated[str, StringConstraints(max_length=1_000)]] | None = None
    url: Annotated[str, StringConstraints(max_length=2_000)] | None = None
    tool: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="Tool name on the server; defaults to the skill name."
    )
    env: dict[EnvName, EnvName] = Field(
        default_factory=dict,
        description="Environment passed to a stdio server: its name -> our variable's name.",
    )
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)

    @model_validator(mode="after")
    def _transport_target(self) -> McpExecutor:
        if self.transport == "stdio" and not self.command:
            raise ValueError("a stdio MCP executor needs `command`")
        if self.transport == "http" and not re.match(r"^https?://", self.url or ""):
            raise ValueError("an http MCP executor needs an absolute http(s) `url`")
        return self


Executor = Annotated[BuiltinExecutor | HttpExecutor | McpExecutor, Field(discriminator="type")]


def check_input_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema must be valid JSON Schema and describe an object, as Claude's tools require."""
    check_storable(schema)  # bounds the depth the recursive schema check walks
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ValueError(f"not a valid JSON Schema at {where}: {exc.message}") from None
    if schema.get("type") != "object":
        raise ValueError('must describe an object: {"type": "object", "properties": {...}}')
    return schema


class SkillSpec(StrictModel):
    """A skill as admins write it."""

    name: Slug
    description: Annotated[str, StringConstraints(min_length=1, max_length=4_000)]
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema of the arguments (an object schema).",
    )
    kind: SkillKind = SkillKind.READ
    is_automatable: bool = Field(
        default=False,
        description="For action skills: approved outputs run by themselves; otherwise they "
        "are marked for manual follow-up.",
    )
    executor: Executor = Field(default_factory=BuiltinExecutor)

    @field_validator("input_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_input_schema(value)


class SkillPatch(StrictModel):
    description: Annotated[str, StringConstraints(min_length=1, max_length=4_000)] | None = None
    input_schema: dict[str, Any] | None = None
    kind: SkillKind | None = None
    is_automatable: bool | None = None
    executor: Executor | None = None


__all__ = [
    "BuiltinExecutor",
    "Executor",
    "HttpExecutor",
    "McpExecutor",
    "ShortText",
    "SkillKind",
    "SkillPatch",
    "SkillSpec",
]
