"""The skill form of `/agent skill new|edit NAME`: rendered, read back, errors on the field.
Pure functions, no I/O.

One modal holds every executor's inputs, labelled by executor (Slack shows inputs
statically; a select that re-rendered the form would lose what was typed on a slow
connection). Only the chosen executor's inputs are read. MCP skills name a server the
operator configured (`COSMO_MCP_SERVERS`) and a tool on it: never a command line.

The input schema is either JSON (validated on save like a REST body: valid JSON Schema,
an object, no unknown keywords) or, for flat schemas, built from up to `FIELD_ROWS` rows
of name / type / choices / description plus "required" ticks. One or the other: a form
with both is refused on the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bot.slack.admin_blocks import View, context, plain
from bot.slack.admin_forms import (
    TEXT_INPUT_MAX,
    State,
    friendly,
    input_block,
    modal,
    multi_values,
    option,
    selected,
    text_input,
    text_value,
)
from bot.slack.text import escape, truncate
from core.errors import FieldError
from core.schemas.common import SLUG_MAX_LENGTH
from core.schemas.views import SkillView

NEW_MODAL = "skill_new"
EDIT_MODAL = "skill_edit"
FIELD_ROWS = 3
EXECUTORS = ("builtin", "http", "mcp")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ROW_TYPES = {
    "string": "Text",
    "number": "Number",
    "integer": "Whole number",
    "boolean": "Yes / no",
    "enum": "One of a list",
}
_ROW_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_HEADER_LINE = re.compile(r"^\s*([^:\s]+)\s*:\s*(.*?)\s*$")
_TAGS = frozenset(EXECUTORS)

# Skill field -> the block that edits it (`executor.x` before `executor`).
SKILL_FIELDS = {
    "name": "name",
    "description": "description",
    "kind": "kind",
    "is_automatable": "options",
    "executor": "executor",
    "executor.function": "builtin_function",
    "executor.method": "http_method",
    "executor.url": "http_url",
    "executor.headers": "http_headers",
    "executor.secret_headers": "http_secret_headers",
    "executor.body_template": "http_body",
    "executor.server": "mcp_server",
    "executor.tool": "mcp_tool",
    "executor.transport": "mcp_server",
    "input_schema": "input_schema",
}


# -- the modal ----------------------------------------------------------------------------


def _static(
    options: Sequence[dict[str, Any]], current: str | None, placeholder: str
) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "static_select",
        "placeholder": plain(placeholder),
        "options": list(options),
    }
    chosen = next((o for o in options if o["value"] == current), None)
    if chosen is not None:
        element["initial_option"] = chosen
    return element


def _lines(mapping: Mapping[str, str]) -> str | None:
    return "\n".join(f"{k}: {v}" for k, v in sorted(mapping.items())) or None


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    text = json.dumps(value, ensure_ascii=False, indent=2)
    return text if len(text) <= TEXT_INPUT_MAX else None


def skill_form(
    *,
    skill: SkillView | None,
    builtins: Sequence[str],
    mcp_servers: Sequence[str],
    metadata: str,
) -> View:
    """`/agent skill new` (skill None) or `/agent skill edit NAME`."""
    executor = skill.executor.model_dump(mode="json") if skill and skill.executor else {}
    kind = executor.get("type", "builtin")
    blocks: list[dict[str, Any]] = []
    if skill is None:
        blocks.append(
            input_block(
                "name",
                "Name",
                text_input(placeholder="lookup_customer", max_length=SLUG_MAX_LENGTH),
                hint="Lower-case letters, digits, - and _; agents and /agent skills use it.",
            )
        )
    else:
        blocks.append(context(f"Skill `{escape(skill.name)}` (its name stays)."))
    description = skill.description if skill else None
    if description is None or len(description) <= TEXT_INPUT_MAX:
        blocks.append(
            input_block(
                "description",
                "What it does (Claude reads this)",
                text_input(description, multiline=True, max_length=TEXT_INPUT_MAX),
            )
        )
    kinds = [
        option("read", "Read: runs during the chat"),
        option("action", "Action: becomes an output someone approves"),
    ]
    blocks.append(
        input_block("kind", "Kind", _static(kinds, skill.kind if skill else "read", "Kind"))
    )
    automatable = option("is_automatable", "Automatable: approved outputs run by themselves")
    checkboxes: dict[str, Any] = {"type": "checkboxes", "options": [automatable]}
    if skill and skill.is_automatable:
        checkboxes["initial_options"] = [automatable]
    blocks.append(input_block("options", "Options", checkboxes, optional=True))
    executors = [
        option("builtin", "Built-in function"),
        option("http", "HTTP request"),
        option("mcp", "MCP tool (a configured server)"),
    ]
    blocks.append(
        input_block(
            "executor",
            "Runs as",
            _static(executors, kind, "Runs as"),
            hint="Only the inputs of this choice are read.",
        )
    )
    functions = [option(n, n) for n in builtins][:100]
    function = executor.get("function") or (skill.name if skill and kind == "builtin" else None)
    if functions:
        blocks.append(
            input_block(
                "builtin_function",
                "Built-in: function",
                _static(functions, function, "Choose a function"),
                optional=True,
            )
        )
    methods = [option(m, m) for m in METHODS]
    blocks += [
        input_block(
            "http_method",
            "HTTP: method",
            _static(methods, executor.get("method", "POST"), "POST"),
            optional=True,
        ),
        input_block(
            "http_url",
            "HTTP: URL",
            text_input(executor.get("url"), placeholder="https://crm.example.com/{{id}}"),
            optional=True,
            hint="{{argument}} placeholders are filled, URL-encoded.",
        ),
        input_block(
            "http_headers",
            "HTTP: headers",
            text_input(_lines(executor.get("headers") or {}), multiline=True),
            optional=True,
            hint="One per line, Name: value. Never credentials: use secret headers.",
        ),
        input_block(
            "http_secret_headers",
            "HTTP: secret headers",
            text_input(_lines(executor.get("secret_headers") or {}), multiline=True),
            optional=True,
            hint="One per line, Header: ENV_VARIABLE. The value is read from that "
            "environment variable at call time (the operator decides which are allowed).",
        ),
        input_block(
            "http_body",
            "HTTP: body template (JSON)",
            text_input(
                _json_text(executor.get("body_template")),
                multiline=True,
                max_length=TEXT_INPUT_MAX,
            ),
            optional=True,
            hint='String values may hold {{argument}}, e.g. {"email": "{{email}}"}.',
        ),
    ]
    if mcp_servers:
        servers = [option(s, s) for s in mcp_servers][:100]
        blocks.append(
            input_block(
                "mcp_server",
                "MCP: server",
                _static(servers, executor.get("server"), "Choose a server"),
                optional=True,
            )
        )
    else:
        blocks.append(context("MCP: no server is configured on this server (COSMO_MCP_SERVERS)."))
    blocks.append(
        input_block(
            "mcp_tool",
            "MCP: tool",
            text_input(executor.get("tool"), max_length=128),
            optional=True,
            hint="Empty: the skill's name.",
        )
    )
    schema_text = _json_text(skill.input_schema) if skill else None
    blocks.append(
        input_block(
            "input_schema",
            "Arguments: JSON Schema",
            text_input(schema_text, multiline=True, max_length=TEXT_INPUT_MAX),
            optional=True,
            hint='An object schema: {"type": "object", "properties": {...}}. Or leave it '
            "empty and describe up to 3 simple fields below.",
        )
    )
    blocks += _row_inputs()
    title = "New skill" if skill is None else f"Skill: {skill.name}"
    callback = NEW_MODAL if skill is None else EDIT_MODAL
    return modal(callback, title, blocks, metadata, submit="Create" if skill is None else "Save")


def _row_inputs() -> list[dict[str, Any]]:
    types = [option(k, v) for k, v in ROW_TYPES.items()]
    blocks: list[dict[str, Any]] = []
    for i in range(1, FIELD_ROWS + 1):
        blocks += [
            input_block(
                f"field{i}_name", f"Field {i}: name", text_input(max_length=64), optional=True
            ),
            input_block(
                f"field{i}_type",
                f"Field {i}: type",
                _static(types, None, "Text"),
                optional=True,
            ),
            input_block(
                f"field{i}_choices",
                f"Field {i}: choices",
                text_input(placeholder="low, normal, high", max_length=1_000),
                optional=True,
                hint="For 'One of a list': the choices, comma-separated.",
            ),
            input_block(
                f"field{i}_description",
                f"Field {i}: description",
                text_input(max_length=500),
                optional=True,
            ),
        ]
    required = [option(str(i), f"Field {i} is required") for i in range(1, FIELD_ROWS + 1)]
    blocks.append(
        input_block(
            "fields_required",
            "Required fields",
            {"type": "checkboxes", "options": required},
            optional=True,
        )
    )
    return blocks


# -- reading it back ----------------------------------------------------------------------


class FormInvalid(Exception):
    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__(", ".join(errors))
        self.errors = dict(errors)


def _pairs(values: State, block: str, what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for number, line in enumerate((text_value(values, block) or "").splitlines(), 1):
        if not line.strip():
            continue
        found = _HEADER_LINE.match(line)
        if not found or not found[2]:
            raise FormInvalid({block: f"Line {number}: write {what}."})
        pairs[found[1]] = found[2]
    return pairs


def _json(values: State, block: str) -> Any:
    text = text_value(values, block)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise FormInvalid({block: truncate(f"Not valid JSON: {exc}", 150)}) from None


def rows_schema(values: State) -> dict[str, Any] | None:
    """The schema the field rows describe, or None when every row is empty."""
    required_rows = set(multi_values(values, "fields_required"))
    properties: dict[str, Any] = {}
    required: list[str] = []
    errors: dict[str, str] = {}
    for i in range(1, FIELD_ROWS + 1):
        name = (text_value(values, f"field{i}_name") or "").strip()
        kind = selected(values, f"field{i}_type")
        choices = [c.strip() for c in (text_value(values, f"field{i}_choices") or "").split(",")]
        choices = [c for c in choices if c]
        description = (text_value(values, f"field{i}_description") or "").strip()
        if not name:
            if kind or choices or description:
                errors[f"field{i}_name"] = "Name this field, or clear its row."
            continue
        if not _ROW_NAME.match(name):
            errors[f"field{i}_name"] = "Letters, digits and _, starting with a letter."
            continue
        if name in properties:
            errors[f"field{i}_name"] = f"Field {name} is already described above."
            continue
        kind = kind or "string"
        prop: dict[str, Any] = {"type": "string" if kind == "enum" else kind}
        if kind == "enum":
            if not choices:
                errors[f"field{i}_choices"] = "List the choices, comma-separated."
                continue
            prop["enum"] = list(dict.fromkeys(choices))
        elif choices:
            errors[f"field{i}_choices"] = "Choices are for the type 'One of a list'."
            continue
        if description:
            prop["description"] = description
        properties[name] = prop
        if str(i) in required_rows:
            required.append(name)
    if errors:
        raise FormInvalid(errors)
    if not properties:
        if required_rows:
            raise FormInvalid({"fields_required": "Only fields with a name can be required."})
        return None
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _input_schema(values: State) -> dict[str, Any] | None:
    typed = _json(values, "input_schema")
    both = {"input_schema": "Give the arguments as JSON or as fields below, not both."}
    try:
        rows = rows_schema(values)
    except FormInvalid as exc:
        raise FormInvalid((both if typed is not None else {}) | exc.errors) from None
    if typed is not None and rows is not None:
        raise FormInvalid(both)
    return typed if typed is not None else rows


def _executor(values: State, stored: Mapping[str, Any]) -> dict[str, Any]:
    kind = selected(values, "executor") or "builtin"
    # Settings the form does not show (timeouts, response size) stay as stored.
    base = dict(stored) if stored.get("type") == kind else {}
    if kind == "builtin":
        return {"type": "builtin", "function": selected(values, "builtin_function")}
    if kind == "http":
        executor = base | {
            "type": "http",
            "method": selected(values, "http_method") or "POST",
            "url": (text_value(values, "http_url") or "").strip(),
            "headers": _pairs(values, "http_headers", "Name: value"),
            "secret_headers": _pairs(values, "http_secret_headers", "Header: ENV_VARIABLE"),
            "body_template": _json(values, "http_body"),
        }
        if executor["body_template"] is None:
            executor.pop("body_template")
        return executor
    executor = base | {
        "type": "mcp",
        "transport": "stdio",
        "server": selected(values, "mcp_server"),
        "tool": (text_value(values, "mcp_tool") or "").strip() or None,
    }
    executor.pop("url", None)
    return executor


def read_skill_form(
    values: State, *, creating: bool, stored: SkillView | None = None
) -> dict[str, Any]:
    """Plain fields for `SkillSpec` (creating) or `SkillPatch`. Raises `FormInvalid`.

    On edit, the input schema is sent only when it changed, as REST judges a schema's
    keywords only when it is replaced."""
    errors: dict[str, str] = {}
    fields: dict[str, Any] = {}
    if creating:
        fields["name"] = (text_value(values, "name") or "").strip()
    if "description" in values:
        fields["description"] = (text_value(values, "description") or "").strip()
    fields["kind"] = selected(values, "kind") or "read"
    fields["is_automatable"] = "is_automatable" in multi_values(values, "options")
    stored_executor = stored.executor.model_dump(mode="json") if stored and stored.executor else {}
    try:
        fields["executor"] = _executor(values, stored_executor)
    except FormInvalid as exc:
        errors |= exc.errors
    try:
        schema = _input_schema(values)
    except FormInvalid as exc:
        errors |= exc.errors
    else:
        if creating:
            if schema is not None:
                fields["input_schema"] = schema
        elif stored is not None and schema is not None and schema != stored.input_schema:
            fields["input_schema"] = schema
        elif stored is not None and schema is None:
            fields["input_schema"] = {"type": "object", "properties": {}}
            if stored.input_schema == fields["input_schema"]:
                fields.pop("input_schema")
    if errors:
        raise FormInvalid(errors)
    return fields


def skill_errors(errors: Iterable[FieldError], *, fallback: str) -> dict[str, str]:
    """`{block_id: message}`: pydantic's union tags (`executor.http.url`) and the REST
    prefix (`body`) are dropped, then the most specific field with a block wins."""
    out: dict[str, str] = {}
    for error in errors:
        loc = [p for p in error.loc if p != "body"]
        if len(loc) > 1 and loc[0] == "executor" and loc[1] in _TAGS:
            loc = [loc[0], *loc[2:]]
        key = f"{loc[0]}.{loc[1]}" if len(loc) > 1 else (str(loc[0]) if loc else "")
        block = SKILL_FIELDS.get(key) or SKILL_FIELDS.get(str(loc[0]) if loc else "", fallback)
        if block == "name" and fallback != "name":  # the edit form does not show the name
            block = fallback
        where = ".".join(str(p) for p in loc[1:]) if loc[:1] == ["input_schema"] else ""
        message = friendly(error.msg)
        out.setdefault(block, truncate(f"{where}: {message}" if where else message, 300))
    return out
