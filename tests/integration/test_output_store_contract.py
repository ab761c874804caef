"""One contract, every `OutputStore`: sql on each database, aws in-process and over HTTP.

`aws-mock` runs boto3 against moto in-process (`mock_aws`); `aws-server` against a moto
server over real HTTP (presigned URLs are fetched for real there). The outbox lives in
our database for every store, so each test runs inside a rolled-back transaction.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import Engine, select

from core.db import Database, make_engine
from core.db.ids import new_id
from core.db.models import WebhookDeliveryRow
from core.db.pagination import encode_cursor
from core.errors import NotFound, OutputAlreadyDecided, StaleRevision, ValidationFailed
from core.outputs.blobs import BlobDirectory
from core.outputs.port import (
    ApprovalsMoved,
    NewEvent,
    NewOutput,
    NotificationStatus,
    Output,
    OutputEdit,
    OutputFilter,
    OutputStatus,
    OutputStore,
    Revise,
    SlackStatus,
    Transition,
)
from core.outputs.snapshot import content_fingerprint
from core.outputs.sql_store import SqlOutputStore
from core.outputs.stats import skill_stats
from core.webhooks.outbox import Outbox
from tests.conftest import BACKENDS
from tests.fakes.moto_server import CREDENTIALS, REGION, MotoServer

STORES = [f"sql-{b}" for b in BACKENDS] + ["aws-mock", "aws-server"]
BUCKET = "cosmo-outputs-test"
TABLE = "cosmo-outputs-test"
T1, T2 = "T-one", "T-two"


@dataclass
class Harness:
    kind: str
    store: OutputStore
    db: Database

    def new(self, tenant: str = T1, **fields: Any) -> Output:
        events = fields.pop("events", ())
        values: dict[str, Any] = {
            "id": new_id("out"),
            "tenant_id": tenant,
            "agent_id": "agt_a",
            "session_id": "ses_a",
            "skill": "create_task",
            "is_automatable": True,
            "arguments": {"title": "Call Maria", "n": 1.5, "tags": ["x", None], "nested": {}},
            "content": "# Call Maria\n\nAbout the invoice — é, ü, 日本.",
        }
        values.update(fields)
        return self.store.create(NewOutput(**values), events)

    def deliveries(self, output_id: str) -> list[WebhookDeliveryRow]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(WebhookDeliveryRow).where(WebhookDeliveryRow.output_id == output_id)
                )
            )


@pytest.fixture(scope="module")
def migrated(migrated_database_url_factory) -> Iterator[Callable[[str], Engine]]:
    """One migrated database per backend for this module, made on first use."""
    engines: dict[str, Engine] = {}

    def get(backend: str) -> Engine:
        if backend not in engines:
            engines[backend] = make_engine(migrated_database_url_factory(backend))
        return engines[backend]

    yield get
    for engine in engines.values():
        engine.dispose()


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def aws_store(s3: Any, dynamodb: Any, outbox: Outbox) -> OutputStore:
    from core.outputs.aws_setup import ensure_bucket_and_table
    from core.outputs.aws_store import AwsOutputStore

    ensure_bucket_and_table(s3, dynamodb, BUCKET, TABLE)
    return AwsOutputStore(s3, dynamodb, BUCKET, TABLE, outbox)


@pytest.fixture(params=STORES)
def h(request: pytest.FixtureRequest, tmp_path: Path, migrated, monkeypatch) -> Iterator[Harness]:
    kind: str = request.param
    backend = kind.removeprefix("sql-") if kind.startswith("sql-") else "sqlite"
    connection = migrated(backend).connect()
    outer = connection.begin()
    db = Database.bound_to(connection)
    outbox = Outbox(db)
    try:
        if kind.startswith("sql-"):
            yield Harness(kind, SqlOutputStore(db, BlobDirectory(tmp_path / "blobs"), outbox), db)
        elif kind == "aws-mock":
            import boto3
            from botocore.config import Config
            from moto import mock_aws

            monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
            with mock_aws():
                s3 = boto3.client(
                    "s3",
                    region_name=REGION,
                    config=Config(signature_version="s3v4"),
                    **CREDENTIALS,
                )
                dynamodb = boto3.client("dynamodb", region_name=REGION, **CREDENTIALS)
                yield Harness(kind, aws_store(s3, dynamodb, outbox), db)
        else:
            server: MotoServer = request.getfixturevalue("moto_server")
            server.reset()
            store = aws_store(server.client("s3"), server.client("dynamodb"), outbox)
            yield Harness(kind, store, db)
    finally:
        outer.rollback()
        connection.close()


def event(kind: str = "output.decided") -> NewEvent:
    return NewEvent(kind, "agt_a", "https://hooks.example.com/x", {"type": kind})


def approve(by: str = "U_ANN", at: datetime | None = None, **fields: Any) -> Transition:
    at = at or datetime.now(UTC)
    return Transition(
        OutputStatus.PENDING,
        OutputStatus.APPROVED,
        at,
        decided_by=by,
        decision="approve",
        via="slack",
        **fields,
    )


def reject(by: str = "U_BOB", reason: str = "wrong person") -> Transition:
    return Transition(
        OutputStatus.PENDING,
        OutputStatus.REJECTED,
        datetime.now(UTC),
        decided_by=by,
        decision="reject",
        reason=reason,
        via="api",
    )


def ids(outputs: list[Output]) -> list[str]:
    return [o.id for o in outputs]


# -- create and read back -------------------------------------------------------------------


def test_a_created_output_reads_back_the_same_everywhere(h: Harness) -> None:
    expires = datetime.now(UTC) + timedelta(hours=2)
    created = h.new(turn_id="trn_1", requested_by="U_REQ", expires_at=expires)

    assert created.status is OutputStatus.PENDING
    assert created.notification_status is NotificationStatus.PENDING
    assert created.arguments == {"title": "Call Maria", "n": 1.5, "tags": ["x", None], "nested": {}}
    content = "# Call Maria\n\nAbout the invoice — é, ü, 日本.".encode()
    assert created.content_size == len(content)
    assert created.preview.startswith("# Call Maria")
    assert created.expires_at == expires
    assert created.decided_by is None and created.decided_at is None

    fetched = h.store.get(T1, created.id)
    assert fetched.model_dump() == created.model_dump()
    assert h.store.read_content(T1, created.id) == content
    page = h.store.list(T1, OutputFilter(), cursor=None, limit=10)
    assert [o.model_dump() for o in page.items] == [created.model_dump()]
    assert page.next_cursor is None


def test_another_tenant_can_neither_see_nor_touch_an_output(h: Harness) -> None:
    mine = h.new(T1)

    for call in (
        lambda: h.store.get(T2, mine.id),
        lambda: h.store.read_content(T2, mine.id),
        lambda: h.store.transition(T2, mine.id, approve()),
        lambda: h.store.get(T1, "out_00000000000000000000000000"),
        lambda: h.store.get(T1, ""),
    ):
        with pytest.raises(NotFound):
            call()
    with contextlib.suppress(NotFound):  # never a URL to another tenant's content
        assert h.store.content_url(T2, mine.id, 60) is None
    assert h.store.list(T2, OutputFilter(), cursor=None, limit=10).items == []
    assert h.store.list(T2, OutputFilter(agent_id="agt_a"), cursor=None, limit=10).items == []
    h.store.set_notification_status(T2, mine.id, NotificationStatus.DELIVERED)
    h.store.set_slack_status(T2, mine.id, SlackStatus.FAILED)
    assert h.store.get(T1, mine.id).model_dump() == mine.model_dump()


# -- listing --------------------------------------------------------------------------------


def test_list_filters_by_agent_session_status_skill_and_time(h: Harness) -> None:
    made: list[Output] = []
    spec = [
        ("agt_a", "ses_1", "create_task"),
        ("agt_a", "ses_2", "send_email"),
        ("agt_b", "ses_3", "create_task"),
        ("agt_a", "ses_1", "send_email"),
        ("agt_b", "ses_3", "send_email"),
        ("agt_a", "ses_2", "create_task"),
    ]
    for agent, session, skill in spec:
        made.append(h.new(agent_id=agent, session_id=session, skill=skill))
        time.sleep(0.003)  # distinct created_at on every backend
    h.new(T2, agent_id="agt_a", session_id="ses_1")  # never listed for T1
    h.store.transition(T1, made[1].id, approve())
    h.store.transition(T1, made[4].id, reject())
    status = {o.id: OutputStatus.PENDING for o in made}
    status[made[1].id] = OutputStatus.APPROVED
    status[made[4].id] = OutputStatus.REJECTED
    middle = made[3].created_at

    def listed(**f: Any) -> list[str]:
        return ids(h.store.list(T1, OutputFilter(**f), cursor=None, limit=50).items)

    def expected(keep: Callable[[Output], bool]) -> list[str]:
        return [o.id for o in made if keep(o)]

    assert listed() == ids(made)
    assert listed(agent_id="agt_a") == expected(lambda o: o.agent_id == "agt_a")
    assert listed(session_id="ses_3") == expected(lambda o: o.session_id == "ses_3")
    assert listed(status=OutputStatus.PENDING) == expected(lambda o: status[o.id] == "pending")
    assert listed(status=OutputStatus.REJECTED) == [made[4].id]
    assert listed(skill="send_email") == expected(lambda o: o.skill == "send_email")
    assert listed(created_after=middle) == ids(made[3:])
    assert listed(created_before=middle) == ids(made[:3])
    assert listed(created_after=made[1].created_at, created_before=middle) == ids(made[1:3])
    assert listed(agent_id="agt_b", status=OutputStatus.PENDING) == [made[2].id]
    assert listed(session_id="ses_2", skill="create_task", created_after=middle) == [made[5].id]
    assert listed(agent_id="agt_a", created_before=made[0].created_at) == []
    assert listed(agent_id="agt_nobody") == []
    assert listed(created_after=datetime.now(UTC) + timedelta(days=1)) == []
    day = timedelta(days=1)
    assert listed(created_after=middle + day, created_before=middle - day) == []
    past_the_window = h.store.list(
        T1,
        OutputFilter(created_before=made[0].created_at + timedelta(microseconds=1)),
        cursor=encode_cursor(new_id("out")),
        limit=5,
    )
    assert past_the_window.items == [] and past_the_window.next_cursor is None


def test_pages_walk_every_output_once_in_creation_order(h: Harness) -> None:
    made = [h.new(agent_id="agt_a" if i % 3 else "agt_b") for i in range(8)]

    def flat(pages: list[list[str]]) -> list[str]:
        return list(itertools.chain.from_iterable(pages))

    def walk(f: OutputFilter, limit: int) -> list[list[str]]:
        pages, cursor = [], None
        while True:
            page = h.store.list(T1, f, cursor=cursor, limit=limit)
            pages.append(ids(page.items))
            if page.next_cursor is None:
                return pages
            cursor = page.next_cursor

    assert walk(OutputFilter(), 3) == [ids(made[0:3]), ids(made[3:6]), ids(made[6:8])]
    assert walk(OutputFilter(), 4) == [ids(made[0:4]), ids(made[4:8])]  # no empty last page
    agent_a = [o.id for o in made if o.agent_id == "agt_a"]
    assert flat(walk(OutputFilter(agent_id="agt_a"), 2)) == agent_a
    h.store.transition(T1, made[2].id, approve())
    pending = [o.id for o in made if o.id != made[2].id]
    assert flat(walk(OutputFilter(status=OutputStatus.PENDING), 3)) == pending
    after = made[4].created_at
    assert flat(walk(OutputFilter(created_after=after), 1)) == ids(made[4:])


@pytest.mark.parametrize(
    "cursor", ["garbage", "!!!", "b3V0X2Zvbw", "x" * 500, "\x00", "out_01m866hp3ka9e1kr5pxf32a8zt"]
)
def test_a_cursor_we_did_not_issue_is_a_validation_error(h: Harness, cursor: str) -> None:
    with pytest.raises(ValidationFailed):
        h.store.list(T1, OutputFilter(), cursor=cursor, limit=10)


@pytest.mark.parametrize("limit", [0, -1, 201])
def test_a_limit_out_of_range_is_a_validation_error(h: Harness, limit: int) -> None:
    with pytest.raises(ValidationFailed):
        h.store.list(T1, OutputFilter(), cursor=None, limit=limit)


# -- transitions ----------------------------------------------------------------------------


def test_the_first_decision_wins_and_the_second_is_told_who_decided(h: Harness) -> None:
    out = h.new()
    at = datetime.now(UTC)
    won = h.store.transition(T1, out.id, approve("U_ANN", at))

    assert won.status is OutputStatus.APPROVED
    assert (won.decided_by, won.decided_at, won.decision, won.decision_via) == (
        "U_ANN",
        at,
        "approve",
        "slack",
    )
    assert won.updated_at == at
    assert h.store.get(T1, out.id).model_dump() == won.model_dump()
    with pytest.raises(OutputAlreadyDecided) as lost:
        h.store.transition(T1, out.id, reject("U_BOB"))
    assert (lost.value.status, lost.value.decided_by, lost.value.decided_at) == (
        "approved",
        "U_ANN",
        at,
    )
    assert h.store.get(T1, out.id).status is OutputStatus.APPROVED


def test_a_transition_applies_only_from_the_expected_status(h: Harness) -> None:
    out = h.new()
    execute = Transition(
        OutputStatus.APPROVED,
        OutputStatus.EXECUTED,
        datetime.now(UTC),
        execution_result={"task": {"id": 7, "ok": True}},
        executed=True,
    )
    with pytest.raises(OutputAlreadyDecided) as early:
        h.store.transition(T1, out.id, execute)  # still pending: nothing to execute
    assert (early.value.status, early.value.decided_by, early.value.decided_at) == (
        "pending",
        None,
        None,
    )

    decided = h.store.transition(T1, out.id, approve("U_ANN"))
    failed = h.store.transition(
        T1,
        out.id,
        Transition(
            OutputStatus.APPROVED,
            OutputStatus.EXECUTION_FAILED,
            datetime.now(UTC),
            execution_error="HTTP 502 from the CRM",
            executed=True,
        ),
    )
    assert failed.status is OutputStatus.EXECUTION_FAILED
    assert failed.execution_error == "HTTP 502 from the CRM"
    # A retry: execution_failed -> approved; fields left None keep their values.
    retry = Transition(OutputStatus.EXECUTION_FAILED, OutputStatus.APPROVED, datetime.now(UTC))
    again = h.store.transition(T1, out.id, retry)
    assert again.status is OutputStatus.APPROVED
    assert (again.decided_by, again.decided_at) == (decided.decided_by, decided.decided_at)
    done = h.store.transition(T1, out.id, execute)
    assert done.status is OutputStatus.EXECUTED
    assert done.execution_result == {"task": {"id": 7, "ok": True}}
    assert done.executed_at == execute.at
    assert done.decided_by == "U_ANN" and done.decision == "approve"
    with pytest.raises(OutputAlreadyDecided):
        h.store.transition(T1, out.id, execute)  # exactly once


def test_a_rejection_records_its_reason(h: Harness) -> None:
    out = h.new()
    rejected = h.store.transition(T1, out.id, reject("U_BOB", "not this customer"))
    assert rejected.status is OutputStatus.REJECTED
    assert (rejected.decided_by, rejected.decision, rejected.decision_reason) == (
        "U_BOB",
        "reject",
        "not this customer",
    )
    assert rejected.decision_via == "api"


# -- events ---------------------------------------------------------------------------------


def test_events_of_a_winning_write_are_pending_and_of_a_losing_one_gone(h: Harness) -> None:
    out = h.new(events=[event("output.created")])
    created_rows = h.deliveries(out.id)
    assert [(r.event_type, r.status) for r in created_rows] == [("output.created", "pending")]

    h.store.transition(T1, out.id, approve(), [event(), event("output.audit")])
    with pytest.raises(OutputAlreadyDecided):
        h.store.transition(T1, out.id, reject(), [event("output.rejected")])
    with pytest.raises(NotFound):
        h.store.transition(T2, out.id, approve(), [event("output.foreign")])

    rows = h.deliveries(out.id)
    assert sorted((r.event_type, r.status, r.tenant_id) for r in rows) == [
        ("output.audit", "pending", T1),
        ("output.created", "pending", T1),
        ("output.decided", "pending", T1),
    ]
    assert rows[0].url == "https://hooks.example.com/x"


def test_held_check_confirms_the_events_of_every_write_that_won(h: Harness) -> None:
    out = h.new(events=[event("output.created")])
    h.store.transition(T1, out.id, approve(), [event()])

    rows = h.deliveries(out.id)

    assert len(rows) == 2
    assert [h.store.held_check(r) for r in rows] == [True, True]


def test_held_check_never_releases_an_event_whose_write_did_not_happen(h: Harness) -> None:
    out = h.new()
    # What a crash between holding an event and making its write leaves behind.
    Outbox(h.db).hold([event()], tenant_id=T1, output_id=out.id)
    (orphan,) = h.deliveries(out.id)
    much_later = datetime.now(UTC) + timedelta(days=1)

    assert orphan.status == "held"
    assert h.store.held_check(orphan) is None  # its write could still be in flight
    assert h.store.held_check(orphan, now=much_later) is not True


# -- side fields ----------------------------------------------------------------------------


def test_notification_status_is_recorded(h: Harness) -> None:
    out = h.new()
    h.store.set_notification_status(T1, out.id, NotificationStatus.DELIVERED)
    got = h.store.get(T1, out.id)
    assert got.notification_status is NotificationStatus.DELIVERED
    assert got.status is OutputStatus.PENDING
    h.store.set_notification_status(T1, out.id, NotificationStatus.FAILED)
    assert h.store.get(T1, out.id).notification_status is NotificationStatus.FAILED
    h.store.set_notification_status(T1, "out_00000000000000000000000000", NotificationStatus.FAILED)
    with pytest.raises(NotFound):
        h.store.get(T1, "out_00000000000000000000000000")  # nothing was created by it


def test_due_for_expiry_lists_pending_outputs_past_their_expiry_soonest_first(
    h: Harness,
) -> None:
    now = datetime.now(UTC)
    late = h.new(expires_at=now - timedelta(minutes=1))
    later_other_tenant = h.new(T2, expires_at=now - timedelta(minutes=5))
    exactly_now = h.new(expires_at=now)
    h.new(expires_at=now + timedelta(minutes=1))
    h.new()
    decided = h.new(expires_at=now - timedelta(minutes=10))
    h.store.transition(T1, decided.id, approve())

    due = h.store.due_for_expiry(now)
    assert ids(due) == [later_other_tenant.id, late.id, exactly_now.id]
    assert ids(h.store.due_for_expiry(now, limit=1)) == [later_other_tenant.id]
    assert h.store.due_for_expiry(now - timedelta(hours=1)) == []
    expire = Transition(OutputStatus.PENDING, OutputStatus.EXPIRED, now)
    h.store.transition(T2, later_other_tenant.id, expire)
    assert ids(h.store.due_for_expiry(now)) == [late.id, exactly_now.id]


# -- content URLs ---------------------------------------------------------------------------


def test_content_url_is_presigned_for_s3_and_none_for_sql(h: Harness) -> None:
    out = h.new(content="hello, **world**")
    url = h.store.content_url(T1, out.id, 120)
    if h.kind.startswith("sql-"):
        assert url is None
        return
    assert url is not None
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["120"]
    assert "X-Amz-Signature" in query
    assert T1 in urlsplit(url).path and out.id in urlsplit(url).path  # tenant-prefixed key
    if h.kind == "aws-server":
        reply = httpx.get(url)
        assert reply.status_code == 200
        assert reply.content == b"hello, **world**"
        assert reply.headers["content-type"].startswith("text/markdown")


# -- revisions --------------------------------------------------------------------------

SNAPSHOT = {
    "name": "create_task",
    "version": 3,
    "kind": "action",
    "is_automatable": True,
    "input_schema": {"type": "object", "properties": {"title": {"type": "string"}}},
    "executor": {"type": "http", "method": "POST", "url": "https://crm.example/tasks"},
}


def revise(h: Harness, output: Output, title: str, *, expected: int | None = None) -> Output:
    arguments = {"title": title}
    content = f"# {title}"
    revision = expected if expected is not None else output.revision
    edit = OutputEdit(
        revision=revision + 1,
        edited_by="U0EDIT",
        identity="verified",
        via="slack",
        edited_at=datetime.now(UTC),
        changes=[{"field": "title", "old": output.arguments.get("title"), "new": title}],
    )
    change = Revise(
        expected_revision=revision,
        arguments=arguments,
        content=content,
        content_type="text/markdown",
        content_sha256=content_fingerprint(SNAPSHOT, arguments, content),
        edit=edit,
    )
    return h.store.revise(output.tenant_id, output.id, change)


def test_an_output_keeps_its_skill_snapshot_and_fingerprints_what_was_shown(h: Harness) -> None:
    created = h.new(skill_snapshot=SNAPSHOT, arguments={"title": "A"}, content="# A")

    got = h.store.get(T1, created.id)

    assert got.revision == 1
    assert got.skill_snapshot == SNAPSHOT
    assert got.content_sha256 == content_fingerprint(SNAPSHOT, {"title": "A"}, "# A")


def test_an_edit_makes_the_next_revision_with_new_arguments_and_content(h: Harness) -> None:
    created = h.new(skill_snapshot=SNAPSHOT, arguments={"title": "Call Globx"}, content="x")

    edited = revise(h, created, "Call Globex")

    got = h.store.get(T1, created.id)
    assert edited.revision == got.revision == 2
    assert got.arguments == {"title": "Call Globex"}
    assert h.store.read_content(T1, created.id) == b"# Call Globex"
    assert got.content_sha256 == content_fingerprint(SNAPSHOT, got.arguments, "# Call Globex")
    assert got.skill_snapshot == SNAPSHOT
    assert got.edits is not None and [e.revision for e in got.edits] == [2]
    assert got.edits[0].changes == [{"field": "title", "old": "Call Globx", "new": "Call Globex"}]
    again = revise(h, got, "Call Globex Inc")
    assert again.revision == 3 and [e.revision for e in again.edits or []] == [2, 3]


def test_an_edit_from_a_stale_revision_is_refused_and_changes_nothing(h: Harness) -> None:
    created = h.new(skill_snapshot=SNAPSHOT, arguments={"title": "A"}, content="# A")
    revise(h, created, "B")

    with pytest.raises(StaleRevision) as refused:
        revise(h, created, "C", expected=1)

    assert (refused.value.seen, refused.value.current) == (1, 2)
    got = h.store.get(T1, created.id)
    assert got.arguments == {"title": "B"} and got.revision == 2
    assert h.store.read_content(T1, created.id) == b"# B"


def test_a_decided_output_cannot_be_edited(h: Harness) -> None:
    created = h.new(skill_snapshot=SNAPSHOT, arguments={"title": "A"}, content="# A")
    h.store.transition(T1, created.id, reject("U1"))

    with pytest.raises(OutputAlreadyDecided):
        revise(h, created, "B")
    assert h.store.get(T1, created.id).arguments == {"title": "A"}


def test_a_decision_naming_an_old_revision_is_refused_as_stale(h: Harness) -> None:
    created = h.new(skill_snapshot=SNAPSHOT, arguments={"title": "A"}, content="# A")
    revise(h, created, "B")
    change = Transition(
        expected=OutputStatus.PENDING,
        to=OutputStatus.APPROVED,
        at=datetime.now(UTC),
        decided_by="U1",
        decision="approved",
        expected_revision=1,
        identity="verified",
    )

    with pytest.raises(StaleRevision):
        h.store.transition(T1, created.id, change)
    assert h.store.get(T1, created.id).status == OutputStatus.PENDING

    decided = h.store.transition(T1, created.id, replace(change, expected_revision=2))
    assert decided.status == OutputStatus.APPROVED
    assert (decided.decision_revision, decided.decision_identity) == (2, "verified")


def test_another_tenant_cannot_edit_an_output(h: Harness) -> None:
    created = h.new(skill_snapshot=SNAPSHOT, arguments={"title": "A"}, content="# A")
    foreign = created.model_copy(update={"tenant_id": T2})

    with pytest.raises(NotFound):
        revise(h, foreign, "B")
    assert h.store.get(T1, created.id).arguments == {"title": "A"}


# -- where the approval went, and per-skill figures ------------------------------------------


def test_slack_status_is_kept_listed_and_unrouted_pending_ones_are_counted(h: Harness) -> None:
    posted, unrouted, decided = h.new(), h.new(), h.new()
    assert posted.slack_status == SlackStatus.PENDING
    h.store.set_slack_status(T1, posted.id, SlackStatus.POSTED)
    h.store.set_slack_status(T1, unrouted.id, SlackStatus.UNROUTED)
    h.store.set_slack_status(T1, decided.id, SlackStatus.UNROUTED)
    h.store.set_slack_status(T2, posted.id, SlackStatus.FAILED)  # another tenant's: no effect
    h.store.transition(T1, decided.id, approve())

    assert h.store.get(T1, posted.id).slack_status == SlackStatus.POSTED
    only = OutputFilter(slack_status=SlackStatus.UNROUTED)
    assert ids(h.store.list(T1, only, cursor=None, limit=10).items) == [unrouted.id, decided.id]
    assert h.store.count_unrouted() == 1  # decided ones are no longer waiting for anyone


def test_skill_figures_count_each_outcome_and_the_median_time_to_decide(h: Harness) -> None:
    created = [h.new(skill_snapshot=SNAPSHOT, arguments={"title": "A"}) for _ in range(6)]
    unchanged, edited, rejected, expired, _pending, also = created
    h.store.transition(T1, unchanged.id, approve(at=unchanged.created_at + timedelta(minutes=10)))
    h.store.transition(T1, also.id, approve(at=also.created_at + timedelta(minutes=30)))
    edited = revise(h, edited, "B")
    h.store.transition(T1, edited.id, approve(at=edited.created_at + timedelta(minutes=20)))
    h.store.transition(T1, rejected.id, reject())
    h.store.transition(
        T1, expired.id, Transition(OutputStatus.PENDING, OutputStatus.EXPIRED, datetime.now(UTC))
    )
    h.new(tenant=T2)  # another tenant's
    h.new(skill="other_skill")

    figures = skill_stats(h.store, T1, "create_task", datetime.now(UTC) + timedelta(seconds=1))

    assert (figures.proposed, figures.pending) == (6, 1)
    assert (figures.approved_unchanged, figures.approved_with_edits) == (2, 1)
    assert (figures.rejected, figures.expired, figures.window_days) == (1, 1, 30)
    # 10, 20, 30 minutes and the rejection (seconds): the median is between 10 and 20.
    assert figures.median_seconds_to_decision == pytest.approx(15 * 60, abs=5)
    empty = skill_stats(h.store, T1, "create_task", datetime.now(UTC) - timedelta(days=40))
    assert (empty.proposed, empty.median_seconds_to_decision) == (0, None)


def _approval(by: str, revision: int = 1) -> dict[str, Any]:
    return {
        "by": by,
        "identity": "verified",
        "via": "slack",
        "revision": revision,
        "at": datetime.now(UTC).isoformat(),
        "grant_id": None,
    }


def _record(h: Harness, output: Output, by: str, counted: int, to=OutputStatus.PENDING) -> Output:
    current = [a.model_dump(mode="json") for a in output.approvals or ()]
    change = Transition(
        OutputStatus.PENDING,
        to,
        datetime.now(UTC),
        decided_by=by if to is not OutputStatus.PENDING else None,
        expected_revision=output.revision,
        expected_approvals=counted,
        approvals=[*current, _approval(by, output.revision)],
    )
    return h.store.transition(output.tenant_id, output.id, change)


def test_approvals_are_recorded_one_conditional_write_at_a_time(h: Harness) -> None:
    policy = {"required_approvals": 2, "on_expiry": "reject", "escalate_to": []}
    created = h.new(approval_policy=policy)
    assert (created.approval_count, created.approvals, created.required_approvals) == (0, None, 2)

    first = _record(h, created, "U0A", counted=0)

    assert first.status is OutputStatus.PENDING
    assert first.approval_count == 1
    assert [a.by for a in first.approvals or ()] == ["U0A"]
    assert first.decision_revision is None  # recorded, not decided
    # A second writer that counted 0 as well lost: it must count again.
    with pytest.raises(ApprovalsMoved):
        _record(h, created, "U0B", counted=0)
    decided = _record(h, first, "U0B", counted=1, to=OutputStatus.APPROVED)
    assert (decided.status, decided.approval_count, decided.decided_by) == (
        OutputStatus.APPROVED,
        2,
        "U0B",
    )
    again = h.store.get(T1, created.id)
    assert [a.by for a in again.approvals or ()] == ["U0A", "U0B"]
    assert again.approval_policy == policy


def test_an_edit_resets_the_approval_count_but_keeps_the_history(h: Harness) -> None:
    created = h.new(skill_snapshot=SNAPSHOT, arguments={"title": "A"}, content="# A")
    first = _record(h, created, "U0A", counted=0)

    edited = revise(h, first, "B")

    assert (edited.revision, edited.approval_count) == (2, 0)
    assert [(a.by, a.revision) for a in edited.approvals or ()] == [("U0A", 1)]
    assert edited.current_approvals() == []


def test_an_escalation_moves_the_expiry_once(h: Harness) -> None:
    soon = datetime.now(UTC) - timedelta(minutes=1)
    created = h.new(expires_at=soon)
    later = datetime.now(UTC) + timedelta(hours=1)
    escalate = Transition(
        OutputStatus.PENDING, OutputStatus.PENDING, datetime.now(UTC), escalate_until=later
    )

    escalated = h.store.transition(T1, created.id, escalate)

    assert escalated.status is OutputStatus.PENDING
    assert escalated.escalated_at is not None
    assert escalated.expires_at == later
    with pytest.raises(ApprovalsMoved):
        h.store.transition(T1, created.id, escalate)
    due = [o.id for o in h.store.due_for_expiry(datetime.now(UTC))]
    assert created.id not in due
    due_later = [o.id for o in h.store.due_for_expiry(later + timedelta(seconds=1), limit=1000)]
    if h.kind.startswith("sql"):  # the index is eventually consistent on DynamoDB
        assert created.id in due_later
