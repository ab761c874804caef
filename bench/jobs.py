"""The job layer's figures: pickup latency, throughput, and takeover after `kill -9`.

* Pickup latency: a job is enqueued (committed) every `--gap` ms while a worker idles; the
  latency is the job's `started_at - created_at` (one clock, the database rows). Measured
  for a worker in this process (woken directly), a worker in another process (SQLite: it
  polls; PostgreSQL: LISTEN/NOTIFY wakes it).
* Throughput: `--jobs` no-op jobs enqueued up front, drained by one worker process with
  concurrency 16; jobs/s from the first start to the last finish. Baseline in the same run:
  the same number of plain INSERTs of job rows (what enqueueing alone costs).
* Takeover: a worker process runs a job that never ends; it is killed with SIGKILL while a
  second worker process idles; the figure is the time from the kill to the second worker
  starting that job (the lease lapses, then the next claim takes it over). Before this job
  layer a crashed Slack turn waited for a 3-minute sweep (180 s).

Run: `.venv/bin/python bench/jobs.py [--pg URL] [--jobs 2000] [--samples 200] [--gap 20]`
(SQLite in a temporary file always; PostgreSQL too when `--pg` names a database next to
which a scratch database is created).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.db import Database, upgrade  # noqa: E402
from core.db.ids import new_id  # noqa: E402
from core.db.models import JobRow  # noqa: E402
from core.jobs import JobContext, JobKind, JobQueue, JobWorker  # noqa: E402

TENANT = "bench"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def line(name: str, samples: list[float]) -> None:
    print(
        f"  {name:<44} p50 {statistics.median(samples) * 1000:>8.1f} ms"
        f"   p99 {pct(samples, 0.99) * 1000:>8.1f} ms   (n={len(samples)})"
    )


# -- a worker process (this script re-invoked) ---------------------------------------------


async def _noop(_job: JobContext) -> None:
    return None


async def _forever(_job: JobContext) -> None:
    await asyncio.sleep(3600)


def worker_main(url: str, kind: str, lease: float) -> None:
    db = Database.from_url(url)
    queue = JobQueue(db, lease=timedelta(seconds=lease))
    handler = _forever if kind.endswith(".forever") else _noop
    worker = JobWorker(
        queue,
        [JobKind(kind, handler)],
        concurrency=16,
        per_key_limit=None,
        poll=0.25 if url.startswith("sqlite") else 2.0,
        listen_url=url if url.startswith("postgresql") else None,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await worker.start()
        print("ready", flush=True)
        await stop.wait()
        await worker.stop()

    asyncio.run(main())


@contextmanager
def worker_process(url: str, kind: str, lease: float = 15.0) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", url, kind, str(lease)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready", "the worker did not start"
        time.sleep(0.5)  # its first claim has run: it is idle
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


# -- measurements ------------------------------------------------------------------------


def started_minus_created(db: Database, ids: list[str]) -> list[float]:
    with db.session() as s:
        rows = s.execute(
            select(JobRow.created_at, JobRow.started_at).where(JobRow.id.in_(ids))
        ).all()
    return [(b - a).total_seconds() for a, b in rows if b is not None]


def wait_done(db: Database, ids: list[str], limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with db.session() as s:
            left = s.scalar(
                select(text("count(*)"))
                .select_from(JobRow)
                .where(JobRow.id.in_(ids), JobRow.state != "succeeded")
            )
        if not left:
            return
        time.sleep(0.05)
    raise SystemExit("jobs did not finish")


def paced_enqueue(queue: JobQueue, kind: str, samples: int, gap: float) -> list[str]:
    ids = []
    for _ in range(samples):
        ids.append(queue.submit(tenant_id=TENANT, kind=kind)[0])
        time.sleep(gap)
    return ids


def pickup_in_process(db: Database, samples: int, gap: float) -> list[float]:
    queue = JobQueue(db)
    kind = f"bench.{uuid.uuid4().hex[:6]}"

    async def main() -> list[str]:
        worker = JobWorker(queue, [JobKind(kind, _noop)], per_key_limit=None, poll=5.0)
        await worker.start()
        ids = await asyncio.to_thread(paced_enqueue, queue, kind, samples, gap)
        await asyncio.to_thread(wait_done, db, ids)
        await worker.stop()
        return ids

    return started_minus_created(db, asyncio.run(main()))


def pickup_cross_process(db: Database, url: str, samples: int, gap: float) -> list[float]:
    queue = JobQueue(db)
    kind = f"bench.{uuid.uuid4().hex[:6]}"
    with worker_process(url, kind):
        ids = paced_enqueue(queue, kind, samples, gap)
        wait_done(db, ids)
    return started_minus_created(db, ids)


def throughput(db: Database, url: str, jobs: int) -> tuple[float, float]:
    queue = JobQueue(db)
    kind = f"bench.{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    with db.session() as s:
        for _ in range(jobs):
            s.add(
                JobRow(
                    id=new_id("job"),
                    tenant_id=TENANT,
                    kind="bench.baseline",
                    payload={},
                    state="succeeded",
                    run_after=datetime.now(UTC),
                    attempt=0,
                    failures=0,
                    max_attempts=1,
                    progress={},
                )
            )
    plain = jobs / (time.perf_counter() - t0)
    with db.session() as s:
        ids = [queue.enqueue(s, tenant_id=TENANT, kind=kind)[0] for _ in range(jobs)]
    with worker_process(url, kind):
        wait_done(db, ids)
    with db.session() as s:
        first, last = s.execute(
            select(text("min(started_at)"), text("max(finished_at)"))
            .select_from(JobRow)
            .where(JobRow.id.in_(ids))
        ).one()
    if isinstance(first, str):  # SQLite hands back text for a bare aggregate
        first, last = datetime.fromisoformat(first), datetime.fromisoformat(last)
    return jobs / (last - first).total_seconds(), plain


def takeover(db: Database, url: str, lease: float) -> float:
    queue = JobQueue(db)
    kind = f"bench.{uuid.uuid4().hex[:6]}.forever"
    job_id, _ = queue.submit(tenant_id=TENANT, kind=kind)
    with worker_process(url, kind, lease) as doomed:
        while queue.get(TENANT, job_id).attempt < 1:
            time.sleep(0.05)
        with worker_process(url, kind, lease):
            os.kill(doomed.pid, signal.SIGKILL)
            killed = time.monotonic()
            while queue.get(TENANT, job_id).attempt < 2:
                time.sleep(0.02)
            return time.monotonic() - killed


def run(label: str, url: str, args: argparse.Namespace) -> None:
    upgrade(url)
    db = Database.from_url(url)
    print(f"\n{label}")
    gap = args.gap / 1000
    line("pickup, worker in this process", pickup_in_process(db, args.samples, gap))
    how = "NOTIFY" if url.startswith("postgresql") else "polls 250 ms"
    line(
        f"pickup, worker in another process ({how})",
        pickup_cross_process(db, url, args.samples, gap),
    )
    rate, plain = throughput(db, url, args.jobs)
    print(
        f"  {'throughput, 1 worker process x16':<44} {rate:>8,.0f} jobs/s"
        f"   (plain INSERT of the rows: {plain:,.0f}/s)"
    )
    for _ in range(args.takeovers):
        seconds = takeover(db, url, args.lease)
        print(
            f"  {'kill -9 -> job resumed on another worker':<44} {seconds:>8.1f} s"
            f"   (lease {args.lease:.0f} s; the old sweep: 180 s, {180 / seconds:.0f}x)"
        )
    db.dispose()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", help="a PostgreSQL URL to create a scratch database next to")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--gap", type=float, default=20.0, help="ms between paced enqueues")
    parser.add_argument("--lease", type=float, default=15.0, help="lease seconds (default: ours)")
    parser.add_argument("--takeovers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run("SQLite (embedded)", f"sqlite:///{tmp}/jobs.db", args)
    if args.pg:
        base = make_url(args.pg)
        name = f"cosmo_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            run("PostgreSQL", base.set(database=name).render_as_string(hide_password=False), args)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
