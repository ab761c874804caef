"""One path for every admin form's `view_submission`.

Each form repeats the same steps: read `private_metadata`, check the submitter may
configure, validate the fields with the shared pydantic schemas, run the change, map what
core refuses onto the form's fields, then turn the modal into a "done" view. A form gives
`form_handler` the two parts that differ:

- `parse(submission)`: pure, validates the fields; raises `FormErrors` (or a pydantic
  `ValidationError`, mapped through the form's `fields`) to keep the modal open;
- `run(submission, parsed)`: synchronous, runs in a worker thread (`run_sync`) after
  validation, returns the view to show. `ValidationFailed`, `NameTaken`, `Conflict`,
  `PreconditionFailed` and `NotFound` become messages on the fields.

Slack wants the answer within 3 seconds; slow work (test calls) is never done here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import admin_forms as forms
from bot.slack.admins import may_configure
from bot.slack.invocation import NOT_ADMIN
from bot.slack.runtime import SlackRuntime
from core.concurrency import run_sync
from core.errors import (
    Conflict,
    CosmoError,
    FieldError,
    NameTaken,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from core.schemas.validation import field_errors

log = logging.getLogger("cosmo.slack.forms")

STALE_FORM = "This form is out of date. Close it and run the command again."
UNEXPECTED = "Something went wrong on my side. Please try again."

# `private_metadata` keys (Slack keeps 3,000 characters, so they are short).
META_TENANT = "t"
META_AGENT = "a"
META_VERSION = "v"
META_PERSONA = "p"
META_SKILL = "s"
META_GROUPS = "g"
"""The agent's user-group approvers, kept when the form could not offer a group picker."""
META_WEBHOOK_SECRET = "ws"  # noqa: S105 - a metadata key, not a secret
"""Whether the agent already has a webhook secret (a form may then leave the variable out)."""
META_ESCALATION_GROUPS = "eg"
"""User groups among `approval.escalate_to` (the form picks users only there)."""

T = TypeVar("T")
View = dict[str, Any]


class FormErrors(Exception):
    """Keep the modal open with these messages, `{block_id: message}`."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        super().__init__(", ".join(errors))
        self.errors = dict(errors)


@dataclass(frozen=True)
class Submission:
    """A submitted admin form whose metadata was readable and whose submitter may configure."""

    tenant: str
    user: str
    meta: dict[str, Any]
    values: forms.State
    view: dict[str, Any]

    @property
    def actor(self) -> str:
        return f"slack:{self.user}"

    def id(self, key: str) -> str:
        return str(self.meta.get(key))


def read_metadata(view: Mapping[str, Any]) -> dict[str, Any]:
    """The form's metadata, or `{}` when it is unreadable (a form from another version)."""
    try:
        meta = json.loads(view.get("private_metadata") or "")
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) and isinstance(meta.get(META_TENANT), str) else {}


def unprefixed(errors: list[FieldError]) -> list[FieldError]:
    """Config-document paths (`agents.0.persona`) back to field paths (`persona`)."""
    out = []
    for e in errors:
        loc = e.loc
        if len(loc) >= 2 and loc[0] in ("agents", "personas", "skills") and isinstance(loc[1], int):
            loc = loc[2:]
        out.append(FieldError(loc, e.msg))
    return out


def stale_or(exc: CosmoError, what: str = "agent") -> str:
    if isinstance(exc, PreconditionFailed):
        return f"Someone changed this {what} after you opened the form. " + STALE_FORM
    if isinstance(exc, NotFound):
        return "It was deleted after you opened the form."
    return exc.detail


@dataclass(frozen=True)
class Form(Generic[T]):
    """What one form needs: its error map, its fallback block, how to parse and run."""

    fields: Mapping[str, str]
    block: str
    parse: Callable[[Submission], T]
    run: Callable[[Submission, T], View]
    what: str = "agent"
    name_blocks: Mapping[str, str] | None = None
    """`NameTaken.kind` -> the block naming that kind of record (default: `block`)."""

    def errors_of(self, exc: CosmoError) -> dict[str, str]:
        if isinstance(exc, ValidationFailed):
            return forms.form_errors(unprefixed(exc.errors), self.fields, fallback=self.block)
        if isinstance(exc, NameTaken):
            return {(self.name_blocks or {}).get(exc.kind, self.block): exc.detail}
        return {self.block: stale_or(exc, self.what)}


Handler = Callable[[AsyncAck, dict[str, Any], dict[str, Any]], Awaitable[None]]


def form_handler(rt: SlackRuntime, form: Form[Any]) -> Handler:
    """The `app.view(...)` listener of `form`."""

    async def handle(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        meta = read_metadata(view)
        if not meta:
            await ack(response_action="errors", errors={form.block: STALE_FORM})
            return
        user = body["user"]["id"]
        if not await may_configure(rt, meta[META_TENANT], user):
            await ack(response_action="errors", errors={form.block: NOT_ADMIN})
            return
        values = dict((view.get("state") or {}).get("values") or {})
        submission = Submission(meta[META_TENANT], user, meta, values, view)
        try:
            parsed = form.parse(submission)
        except FormErrors as exc:
            await ack(response_action="errors", errors=exc.errors)
            return
        except ValidationError as exc:
            errors = forms.form_errors(field_errors(exc), form.fields, fallback=form.block)
            await ack(response_action="errors", errors=errors)
            return
        try:
            done = await run_sync(form.run, submission, parsed)
        except FormErrors as exc:
            await ack(response_action="errors", errors=exc.errors)
            return
        except (ValidationFailed, Conflict, PreconditionFailed, NotFound) as exc:
            await ack(response_action="errors", errors=form.errors_of(exc))
            return
        await ack(response_action="update", view=done)

    async def guarded(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """An unexpected failure becomes a message on the form, not Slack's generic error."""
        try:
            await handle(ack, body, view)
        except Exception:
            log.exception("%s submission failed", view.get("callback_id"))
            await ack(response_action="errors", errors={form.block: UNEXPECTED})

    return guarded


ButtonAnswer = Callable[[SlackRuntime, dict[str, Any]], Awaitable[str]]


def register_modal_button(
    app: AsyncApp,
    rt: SlackRuntime,
    action_id: str,
    answer: ButtonAnswer,
    block_of: Callable[[str], dict[str, Any]],
    what: str,
) -> None:
    """A button inside an admin modal: acked at once; `answer(rt, body)` runs after the ack
    and its text (mrkdwn) is shown in the block `block_of(text)` swapped into the open modal
    (`views.update`; the inputs keep what was typed)."""

    async def on_click(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        rt.spawn(run(body, client), name=what)

    async def run(body: dict[str, Any], client: AsyncWebClient) -> None:
        try:
            text = await answer(rt, body)
        except Exception:
            log.exception("%s failed", what)
            text = "⚠️ " + UNEXPECTED
        view = body.get("view") or {}
        updated = forms.with_block(view, block_of(text))
        try:
            await client.views_update(view_id=view.get("id"), view=updated)
        except SlackApiError as exc:  # the modal was closed or submitted meanwhile
            log.info("could not show the %s: %s", what, exc.response.get("error"))

    app.action(action_id)(on_click)
