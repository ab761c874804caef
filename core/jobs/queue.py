"""The job table's operations: enqueue in the caller's transaction, claim with a lease,
renew, fence, finish, retry, dead-letter, cancel.

Every state change is one conditional UPDATE naming the attempt it expects, so two workers
can never both believe they hold a job, and a worker whose lease lapsed cannot overwrite
what its successor did. Claims are serialised per database (SQLite's write lock,
PostgreSQL's transaction-level advisory lock) so per-agent limits hold exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, and_, delete, event, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql import sqltypes

from core import tracing
from core.db import Database
from core.db.ids import new_id
from core.db.models import JobRow
from core.db.pagination import Page
from core.db.repository import paginate
from core.errors import NotFound
from core.jobs.model import FINISHED, LEASE, Claim, JobView, LostClaim
from core.jobs.wakeup import CHANNEL, Wakeup

Clock = Callable[[], datetime]
#: Arbitrary but fixed: the advisory lock every PostgreSQL claim takes.
_CLAIM_LOCK = 0x636F_736D_6F6A  # "cosmoj"
#: Error text is for people; a runaway traceback is not.
MAX_ERROR = 2_000


@dataclass(frozen=True)
class Renewal:
    lost: set[str]
    """Jobs this worker no longer holds: stop them, their writes would be refused."""
    cancel: set[str]
    """Jobs someone asked to cancel."""


@dataclass(frozen=True)
class QueueStats:
    queued: int
    running: int
    dead: int
    oldest_due_seconds: float
    """How long the longest-waiting due job has waited (0 when none): a backlog signal."""


@cache
def _insert_job(dialect: str) -> Any:
    """One INSERT built once per dialect, its values bound per call. Built per call from
    the ORM entity, SQLAlchemy spent about three quarters of an enqueue constructing and
    cache-keying the statement: the Slack ack path makes one enqueue per event."""
    table = cast(Table, JobRow.__table__)
    # A NULL key never conflicts, so keyless jobs go through the same statement.
    if dialect == "postgresql":
        # NOTIFY rides in the insert's RETURNING: no round trip of its own on the ack path,
        # and only when a row was added (a repeated key wakes nobody). PostgreSQL delivers
        # it at commit, only if the transaction commits, once however many jobs it added.
        return (
            postgresql.insert(table)
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(table.c.id, func.pg_notify(CHANNEL, ""))
        )
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=["key"]).returning(table.c.id)


def _pg_insert(rows: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    """`_insert_job`'s statement for PostgreSQL as psycopg runs it, with its parameters, for
    `Database.prompt_async`: the same columns, conflict rule and NOTIFY."""
    from psycopg.types.json import Jsonb  # only where PostgreSQL is used

    columns = tuple(rows[0])
    json_columns = _json_columns()
    params = [
        Jsonb(row[c]) if c in json_columns and row[c] is not None else row[c]
        for row in rows
        for c in columns
    ]
    return _pg_insert_sql(columns, len(rows)), params


@cache
def _json_columns() -> frozenset[str]:
    table = cast(Table, JobRow.__table__)
    return frozenset(c.name for c in table.columns if isinstance(c.type, sqltypes.JSON))


@cache
def _pg_insert_sql(columns: tuple[str, ...], count: int) -> str:
    table = cast(Table, JobRow.__table__)
    unknown = set(columns) - set(table.columns.keys())
    if unknown:
        raise ValueError(f"not columns of {table.name}: {sorted(unknown)}")
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    # Only the table's own column names (checked above) and our channel are spliced in;
    # every value is a parameter.
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608
        f"VALUES {', '.join([one] * count)} "
        f"ON CONFLICT (key) DO NOTHING RETURNING id, pg_notify('{CHANNEL}', '')"
    )


def _repeatable(rows: list[dict[str, Any]]) -> bool:
    """Whether inserting `rows` twice is harmless: every job has a key, so a second insert
    adds nothing (a retry after a dropped connection)."""
    return all(row["key"] is not None for row in rows)


def _keyed(s: Session, keys: set[str]) -> dict[str | None, str]:
    """The ids of the jobs holding `keys`."""
    query = select(JobRow.key, JobRow.id).where(JobRow.key.in_(keys))
    return {key: job_id for key, job_id in s.execute(query)}


_WAKEUPS = "cosmo_jobs_wakeups"


@event.listens_for(Session, "after_commit")
def _ring_after_commit(s: Session) -> None:
    """Idle workers learn of new jobs only once they are committed (and so claimable)."""
    for wakeup in s.info.pop(_WAKEUPS, ()):
        wakeup.ring()


@event.listens_for(Session, "after_soft_rollback")
def _forget_on_rollback(s: Session, _previous: Any) -> None:
    if not s.in_transaction():
        s.info.pop(_WAKEUPS, None)


#: What `enqueue` takes, and so what `enqueue_many`'s jobs may say.
_JOB_ARGUMENTS = frozenset(
    {"tenant_id", "kind", "payload", "key", "run_after", "concurrency_key", "max_attempts"}
)


def _ended(state: str, now: datetime, error: str) -> dict[str, Any]:
    """The columns of a job that ended without running to the end (cancelled, dead)."""
    return {
        "state": state,
        "error": error,
        "finished_at": now,
        "updated_at": now,
        "lease_owner": None,
        "lease_until": None,
    }


def _due(now: datetime) -> Any:
    """Jobs a worker may take now: queued ones whose time has come, and running ones whose
    lease lapsed (their worker died)."""
    return or_(
        and_(JobRow.state == "queued", JobRow.run_after <= now),
        and_(JobRow.state == "running", JobRow.lease_until < now),
    )


def view(row: JobRow) -> JobView:
    return JobView.model_validate(row, from_attributes=True)


class JobQueue:
    def __init__(
        self,
        db: Database,
        *,
        clock: Clock | None = None,
        wakeup: Wakeup | None = None,
        lease: timedelta = LEASE,
    ) -> None:
        self.db = db
        self.clock = clock or (lambda: datetime.now(UTC))
        self.wakeup = wakeup or Wakeup()
        self.lease = lease

    # -- enqueue -------------------------------------------------------------

    def enqueue(
        self,
        s: Session,
        *,
        tenant_id: str,
        kind: str,
        payload: dict[str, Any] | None = None,
        key: str | None = None,
        run_after: datetime | None = None,
        concurrency_key: str | None = None,
        max_attempts: int = 5,
    ) -> tuple[str, bool]:
        """Add a job in the caller's transaction: it exists if and only if the caller's
        change commits. Returns (job id, created); a repeated `key` returns the first job.

        The payload carries the caller's trace context, which the worker continues."""
        [result] = self.enqueue_many(
            s,
            [
                {
                    "tenant_id": tenant_id,
                    "kind": kind,
                    "payload": payload,
                    "key": key,
                    "run_after": run_after,
                    "concurrency_key": concurrency_key,
                    "max_attempts": max_attempts,
                }
            ],
        )
        return result

    def enqueue_many(self, s: Session, jobs: Sequence[dict[str, Any]]) -> list[tuple[str, bool]]:
        """`enqueue` each of `jobs` (its keyword arguments) with one INSERT of all the rows,
        and one SELECT for the keys that were taken already: a group commit of many Slack
        acks costs two round trips, not one per event. Keys repeated within `jobs` resolve
        to the first of them, as they would one by one."""
        if not jobs:
            return []
        now = self.clock()
        rows = [self._row(now, job) for job in jobs]
        statement = _insert_job(s.get_bind().dialect.name)
        added = {row[0] for row in s.execute(statement, rows)}
        if added:
            self._announce(s)
        return self._answers(
            rows,
            added,
            lambda keys: _keyed(s, keys),
        )

    @staticmethod
    def _answers(
        rows: list[dict[str, Any]],
        added: set[str],
        taken: Callable[[set[str]], dict[str | None, str]],
    ) -> list[tuple[str, bool]]:
        """(job id, created) per row: its own id if it was added, else the id of the job
        that holds its key (found with one query for all of them)."""
        keys = {r["key"] for r in rows if r["id"] not in added}
        existing = taken(keys) if keys else {}
        return [(r["id"], True) if r["id"] in added else (existing[r["key"]], False) for r in rows]

    def _row(self, now: datetime, job: dict[str, Any]) -> dict[str, Any]:
        """The table row for `job` (the keyword arguments `enqueue` takes)."""
        unknown = set(job) - _JOB_ARGUMENTS
        if unknown:
            raise TypeError(f"unknown job arguments: {sorted(unknown)}")
        return {
            "id": new_id("job"),
            "tenant_id": job["tenant_id"],
            "kind": job["kind"],
            "key": job.get("key"),
            "payload": tracing.with_trace(job.get("payload") or {}),
            "state": "queued",
            "concurrency_key": job.get("concurrency_key"),
            "run_after": job.get("run_after") or now,
            "attempt": 0,
            "failures": 0,
            "max_attempts": job.get("max_attempts", 5),
            "cancel_requested": False,
            "progress": {},
            "created_at": now,
            "updated_at": now,
        }

    def submit(self, **kwargs: Any) -> tuple[str, bool]:
        """`enqueue` in a transaction of its own."""
        with self.db.session() as s:
            return self.enqueue(s, **kwargs)

    def rows(self, jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The table rows `submit_rows` writes for `jobs` (`enqueue`'s arguments each)."""
        now = self.clock()
        return [self._row(now, job) for job in jobs]

    def submit_rows(
        self, rows: list[dict[str, Any]], added: set[str] | None = None
    ) -> list[tuple[str, bool]]:
        """Write `rows` (unless `submit_now` has: `added`) and answer (job id, created)
        for each: `enqueue_many` on its own, as the one statement `Database.prompt`
        commits. One commit for many submissions (see `core.jobs.intake`), and on the
        Slack ack path nothing else: no BEGIN/COMMIT round trips, no waiting in SQLite's
        busy handler. Repeated after a dropped connection only when every job has a key
        (so a second insert adds nothing)."""
        if added is None:
            written = self.db.prompt(self._insert(), rows, idempotent=_repeatable(rows))
            added = self._added(written)
        return self._answers(rows, added, self._taken)

    async def submit_now(self, rows: list[dict[str, Any]]) -> set[str] | None:
        """Write `rows` from the ack path's event loop without blocking it: on PostgreSQL
        awaited there (`Database.prompt_async`); on SQLite at once if the write lock is
        free (`Database.prompt_now`). The ids added, or None: then `submit_rows` in a
        thread."""
        if not rows:
            return set()
        if self.db.backend == "postgresql":
            sql, params = _pg_insert(rows)
            written = await self.db.prompt_async(sql, params, idempotent=_repeatable(rows))
        else:
            written = self.db.prompt_now(self._insert(), rows)
        return None if written is None else self._added(written)

    def _insert(self) -> Any:
        return _insert_job(self.db.engine.dialect.name)

    def _added(self, written: list[Any]) -> set[str]:
        added = {row[0] for row in written}
        if added:
            self.wakeup.ring()
        return added

    def _taken(self, keys: set[str]) -> dict[str | None, str]:
        with self.db.read_session() as s:
            return _keyed(s, keys)

    def _announce(self, s: Session) -> None:
        """Wake this process's idle workers once the job is committed (other processes'
        workers: NOTIFY, sent by the insert on PostgreSQL; a short poll on SQLite)."""
        # Rung by the one listener below: registering a listener per session cost a tenth
        # of an enqueue on the Slack ack path.
        s.info.setdefault(_WAKEUPS, set()).add(self.wakeup)

    # -- claim and hold ------------------------------------------------------

    def _candidates(self, kinds: list[str], limit: int) -> list[JobRow]:
        """The jobs a claim may take, read without any lock: idle workers poll (several
        times a second on SQLite, across processes), and on SQLite only the claim's writes
        may hold the one write lock the Slack ack path's insert needs. `claim` checks each
        again under the lock."""
        now = self.clock()
        with self.db.read_session() as s:
            return list(
                s.scalars(
                    select(JobRow)
                    .where(JobRow.kind.in_(kinds), _due(now))
                    .order_by(JobRow.run_after, JobRow.id)
                    .limit(limit * 4 + 16)
                )
            )

    def claim(
        self,
        owner: str,
        *,
        kinds: Iterable[str],
        limit: int,
        per_key_limit: int | None = None,
    ) -> list[Claim]:
        """Take up to `limit` due jobs: queued ones whose time has come, and running ones
        whose lease lapsed (their worker died). A job asked to cancel is cancelled instead."""
        kinds = list(kinds)
        if limit <= 0 or not kinds:
            return []
        candidates = self._candidates(kinds, limit)
        if not candidates:
            return []
        claims: list[Claim] = []
        with self.db.session() as s:
            if s.get_bind().dialect.name == "postgresql":
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CLAIM_LOCK})
            else:
                s.execute(text("SELECT 1"))  # SQLite takes its write lock here (BEGIN IMMEDIATE)
            # The time is read once the lock is held: a lease that lapsed while we waited
            # for the lock has lapsed by then.
            now = self.clock()
            busy = self._busy(s, {r.concurrency_key for r in candidates if r.concurrency_key}, now)
            for row in candidates:
                if len(claims) >= limit:
                    break
                # Read before the lock: each write holds only if the job is still as read
                # (another worker may have claimed it, its worker renewed or finished it).
                unchanged = (
                    JobRow.id == row.id,
                    JobRow.attempt == row.attempt,
                    JobRow.state == row.state,
                    _due(now),
                )
                if row.cancel_requested:
                    self._end_if(s, unchanged, "cancelled", now, error="cancelled before it ran")
                    continue
                if row.state == "running" and row.failures + 1 >= row.max_attempts:
                    # Its worker died every time it ran it: a poison job, not bad luck.
                    error = f"its worker stopped while running it {row.failures + 1} times"
                    self._end_if(s, unchanged, "dead", now, error=error)
                    continue
                ck = row.concurrency_key
                if ck and per_key_limit is not None and busy[ck] >= per_key_limit:
                    continue
                taken_over = row.state == "running"
                attempt, failures = row.attempt + 1, row.failures + (1 if taken_over else 0)
                # The progress comes back from the UPDATE, not from the read above: on
                # PostgreSQL a lapsed attempt may have recorded progress (an execution's
                # `calling` mark) after that read, and the UPDATE waited for its commit.
                taken = s.execute(
                    update(JobRow)
                    .where(*unchanged, JobRow.cancel_requested.is_(False))
                    .values(
                        state="running",
                        attempt=attempt,
                        failures=failures,
                        lease_owner=owner,
                        lease_until=now + self.lease,
                        started_at=row.started_at or now,
                        updated_at=now,
                    )
                    .returning(JobRow.progress)
                    .execution_options(synchronize_session=False)
                ).first()
                if taken is None:
                    continue
                if ck:
                    busy[ck] += 1
                claims.append(
                    Claim(
                        id=row.id,
                        tenant_id=row.tenant_id,
                        kind=row.kind,
                        payload=dict(row.payload or {}),
                        attempt=attempt,
                        failures=failures,
                        owner=owner,
                        progress=dict(taken.progress or {}),
                    )
                )
        return claims

    @staticmethod
    def _end_if(
        s: Session, unchanged: tuple[Any, ...], state: str, now: datetime, *, error: str
    ) -> None:
        s.execute(
            update(JobRow)
            .where(*unchanged)
            .values(**_ended(state, now, error))
            .execution_options(synchronize_session=False)
        )

    @staticmethod
    def _busy(s: Session, keys: set[str], now: datetime) -> Counter[str]:
        busy: Counter[str] = Counter()
        if not keys:
            return busy
        rows = s.execute(
            select(JobRow.concurrency_key, func.count())
            .where(
                JobRow.state == "running",
                JobRow.lease_until >= now,
                JobRow.concurrency_key.in_(keys),
            )
            .group_by(JobRow.concurrency_key)
        )
        for key, count in rows:
            busy[str(key)] = int(count)
        return busy

    def renew(self, claims: Sequence[Claim]) -> Renewal:
        """Extend the leases of running jobs (the heartbeat) and report lost ones and
        cancel requests."""
        if not claims:
            return Renewal(set(), set())
        now = self.clock()
        # One statement for all of them: on SQLite a worker with 50 turns running held
        # the write lock for tens of ms renewing them one UPDATE at a time.
        held = or_(*(and_(*self._held(c)) for c in claims))
        with self.db.session() as s:
            renewed = set(
                s.scalars(
                    update(JobRow)
                    .where(held)
                    .values(lease_until=now + self.lease, updated_at=now)
                    .returning(JobRow.id)
                    .execution_options(synchronize_session=False)
                )
            )
        lost = {c.id for c in claims} - renewed
        return Renewal(lost, self.cancel_requests([c.id for c in claims if c.id not in lost]))

    def cancel_requests(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these jobs someone asked to cancel (cheap: workers ask twice a second)."""
        if not job_ids:
            return set()
        with self.db.read_session() as s:
            return self._cancel_requested(s, job_ids)

    @staticmethod
    def _cancel_requested(s: Session, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        return set(
            s.scalars(
                select(JobRow.id).where(JobRow.id.in_(job_ids), JobRow.cancel_requested.is_(True))
            )
        )

    @staticmethod
    def _held(claim: Claim) -> tuple[Any, ...]:
        return (
            JobRow.id == claim.id,
            JobRow.attempt == claim.attempt,
            JobRow.state == "running",
        )

    def fence(self, s: Session, claim: Claim) -> None:
        """Refuse the caller's write (raise `LostClaim`) unless this attempt still holds
        the job. Call it inside the transaction that writes: on PostgreSQL the row lock
        keeps a takeover from slipping in before the commit; SQLite's write lock does."""
        stmt = select(JobRow.attempt).where(*self._held(claim))
        if s.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        if s.scalar(stmt) is None:
            raise LostClaim(
                f"job {claim.id} attempt {claim.attempt} no longer holds it; its write is refused"
            )

    # -- ends ----------------------------------------------------------------

    def holds(self, claim: Claim) -> bool:
        """Whether this attempt still holds the job (a read; writes check with `fence`)."""
        with self.db.read_session() as s:
            return s.scalar(select(JobRow.id).where(*self._held(claim))) is not None

    def progress(self, claim: Claim, data: dict[str, Any], *, durable: bool = True) -> bool:
        """Merge `data` into the job's progress; False if the claim was lost. `durable=False`
        for a mark whose loss (a database crash) the next attempt copes with anyway, as with
        a worker that died before writing it (see `Database.session`).

        The write names the attempt, like every other: a write by id alone, after a read
        that found the claim held, landed on PostgreSQL even when a takeover committed in
        between, and the new attempt never saw it (an execution's `calling` mark: both
        attempts called the target). Only the holder writes progress, so the read's value
        is still current when the conditional write succeeds."""
        with self.db.session(durable=durable) as s:
            held = s.execute(select(JobRow.progress).where(*self._held(claim))).first()
            if held is None:
                return False
            result = s.execute(
                update(JobRow)
                .where(*self._held(claim))
                .values(progress={**(held.progress or {}), **data}, updated_at=self.clock())
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def finish(
        self,
        claim: Claim,
        result: dict[str, Any] | None = None,
        *,
        again_at: datetime | None = None,
    ) -> bool:
        """Succeeded; or, for a recurring job, queued again for `again_at`."""
        now = self.clock()
        values: dict[str, Any]
        if again_at is not None:
            values = {"state": "queued", "run_after": again_at, "failures": 0, "error": None}
        else:
            values = {"state": "succeeded", "finished_at": now}
        # Not waiting for the WAL flush: losing this write (a database crash) is a worker
        # dying just before it, which the next attempt already handles.
        return self._update(claim, {**values, "result": result, "updated_at": now}, durable=False)

    def fail(
        self,
        claim: Claim,
        error: str,
        *,
        retry_in: timedelta | None,
    ) -> str:
        """Record a failed attempt: queued again after `retry_in` while attempts remain,
        else dead (the dead letter). Returns the state it ended in ('lost' if not held)."""
        now = self.clock()
        with self.db.session() as s:
            held = s.execute(
                select(JobRow.failures, JobRow.max_attempts).where(*self._held(claim))
            ).first()
            if held is None:
                return "lost"
            failures = held.failures + 1
            values: dict[str, Any] = {
                "failures": failures,
                "error": error[:MAX_ERROR],
                "updated_at": now,
                "lease_owner": None,
                "lease_until": None,
            }
            if retry_in is None or failures >= held.max_attempts:
                values.update(state="dead", finished_at=now)
            else:
                values.update(state="queued", run_after=now + retry_in)
            # Conditional like `progress`: a takeover committed since the read keeps its job.
            result = s.execute(
                update(JobRow)
                .where(*self._held(claim))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            return str(values["state"]) if result.rowcount else "lost"  # type: ignore[attr-defined]

    def release(self, claim: Claim) -> bool:
        """Give a job back unfinished (shutdown): another worker resumes it at once."""
        now = self.clock()
        return self._update(
            claim, {"state": "queued", "run_after": now, "lease_until": None, "updated_at": now}
        )

    def cancelled(self, claim: Claim, reason: str = "cancelled") -> bool:
        return self._update(claim, _ended("cancelled", self.clock(), reason))

    def _update(self, claim: Claim, values: dict[str, Any], *, durable: bool = True) -> bool:
        if values.get("state") != "running":
            values = {"lease_owner": None, "lease_until": None, **values}
        with self.db.session(durable=durable) as s:
            result = s.execute(update(JobRow).where(*self._held(claim)).values(**values))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    @staticmethod
    def _end(s: Session, row: JobRow, state: str, now: datetime, *, error: str) -> None:
        for column, value in _ended(state, now, error).items():
            setattr(row, column, value)

    # -- asked from outside --------------------------------------------------

    def cancel(self, tenant_id: str, job_id: str) -> JobView:
        """Cancel a job: a queued one at once; a running one is asked to stop (its worker
        sees the request within a second and records the end). Finished jobs stay as
        they are, so cancelling twice is harmless."""
        now = self.clock()
        with self.db.session() as s:
            row = self._load(s, tenant_id, job_id)
            if row.state == "queued":
                self._end(s, row, "cancelled", now, error="cancelled")
            elif row.state == "running":
                row.cancel_requested = True
                row.updated_at = now
                self._announce(s)
            s.flush()
            return view(row)

    def get(self, tenant_id: str, job_id: str) -> JobView:
        with self.db.session() as s:
            return view(self._load(s, tenant_id, job_id))

    def list_jobs(
        self,
        tenant_id: str,
        *,
        state: str | None = None,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[JobView]:
        """A tenant's jobs, oldest first (keyset pages), optionally of one state and kind:
        `state="dead"` is the dead letter."""
        with self.db.session() as s:
            stmt = select(JobRow).where(JobRow.tenant_id == tenant_id)
            if state is not None:
                stmt = stmt.where(JobRow.state == state)
            if kind is not None:
                stmt = stmt.where(JobRow.kind == kind)
            page = paginate(s, stmt, JobRow.id, cursor=cursor, limit=limit)
            return Page([view(r) for r in page.items], page.next_cursor)

    def find(self, key: str) -> JobView | None:
        with self.db.session() as s:
            row = s.scalar(select(JobRow).where(JobRow.key == key))
            return view(row) if row else None

    def stats(self) -> QueueStats:
        now = self.clock()
        with self.db.read_connection() as conn:
            counts = dict(
                conn.execute(
                    select(JobRow.state, func.count())
                    .where(JobRow.state.in_(("queued", "running", "dead")))
                    .group_by(JobRow.state)
                ).all()
            )
            oldest = conn.scalar(
                select(func.min(JobRow.run_after)).where(
                    JobRow.state == "queued", JobRow.run_after <= now
                )
            )
        waited = 0.0
        if oldest is not None:
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
            waited = max(0.0, (now - oldest).total_seconds())
        return QueueStats(
            queued=int(counts.get("queued", 0)),
            running=int(counts.get("running", 0)),
            dead=int(counts.get("dead", 0)),
            oldest_due_seconds=waited,
        )

    def stats_by_kind(self) -> list[tuple[str, int, int, float]]:
        """Per kind with unfinished jobs: (kind, queued, running, seconds the oldest due
        job has waited). Grouped counts over the unfinished jobs only (`ix_jobs_due`)."""
        now = self.clock()
        with self.db.read_connection() as conn:
            rows = conn.execute(
                select(JobRow.kind, JobRow.state, func.count(), func.min(JobRow.run_after))
                .where(JobRow.state.in_(("queued", "running")))
                .group_by(JobRow.kind, JobRow.state)
            ).all()
        found: dict[str, list[float]] = {}
        for kind, state, count, oldest in rows:
            entry = found.setdefault(kind, [0, 0, 0.0])
            if state == "running":
                entry[1] = count
                continue
            entry[0] = count
            if oldest is not None:
                if oldest.tzinfo is None:
                    oldest = oldest.replace(tzinfo=UTC)
                entry[2] = max(0.0, (now - oldest).total_seconds())
        return [(k, int(q), int(r), age) for k, (q, r, age) in sorted(found.items())]

    def purge(self, older_than: timedelta, limit: int = 1000) -> int:
        """Delete finished jobs older than this (they only matter while someone looks)."""
        cutoff = self.clock() - older_than
        with self.db.session() as s:
            ids = s.scalars(
                select(JobRow.id)
                .where(JobRow.state.in_(FINISHED), JobRow.finished_at < cutoff)
                .limit(limit)
            ).all()
            if ids:
                s.execute(delete(JobRow).where(JobRow.id.in_(ids)))
            return len(ids)

    @staticmethod
    def _load(s: Session, tenant_id: str, job_id: str) -> JobRow:
        row = s.get(JobRow, job_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFound("job", job_id)
        return row
