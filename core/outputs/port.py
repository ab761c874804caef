"""The `OutputStore` port: content in a blob store, metadata in an index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from core.db.pagination import Page


class OutputStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"  # transient: decided, execution not finished yet
    EXECUTED = "executed"
    MANUAL = "manual"
    EXECUTION_FAILED = "execution_failed"
    REJECTED = "rejected"
    EXPIRED = "expired"


class NotificationStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "notification_failed"


class SlackStatus(StrEnum):
    """Where the approval message went in Slack (the webhook is `NotificationStatus`)."""

    PENDING = "pending"
    """Not routed yet (or proposed before outputs recorded this)."""
    POSTED = "posted"
    """In the agent's approval channel, its approvers @-mentioned."""
    DM = "dm"
    """No approval channel: sent to each approver (groups expanded) as a DM with buttons."""
    THREAD = "thread"
    """Only in the conversation's thread: the agent names no approval channel and no
    approvers (anyone in the workspace may decide)."""
    UNROUTED = "unrouted"
    """Nowhere in Slack: no approval channel, no approvers to DM, no thread (or Slack is
    not configured). Decide it over REST or the callback; `/readyz` and admins' App Home
    count these while they are pending."""
    FAILED = "failed"
    """Routing was tried and Slack refused every post."""


@dataclass(frozen=True)
class NewOutput:
    """An output to store. The id is chosen by the caller so that events announcing the
    output (which carry its id and URLs) can be written together with it."""

    id: str
    tenant_id: str
    agent_id: str
    session_id: str
    skill: str
    is_automatable: bool
    arguments: dict[str, Any]
    content: str
    content_type: str = "text/markdown"
    turn_id: str | None = None
    requested_by: str | None = None
    expires_at: datetime | None = None
    skill_snapshot: dict[str, Any] | None = None
    """What approval runs (`core.outputs.snapshot`); stores fingerprint it with the
    arguments and content into `content_sha256`."""
    approval_policy: dict[str, Any] | None = None
    """The merged approval lifecycle (`core.schemas.approval.Lifecycle.to_json`)."""
    traceparent: str | None = None
    """The trace context of the proposal (`core.tracing`): a decision continues it."""


class OutputEdit(BaseModel):
    """One reviewer edit: it produced `revision` from the revision before it."""

    revision: int
    edited_by: str
    identity: str
    via: str
    edited_at: datetime
    changes: list[dict[str, Any]]
    """Top-level argument changes: `{"field", "old", "new"}` (see `argument_changes`)."""


class Approval(BaseModel):
    """One approval of an output that needs several (N of M), or the deciding one."""

    by: str
    identity: str
    via: str
    revision: int
    at: datetime
    grant_id: str | None = None
    """Set when a grant approved it (the grant's creator is `by`)."""


class Output(BaseModel):
    """An output's metadata as every store returns it."""

    id: str
    tenant_id: str
    agent_id: str
    session_id: str
    turn_id: str | None = None
    skill: str
    is_automatable: bool
    arguments: dict[str, Any]
    content_type: str
    content_sha256: str
    content_size: int
    preview: str
    status: OutputStatus
    revision: int = 1
    skill_snapshot: dict[str, Any] | None = None
    edits: list[OutputEdit] | None = None
    requested_by: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision: str | None = None
    decision_reason: str | None = None
    decision_via: str | None = None
    decision_revision: int | None = None
    decision_identity: str | None = None
    execution_result: dict[str, Any] | None = None
    execution_error: str | None = None
    executed_at: datetime | None = None
    notification_status: NotificationStatus = NotificationStatus.PENDING
    slack_status: SlackStatus = SlackStatus.PENDING
    expires_at: datetime | None = None
    approval_policy: dict[str, Any] | None = None
    """The approval lifecycle it was proposed under (`required_approvals`, timers in
    seconds, `on_expiry`, `escalate_to`); None for outputs from before lifecycles."""
    approvals: list[Approval] | None = None
    """Every approval recorded, of every revision; only the current revision's count."""
    approval_count: int = 0
    """Approvals of the current revision so far (an edit resets it)."""
    escalated_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    traceparent: SkipJsonSchema[str | None] = Field(default=None, exclude=True)
    """The proposal's trace context (`core.tracing`), which its decision continues. Kept
    out of every view and export: it is how the service traces itself, not the output."""

    @property
    def required_approvals(self) -> int:
        return int((self.approval_policy or {}).get("required_approvals") or 1)

    def current_approvals(self) -> list[Approval]:
        return [a for a in self.approvals or () if a.revision == self.revision]


class ApprovalsMoved(Exception):
    """A conditional write lost only because another approval was recorded (or the output
    was escalated) since it was read: still pending at the same revision, read it again."""


@dataclass(frozen=True)
class OutputFilter:
    agent_id: str | None = None
    session_id: str | None = None
    status: OutputStatus | None = None
    skill: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    slack_status: SlackStatus | None = None


PREVIEW_CHARS = 500


def preview_of(content: str) -> str:
    text = content.strip()
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1].rstrip() + "…"


@dataclass(frozen=True)
class NewEvent:
    """A webhook event to persist together with the state change it announces."""

    event_type: str  # output.created | output.decided | output.executed
    agent_id: str
    url: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Transition:
    """One conditional status change: applied only if the status is still `expected`.

    Decisions go pending -> approved | rejected | expired; execution goes approved ->
    executed | manual | execution_failed; a retry goes execution_failed -> approved.
    Fields left None are not written.
    """

    expected: OutputStatus
    to: OutputStatus
    at: datetime
    decided_by: str | None = None
    decision: str | None = None
    reason: str | None = None
    via: str | None = None
    execution_result: dict[str, Any] | None = None
    execution_error: str | None = None
    executed: bool = False
    expected_revision: int | None = None
    """Also require this revision (a decision names the revision its decider saw)."""
    identity: str | None = None
    execution_job: str | None = None
    """Into `approved`: the key of the job that will execute it. Stores that cannot enqueue
    it in the write's own transaction keep it with the output until execution ends, so
    `awaiting_execution` can find an approval whose enqueue a crash prevented."""
    clear_execution: bool = False
    """Forget an earlier execution's result and error (a retry starts afresh)."""
    expected_approvals: int | None = None
    """Also require `approval_count` to be this: the approvals the writer counted (with
    `approval`, the write records one more; `to` may stay `pending`)."""
    approvals: list[dict[str, Any]] | None = None
    """The full approvals list to store (what was read plus the new one, JSON form); the
    `expected_approvals` condition makes the read-and-append safe."""
    escalate_until: datetime | None = None
    """Pending -> pending escalation: only if not escalated yet; sets `escalated_at` to
    `at` and `expires_at` to this."""


def recorded_count(change: Transition) -> int:
    """`approval_count` after a write that records an approval: one more than counted."""
    return (change.expected_approvals or 0) + 1


@dataclass(frozen=True)
class AwaitingExecution:
    tenant_id: str
    agent_id: str
    output_id: str
    job_key: str


@dataclass(frozen=True)
class Revise:
    """A reviewer's edit of a pending output: applied only if it is still pending at
    `expected_revision`; the stored revision becomes `edit.revision`."""

    expected_revision: int
    arguments: dict[str, Any]
    content: str
    content_type: str
    content_sha256: str
    edit: OutputEdit


class Recorder(Protocol):
    """Writes what a state change means elsewhere (the audit entry and receipt for it).

    The sql store calls it inside the transaction of the change, with that `session`, after
    the row and its events, so the record commits or rolls back with the change. Stores
    whose writes are not in our database call it with `session=None` right after their
    write has won, and the recorder uses a transaction of its own.
    """

    def __call__(self, session: Any | None, output: Output) -> None: ...


class HeldEvent(Protocol):
    """What `OutputStore.held_check` reads of an outbox row (`WebhookDeliveryRow` has it)."""

    id: str
    tenant_id: str
    output_id: str | None
    status: str
    created_at: datetime


class OutputStore(Protocol):
    """Where outputs live. Content is written before metadata, so metadata never dangles.

    `transition` is the only way a status changes, and it is ONE conditional write
    (`status = expected`): of several racing callers exactly one wins, the others get
    `OutputAlreadyDecided` naming the winner. Events given with a write are persisted with
    it (same transaction for the sql store; held-then-released for stores whose writes
    are not in our database), so no event is lost and none announces a write that lost.
    """

    name: str
    holds_events: bool
    """True for stores whose writes are not in our database: their events are written
    `held` before the write and released after, so a crash in between leaves `held` rows
    for the webhooks worker's sweep to settle with `held_check`."""

    def create(
        self,
        new: NewOutput,
        events: Sequence[NewEvent] = (),
        record: Recorder | None = None,
    ) -> Output: ...

    def transition(
        self,
        tenant_id: str,
        output_id: str,
        change: Transition,
        events: Sequence[NewEvent] = (),
        record: Recorder | None = None,
    ) -> Output: ...

    def revise(
        self,
        tenant_id: str,
        output_id: str,
        change: Revise,
        events: Sequence[NewEvent] = (),
        record: Recorder | None = None,
    ) -> Output:
        """One conditional write (`status = pending AND revision = expected`): new
        arguments, content and fingerprint, revision + 1, the edit appended. Raises
        `OutputAlreadyDecided` when it is no longer pending, `StaleRevision` when someone
        else edited first."""
        ...

    def set_notification_status(
        self, tenant_id: str, output_id: str, status: NotificationStatus
    ) -> None: ...

    def set_slack_status(self, tenant_id: str, output_id: str, status: SlackStatus) -> None:
        """Where the approval message went (an output of another tenant is left alone)."""
        ...

    def count_unrouted(self, limit: int = 1_000) -> int:
        """Pending outputs flagged `unrouted`, across tenants, counted up to `limit`."""
        ...

    def count_by_status(self) -> dict[str, int] | None:
        """Outputs per status across tenants (a metrics scrape reads it), or None where
        counting is not cheap."""
        ...

    def due_for_expiry(self, now: datetime, limit: int = 100) -> list[Output]: ...

    def awaiting_execution(self, before: datetime, limit: int = 100) -> list[AwaitingExecution]:
        """Outputs approved before `before` whose execution has not ended, with the key of
        the job that runs them, across tenants. Stores that enqueue that job in the
        decision's own transaction return nothing: their approvals cannot be stranded."""
        ...

    def content_url(self, tenant_id: str, output_id: str, ttl_seconds: int) -> str | None:
        """A time-limited direct URL to the content, or None if the API serves it."""
        ...

    def held_check(self, row: HeldEvent, *, now: datetime | None = None) -> bool | None:
        """Did the write this outbox row announces happen? True: release the row. False:
        it never happened (or lost), drop it. None: cannot tell yet (the write may still be
        in flight), or the row is not this store's to judge; ask again later. Never True
        for a write that did not happen."""
        ...

    def get(self, tenant_id: str, output_id: str) -> Output: ...

    def list(
        self, tenant_id: str, filters: OutputFilter, *, cursor: str | None, limit: int
    ) -> Page[Output]: ...

    def read_content(self, tenant_id: str, output_id: str) -> bytes: ...
