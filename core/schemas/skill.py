"""Skill: a tool the model can call, its JSON Schema, and how it is executed."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import Field, StringConstraints, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from core.errors import FieldError
from core.schemas.approval import ApprovalPolicy
from core.schemas.common import ShortText, Slug, StrictModel, check_storable
from core.schemas.secret_values import secret_looking

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
        for header in sorted(value):
            reason = secret_looking(value[header])
            if reason is not None:
                raise ValueError(
                    f"the value of {header} {reason}: plain headers are stored and exported; "
                    "put it in an environment variable and declare the header under "
                    "secret_headers"
                )
        return value


#: Why a stored or submitted `command`/`env` is refused, with the form that replaced it.
MCP_COMMAND_REFUSED = (
    "is no longer accepted: stdio MCP servers are configured by the operator in the "
    "COSMO_MCP_SERVERS file, and a skill names one: "
    '{"type": "mcp", "server": "NAME", "tool": "TOOL"}'
)


class McpExecutor(StrictModel):
    """A tool on an MCP server: a stdio server the operator configured (`server`, a name in
    `COSMO_MCP_SERVERS`), or a streamable HTTP server (`transport: http` and `url`)."""

    type: Literal["mcp"] = "mcp"
    transport: Literal["stdio", "http"] = "stdio"
    server: Slug | None = Field(
        default=None, description="stdio: the name of a server in the COSMO_MCP_SERVERS file."
    )
    url: Annotated[str, StringConstraints(max_length=2_000)] | None = None
    tool: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None, description="Tool name on the server; defaults to the skill name."
    )
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    # Refused, not unknown: their message names the form that replaced them.
    command: SkipJsonSchema[Any] = Field(default=None, exclude=True)
    env: SkipJsonSchema[Any] = Field(default=None, exclude=True)

    @field_validator("command", "env")
    @classmethod
    def _no_command_line(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(MCP_COMMAND_REFUSED)
        return None

    @model_validator(mode="after")
    def _transport_target(self) -> McpExecutor:
        if self.transport == "stdio" and not self.server:
            raise ValueError(
                "a stdio MCP executor needs `server`, the name of a server the operator "
                "configured in COSMO_MCP_SERVERS"
            )
        if self.transport == "http":
            if not re.match(r"^https?://", self.url or ""):
                raise ValueError("an http MCP executor needs an absolute http(s) `url`")
            if self.server is not None:
                raise ValueError("`server` names a stdio server; an http MCP executor has `url`")
        elif self.url is not None:
            raise ValueError("`url` is for `transport: http`; a stdio executor names `server`")
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


# Keywords an input schema may use: JSON Schema 2020-12's (those that validate, and its
# annotations), draft-07 spellings still common in tool schemas, and `x-` extensions.
SCHEMA_KEYWORDS = frozenset(jsonschema.Draft202012Validator.VALIDATORS) | {
    "$schema", "$id", "$anchor", "$dynamicAnchor", "$vocabulary", "$comment", "$defs",
    "title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly",
    "contentEncoding", "contentMediaType", "contentSchema",
    "definitions", "dependencies", "additionalItems", "$recursiveRef", "$recursiveAnchor",
}  # fmt: skip
# Keywords whose value is a schema, a list of schemas, or a map of name -> schema.
_SUBSCHEMA = {
    "items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "contains",
    "propertyNames", "not", "if", "then", "else", "additionalItems", "contentSchema",
}  # fmt: skip
_SUBSCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems", "items"}
_SUBSCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}


def unknown_schema_keywords(schema: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """(path, keyword) for each key of a (sub)schema that is no JSON Schema keyword.

    JSON Schema ignores unknown keywords, so a typo (`minLenght`) or a YAML flow mapping
    split at a comma (`{description: Name, email or domain}` makes an `email or domain`
    key) would silently constrain nothing. Refused on save only: stored skills and output
    snapshots that carry one keep loading."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if key not in SCHEMA_KEYWORDS and not str(key).startswith("x-"):
                found.append((path, str(key)))
                continue
            if key in _SUBSCHEMA_MAPS and isinstance(value, dict):
                stack.extend(((*path, key, name), sub) for name, sub in value.items())
            elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
                stack.extend(((*path, key, i), sub) for i, sub in enumerate(value))
            elif key in _SUBSCHEMA:
                stack.append(((*path, key), value))
    return sorted(found, key=lambda f: (tuple(map(str, f[0])), f[1]))


def schema_keyword_errors(spec: SkillSpec) -> list[FieldError]:
    """`unknown_schema_keywords` of a skill's input schema, at its path in the skill."""
    return [
        FieldError(
            ("input_schema", *path),
            f"{keyword!r} is not a JSON Schema keyword (a typo? or, in YAML, text with a "
            "comma inside {...} that needs quotes)",
        )
        for path, keyword in unknown_schema_keywords(spec.input_schema)
    ]


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
    idempotent: bool = Field(
        default=False,
        description="Running it twice with the same arguments has the effect of running it "
        "once (the target dedupes on the `Idempotency-Key` header, which http skills send as "
        "the output id). An execution whose worker died mid-call is then run again; "
        "otherwise it ends `execution_failed` with an unknown outcome for a person to check.",
    )
    executor: Executor = Field(default_factory=BuiltinExecutor)
    approval: ApprovalPolicy | None = Field(
        default=None,
        description="Action skills: the approval lifecycle, overriding the agent's "
        "`approval` defaults field by field.",
    )
    grantable: bool = Field(
        default=False,
        description="Action skills: reviewers may approve and allow later outputs of this "
        "skill in the same thread (a grant).",
    )

    @field_validator("input_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_input_schema(value)


class SkillPatch(StrictModel):
    description: Annotated[str, StringConstraints(min_length=1, max_length=4_000)] | None = None
    input_schema: dict[str, Any] | None = None
    kind: SkillKind | None = None
    is_automatable: bool | None = None
    idempotent: bool | None = None
    executor: Executor | None = None
    approval: ApprovalPolicy | None = None
    grantable: bool | None = None


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
