"""The job table's contract on every database: enqueue in the caller's transaction, one
holder per job, leases that lapse and are taken over, attempt-fenced writes, retries and the
dead letter, cancellation, per-key limits. Real committed databases, real threads."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text

from core.db import DATABASE_UNAVAILABLE, Database
from core.db.models import JobRow
from core.errors import NotFound
from core.jobs import JobQueue, LostClaim, Wakeup
from tests.job_support import WriterHoldingTheLock

TENANT = "T-jobs"


def _submit_all(queue: JobQueue, jobs: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """What the Slack ack path's group commit does from its thread."""
    return queue.submit_rows(queue.rows(jobs))


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def database(module_db: Database) -> Database:
    return module_db


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(database: Database, clock: Clock) -> JobQueue:
    return JobQueue(database, clock=clock, lease=timedelta(seconds=15))


@pytest.fixture
def kind() -> str:
    """A kind of its own per test: the module's database is shared, claims are by kind."""
    return f"test.{uuid.uuid4().hex[:8]}"


def test_a_job_exists_only_if_the_callers_transaction_commits(queue: JobQueue, kind: str) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), queue.db.session() as s:
        queue.enqueue(s, tenant_id=TENANT, kind=kind, payload={"n": 1})
        raise Boom
    assert queue.claim("w1", kinds=[kind], limit=10) == []
    with queue.db.session() as s:
        job_id, created = queue.enqueue(s, tenant_id=TENANT, kind=kind, payload={"n": 2})
    assert created
    [claim] = queue.claim("w1", kinds=[kind], limit=10)
    assert (claim.id, claim.payload, claim.attempt) == (job_id, {"n": 2}, 1)


def test_a_repeated_key_returns_the_first_job(queue: JobQueue, kind: str) -> None:
    key = f"k:{uuid.uuid4().hex}"
    first, created = queue.submit(tenant_id=TENANT, kind=kind, key=key, payload={"v": 1})
    again, created_again = queue.submit(tenant_id=TENANT, kind=kind, key=key, payload={"v": 2})
    assert created and not created_again and again == first
    assert queue.get(TENANT, first).model_dump()["state"] == "queued"
    assert len(queue.claim("w", kinds=[kind], limit=10)) == 1


def test_each_job_is_claimed_by_exactly_one_of_many_racing_workers(
    queue: JobQueue, kind: str
) -> None:
    for n in range(120):
        queue.submit(tenant_id=TENANT, kind=kind, payload={"n": n})
    got: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker(name: str) -> None:
        start.wait()
        while True:
            claims = queue.claim(name, kinds=[kind], limit=7)
            if not claims:
                return
            with lock:
                got.update(c.id for c in claims)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 120
    assert set(got.values()) == {1}


def test_a_lapsed_lease_is_taken_over_and_the_old_attempts_writes_are_refused(
    queue: JobQueue, clock: Clock, kind: str
) -> None:
    job_id, _ = queue.submit(tenant_id=TENANT, kind=kind)
    [old] = queue.claim("dead-worker", kinds=[kind], limit=1)
    assert queue.progress(old, {"placeholder": "1.0001"})
    clock.advance(seconds=10)
    assert queue.claim("w2", kinds=[kind], limit=1) == []  # lease still held
    clock.advance(seconds=6)
    [new] = queue.claim("w2", kinds=[kind], limit=1)
    assert (new.id, new.attempt, new.resumed) == (job_id, 2, True)
    assert new.progress == {"placeholder": "1.0001"}  # what the dead attempt recorded
    # The old attempt wakes up late: it no longer holds the job, and every write it tries
    # is refused.
    assert not queue.holds(old) and queue.holds(new)
    assert not queue.progress(old, {"placeholder": "late"})
    assert not queue.finish(old, {"late": True})
    assert queue.fail(old, "late", retry_in=timedelta(seconds=1)) == "lost"
    with pytest.raises(LostClaim), queue.db.session() as s:
        queue.fence(s, old)
    with queue.db.session() as s:
        queue.fence(s, new)  # the holder's writes pass
    assert queue.finish(new, {"ok": True})
    done = queue.get(TENANT, job_id)
    assert (done.state, done.result, done.attempt) == ("succeeded", {"ok": True}, 2)


def test_renewing_keeps_a_job_from_being_taken_over(
    queue: JobQueue, clock: Clock, kind: str
) -> None:
    queue.submit(tenant_id=TENANT, kind=kind)
    [claim] = queue.claim("w1", kinds=[kind], limit=1)
    for _ in range(5):
        clock.advance(seconds=10)
        renewal = queue.renew([claim])
        assert renewal.lost == set() and renewal.cancel == set()
        assert queue.claim("w2", kinds=[kind], limit=1) == []
    clock.advance(seconds=16)
    [taken] = queue.claim("w2", kinds=[kind], limit=1)
    assert queue.renew([claim]).lost == {claim.id}
    assert taken.attempt == 2


def test_failures_are_retried_with_backoff_then_dead_lettered(
    queue: JobQueue, clock: Clock, kind: str
) -> None:
    job_id, _ = queue.submit(tenant_id=TENANT, kind=kind, max_attempts=3)
    for attempt in (1, 2):
        [claim] = queue.claim("w", kinds=[kind], limit=1)
        assert queue.fail(claim, f"boom {attempt}", retry_in=timedelta(seconds=30)) == "queued"
        assert queue.claim("w", kinds=[kind], limit=1) == []  # not before its time
        clock.advance(seconds=31)
    dead_before = queue.stats().dead
    [claim] = queue.claim("w", kinds=[kind], limit=1)
    assert queue.fail(claim, "boom 3", retry_in=timedelta(seconds=30)) == "dead"
    job = queue.get(TENANT, job_id)
    assert (job.state, job.failures, job.error) == ("dead", 3, "boom 3")
    assert queue.stats().dead == dead_before + 1
    clock.advance(hours=1)
    assert queue.claim("w", kinds=[kind], limit=1) == []


def test_a_permanent_failure_goes_to_the_dead_letter_at_once(queue: JobQueue, kind: str) -> None:
    job_id, _ = queue.submit(tenant_id=TENANT, kind=kind, max_attempts=5)
    [claim] = queue.claim("w", kinds=[kind], limit=1)
    assert queue.fail(claim, "agent 'agt_x' does not exist", retry_in=None) == "dead"
    assert queue.get(TENANT, job_id).failures == 1


def test_a_job_whose_worker_keeps_dying_is_dead_lettered_not_rerun_forever(
    queue: JobQueue, clock: Clock, kind: str
) -> None:
    job_id, _ = queue.submit(tenant_id=TENANT, kind=kind, max_attempts=3)
    claims = 0
    for _ in range(10):
        got = queue.claim("w", kinds=[kind], limit=1)
        if not got:
            break
        claims += 1
        clock.advance(seconds=16)  # the worker dies each time
    job = queue.get(TENANT, job_id)
    assert claims == 3
    assert job.state == "dead" and "stopped while running it 3 times" in (job.error or "")


def test_cancel_ends_a_queued_job_and_asks_a_running_one_to_stop(
    queue: JobQueue, kind: str
) -> None:
    queued, _ = queue.submit(tenant_id=TENANT, kind=kind)
    assert queue.cancel(TENANT, queued).state == "cancelled"
    running, _ = queue.submit(tenant_id=TENANT, kind=kind)
    [claim] = queue.claim("w", kinds=[kind], limit=1)
    view = queue.cancel(TENANT, running)
    assert (view.state, view.cancel_requested) == ("running", True)
    assert queue.cancel_requests([claim.id]) == {claim.id}
    assert queue.renew([claim]).cancel == {claim.id}
    assert queue.cancelled(claim)
    assert queue.get(TENANT, running).state == "cancelled"
    assert queue.cancel(TENANT, running).state == "cancelled"  # twice is harmless


def test_a_cancel_requested_job_whose_worker_died_is_not_rerun(
    queue: JobQueue, clock: Clock, kind: str
) -> None:
    job_id, _ = queue.submit(tenant_id=TENANT, kind=kind)
    queue.claim("w", kinds=[kind], limit=1)
    queue.cancel(TENANT, job_id)
    clock.advance(seconds=16)
    assert queue.claim("w2", kinds=[kind], limit=1) == []
    assert queue.get(TENANT, job_id).state == "cancelled"


def test_jobs_of_other_tenants_are_not_found(queue: JobQueue, kind: str) -> None:
    job_id, _ = queue.submit(tenant_id=TENANT, kind=kind)
    with pytest.raises(NotFound):
        queue.get("T-other", job_id)
    with pytest.raises(NotFound):
        queue.cancel("T-other", job_id)


def test_a_per_key_limit_leaves_room_for_other_keys(queue: JobQueue, kind: str) -> None:
    for _ in range(6):
        queue.submit(tenant_id=TENANT, kind=kind, concurrency_key="agent:busy")
    quiet, _ = queue.submit(tenant_id=TENANT, kind=kind, concurrency_key="agent:quiet")
    first = queue.claim("w1", kinds=[kind], limit=10, per_key_limit=2)
    assert Counter(c.id == quiet for c in first) == Counter({False: 2, True: 1})
    assert queue.claim("w2", kinds=[kind], limit=10, per_key_limit=2) == []  # across workers
    assert queue.finish(first[0])
    assert len(queue.claim("w2", kinds=[kind], limit=10, per_key_limit=2)) == 1


def test_a_released_job_is_resumed_at_once_by_another_worker(queue: JobQueue, kind: str) -> None:
    job_id, _ = queue.submit(tenant_id=TENANT, kind=kind)
    [claim] = queue.claim("w1", kinds=[kind], limit=1)
    assert queue.progress(claim, {"done": 3, "total": 10})
    assert queue.release(claim)
    [again] = queue.claim("w2", kinds=[kind], limit=1)
    assert (again.id, again.attempt, again.failures, again.progress) == (
        job_id,
        2,
        0,
        {"done": 3, "total": 10},
    )


def test_a_recurring_job_is_queued_again_not_finished(
    queue: JobQueue, clock: Clock, kind: str
) -> None:
    key = f"schedule:{kind}"
    job_id, _ = queue.submit(tenant_id="-", kind=kind, key=key)
    [claim] = queue.claim("w", kinds=[kind], limit=1)
    assert queue.finish(claim, again_at=clock.now + timedelta(seconds=30))
    assert queue.claim("w", kinds=[kind], limit=1) == []
    clock.advance(seconds=31)
    [again] = queue.claim("w", kinds=[kind], limit=1)
    assert again.id == job_id
    with queue.db.session() as s:
        assert len(s.scalars(select(JobRow).where(JobRow.key == key)).all()) == 1


def test_idle_polls_and_cancel_checks_do_not_queue_behind_a_writer(
    queue: JobQueue, kind: str
) -> None:
    """Idle workers poll several times a second and running ones ask about cancellations
    twice a second: neither may take (or wait for) the write lock the Slack ack path's insert
    needs. Nothing is due, so the poll answers from a read while the writer holds on."""
    if queue.db.backend != "sqlite":
        pytest.skip("PostgreSQL has no database-wide write lock")
    with WriterHoldingTheLock(queue.db) as writer:
        assert queue.claim("w1", kinds=[kind], limit=5) == []
        assert queue.cancel_requests(["job_unknown"]) == set()
        assert not writer.released.is_set()  # both answered while the lock was held


def test_workers_are_woken_by_a_commit_and_not_by_a_rollback(queue: JobQueue, kind: str) -> None:
    rung: list[int] = []

    class Counting(Wakeup):
        def ring(self) -> None:
            rung.append(1)

    woken = JobQueue(queue.db, clock=queue.clock, wakeup=Counting())
    with pytest.raises(RuntimeError), woken.db.session() as s:
        woken.enqueue(s, tenant_id=TENANT, kind=kind, payload={})
        raise RuntimeError("the caller's change failed")
    assert rung == []
    with woken.db.session() as s:
        woken.enqueue(s, tenant_id=TENANT, kind=kind, payload={})
        woken.enqueue(s, tenant_id=TENANT, kind=kind, payload={})
        assert rung == []  # not before the jobs can be claimed
    assert rung == [1]  # one ring per commit, however many jobs it added
    _submit_all(woken, [{"tenant_id": TENANT, "kind": kind}])
    assert rung == [1, 1]


def test_many_jobs_go_in_one_insert_and_each_gets_its_own_answer(
    queue: JobQueue, kind: str
) -> None:
    """The Slack ack path's group commit: new keys, a key taken before, a key repeated
    within the batch and keyless jobs, answered in order, with one INSERT for all of them
    (and one SELECT for the taken keys) rather than a round trip per job."""
    taken, _ = queue.submit(tenant_id=TENANT, kind=kind, key=f"{kind}:taken")
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    jobs = [
        {"tenant_id": TENANT, "kind": kind, "key": f"{kind}:a"},
        {"tenant_id": TENANT, "kind": kind, "key": f"{kind}:taken"},
        {"tenant_id": TENANT, "kind": kind},
        {"tenant_id": TENANT, "kind": kind, "key": f"{kind}:a"},
        {"tenant_id": TENANT, "kind": kind, "key": f"{kind}:b"},
        {"tenant_id": TENANT, "kind": kind},
    ]
    event.listen(Engine, "before_cursor_execute", record)
    try:
        results = _submit_all(queue, jobs)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    [a, again_taken, keyless1, again_a, b, keyless2] = results
    assert again_taken == (taken, False)
    assert a[1] and b[1] and keyless1[1] and keyless2[1]
    assert again_a == (a[0], False)
    assert len({a[0], b[0], keyless1[0], keyless2[0], taken}) == 5
    assert statements.count("INSERT") == 1 and statements.count("SELECT") == 1
    # The insert commits by itself: no BEGIN (IMMEDIATE) before it that SQLite queues.
    assert statements[0] == "INSERT"
    with queue.db.session() as s:
        stored = s.scalars(select(JobRow.id).where(JobRow.kind == kind)).all()
    assert sorted(stored) == sorted({a[0], b[0], keyless1[0], keyless2[0], taken})


def test_an_ack_insert_waits_out_a_writer_and_lands_once(queue: JobQueue, kind: str) -> None:
    """The ack path's insert does not use SQLite's busy handler (it answers "locked" at
    once there): it keeps trying on its own until the writer commits, then lands."""
    if queue.db.backend != "sqlite":
        pytest.skip("SQLite's single write lock")
    results: list[list[tuple[str, bool]]] = []
    submitter = threading.Thread(
        target=lambda: results.append(_submit_all(queue, [{"tenant_id": TENANT, "kind": kind}]))
    )
    with WriterHoldingTheLock(queue.db):
        submitter.start()
        submitter.join(0.3)
        assert submitter.is_alive() and not results  # waiting, not failed
    submitter.join(10)
    [[(job_id, created)]] = results
    assert created
    with queue.db.session() as s:
        assert s.scalars(select(JobRow.id).where(JobRow.kind == kind)).all() == [job_id]


def test_an_ack_insert_on_a_dropped_connection_retries_only_when_keyed(
    queue: JobQueue, kind: str
) -> None:
    """Without a pre-ping, a pooled connection PostgreSQL dropped is found by the insert:
    a keyed insert (harmless twice) is retried on a new connection and lands once; a
    keyless one is refused, so the caller answers 503 and nothing is half-written."""
    if queue.db.backend != "postgresql":
        pytest.skip("PostgreSQL connections")

    def drop_ack_connection() -> None:
        [(pid,)] = queue.db.prompt(text("SELECT pg_backend_pid()"))
        with queue.db.session() as s:
            s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    drop_ack_connection()
    [(job_id, created)] = _submit_all(queue, [{"tenant_id": TENANT, "kind": kind, "key": kind}])
    assert created
    drop_ack_connection()
    with pytest.raises(DATABASE_UNAVAILABLE):
        _submit_all(queue, [{"tenant_id": TENANT, "kind": kind}])
    with queue.db.session() as s:
        assert s.scalars(select(JobRow.id).where(JobRow.kind == kind)).all() == [job_id]
    # The pool is whole again: the next keyless insert lands.
    [(_, created)] = _submit_all(queue, [{"tenant_id": TENANT, "kind": kind}])
    assert created


class _Racing(JobQueue):
    """A queue whose claim reads its candidates, then lets `meanwhile` run (another
    worker, between that read and the claim's write lock) before it writes."""

    meanwhile: Any = None

    def _candidates(self, kinds: list[str], limit: int) -> list[JobRow]:
        rows = super()._candidates(kinds, limit)
        if self.meanwhile is not None:
            self.meanwhile()
        return rows


def test_a_claim_takes_nothing_that_changed_after_it_was_read(
    queue: JobQueue, clock: Clock, kind: str
) -> None:
    """The claim reads its candidates before it takes the write lock: a job another
    worker finished, or whose lease its holder renewed, in between is left alone."""
    racing = _Racing(queue.db, clock=clock, lease=queue.lease)
    done_id, _ = queue.submit(tenant_id=TENANT, kind=kind)

    def finished_elsewhere() -> None:
        [other] = queue.claim("other", kinds=[kind], limit=1)
        assert queue.finish(other, {"by": "other"})

    racing.meanwhile = finished_elsewhere
    assert racing.claim("me", kinds=[kind], limit=1) == []
    done = queue.get(TENANT, done_id)
    assert (done.state, done.attempt, done.result) == ("succeeded", 1, {"by": "other"})

    # A running job whose lease lapsed, renewed by its holder just before the lock.
    held_id, _ = queue.submit(tenant_id=TENANT, kind=kind)
    [holder] = queue.claim("holder", kinds=[kind], limit=1)
    clock.advance(seconds=16)
    racing.meanwhile = lambda: queue.renew([holder])
    assert racing.claim("me", kinds=[kind], limit=1) == []
    assert queue.renew([holder]).lost == set()
    assert queue.get(TENANT, held_id).attempt == 1

    # Unchanged, it is taken as before.
    racing.meanwhile = None
    clock.advance(seconds=16)
    [taken] = racing.claim("me", kinds=[kind], limit=1)
    assert (taken.id, taken.attempt, taken.resumed) == (held_id, 2, True)


def _write_statements(database: Database) -> tuple[list[str], Any]:
    """Statements run inside transactions that may write (not `read_session`)."""
    seen: list[str] = []

    def record(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not conn.get_execution_options().get("cosmo_read_only"):
            seen.append(" ".join(statement.split()[:3]).upper())

    event.listen(database.engine, "before_cursor_execute", record)
    return seen, lambda: event.remove(database.engine, "before_cursor_execute", record)


def test_renewing_many_leases_is_one_write_and_reports_the_lost_one(
    queue: JobQueue, clock: Clock, kind: str
) -> None:
    """The heartbeat of a worker running many jobs: one UPDATE for all, not one each (on
    SQLite each held the write lock the Slack ack path waits for)."""
    for _ in range(6):
        queue.submit(tenant_id=TENANT, kind=kind)
    claims = queue.claim("w1", kinds=[kind], limit=6)
    clock.advance(seconds=16)
    [stolen] = queue.claim("w2", kinds=[kind], limit=1)
    seen, stop = _write_statements(queue.db)
    try:
        renewal = queue.renew(claims)
    finally:
        stop()
    assert renewal.lost == {stolen.id}
    assert sum(statement.startswith("UPDATE") for statement in seen) == 1
    clock.advance(seconds=10)
    assert queue.claim("w3", kinds=[kind], limit=6) == []  # the five renewed are held


def test_a_claim_reads_its_candidates_outside_the_write_transaction(
    queue: JobQueue, kind: str
) -> None:
    """Under the write lock a claim only counts busy keys and writes its claims."""
    for _ in range(3):
        queue.submit(tenant_id=TENANT, kind=kind)
    seen, stop = _write_statements(queue.db)
    try:
        assert len(queue.claim("w1", kinds=[kind], limit=3)) == 3
    finally:
        stop()
    assert not [statement for statement in seen if statement.startswith("SELECT JOBS.ID,")]
    assert sum(statement.startswith("UPDATE") for statement in seen) == 3


class _RowLock:
    """Holds the job's row lock from a connection of its own (PostgreSQL), so the writes of
    a lapsed attempt and of its takeover queue up behind it in the order they are started,
    then all go at once: the order a loaded machine may pick, made deterministic."""

    def __init__(self, db: Database, job_id: str) -> None:
        self.db = db
        self.job_id = job_id
        self.connection = db.engine.connect()

    def __enter__(self) -> _RowLock:
        self.connection.execute(
            text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": self.job_id}
        )
        return self

    def waiting(self) -> int:
        """How many other sessions wait for a lock (ours is the one they wait for)."""
        with self.db.engine.connect() as c:
            return int(
                c.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    )
                )
                or 0
            )

    def start_behind(self, fn: Any) -> tuple[threading.Thread, list[Any]]:
        """Run `fn` in a thread and return once it waits for the row (its result in the list)."""
        before = self.waiting()
        out: list[Any] = []
        thread = threading.Thread(target=lambda: out.append(fn()))
        thread.start()
        while self.waiting() <= before:
            assert thread.is_alive(), "it did not wait for the row"
            time.sleep(0.005)
        return thread, out

    def __exit__(self, *_: object) -> None:
        self.connection.rollback()
        self.connection.close()


def _race(db: Database, job_id: str, order: list[Any]) -> dict[str, Any]:
    """Run the functions in `order` against the job's row, each queued behind the row
    lock in that order, then let them all go; their results by function name."""
    with _RowLock(db, job_id) as lock:
        started = [lock.start_behind(fn) for fn in order]
    for thread, _ in started:
        thread.join(timeout=30)
    return {fn.__name__: out[0] for fn, (_, out) in zip(order, started, strict=True)}


@pytest.mark.parametrize("first", ["takeover", "lapsed attempt"])
def test_a_lapsed_attempt_and_its_takeover_never_both_believe_they_may_call(
    queue: JobQueue, clock: Clock, kind: str, first: str
) -> None:
    """An execution records `calling` in its progress before it calls the target; the
    attempt that takes it over reads that mark and does not call again. So the mark and the
    takeover must be serialised: either the old attempt's mark is refused, or the new
    attempt sees it. On PostgreSQL (READ COMMITTED) they raced: the mark was written by id
    alone after the takeover's claim, and the claim carried the progress it had read
    before the mark: both attempts called a non-idempotent target."""
    if queue.db.backend != "postgresql":
        pytest.skip("SQLite's write lock serialises the two transactions whole")
    job_id, _ = queue.submit(tenant_id=TENANT, kind=kind)
    [old] = queue.claim("slow-worker", kinds=[kind], limit=1)
    clock.advance(seconds=16)  # its lease lapsed (the worker was starved, say)

    def mark() -> bool:
        return queue.progress(old, {"calling": True})

    def take_over() -> list[Any]:
        return queue.claim("w2", kinds=[kind], limit=1)

    results = _race(
        queue.db, job_id, [take_over, mark] if first == "takeover" else [mark, take_over]
    )

    marked, [new] = results["mark"], results["take_over"]
    assert new.attempt == 2
    # Never both: the old attempt goes on to call only if the new one sees it may have.
    assert not (marked and not new.progress.get("calling"))
    assert queue.get(TENANT, job_id).attempt == 2


@pytest.mark.parametrize("first", ["takeover", "lapsed attempt"])
def test_a_lapsed_attempts_failure_never_requeues_the_job_its_takeover_holds(
    queue: JobQueue, clock: Clock, kind: str, first: str
) -> None:
    """The same race for a failure: recorded by id alone after the takeover, it put the
    running job back in the queue, for a third attempt to run beside the second."""
    if queue.db.backend != "postgresql":
        pytest.skip("SQLite's write lock serialises the two transactions whole")
    job_id, _ = queue.submit(tenant_id=TENANT, kind=kind)
    [old] = queue.claim("slow-worker", kinds=[kind], limit=1)
    clock.advance(seconds=16)

    def fail() -> str:
        return queue.fail(old, "boom", retry_in=timedelta(seconds=0))

    def take_over() -> list[Any]:
        return queue.claim("w2", kinds=[kind], limit=1)

    results = _race(
        queue.db, job_id, [take_over, fail] if first == "takeover" else [fail, take_over]
    )

    # After the takeover the late failure is refused. Before it, the failure re-queues the
    # job: the claim, which read it running and lapsed, leaves it (it is not as read) and
    # the next claim takes it as its retry. Either way one attempt holds it.
    if first == "takeover":
        assert results["fail"] == "lost"
        [new] = results["take_over"]
    else:
        assert (results["fail"], results["take_over"]) == ("queued", [])
        [new] = queue.claim("w2", kinds=[kind], limit=1)
    job = queue.get(TENANT, job_id)
    assert (job.state, job.attempt, new.attempt) == ("running", 2, 2)
