"""What only the aws store has to get right: held events, ambiguous writes, setup, wiring.

The shared behaviour is in `test_output_store_contract.py`; here boto3 talks to moto
in-process, with a thin wrapper around the DynamoDB client where a test needs a write to
time out after landing, or botocore to retry one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from core.db import Database, make_engine
from core.db.ids import new_id
from core.db.models import WebhookDeliveryRow
from core.errors import Conflict, OutputAlreadyDecided, ServiceUnavailable
from core.outputs.aws_setup import ensure_bucket_and_table
from core.outputs.aws_store import HELD_GRACE, INDEXES, AwsOutputStore
from core.outputs.port import NewEvent, NewOutput, OutputFilter, OutputStatus, Transition
from core.webhooks.outbox import Outbox
from core.wiring import build_output_store, disabled_integrations
from tests.conftest import make_settings
from tests.fakes.moto_server import CREDENTIALS, REGION, MotoServer

BUCKET = TABLE = "cosmo-aws-test"
T = "T-one"


@pytest.fixture(scope="module")
def engine(migrated_database_url_factory) -> Iterator[Engine]:
    url = migrated_database_url_factory("sqlite")
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: Engine) -> Iterator[Database]:
    connection = engine.connect()
    outer = connection.begin()
    yield Database.bound_to(connection)
    outer.rollback()
    connection.close()


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    import boto3
    from botocore.config import Config
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client(
            "s3", region_name=REGION, config=Config(signature_version="s3v4"), **CREDENTIALS
        )
        dynamodb = boto3.client("dynamodb", region_name=REGION, **CREDENTIALS)
        ensure_bucket_and_table(s3, dynamodb, BUCKET, TABLE)
        yield s3, dynamodb


class Flaky:
    """The real client, except for the calls a test scripts."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[str] = []
        self.script: dict[str, str] = {}

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.real, name)
        if not callable(real):
            return real

        def call(**kwargs: Any) -> Any:
            self.calls.append(name)
            how = self.script.pop(name, None)
            if how == "timeout-before":
                raise ReadTimeoutError(endpoint_url="http://dynamodb")
            result = real(**kwargs)
            if how == "timeout-after":
                raise ReadTimeoutError(endpoint_url="http://dynamodb")
            if how == "retried":  # botocore sends it again: the reply to the first was lost
                return real(**kwargs)
            return result

        return call


def store_with(clients: tuple[Any, Any], db: Database) -> tuple[AwsOutputStore, Flaky]:
    s3, dynamodb = clients
    flaky = Flaky(dynamodb)
    return AwsOutputStore(s3, flaky, BUCKET, TABLE, Outbox(db)), flaky


def new_output(**fields: Any) -> NewOutput:
    values: dict[str, Any] = dict(
        id=new_id("out"),
        tenant_id=T,
        agent_id="agt_a",
        session_id="ses_a",
        skill="create_task",
        is_automatable=True,
        arguments={"title": "x"},
        content="Call Maria",
    )
    values.update(fields)
    return NewOutput(**values)


EVENT = NewEvent("output.created", "agt_a", "https://hooks.example.com/x", {"k": 1})
APPROVE = Transition(
    OutputStatus.PENDING, OutputStatus.APPROVED, datetime.now(UTC), decided_by="U_ANN"
)


def rows(db: Database) -> list[WebhookDeliveryRow]:
    with db.session() as s:
        return list(s.scalars(select(WebhookDeliveryRow).order_by(WebhookDeliveryRow.id)))


def objects(s3: Any) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_a_metadata_write_that_failed_leaves_no_content_and_no_event(clients, db) -> None:
    s3, dynamodb = clients
    store, _ = store_with(clients, db)
    dynamodb.delete_table(TableName=TABLE)  # every DynamoDB write now fails with a 400

    with pytest.raises(Exception, match="ResourceNotFound"):
        store.create(new_output(), [EVENT])
    assert objects(s3) == []
    assert rows(db) == []


def test_a_write_that_timed_out_after_landing_keeps_its_content_and_the_sweeper_releases(
    clients, db
) -> None:
    store, flaky = store_with(clients, db)
    flaky.script["put_item"] = "timeout-after"
    new = new_output()

    with pytest.raises(ReadTimeoutError):
        store.create(new, [EVENT])
    assert store.read_content(T, new.id) == b"Call Maria"  # metadata points at content
    assert [r.status for r in rows(db)] == ["held"]  # not sent before we know

    result = store.resolve_held(rows(db))
    assert (len(result.released), result.dropped, result.waiting) == (1, [], [])
    assert [r.status for r in rows(db)] == ["pending"]


def test_a_write_that_never_landed_has_its_held_event_dropped_after_the_grace(clients, db) -> None:
    store, flaky = store_with(clients, db)
    out = store.create(new_output())
    flaky.script["update_item"] = "timeout-before"

    with pytest.raises(ReadTimeoutError):
        store.transition(T, out.id, APPROVE, [EVENT])
    assert store.get(T, out.id).status is OutputStatus.PENDING
    held = rows(db)
    assert [r.status for r in held] == ["held"]

    young = store.resolve_held(held)  # it could still be in flight: wait
    assert (young.released, young.dropped, len(young.waiting)) == ([], [], 1)
    old = store.resolve_held(held, now=datetime.now(UTC) + HELD_GRACE + timedelta(seconds=1))
    assert (old.released, len(old.dropped)) == ([], 1)
    assert rows(db) == []


def test_a_retried_write_that_had_landed_counts_as_won(clients, db) -> None:
    store, flaky = store_with(clients, db)
    flaky.script["put_item"] = "retried"
    out = store.create(new_output(), [EVENT])
    flaky.script["update_item"] = "retried"

    decided = store.transition(T, out.id, APPROVE, [EVENT])

    assert decided.status is OutputStatus.APPROVED and decided.decided_by == "U_ANN"
    assert [r.status for r in rows(db)] == ["pending", "pending"]
    with pytest.raises(OutputAlreadyDecided):  # without our marks, a failed check is a loss
        store.transition(T, out.id, APPROVE)


def test_the_loser_learns_the_winner_from_the_failed_write_alone(clients, db) -> None:
    store, flaky = store_with(clients, db)
    out = store.create(new_output())
    store.transition(T, out.id, APPROVE)
    flaky.calls.clear()

    with pytest.raises(OutputAlreadyDecided) as lost:
        store.transition(T, out.id, APPROVE)

    assert lost.value.decided_by == "U_ANN"
    assert flaky.calls == ["update_item"]  # no read before or after


def test_setup_is_idempotent_and_adds_missing_indexes(clients) -> None:
    s3, dynamodb = clients
    again = ensure_bucket_and_table(s3, dynamodb, BUCKET, TABLE)
    assert (again.bucket_created, again.table_created, again.indexes_created) == (
        False,
        False,
        [],
    )
    dynamodb.create_table(
        TableName="old-layout",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    upgraded = ensure_bucket_and_table(s3, dynamodb, "other-bucket", "old-layout")
    assert upgraded.bucket_created and not upgraded.table_created
    assert upgraded.indexes_created == list(INDEXES)
    table = dynamodb.describe_table(TableName="old-layout")["Table"]
    assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == set(INDEXES)


def test_wiring_builds_the_aws_store_only_with_bucket_and_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db: Database
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    half = make_settings(tmp_path, OUTPUT_STORE="aws", S3_BUCKET="b")
    with pytest.raises(ServiceUnavailable, match="DYNAMODB_TABLE"):
        build_output_store(half, db)
    assert "DYNAMODB_TABLE" in disabled_integrations(half)["aws"]

    full = make_settings(
        tmp_path,
        OUTPUT_STORE="aws",
        S3_BUCKET="b",
        DYNAMODB_TABLE="t",
        AWS_ENDPOINT_URL="http://127.0.0.1:4566",
    )
    store = build_output_store(full, db)
    assert isinstance(store, AwsOutputStore)
    assert store.s3.meta.endpoint_url == "http://127.0.0.1:4566"
    assert store.dynamodb.meta.endpoint_url == "http://127.0.0.1:4566"
    assert store.s3.meta.config.signature_version == "s3v4"
    assert "aws" not in disabled_integrations(full)
    assert build_output_store(make_settings(tmp_path), db).name == "sql"


def test_cosmo_aws_init_creates_then_finds_through_the_endpoint(tmp_path: Path) -> None:
    from bot.cli.main import app

    with MotoServer() as server:
        env = {
            "COSMO_DATA_DIR": str(tmp_path),
            "S3_BUCKET": "cosmo-cli-test",
            "DYNAMODB_TABLE": "cosmo-cli-test",
            "AWS_ENDPOINT_URL": server.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }
        first = CliRunner().invoke(app, ["aws", "init"], env=env)
        second = CliRunner().invoke(app, ["aws", "init"], env=env)
        tables = server.client("dynamodb").list_tables()["TableNames"]

    assert first.exit_code == 0, first.output
    assert "bucket cosmo-cli-test: created" in first.output
    assert "table cosmo-cli-test: created" in first.output
    assert "bucket cosmo-cli-test: found" in second.output
    assert "table cosmo-cli-test: found" in second.output
    assert tables == ["cosmo-cli-test"]
    missing = CliRunner().invoke(app, ["aws", "init"], env={**env, "S3_BUCKET": ""})
    assert missing.exit_code == 2


def test_a_decided_output_leaves_the_sparse_expiry_index(clients, db) -> None:
    _, dynamodb = clients
    store, _ = store_with(clients, db)
    soon = datetime.now(UTC) + timedelta(hours=1)
    out = store.create(new_output(expires_at=soon))
    never = store.create(new_output())

    def indexed() -> list[str]:
        reply = dynamodb.scan(TableName=TABLE, IndexName="by_expiry")
        return [i["id"]["S"] for i in reply["Items"]]

    assert indexed() == [out.id]  # `never` has no expiry: not in the index at all
    store.transition(T, out.id, APPROVE)
    assert indexed() == []
    assert never.id not in indexed()


def test_creating_an_existing_id_again_is_a_conflict_that_leaves_the_first_intact(
    clients, db
) -> None:
    s3, _ = clients
    store, _ = store_with(clients, db)
    first = store.create(new_output(content="first"))

    with pytest.raises(Conflict):
        store.create(new_output(id=first.id, content="second"), [EVENT])

    assert store.read_content(T, first.id) == b"first"
    assert len(objects(s3)) == 1
    assert rows(db) == []


def test_held_check_answers_the_webhook_workers_sweep(clients, db) -> None:
    from core.webhooks.deliveries import HeldCheck

    store, flaky = store_with(clients, db)
    check: HeldCheck = store.held_check
    out = store.create(new_output())
    flaky.script["update_item"] = "timeout-after"  # landed, then the process "died"
    with pytest.raises(ReadTimeoutError):
        store.transition(T, out.id, APPROVE, [EVENT])
    (landed,) = rows(db)
    flaky.script["update_item"] = "timeout-before"  # never landed
    with pytest.raises(ReadTimeoutError):
        store.transition(T, out.id, APPROVE, [EVENT])
    (lost,) = [r for r in rows(db) if r.id != landed.id]
    later = datetime.now(UTC) + HELD_GRACE + timedelta(seconds=1)

    assert check(landed) is True
    assert check(lost) is None  # could still be in flight
    assert store.held_check(lost, now=later) is False


def test_a_filtered_list_reads_on_past_items_the_filter_drops(clients, db) -> None:
    store, flaky = store_with(clients, db)
    store.filtered_read = 2  # tiny reads: the filter empties most of them
    made = [store.create(new_output(skill="send" if i % 4 == 0 else "other")) for i in range(13)]
    wanted = [o.id for o in made if o.skill == "send"]

    seen, cursor, pages = [], None, 0
    while True:
        page = store.list(T, OutputFilter(skill="send"), cursor=cursor, limit=2)
        seen += [o.id for o in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == wanted and pages == 2
    assert flaky.calls.count("query") > pages  # several reads behind each page


def test_an_empty_time_window_sends_no_inverted_between(clients, db) -> None:
    # DynamoDB answers ValidationException to `BETWEEN :hi AND :lo` (moto does not check).
    store, flaky = store_with(clients, db)
    now, day = datetime.now(UTC), timedelta(days=1)
    flaky.calls.clear()

    page = store.list(
        T, OutputFilter(created_after=now + day, created_before=now), cursor=None, limit=5
    )

    assert page.items == [] and flaky.calls == []
