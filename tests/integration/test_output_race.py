"""200 reviewers decide ONE output at the same moment: one wins, 199 are told who did.

Straight at the `OutputStore` (the REST/callback version is tests/e2e/test_decision_race.py),
with a held or in-transaction webhook event per attempt. The aws store runs against a
single-threaded moto server: moto's in-process and threaded modes are not linearizable
for conditional writes, so they would blame our code for moto's own races.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import Database
from core.db.ids import new_id
from core.db.models import WebhookDeliveryRow
from core.errors import OutputAlreadyDecided
from core.outputs.blobs import BlobDirectory
from core.outputs.port import NewEvent, NewOutput, Output, OutputStatus, OutputStore, Transition
from core.outputs.sql_store import SqlOutputStore
from core.webhooks.outbox import Outbox
from tests.conftest import BACKENDS
from tests.fakes.moto_server import MotoServer

RACERS = 200
TENANT = "T-race"


@pytest.fixture(params=[f"sql-{b}" for b in BACKENDS] + ["aws-server"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_database_url_factory
) -> Iterator[tuple[OutputStore, Database]]:
    kind: str = request.param
    url = migrated_database_url_factory(kind.removeprefix("sql-") if "sql" in kind else "sqlite")
    db = Database.from_url(url)  # real, separate connections: they race for real
    try:
        if kind.startswith("sql-"):
            yield SqlOutputStore(db, BlobDirectory(tmp_path / "blobs"), Outbox(db)), db
        else:
            from core.outputs.aws_setup import ensure_bucket_and_table
            from core.outputs.aws_store import AwsOutputStore

            with MotoServer() as server:
                s3 = server.client("s3")
                dynamodb = server.client("dynamodb", max_pool_connections=RACERS)
                ensure_bucket_and_table(s3, dynamodb, "cosmo-race", "cosmo-race")
                yield AwsOutputStore(s3, dynamodb, "cosmo-race", "cosmo-race", Outbox(db)), db
    finally:
        db.dispose()


def test_two_hundred_racing_decisions_have_one_winner_and_199_informed_losers(store) -> None:
    outputs, db = store
    out = outputs.create(
        NewOutput(
            id=new_id("out"),
            tenant_id=TENANT,
            agent_id="agt_a",
            session_id="ses_a",
            skill="create_task",
            is_automatable=True,
            arguments={},
            content="do it",
        )
    )
    barrier = threading.Barrier(RACERS)
    won: list[Output] = []
    lost: list[OutputAlreadyDecided] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def reviewer(i: int) -> None:
        to = OutputStatus.APPROVED if i % 2 else OutputStatus.REJECTED
        change = Transition(OutputStatus.PENDING, to, datetime.now(UTC), decided_by=f"U{i:04d}")
        event = NewEvent("output.decided", "agt_a", "https://hooks.example.com/x", {"by": i})
        barrier.wait()
        try:
            result = outputs.transition(TENANT, out.id, change, [event])
        except OutputAlreadyDecided as exc:
            with lock:
                lost.append(exc)
        except BaseException as exc:  # pragma: no cover - reported below
            with lock:
                errors.append(exc)
        else:
            with lock:
                won.append(result)

    threads = [threading.Thread(target=reviewer, args=(i,)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(won) == 1 and len(lost) == RACERS - 1
    winner = won[0]
    told = {(e.status, e.decided_by, e.decided_at) for e in lost}
    assert told == {(winner.status.value, winner.decided_by, winner.decided_at)}
    final = outputs.get(TENANT, out.id)
    assert (final.status, final.decided_by) == (winner.status, winner.decided_by)
    with db.session() as s:
        events = list(
            s.scalars(select(WebhookDeliveryRow).where(WebhookDeliveryRow.output_id == out.id))
        )
    assert [(e.status, e.payload["by"]) for e in events] == [
        ("pending", int(winner.decided_by.removeprefix("U")))  # type: ignore[union-attr]
    ]
