"""The `aws` output store: content in S3, metadata in DynamoDB, through boto3.

Works against AWS, LocalStack or MinIO+DynamoDB-local alike: the clients are built by
`core.wiring.aws_clients` (which honours `AWS_ENDPOINT_URL`) and passed in, so nothing
here knows where they point.

Layout (`core.outputs.aws_setup` creates it):

* S3 object `<tenant>/<output id>/<nonce>` (tenant URL-quoted; the item's `content_key`)
  holds the content, with its content type. Content is written first, metadata second,
  so metadata never points at a missing object; if the metadata write certainly failed
  the object is deleted again. The nonce keeps a create that reuses an existing id from
  overwriting (or deleting) that output's content.
* DynamoDB table keyed by `id` (the output id, hash key only) holds one item per output:
  every `Output` field under its own name; datetimes as UTC ISO-8601 strings with
  microseconds (fixed width, so they compare as strings); `arguments` and
  `execution_result` as JSON strings (exact for any JSON, no float/Decimal juggling, and
  nothing queries inside them); absent attributes mean None. Extra attributes:
  `content_key`, `decision`, `write_marks` (see below) and the index keys.
* Global secondary indexes, all projecting ALL attributes so a list is one query:

  ============ ======================================= ================================
  index        hash key                                range key
  ============ ======================================= ================================
  by_tenant    `tenant_id`                             `id`
  by_agent     `tenant_agent` = tenant#agent           `id`
  by_session   `tenant_session` = tenant#session       `id`
  by_status    `tenant_status` = tenant#status         `id`
  by_expiry    `expiry_queue` = "pending"  (sparse)    `expiry_key` = expires_at#id
  by_execution `execution_queue` = "approved" (sparse) `execution_since` = approved_at#id
  by_unrouted  `unrouted_queue` = "unrouted" (sparse)  `id`
  ============ ======================================= ================================

  Ids are ULIDs (`core.db.ids`, minted by the caller just before `create`), so `id`
  order is creation order and a page continues after the last id (the same opaque cursor
  as the sql store). Time filters become an `id` range on the ULID timestamp (with five
  minutes of slack) plus an exact `created_at` filter. `by_expiry`
  holds only pending outputs with an expiry: the keys are removed by the decision, so
  `due_for_expiry` reads nothing else (it is one partition; past a few hundred creates
  a second, shard it as `pending#0..n` and query each). `by_execution` likewise holds only
  approved outputs whose execution has not ended, with `execution_job`, the key of the job
  that runs it: the job layer cannot share DynamoDB's write, so the decider enqueues it
  right after, and a schedule enqueues what a crash in between left behind (the key
  dedupes). Index reads are eventually
  consistent (a fresh output may take a moment to be listed); `get` reads the table
  strongly consistently.

Decisions are one `UpdateItem` whose `ConditionExpression` is
`#status = :expected AND tenant_id = :t`, with `ReturnValuesOnConditionCheckFailure=
ALL_OLD`: the loser learns who decided, and when, from the failed write itself.

Webhook events cannot share a transaction with DynamoDB, so they are *held*: written to
our outbox as `held` before the DynamoDB write, then released (the write won) or dropped
(it lost). That order means no event is lost (it exists before the change does) and none
announces a write that lost (a held row is never sent). Every write also adds the held
row ids (or, without events, a fresh token) to the item's `write_marks` string set, in
the same conditional write. The marks make the outcome checkable afterwards:

* a write whose reply was lost and that botocore retried fails its own condition; the
  marks in ALL_OLD show it was ours, so it counts as won;
* a process that dies between the write and the release leaves `held` rows;
  `held_check` (the webhooks worker's sweep calls it) releases those whose id is in the
  item's marks and drops the unmarked ones once they are older than `HELD_GRACE` (longer
  than any write can still be in flight with the client timeouts `core.wiring` sets);
* an ambiguous failure (timeout, 5xx, connection lost after a retry) leaves the rows
  held and the object in place: the sweeper decides later, from the marks.
"""

from __future__ import annotations

import builtins
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn
from urllib.parse import quote

from botocore.exceptions import ClientError, ParamValidationError

from core.db.ids import new_id
from core.db.pagination import Page, check_limit, decode_cursor, encode_cursor
from core.errors import Conflict, NotFound, OutputAlreadyDecided, StaleRevision
from core.outputs.port import (
    ApprovalsMoved,
    AwaitingExecution,
    HeldEvent,
    NewEvent,
    NewOutput,
    NotificationStatus,
    Output,
    OutputFilter,
    OutputStatus,
    Recorder,
    Revise,
    SlackStatus,
    Transition,
    preview_of,
    recorded_count,
)
from core.outputs.snapshot import content_fingerprint
from core.webhooks.outbox import Outbox

log = logging.getLogger("cosmo.outputs.aws")

DEFAULT_CONTENT_URL_TTL = 15 * 60
MAX_CONTENT_URL_TTL = 7 * 24 * 3600  # SigV4 presigned URLs cannot live longer
HELD_GRACE = timedelta(minutes=15)

#: index name -> (hash key attribute, range key attribute); all string attributes.
INDEXES: dict[str, tuple[str, str]] = {
    "by_tenant": ("tenant_id", "id"),
    "by_agent": ("tenant_agent", "id"),
    "by_session": ("tenant_session", "id"),
    "by_status": ("tenant_status", "id"),
    "by_expiry": ("expiry_queue", "expiry_key"),
    "by_execution": ("execution_queue", "execution_since"),
    "by_unrouted": ("unrouted_queue", "id"),
}
UNROUTED_QUEUE = "unrouted"
EXPIRY_QUEUE = "pending"
EXECUTION_QUEUE = "approved"
_JSON_FIELDS = (
    "arguments",
    "execution_result",
    "skill_snapshot",
    "edits",
    "approval_policy",
    "approvals",
)
_ID_PREFIX = "out_"
_TIME_SLACK_MS = 5 * 60_000  # ids are minted (by the caller) just before create
_ULID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_MAX_ID = 200
_CONDITION_FAILED = "ConditionalCheckFailedException"


def content_key(tenant_id: str, output_id: str, nonce: str) -> str:
    return f"{quote(tenant_id, safe='')}/{output_id}/{nonce}"


def _iso(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def _id_at(dt: datetime, slack_ms: int) -> str:
    """The `out_` + ULID-timestamp prefix for `dt` moved by `slack_ms`: an `id` range bound."""
    ms = max(0, int(dt.timestamp() * 1000) + slack_ms)
    chars = []
    for _ in range(10):
        ms, rem = divmod(ms, 32)
        chars.append(_ULID_ALPHABET[rem])
    return _ID_PREFIX + "".join(reversed(chars))


def _attr(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, datetime):
        return {"S": _iso(value)}
    if isinstance(value, dict | list):
        return {"S": json.dumps(value, separators=(",", ":"), ensure_ascii=False)}
    if isinstance(value, str):
        return {"S": value}
    raise TypeError(f"no DynamoDB mapping for {type(value).__name__}")


def _plain(attr: dict[str, Any]) -> Any:
    (kind, value), *_ = attr.items()
    if kind == "N":
        return int(value)
    if kind == "SS":
        return set(value)
    return value  # S, BOOL


def _output_of(item: dict[str, Any]) -> Output:
    data = {name: _plain(attr) for name, attr in item.items()}
    for name in _JSON_FIELDS:
        if name in data:
            data[name] = json.loads(data[name])
    return Output.model_validate(data)


def _marks_of(item: dict[str, Any] | None) -> set[str]:
    return set(item.get("write_marks", {}).get("SS", ())) if item else set()


def _error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code"))
    return None


def _certainly_not_applied(exc: BaseException) -> bool:
    """A request DynamoDB refused on its only attempt (4xx), or one never sent."""
    if isinstance(exc, ParamValidationError):
        return True
    if not isinstance(exc, ClientError):
        return False  # timeouts, dropped connections: it may have been applied
    meta = exc.response.get("ResponseMetadata", {})
    status = int(meta.get("HTTPStatusCode") or 500)
    return status < 500 and not meta.get("RetryAttempts")


class _Expression:
    """Placeholders for names and values, so no attribute name is a reserved word."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, dict[str, Any]] = {}

    def name(self, attribute: str) -> str:
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, value: Any) -> str:
        return self.raw(_attr(value))

    def raw(self, attribute_value: dict[str, Any]) -> str:
        """A value already in DynamoDB's wire form (`{"SS": [...]}`)."""
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = attribute_value
        return placeholder

    def equals(self, attribute: str, value: Any) -> str:
        return f"{self.name(attribute)} = {self.value(value)}"

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.names:
            out["ExpressionAttributeNames"] = self.names
        if self.values:
            out["ExpressionAttributeValues"] = self.values
        return out


class _EmptyRange(Exception):
    """The filters (or a cursor past them) leave no `id` to look at."""


@dataclass
class HeldResolution:
    released: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


class AwsOutputStore:
    """Outputs in S3 (content) and DynamoDB (metadata); see the module docstring."""

    name = "aws"
    holds_events = True  # DynamoDB writes cannot share a transaction with our outbox
    #: items a filtered query reads per request (DynamoDB's Limit counts before the filter)
    filtered_read = 100

    def __init__(
        self, s3_client: Any, dynamodb_client: Any, bucket: str, table: str, outbox: Outbox
    ) -> None:
        self.s3 = s3_client
        self.dynamodb = dynamodb_client
        self.bucket = bucket
        self.table = table
        self.outbox = outbox

    # -- writes ------------------------------------------------------------------------

    def create(
        self,
        new: NewOutput,
        events: Sequence[NewEvent] = (),
        record: Recorder | None = None,
    ) -> Output:
        output_id = new.id
        now = datetime.now(UTC)
        data = new.content.encode("utf-8")
        # A key of its own per write: a create that reuses an id (and then loses the
        # conditional put) must not overwrite, or delete, the existing output's content.
        key = content_key(new.tenant_id, output_id, secrets.token_hex(8))
        output = Output(
            id=output_id,
            tenant_id=new.tenant_id,
            agent_id=new.agent_id,
            session_id=new.session_id,
            turn_id=new.turn_id,
            skill=new.skill,
            is_automatable=new.is_automatable,
            arguments=new.arguments,
            content_type=new.content_type,
            content_sha256=content_fingerprint(
                new.skill_snapshot or {}, new.arguments, new.content
            ),
            content_size=len(data),
            preview=preview_of(new.content),
            status=OutputStatus.PENDING,
            skill_snapshot=new.skill_snapshot,
            revision=1,
            requested_by=new.requested_by,
            expires_at=new.expires_at,
            approval_policy=new.approval_policy,
            traceparent=new.traceparent,
            created_at=now,
            updated_at=now,
        )
        content_type = new.content_type
        if content_type.startswith("text/") and "charset" not in content_type:
            content_type += "; charset=utf-8"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        try:
            held = self.outbox.hold(events, tenant_id=new.tenant_id, output_id=output_id)
        except BaseException:
            self._delete_content(key)
            raise
        marks = held or [new_id("wrt")]
        item = self._item(output, key, marks)
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(#id)",
                ExpressionAttributeNames={"#id": "id"},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except BaseException as exc:
            old = exc.response.get("Item") if isinstance(exc, ClientError) else None
            if _error_code(exc) == _CONDITION_FAILED and _marks_of(old) & set(marks):
                self._release(held)  # a retry of our own write, which had landed
                return _recorded(output, record)
            if _error_code(exc) == _CONDITION_FAILED or _certainly_not_applied(exc):
                self._drop(held)
                self._delete_content(key)
            if _error_code(exc) == _CONDITION_FAILED:
                raise Conflict(f"an output with id {output_id!r} already exists") from None
            raise  # if it may have landed, the object stays and the held-row sweep decides
        self._release(held)
        return _recorded(output, record)

    def transition(
        self,
        tenant_id: str,
        output_id: str,
        change: Transition,
        events: Sequence[NewEvent] = (),
        record: Recorder | None = None,
    ) -> Output:
        """One conditional `UpdateItem`; the loser is told the winner from ALL_OLD."""
        if not _valid_id(output_id):
            raise NotFound("output", output_id)
        held = self.outbox.hold(events, tenant_id=tenant_id, output_id=output_id)
        marks = held or [new_id("wrt")]
        ex = _Expression()
        stays = change.to is OutputStatus.PENDING  # an approval recorded, an escalation
        sets: dict[str, Any] = {
            "status": change.to.value,
            "tenant_status": f"{tenant_id}#{change.to.value}",
            "updated_at": change.at,
            "decided_by": change.decided_by,
            "decided_at": change.at if change.decided_by is not None else None,
            "decision": change.decision,
            "decision_reason": change.reason,
            "decision_via": change.via,
            "execution_result": change.execution_result,
            "execution_error": change.execution_error,
            "executed_at": change.at if change.executed else None,
            "decision_revision": None if stays else change.expected_revision,
            "decision_identity": change.identity,
        }
        if change.approvals is not None:
            sets.update(approvals=change.approvals, approval_count=recorded_count(change))
        if change.escalate_until is not None:
            sets.update(
                escalated_at=change.at,
                expires_at=change.escalate_until,
                expiry_queue=EXPIRY_QUEUE,
                expiry_key=f"{_iso(change.escalate_until)}#{output_id}",
            )
        removed: builtins.list[str] = []
        if change.to is OutputStatus.APPROVED and change.execution_job is not None:
            sets.update(
                execution_queue=EXECUTION_QUEUE,
                execution_since=f"{_iso(change.at)}#{output_id}",
                execution_job=change.execution_job,
            )
        else:  # leaves the execution queue (if it was in it)
            removed += ["execution_queue", "execution_since", "execution_job"]
        if change.to is not OutputStatus.PENDING:  # leaves the expiry and unrouted queues
            removed += ["expiry_queue", "expiry_key", "unrouted_queue"]
        if change.clear_execution:
            removed += ["execution_result", "execution_error", "executed_at"]
        assignments = ", ".join(ex.equals(k, v) for k, v in sets.items() if v is not None)
        update = f"SET {assignments} ADD {ex.name('write_marks')} {ex.raw({'SS': marks})}"
        if removed:
            update += " REMOVE " + ", ".join(ex.name(name) for name in removed)
        expected = ex.equals("status", change.expected.value)
        condition = f"{expected} AND {ex.equals('tenant_id', tenant_id)}"
        if change.expected_revision is not None:
            condition += f" AND {_revision_is(ex, change.expected_revision)}"
        if change.expected_approvals is not None:
            condition += f" AND {_approvals_are(ex, change.expected_approvals)}"
        if change.escalate_until is not None:
            condition += f" AND attribute_not_exists({ex.name('escalated_at')})"
        written = self._conditional_update(
            tenant_id,
            output_id,
            ex,
            update,
            condition,
            held,
            marks,
            change.expected,
            change.expected_revision,
        )
        return _recorded(written, record)

    def revise(
        self,
        tenant_id: str,
        output_id: str,
        change: Revise,
        events: Sequence[NewEvent] = (),
        record: Recorder | None = None,
    ) -> Output:
        """New content object first, then one conditional `UpdateItem` (pending, at the
        expected revision) that points the item at it; the old object is deleted after."""
        before = self._get_item(tenant_id, output_id)  # 404 before anything is written
        data = change.content.encode("utf-8")
        key = content_key(tenant_id, output_id, secrets.token_hex(8))
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=_typed(change))
        try:
            held = self.outbox.hold(events, tenant_id=tenant_id, output_id=output_id)
        except BaseException:
            self._delete_content(key)
            raise
        marks = held or [new_id("wrt")]
        history = json.loads(before["edits"]["S"]) if "edits" in before else []
        history.append(change.edit.model_dump(mode="json"))
        ex = _Expression()
        sets = {
            "arguments": change.arguments,
            "content_type": change.content_type,
            "content_key": key,
            "content_sha256": change.content_sha256,
            "content_size": len(data),
            "preview": preview_of(change.content),
            "revision": change.edit.revision,
            "edits": history,
            "approval_count": 0,  # approvals are of the revision they saw
            "updated_at": change.edit.edited_at,
        }
        assignments = ", ".join(ex.equals(k, v) for k, v in sets.items())
        update = f"SET {assignments} ADD {ex.name('write_marks')} {ex.raw({'SS': marks})}"
        condition = (
            f"{ex.equals('status', OutputStatus.PENDING.value)} AND "
            f"{ex.equals('tenant_id', tenant_id)} AND "
            f"{_revision_is(ex, change.expected_revision)}"
        )
        written = self._conditional_update(
            tenant_id,
            output_id,
            ex,
            update,
            condition,
            held,
            marks,
            OutputStatus.PENDING,
            change.expected_revision,
            not_written=lambda: self._delete_content(key),
        )
        self._delete_content(before["content_key"]["S"])
        return _recorded(written, record)

    def _conditional_update(
        self,
        tenant_id: str,
        output_id: str,
        ex: _Expression,
        update: str,
        condition: str,
        held: Sequence[str],
        marks: Sequence[str],
        expected: OutputStatus,
        expected_revision: int | None,
        not_written: Callable[[], None] = lambda: None,
    ) -> Output:
        """One conditional `UpdateItem`; the loser is told why from ALL_OLD. `not_written`
        runs (to clean up) when the write certainly did not land; an ambiguous failure
        leaves the held rows, and whatever else, to the sweep."""
        try:
            reply = self.dynamodb.update_item(
                TableName=self.table,
                Key={"id": {"S": output_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **ex.kwargs(),
            )
        except BaseException as exc:
            if _error_code(exc) != _CONDITION_FAILED:
                if _certainly_not_applied(exc):
                    self._drop(held)
                    not_written()
                raise  # else it may have landed: the held rows wait for the sweep
            assert isinstance(exc, ClientError)
            current: dict[str, Any] = exc.response.get("Item") or {}
            if _marks_of(current) & set(marks):
                self._release(held)  # botocore retried our write after it had landed
                return _output_of(current)
            self._drop(held)
            not_written()
            _raise_lost(tenant_id, output_id, current, expected, expected_revision)
        self._release(held)
        return _output_of(reply["Attributes"])

    def set_notification_status(
        self, tenant_id: str, output_id: str, status: NotificationStatus
    ) -> None:
        self._update_if_owned(tenant_id, output_id, {"notification_status": status.value})

    def set_slack_status(self, tenant_id: str, output_id: str, status: SlackStatus) -> None:
        values: dict[str, Any] = {"slack_status": status.value}
        if status is SlackStatus.UNROUTED:
            values["unrouted_queue"] = UNROUTED_QUEUE
        self._update_if_owned(tenant_id, output_id, values)

    def count_unrouted(self, limit: int = 1_000) -> int:
        """The sparse `by_unrouted` index holds unrouted outputs until they are decided."""
        ex = _Expression()
        query = {
            "TableName": self.table,
            "IndexName": "by_unrouted",
            "KeyConditionExpression": ex.equals("unrouted_queue", UNROUTED_QUEUE),
            # The index lags the table a little: a just-decided output may linger there.
            "FilterExpression": ex.equals("status", OutputStatus.PENDING.value),
        }
        return len(self._query(query, ex, want=limit, filtered=True))

    def count_by_status(self) -> dict[str, int] | None:
        """Not offered: DynamoDB counts by scanning the table, too costly for every scrape."""
        return None

    def _update_if_owned(self, tenant_id: str, output_id: str, values: dict[str, Any]) -> None:
        """Like the sql store: an output of another tenant (or none) is left alone, silently."""
        if not _valid_id(output_id):
            return
        ex = _Expression()
        values = {**values, "updated_at": datetime.now(UTC)}
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key={"id": {"S": output_id}},
                UpdateExpression="SET " + ", ".join(ex.equals(k, v) for k, v in values.items()),
                ConditionExpression=ex.equals("tenant_id", tenant_id),
                **ex.kwargs(),
            )
        except ClientError as exc:
            if _error_code(exc) != _CONDITION_FAILED:
                raise

    # -- reads -------------------------------------------------------------------------

    def get(self, tenant_id: str, output_id: str) -> Output:
        return _output_of(self._get_item(tenant_id, output_id))

    def _get_item(self, tenant_id: str, output_id: str) -> dict[str, Any]:
        if not _valid_id(output_id):
            raise NotFound("output", output_id)
        reply = self.dynamodb.get_item(
            TableName=self.table, Key={"id": {"S": output_id}}, ConsistentRead=True
        )
        item: dict[str, Any] | None = reply.get("Item")
        if item is None or item.get("tenant_id", {}).get("S") != tenant_id:
            raise NotFound("output", output_id)
        return item

    def list(
        self, tenant_id: str, filters: OutputFilter, *, cursor: str | None, limit: int
    ) -> Page[Output]:
        """Newest last, like the sql store; one index query (repeated only past filters)."""
        check_limit(limit)
        after = decode_cursor(cursor)
        ex = _Expression()
        conditions: list[str] = []
        wanted = {
            "tenant_id": tenant_id,
            "agent_id": filters.agent_id,
            "session_id": filters.session_id,
            "status": filters.status.value if filters.status else None,
            "skill": filters.skill,
            "slack_status": filters.slack_status.value if filters.slack_status else None,
        }
        # The most selective filter picks the index; the hash key pins tenant and that
        # filter, the rest are checked per item (the tenant again, too: a `#` in a tenant
        # id could otherwise alias another tenant's composite key).
        if filters.session_id:
            index, used = "by_session", "session_id"
        elif filters.agent_id:
            index, used = "by_agent", "agent_id"
        elif filters.status:
            index, used = "by_status", "status"
        else:
            index, used = "by_tenant", "tenant_id"
        hash_value = tenant_id if used == "tenant_id" else f"{tenant_id}#{wanted.pop(used)}"
        if used == "tenant_id":
            del wanted["tenant_id"]
        key = ex.equals(INDEXES[index][0], hash_value)
        try:
            id_range = self._id_range(ex, after, filters)
        except _EmptyRange:
            return Page([], None)
        if id_range:
            key += f" AND {id_range}"
        conditions += [ex.equals(k, v) for k, v in wanted.items() if v is not None]
        if filters.created_after:
            conditions.append(f"{ex.name('created_at')} >= {ex.value(filters.created_after)}")
        if filters.created_before:
            conditions.append(f"{ex.name('created_at')} < {ex.value(filters.created_before)}")
        query: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "KeyConditionExpression": key,
        }
        if conditions:
            query["FilterExpression"] = " AND ".join(conditions)
        items = self._query(query, ex, want=limit + 1, filtered=bool(conditions))
        outputs = [_output_of(i) for i in items]
        more = len(outputs) > limit
        outputs = outputs[:limit]
        return Page(outputs, encode_cursor(outputs[-1].id) if more and outputs else None)

    @staticmethod
    def _id_range(ex: _Expression, after: str | None, filters: OutputFilter) -> str | None:
        """The `id` condition: after the cursor, within the time filters (ULID prefixes)."""
        low: tuple[str, str] | None = None  # (operator, bound)
        if filters.created_after:
            low = (">=", _id_at(filters.created_after, -_TIME_SLACK_MS))
        if after is not None and (low is None or after >= low[1]):
            low = (">", after)
        high = _id_at(filters.created_before, _TIME_SLACK_MS) if filters.created_before else None
        if low is None and high is None:
            return None
        idn = ex.name("id")
        if low and high:
            # BETWEEN is inclusive: `> after` is `>= after + "0"` for fixed-width ids, and a
            # bare ULID-timestamp prefix equals no id, so `<=` it is `<` it.
            start = low[1] + "0" if low[0] == ">" else low[1]
            if start > high:  # DynamoDB refuses an inverted BETWEEN; nothing is in it
                raise _EmptyRange
            return f"{idn} BETWEEN {ex.value(start)} AND {ex.value(high)}"
        if low:
            return f"{idn} {low[0]} {ex.value(low[1])}"
        return f"{idn} < {ex.value(high)}"

    def _query(
        self, query: dict[str, Any], ex: _Expression, *, want: int, filtered: bool
    ) -> builtins.list[dict[str, Any]]:
        """Up to `want` items, following DynamoDB's pages past items the filter dropped."""
        items: builtins.list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while len(items) < want:
            page_kwargs = dict(query, **ex.kwargs())
            # Limit counts items read, before the filter: read more when filtering.
            page_kwargs["Limit"] = (
                max(want - len(items), self.filtered_read) if filtered else want - len(items)
            )
            if start:
                page_kwargs["ExclusiveStartKey"] = start
            reply = self.dynamodb.query(**page_kwargs)
            items.extend(reply.get("Items", ()))
            start = reply.get("LastEvaluatedKey")
            if not start:
                break
        return items[:want]

    def read_content(self, tenant_id: str, output_id: str) -> bytes:
        item = self._get_item(tenant_id, output_id)  # tenant check and 404 before S3
        key = item["content_key"]["S"]
        try:
            reply = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise NotFound("content", key) from None
            raise
        body: bytes = reply["Body"].read()
        return body

    def content_url(
        self, tenant_id: str, output_id: str, ttl_seconds: int = DEFAULT_CONTENT_URL_TTL
    ) -> str | None:
        """A presigned S3 GET (SigV4), minted now; nothing is stored."""
        if not 1 <= ttl_seconds <= MAX_CONTENT_URL_TTL:
            raise ValueError(f"ttl_seconds must be between 1 and {MAX_CONTENT_URL_TTL}")
        item = self._get_item(tenant_id, output_id)
        url: str = self.s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": item["content_key"]["S"]},
            ExpiresIn=ttl_seconds,
        )
        return url

    def due_for_expiry(self, now: datetime, limit: int = 100) -> builtins.list[Output]:
        """Pending outputs past `expires_at`, soonest first, across tenants (sparse index)."""
        ex = _Expression()
        query = {
            "TableName": self.table,
            "IndexName": "by_expiry",
            # `$` sorts after the `#` separator: every key of an instant up to `now`.
            "KeyConditionExpression": f"{ex.equals('expiry_queue', EXPIRY_QUEUE)} AND "
            f"{ex.name('expiry_key')} < {ex.value(_iso(now) + '$')}",
            # The index lags the table a little: a just-decided output may linger there.
            "FilterExpression": ex.equals("status", OutputStatus.PENDING.value),
        }
        return [_output_of(i) for i in self._query(query, ex, want=limit, filtered=True)]

    def awaiting_execution(
        self, before: datetime, limit: int = 100
    ) -> builtins.list[AwaitingExecution]:
        """Approved outputs whose execution has not ended, approved before `before` (sparse
        index, across tenants). The index lags the table: a just-ended execution may still
        be listed, which is harmless (its job exists, so enqueueing it again does nothing)."""
        ex = _Expression()
        query = {
            "TableName": self.table,
            "IndexName": "by_execution",
            "KeyConditionExpression": f"{ex.equals('execution_queue', EXECUTION_QUEUE)} AND "
            f"{ex.name('execution_since')} < {ex.value(_iso(before) + '$')}",
        }
        return [
            AwaitingExecution(
                i["tenant_id"]["S"], i["agent_id"]["S"], i["id"]["S"], i["execution_job"]["S"]
            )
            for i in self._query(query, ex, want=limit, filtered=False)
            if "execution_job" in i
        ]

    # -- held webhook events -------------------------------------------------------------

    def held_check(
        self, row: HeldEvent, *, now: datetime | None = None, grace: timedelta = HELD_GRACE
    ) -> bool | None:
        """Did the write that held `row` happen? For the webhooks worker's `held` sweep.

        True (release it): the row id is in its output's `write_marks`, written by the same
        conditional write as the change. False (drop it): unmarked and older than `grace`,
        so that write never happened or lost. None (ask again later): unmarked but young,
        its write may still be in flight; also for rows not about an output.
        """
        if row.output_id is None:
            return None
        try:
            marks = _marks_of(self._get_item(row.tenant_id, row.output_id))
        except NotFound:
            marks = set()
        if row.id in marks:
            return True
        created = row.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return False if created <= (now or datetime.now(UTC)) - grace else None

    def resolve_held(
        self,
        rows: Iterable[HeldEvent],
        *,
        now: datetime | None = None,
        grace: timedelta = HELD_GRACE,
    ) -> HeldResolution:
        """Apply `held_check` to outbox rows left `held` and release or drop them."""
        result = HeldResolution()
        for row in rows:
            verdict = self.held_check(row, now=now, grace=grace)
            if verdict is None:
                result.waiting.append(row.id)
            else:
                (result.released if verdict else result.dropped).append(row.id)
        self.outbox.release(result.released)
        self.outbox.drop(result.dropped)
        return result

    # -- helpers -------------------------------------------------------------------------

    def _item(self, output: Output, key: str, marks: Sequence[str]) -> dict[str, Any]:
        values = output.model_dump(mode="python")
        values["traceparent"] = output.traceparent  # kept out of dumps, not out of the store
        for name in ("status", "notification_status", "slack_status"):
            values[name] = values[name].value
        t = output.tenant_id
        values.update(
            content_key=key,
            tenant_agent=f"{t}#{output.agent_id}",
            tenant_session=f"{t}#{output.session_id}",
            tenant_status=f"{t}#{output.status.value}",
        )
        if output.expires_at is not None:
            values.update(
                expiry_queue=EXPIRY_QUEUE, expiry_key=f"{_iso(output.expires_at)}#{output.id}"
            )
        item = {k: _attr(v) for k, v in values.items() if v is not None}
        item["write_marks"] = {"SS": list(marks)}
        return item

    def _release(self, ids: Sequence[str]) -> None:
        try:
            self.outbox.release(ids)
        except Exception:  # the write stands; the sweeper releases marked rows later
            log.warning("could not release held webhook events %s", ids, exc_info=True)

    def _drop(self, ids: Sequence[str]) -> None:
        try:
            self.outbox.drop(ids)
        except Exception:  # unmarked rows are dropped by the sweeper after HELD_GRACE
            log.warning("could not drop held webhook events %s", ids, exc_info=True)

    def _delete_content(self, key: str) -> None:
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        except Exception:  # an orphan object is garbage, never a dangling pointer
            log.warning("could not delete orphan content %s", key, exc_info=True)


def _recorded(output: Output, record: Recorder | None) -> Output:
    """DynamoDB cannot share our database's transaction: the record follows the write that
    won, in a transaction of its own (a crash in between loses the record, not the change;
    `cosmo audit verify` still finds every entry that was written intact)."""
    if record is not None:
        record(None, output)
    return output


def _typed(change: Revise) -> str:
    content_type = change.content_type
    if content_type.startswith("text/") and "charset" not in content_type:
        content_type += "; charset=utf-8"
    return content_type


def _revision_is(ex: _Expression, revision: int) -> str:
    """Items written before revisions existed have no `revision`: they are revision 1."""
    condition = ex.equals("revision", revision)
    if revision == 1:
        condition = f"(attribute_not_exists({ex.name('revision')}) OR {condition})"
    return condition


def _approvals_are(ex: _Expression, count: int) -> str:
    """Items written before N-of-M have no `approval_count`: they have none."""
    condition = ex.equals("approval_count", count)
    if count == 0:
        condition = f"(attribute_not_exists({ex.name('approval_count')}) OR {condition})"
    return condition


def _raise_lost(
    tenant_id: str,
    output_id: str,
    current: dict[str, Any],
    expected: OutputStatus,
    expected_revision: int | None,
) -> NoReturn:
    """Why a conditional write failed, from the item as it was (ALL_OLD)."""
    if not current or current.get("tenant_id", {}).get("S") != tenant_id:
        raise NotFound("output", output_id) from None
    winner = _output_of(current)
    if winner.status != expected:
        raise OutputAlreadyDecided(
            output_id, winner.status.value, winner.decided_by, winner.decided_at
        ) from None
    if expected_revision is not None and winner.revision != expected_revision:
        raise StaleRevision(output_id, expected_revision, winner.revision) from None
    raise ApprovalsMoved(output_id) from None


def _valid_id(output_id: str) -> bool:
    """DynamoDB refuses empty or huge keys; such an id names nothing."""
    return 0 < len(output_id) <= _MAX_ID
