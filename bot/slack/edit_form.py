"""The Edit modal: an output's `input_schema` as Slack inputs, and their state back as
typed arguments.

Pure functions, no I/O. `edit_fields` decides how each top-level property is shown; the
modal builder and the parser both start from it, so what was shown is what is read back.
A field is shown as:

- `enum` of strings/numbers/booleans (at most 100 options) → `static_select`;
- `boolean` → `static_select` Yes / No (a checkbox could not say "not set");
- `integer` / `number` → `number_input` (decimals allowed for `number` only);
- `string` → `plain_text_input`, on ONE line only when the current value is short (at most
  80 characters, no newline) AND the schema says the text is structured (`format`,
  `pattern`, or `maxLength` of at most 80); any other text gets a multiline box;
- array of strings → multiline text, one item per line;
- anything else (objects, other arrays, unions, no type) → multiline JSON text.

Inputs come in one order on every store: required properties as `required` lists them, then
the others by name. Properties the form cannot hold (a value past Slack's 3,000-character
input limit, or past the 100-block ceiling of a modal) are listed as kept unchanged, and so
are arguments the schema does not name: the parser puts them back as they were.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bot.slack.text import truncate
from core.errors import FieldError

EDIT = "output_edit"
EDIT_MODAL = "output_edit_submit"
INPUT = "value"  # the action_id of every input: block ids tell the fields apart
FIELD_PREFIX = "arg:"
LABEL_CHARS = 2_000  # Slack: input label and hint
INPUT_CHARS = 3_000  # Slack: plain_text_input value
MAX_BLOCKS = 100  # Slack: blocks in a modal
SHORT_TEXT = 80
OPTION_TEXT = 75  # Slack: an option's text
OPTION_VALUE = 150  # Slack: an option's value
MAX_OPTIONS = 100
MAX_BLOCK_ID = 255
TRUE, FALSE = "true", "false"

Kind = Literal["select", "boolean", "integer", "number", "text", "line", "lines", "json"]
_REQUIRED = re.compile(r"^'(?P<name>.+)' is a required property$")


@dataclass(frozen=True)
class EditField:
    """One top-level property as the form shows it."""

    name: str
    kind: Kind
    schema: dict[str, Any]
    required: bool
    block_id: str
    value: Any = None
    present: bool = False
    """Whether the current arguments have the property (`value` may legitimately be None)."""


@dataclass(frozen=True)
class EditForm:
    fields: list[EditField]
    kept: list[str]
    """Argument names the form does not show: they stay as they are."""


def field_block_id(index: int, name: str) -> str:
    block = f"{FIELD_PREFIX}{name}"
    return block if len(block) <= MAX_BLOCK_ID else f"{FIELD_PREFIX}#{index}"


def edit_fields(schema: Mapping[str, Any] | None, arguments: Mapping[str, Any]) -> EditForm:
    """The form for these arguments under this schema (the output's snapshot)."""
    properties = (schema or {}).get("properties")
    if not isinstance(properties, Mapping) or not properties:
        # A schema with no named properties: the whole object as one JSON field.
        whole = EditField("", "json", {}, True, f"{FIELD_PREFIX}*", dict(arguments), present=True)
        return EditForm([whole] if _fits(whole) else [], [] if _fits(whole) else list(arguments))
    listed = (schema or {}).get("required")
    required = [n for n in listed if n in properties] if isinstance(listed, list) else []
    required = list(dict.fromkeys(required))
    # PostgreSQL's JSONB does not keep an object's key order (arrays it keeps), so the
    # order is ours: required fields as `required` lists them, then the rest by name.
    order = required + sorted(n for n in properties if n not in required)
    fields: list[EditField] = []
    kept = [name for name in arguments if name not in properties]
    # Header and notes take a few blocks; the rest are inputs.
    room = MAX_BLOCKS - 4
    for index, name in enumerate(order):
        prop = dict(properties[name]) if isinstance(properties[name], Mapping) else {}
        present = name in arguments
        value = arguments.get(name)
        candidate = EditField(
            name=str(name),
            kind=field_kind(prop, value),
            schema=prop,
            required=name in required,
            block_id=field_block_id(index, str(name)),
            value=value,
            present=present,
        )
        if len(fields) >= room or not _fits(candidate):
            if present:
                kept.append(str(name))
            continue
        fields.append(candidate)
    return EditForm(fields, kept)


def field_kind(prop: Mapping[str, Any], value: Any = None) -> Kind:
    """How a property is edited (see the module docstring for the rule)."""
    enum = prop.get("enum")
    if isinstance(enum, list) and 0 < len(enum) <= MAX_OPTIONS and all(_option_ok(v) for v in enum):
        return "select"
    kind = prop.get("type")
    if kind == "boolean":
        return "boolean"
    if kind in ("integer", "number"):
        return "integer" if kind == "integer" else "number"
    if kind == "string":
        if value is not None and not isinstance(value, str):
            return "json"
        return "line" if _single_line(prop, value) else "text"
    if kind == "array":
        items = prop.get("items")
        strings = isinstance(items, Mapping) and items.get("type") == "string"
        if strings and not (isinstance(items, Mapping) and "enum" in items) and _plain_items(value):
            return "lines"
    return "json"


def _single_line(prop: Mapping[str, Any], value: str | None) -> bool:
    if value is not None and ("\n" in value or len(value) > SHORT_TEXT):
        return False
    max_length = prop.get("maxLength")
    short = isinstance(max_length, int) and max_length <= SHORT_TEXT
    return bool(prop.get("format") or prop.get("pattern") or short)


def _plain_items(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, list) and all(
        isinstance(v, str) and v.strip() == v and v and "\n" not in v for v in value
    )


def _option_ok(value: Any) -> bool:
    if not isinstance(value, (str, int, float, bool)) or value is None:
        return False
    return len(_option_value(value)) <= OPTION_VALUE


def _option_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _initial_text(field: EditField) -> str | None:
    """What the input shows at first; None when it starts empty."""
    if not field.present or (field.value is None and field.kind != "json"):
        return None
    value = field.value
    if field.kind in ("text", "line"):
        return str(value)
    if field.kind == "lines":
        return "\n".join(value)
    if field.kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return _number_text(value)
    if field.kind == "json":
        return json.dumps(value, ensure_ascii=False, indent=2)
    return None


def _number_text(value: int | float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _fits(field: EditField) -> bool:
    initial = _initial_text(field)
    return initial is None or len(initial) <= INPUT_CHARS


# -- the modal ----------------------------------------------------------------------------


def edit_modal(
    *,
    skill_title: str,
    revision: int,
    form: EditForm,
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    """The Edit modal (`callback_id` `output_edit_submit`). `metadata` travels in
    `private_metadata` (tenant, output id, the revision the form was opened on)."""
    blocks: list[dict[str, Any]] = [
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": truncate(
                        f"Editing *{skill_title}* at revision {revision}. Saving makes "
                        f"revision {revision + 1}; approvers see what changed.",
                        LABEL_CHARS,
                    ),
                }
            ],
        }
    ]
    blocks += [_input(field) for field in form.fields]
    if form.kept:
        names = ", ".join(f"`{n}`" for n in form.kept)
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": truncate(
                            f"Kept as they are (too large to edit here, or not in the "
                            f"schema): {names}",
                            LABEL_CHARS,
                        ),
                    }
                ],
            }
        )
    return {
        "type": "modal",
        "callback_id": EDIT_MODAL,
        "private_metadata": json.dumps(dict(metadata), separators=(",", ":")),
        "title": {"type": "plain_text", "text": "Edit before approving"},
        "submit": {"type": "plain_text", "text": "Save edit"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks[:MAX_BLOCKS],
    }


def _input(field: EditField) -> dict[str, Any]:
    label = str(field.schema.get("title") or field.name or "Arguments (JSON)")
    block: dict[str, Any] = {
        "type": "input",
        "block_id": field.block_id,
        "optional": not field.required,
        "label": {"type": "plain_text", "text": truncate(label, LABEL_CHARS)},
        "element": _element(field),
    }
    hint = _hint(field)
    if hint:
        block["hint"] = {"type": "plain_text", "text": truncate(hint, LABEL_CHARS)}
    return block


def _hint(field: EditField) -> str:
    parts = [str(field.schema.get("description") or "").strip()]
    if field.kind == "lines":
        parts.append("One item per line.")
    elif field.kind == "json":
        parts.append("JSON.")
    return " ".join(p for p in parts if p)


def _element(field: EditField) -> dict[str, Any]:
    initial = _initial_text(field)
    if field.kind in ("select", "boolean"):
        return _select(field)
    if field.kind in ("integer", "number"):
        element: dict[str, Any] = {
            "type": "number_input",
            "action_id": INPUT,
            "is_decimal_allowed": field.kind == "number",
        }
        for key, slack_key in (("minimum", "min_value"), ("maximum", "max_value")):
            bound = field.schema.get(key)
            if isinstance(bound, (int, float)) and not isinstance(bound, bool):
                element[slack_key] = _number_text(bound)
        if initial is not None:
            element["initial_value"] = initial
        return element
    element = {
        "type": "plain_text_input",
        "action_id": INPUT,
        "multiline": field.kind != "line",
    }
    if field.kind in ("text", "line"):
        max_length = field.schema.get("maxLength")
        if isinstance(max_length, int) and 0 < max_length <= INPUT_CHARS:
            element["max_length"] = max_length
        min_length = field.schema.get("minLength")
        if isinstance(min_length, int) and 0 < min_length <= INPUT_CHARS:
            element["min_length"] = min_length
    if initial is not None:
        element["initial_value"] = initial
    return element


def _options(field: EditField) -> list[tuple[str, str]]:
    """(text, value) per option; a value is the JSON of the choice, so types survive."""
    if field.kind == "boolean":
        return [("Yes", TRUE), ("No", FALSE)]
    return [
        (
            truncate(str(v) if not isinstance(v, bool) else ("Yes" if v else "No"), OPTION_TEXT),
            _option_value(v),
        )
        for v in field.schema["enum"]
    ]


def _select(field: EditField) -> dict[str, Any]:
    options = [
        {"text": {"type": "plain_text", "text": text or " "}, "value": value}
        for text, value in _options(field)
    ]
    element: dict[str, Any] = {"type": "static_select", "action_id": INPUT, "options": options}
    if field.present:
        current = _option_value(field.value)
        chosen = next((o for o in options if o["value"] == current), None)
        if chosen is not None:
            element["initial_option"] = chosen
    return element


# -- reading a submission back ------------------------------------------------------------


def read_submission(
    form: EditForm, arguments: Mapping[str, Any], state: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """(new arguments, errors by block id) from a `view_submission`'s `state.values`.

    Empty optional fields are left out; fields the form did not show keep their values.
    """
    new: dict[str, Any] = {name: arguments[name] for name in form.kept if name in arguments}
    errors: dict[str, str] = {}
    for field in form.fields:
        raw = (state.get(field.block_id) or {}).get(INPUT) or {}
        try:
            present, value = _read(field, raw)
        except ValueError as exc:
            errors[field.block_id] = str(exc)
            continue
        if not present:
            if field.required:
                errors[field.block_id] = "This field is required."
            continue
        if field.name == "":  # the whole-object JSON field
            if not isinstance(value, dict):
                errors[field.block_id] = "Must be a JSON object."
                continue
            new.update(value)
        else:
            new[field.name] = value
    return new, errors


def _read(field: EditField, raw: Mapping[str, Any]) -> tuple[bool, Any]:
    if field.kind in ("select", "boolean"):
        option = raw.get("selected_option")
        if not option:
            return False, None
        try:
            return True, json.loads(str(option.get("value")))
        except ValueError:
            raise ValueError("Choose one of the options.") from None
    text = raw.get("value")
    if text is None or not str(text).strip():
        return False, None
    text = str(text)
    if field.kind in ("text", "line"):
        return True, text
    if field.kind == "lines":
        return True, [line.strip() for line in text.splitlines() if line.strip()]
    if field.kind in ("integer", "number"):
        return True, _number(text.strip(), integer=field.kind == "integer")
    try:
        return True, json.loads(text)
    except ValueError as exc:
        raise ValueError(truncate(f"Not valid JSON: {exc}", 150)) from None


def _number(text: str, *, integer: bool) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    if integer:
        raise ValueError("Enter a whole number.")
    try:
        value = float(text)
    except ValueError:
        raise ValueError("Enter a number.") from None
    if not math.isfinite(value):
        raise ValueError("Enter a finite number.")
    return value


def errors_by_block(form: EditForm, problems: list[FieldError]) -> dict[str, str]:
    """Core's field errors (`("arguments", "to", …)`) on the inputs that caused them; a
    problem no input owns goes on the first input."""
    by_name = {f.name: f.block_id for f in form.fields}
    errors: dict[str, str] = {}
    fallback = form.fields[0].block_id if form.fields else None
    for problem in problems:
        loc = problem.loc[1:] if problem.loc[:1] == ("arguments",) else problem.loc
        block = None
        if loc and str(loc[0]) in by_name:
            block = by_name[str(loc[0])]
            where = ".".join(str(p) for p in loc[1:])
            message = f"{where}: {problem.msg}" if where else problem.msg
        else:
            required = _REQUIRED.match(problem.msg)
            if required and required["name"] in by_name:
                block = by_name[required["name"]]
                message = "This field is required."
            else:
                message = f"{'.'.join(map(str, loc))}: {problem.msg}" if loc else problem.msg
        block = block or by_name.get("") or fallback
        if block is None:
            continue
        errors[block] = truncate(f"{errors[block]}; {message}" if block in errors else message, 300)
    return errors
