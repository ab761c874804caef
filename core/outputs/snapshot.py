"""What an output will do when approved, frozen when it is proposed.

An output stores a snapshot of its skill (name, version, kind, automatable, schema,
executor) next to its validated arguments, and execution runs that snapshot, never the
skill as it is today: an admin who edits or deletes the skill after a reviewer looked
cannot change what the approval runs. Secrets stay as the *names* of variables in the
executor config, so a snapshot holds no secret value.

`content_sha256` fingerprints exactly what the reviewer saw: a SHA-256 over the canonical
JSON (`core.approvals.canonical`, the rendering audit hashes and receipts use) of
`{"skill": snapshot, "arguments": arguments, "content": content}`, so the same output
hashes the same on every store and process, whatever order its keys arrived in.
"""

from __future__ import annotations

from typing import Any

from core.approvals.canonical import canonical_bytes, sha256_hex
from core.errors import FieldError, ValidationFailed
from core.schemas.common import check_storable
from core.schemas.skill import SkillSpec
from core.skills.runtime import Skill, SkillArgumentsInvalid

#: Arguments of one output, as canonical JSON: proposals and edits alike.
MAX_ARGUMENTS_BYTES = 65_536

SNAPSHOT_FIELDS = (
    "description",
    "kind",
    "is_automatable",
    "idempotent",
    "input_schema",
    "executor",
)


def skill_snapshot(spec: SkillSpec, version: int) -> dict[str, Any]:
    data = spec.model_dump(mode="json", exclude_none=True)
    snap = {"name": spec.name, "version": version}
    snap.update({name: data[name] for name in SNAPSHOT_FIELDS if name in data})
    return snap


def spec_of(snapshot: dict[str, Any]) -> SkillSpec:
    """The runnable spec inside a snapshot (validated again: stored JSON is input too)."""
    return SkillSpec.model_validate({k: v for k, v in snapshot.items() if k != "version"})


def content_fingerprint(snapshot: dict[str, Any], arguments: dict[str, Any], content: str) -> str:
    return sha256_hex({"skill": snapshot, "arguments": arguments, "content": content})


def argument_changes(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-level fields that differ, in a stable order: `{"field", "old", "new"}` each
    (`old`/`new` absent when the field was added/removed)."""
    changes: list[dict[str, Any]] = []
    for key in [*before, *(k for k in after if k not in before)]:
        if (
            key in before
            and key in after
            and canonical_bytes(before[key]) == canonical_bytes(after[key])
        ):
            continue
        change: dict[str, Any] = {"field": key}
        if key in before:
            change["old"] = before[key]
        if key in after:
            change["new"] = after[key]
        changes.append(change)
    return changes


def arguments_too_large(arguments: dict[str, Any]) -> str | None:
    size = len(canonical_bytes(arguments))
    if size > MAX_ARGUMENTS_BYTES:
        return f"the arguments take {size} bytes as JSON; at most {MAX_ARGUMENTS_BYTES} are kept"
    return None


def check_arguments(skill: Skill, arguments: object) -> dict[str, Any]:
    """Arguments a person typed, checked like the model's: schema, storability, size.

    Raises `ValidationFailed` with one error per field (`arguments.to`,
    `arguments.items.2.qty`), so a form can show each next to its input.
    """
    if not isinstance(arguments, dict):
        raise ValidationFailed([FieldError(("arguments",), "must be a JSON object")])
    try:
        check_storable(arguments)
    except ValueError as exc:
        raise ValidationFailed([FieldError(("arguments",), str(exc))]) from None
    problems = skill.schema_errors(arguments)
    if problems:
        raise ValidationFailed([FieldError(("arguments", *path), msg) for path, msg in problems])
    too_large = arguments_too_large(arguments)
    if too_large:
        raise ValidationFailed([FieldError(("arguments",), too_large)])
    try:
        return skill.validate(arguments)
    except SkillArgumentsInvalid as exc:  # pragma: no cover - schema_errors saw none
        raise ValidationFailed([FieldError(("arguments",), exc.detail)]) from None


def describe_changes(changes: list[dict[str, Any]], limit: int = 200) -> str:
    """`to: a@x.com → b@x.com; cc: (added) c@x.com`, each value cut at `limit`."""

    def text(change: dict[str, Any], key: str) -> str:
        if key not in change:
            return "(none)"
        value = change[key]
        shown = value if isinstance(value, str) else canonical_bytes(value).decode()
        return shown if len(shown) <= limit else shown[: limit - 1] + "…"

    return "; ".join(f"{c['field']}: {text(c, 'old')} → {text(c, 'new')}" for c in changes)
