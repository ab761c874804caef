"""Slack turns on the job layer, in process: what the ack path does (one insert, nothing
else), redeliveries, and a turn that outlives its lease (the heartbeat keeps it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event, func, select

from core.db.models import JobRow, TurnRow
from core.jobs import JobQueue, JobWorker
from tests.conftest import BACKENDS
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_USER_ID, CHANNEL_ID, USER_ID
from tests.slack_support import SlackApp, slack_app

CONFIG = """
apiVersion: cosmo/v1
personas: [{name: helper, role: Assistant}]
agents: [{name: helper-bot, persona: helper}]
"""
WRITES = ("INSERT", "UPDATE", "DELETE")


@pytest.fixture
def app(real_db, tmp_path) -> Iterator[SlackApp]:
    with slack_app(real_db, tmp_path, CONFIG) as running:
        yield running


def thread(app: SlackApp, ts: str) -> list[Any]:
    return [m for m in app.slack.messages_in(CHANNEL_ID, thread_ts=ts) if m.ts != ts]


class WriteTransactions:
    """Counts committed transactions that wrote something, on every engine of this
    process (the ack path's insert has an engine of its own, `Database.prompt`), and the
    writes run on psycopg's asyncio connections (`Database.prompt_async`, autocommit: one
    transaction per statement)."""

    def __init__(self) -> None:
        self.engine = Engine
        self.count = 0
        self._execute = psycopg.AsyncCursor.execute

    def __enter__(self) -> WriteTransactions:
        event.listen(self.engine, "before_cursor_execute", self._executed)
        event.listen(self.engine, "commit", self._committed)
        event.listen(self.engine, "rollback", self._rolled_back)
        execute = self._execute

        async def counted(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            result = await execute(cursor, query, *args, **kwargs)
            if cursor.connection.autocommit and _is_write(str(query)):
                self.count += 1
            return result

        setattr(psycopg.AsyncCursor, "execute", counted)  # noqa: B010
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(psycopg.AsyncCursor, "execute", self._execute)  # noqa: B010
        event.remove(self.engine, "before_cursor_execute", self._executed)
        event.remove(self.engine, "commit", self._committed)
        event.remove(self.engine, "rollback", self._rolled_back)

    def _executed(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if _is_write(statement):
            conn.info["cosmo_test_wrote"] = True

    def _committed(self, conn: Any) -> None:
        if conn.info.pop("cosmo_test_wrote", False):
            self.count += 1

    def _rolled_back(self, conn: Any) -> None:
        conn.info.pop("cosmo_test_wrote", None)


def _is_write(statement: str) -> bool:
    return statement.lstrip().split(None, 1)[0].upper() in WRITES


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_the_ack_path_is_one_write_transaction_and_no_web_api_call(app):
    # The first request of a process asks Slack who the bot is (Bolt's auth.test, cached).
    app.claude.push(Reply.text("Warm."))
    app.send(app.requests.app_mention(f"<@{BOT_USER_ID}> warm up"))
    app.run_jobs()
    calls_before = len(app.slack.calls())

    for request in (
        app.requests.app_mention(f"<@{BOT_USER_ID}> a new thread"),
        app.requests.dm("a direct message"),
    ):
        with WriteTransactions() as writes:
            response = app.send(request)
        assert response.status_code == 200, response.text
        assert writes.count == 1
        assert len(app.slack.calls()) == calls_before
        assert app.claude.message_requests[1:] == []

    # What was acked is all there, and the worker answers it.
    app.claude.push(Reply.text("First."), Reply.text("Second."))
    assert app.run_jobs() == 4
    assert len(app.claude.message_requests) == 3


def test_the_same_message_under_two_event_ids_is_one_job_and_one_answer(app):
    app.claude.push(Reply.text("Once."), Reply.text("Twice?"))
    ts = "1765000000.000200"
    first = app.requests.app_mention(f"<@{BOT_USER_ID}> hi", ts=ts)
    again = app.requests.app_mention(f"<@{BOT_USER_ID}> hi", ts=ts)
    assert first.payload["event_id"] != again.payload["event_id"]

    assert app.send(first).status_code == 200
    assert app.send(again).status_code == 200
    with app.container.db.session() as s:
        jobs = s.scalar(
            select(func.count()).select_from(JobRow).where(JobRow.kind == "slack.event")
        )
    assert jobs == 1
    app.run_jobs()

    assert len(app.claude.message_requests) == 1
    assert [m.text for m in thread(app, ts)] == ["Once."]


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_a_turn_longer_than_its_lease_is_not_taken_over_and_is_answered_once(app):
    """Two workers on a queue whose lease is shorter than the turn: the heartbeat keeps the
    first one's claim, so the second never takes the turn over."""
    slack = app.client.app.state.slack
    queue = JobQueue(
        app.container.db, lease=timedelta(seconds=1.5), wakeup=app.container.jobs.wakeup
    )
    workers = [JobWorker(queue, slack.job_kinds(), name=n, poll=0.05) for n in ("a", "b")]
    app.claude.push(Reply.text("Slow, but once.").with_options(first_byte_delay=4.5))
    request = app.requests.app_mention(f"<@{BOT_USER_ID}> take your time")
    assert app.send(request).status_code == 200
    ts = request.payload["event"]["ts"]

    async def run_both() -> None:
        for worker in workers:
            await worker.start()
        try:
            async with asyncio.timeout(60):  # a bound, not a timing claim
                while True:  # until both jobs (the event, then its turn) have ended
                    stats = queue.stats()
                    if not (stats.queued or stats.running):
                        break
                    await asyncio.sleep(0.05)
        finally:
            for worker in workers:
                await worker.stop()

    app.client.portal.call(run_both)

    with app.container.db.session() as s:
        turn = s.scalars(select(TurnRow)).one()
        assert turn.status == "completed" and turn.user_id == USER_ID
        job = s.scalars(select(JobRow).where(JobRow.key == f"turn:{turn.id}")).one()
        assert (job.state, job.attempt, job.failures) == ("succeeded", 1, 0)
    assert len(app.claude.message_requests) == 1
    assert [m.text for m in thread(app, ts)] == ["Slow, but once."]
