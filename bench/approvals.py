"""Decisions per second through each `OutputStore`, and the single-output race.

For every store (sql on SQLite; sql on PostgreSQL when TEST_DATABASE_URL is set; aws over
a single-threaded moto server on this machine) it measures, with one webhook event per
decision as in production:

* distinct outputs, one caller: each decision's latency (median, p99) and decisions/s;
* distinct outputs, `--threads` callers at once: decisions/s;
* one output, `--racers` callers at once: winners (must be 1), wall time, p50/p99 per call.

Then the whole decision as a reviewer gets it (`ApprovalService.decide`: read, approver
rules, conditional write, audit, executing a builtin, session note) on SQLite, p50/p99:
plain approvals (`decide` without a revision, the call every version supports, so running
this script on an older commit gives the "before"), approvals naming the revision they
saw, and an edit followed by the approval of the edited revision.

Not a test: the figures depend on the machine, and moto is not DynamoDB (it shows what
our side costs, not what AWS latency will be).
Run: `.venv/bin/python bench/approvals.py [--decisions 300] [--threads 8] [--racers 200]
[--service 200]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from core.db import Database, upgrade
from core.db.ids import new_id
from core.errors import OutputAlreadyDecided
from core.outputs.blobs import BlobDirectory
from core.outputs.port import NewEvent, NewOutput, OutputStatus, OutputStore, Transition
from core.outputs.sql_store import SqlOutputStore
from core.webhooks.outbox import Outbox

TENANT = "T-bench"
EVENT = NewEvent("output.decided", "agt_bench", "https://hooks.example.com/x", {"k": "v"})


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _new(store: OutputStore) -> str:
    new = NewOutput(
        id=new_id("out"),
        tenant_id=TENANT,
        agent_id="agt_bench",
        session_id="ses_bench",
        skill="create_task",
        is_automatable=True,
        arguments={"title": "Call Maria"},
        content="# Call Maria\n\nAbout the invoice.",
    )
    return store.create(new).id


def _decide(store: OutputStore, output_id: str, who: str) -> bool:
    change = Transition(
        OutputStatus.PENDING, OutputStatus.APPROVED, datetime.now(UTC), decided_by=who
    )
    try:
        store.transition(TENANT, output_id, change, [EVENT])
        return True
    except OutputAlreadyDecided:
        return False


def measure(name: str, store: OutputStore, decisions: int, threads: int, racers: int) -> None:
    ids = [_new(store) for _ in range(decisions * 2)]
    sequential, concurrent = ids[:decisions], ids[decisions:]
    samples = []
    start = time.perf_counter()
    for output_id in sequential:
        t = time.perf_counter()
        _decide(store, output_id, "U_SEQ")
        samples.append(time.perf_counter() - t)
    seq_rate = decisions / (time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: _decide(store, i, "U_PAR"), concurrent))
    par_rate = decisions / (time.perf_counter() - start)

    target = _new(store)
    barrier = threading.Barrier(racers)
    race_samples: list[float] = []
    winners: list[bool] = []
    lock = threading.Lock()

    def racer(i: int) -> None:
        barrier.wait()
        t = time.perf_counter()
        won = _decide(store, target, f"U{i:04d}")
        with lock:
            race_samples.append(time.perf_counter() - t)
            winners.append(won)

    workers = [threading.Thread(target=racer, args=(i,)) for i in range(racers)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    race_wall = time.perf_counter() - start

    ms = 1000
    print(
        f"{name:<16} {statistics.median(samples) * ms:>8.2f} {_percentile(samples, 99) * ms:>8.2f}"
        f" {seq_rate:>9.0f} {par_rate:>11.0f}   {sum(winners):>3}/{racers:<4}"
        f" {race_wall * ms:>8.0f} {statistics.median(race_samples) * ms:>8.1f}"
        f" {_percentile(race_samples, 99) * ms:>8.1f}",
        flush=True,
    )


@contextmanager
def sql_store(url: str, blobs: Path) -> Iterator[OutputStore]:
    upgrade(url)
    db = Database.from_url(url)
    try:
        yield SqlOutputStore(db, BlobDirectory(blobs), Outbox(db))
    finally:
        db.dispose()


@contextmanager
def postgres_database(base_url: str) -> Iterator[str]:
    base = make_url(base_url)
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"cosmo_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def aws_store(outbox_url: str, pool: int) -> Iterator[OutputStore]:
    from core.outputs.aws_setup import ensure_bucket_and_table
    from core.outputs.aws_store import AwsOutputStore
    from tests.fakes.moto_server import MotoServer

    upgrade(outbox_url)
    db = Database.from_url(outbox_url)
    try:
        with MotoServer() as server:
            s3 = server.client("s3")
            dynamodb = server.client("dynamodb", max_pool_connections=pool)
            ensure_bucket_and_table(s3, dynamodb, "cosmo-bench", "cosmo-bench")
            yield AwsOutputStore(s3, dynamodb, "cosmo-bench", "cosmo-bench", Outbox(db))
    finally:
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--racers", type=int, default=200)
    parser.add_argument("--service", type=int, default=200)
    args = parser.parse_args()
    pg = os.environ.get("TEST_DATABASE_URL", "")

    print(
        f"{args.decisions} decisions on distinct outputs (1 caller, then {args.threads});"
        f" {args.racers} racers on one output; one webhook event per decision"
    )
    par = f"dec/s x{args.threads}"
    print(
        f"{'store':<16} {'p50 ms':>8} {'p99 ms':>8} {'dec/s x1':>9} {par:>11}"
        f"   {'winners':>8} {'race ms':>8} {'p50 ms':>8} {'p99 ms':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with sql_store(f"sqlite:///{root / 'sql.db'}", root / "blobs") as store:
            measure("sql-sqlite", store, args.decisions, args.threads, args.racers)
        if pg:
            with postgres_database(pg) as url, sql_store(url, root / "pg-blobs") as store:
                measure("sql-postgresql", store, args.decisions, args.threads, args.racers)
        else:
            print("sql-postgresql   skipped (TEST_DATABASE_URL not set)")
        outbox = f"sqlite:///{root / 'outbox.db'}"
        with aws_store(outbox, max(args.racers, args.threads)) as store:
            measure("aws-moto-server", store, args.decisions, args.threads, args.racers)
        if args.service:
            measure_service(args.service, root)


SERVICE_CONFIG = """
apiVersion: cosmo/v1
personas: [{name: p, role: Bench}]
skills:
  - name: create_task
    description: Create a task.
    kind: action
    is_automatable: true
    input_schema: {type: object, properties: {title: {type: string}}, required: [title]}
agents: [{name: bench, persona: p, skills: [create_task], approvers: [U0LEAD]}]
"""


def measure_service(count: int, root: Path) -> None:
    """Latency of `ApprovalService.decide` end to end on SQLite (see the module docstring)."""
    import asyncio
    from dataclasses import fields
    from typing import Any

    from core.approvals.policy import Actor
    from core.config_document import parse_document
    from core.settings import Settings
    from core.skills.runtime import SkillResult
    from core.wiring import build_container

    url = f"sqlite:///{root / 'service.db'}"
    upgrade(url)
    db = Database.from_url(url)
    settings = Settings(_env_file=None, COSMO_DATA_DIR=str(root / "data"), COSMO_API_TOKEN="bench")
    c = build_container(settings, db=db)

    async def create_task(arguments: dict[str, Any], ctx: Any) -> SkillResult:
        return SkillResult("done")

    c.skill_factory.builtins.register("create_task", create_task)
    c.config.apply("default", parse_document(SERVICE_CONFIG), actor="bench")
    agent = c.agents.get_by_name("default", "bench")
    session = c.sessions.start("default", agent.id, user_id="U0REQ")
    snapshots = "skill_snapshot" in {f.name for f in fields(NewOutput)}
    snapshot: dict[str, Any] = {}
    if snapshots:
        from core.outputs.snapshot import skill_snapshot

        spec = parse_document(SERVICE_CONFIG).skills[0]
        snapshot = {"skill_snapshot": skill_snapshot(spec, 1)}

    def new() -> str:
        made = NewOutput(
            id=new_id("out"),
            tenant_id="default",
            agent_id=agent.id,
            session_id=session.id,
            skill="create_task",
            is_automatable=True,
            arguments={"title": "Call Maria"},
            content="**create_task**: Create a task.\n\n**title**: Call Maria",
            requested_by="U0REQ",
            **snapshot,
        )
        return c.outputs.create(made).id

    lead = Actor("U0LEAD", "slack", verified=True) if snapshots else Actor("U0LEAD", "slack")

    async def run(kind: str) -> list[float]:
        samples = []
        for _ in range(count):
            output_id = await asyncio.to_thread(new)
            t = time.perf_counter()
            if kind == "plain":
                await c.approvals.decide("default", output_id, "approve", lead)
            elif kind == "revision":
                await c.approvals.decide("default", output_id, "approve", lead, revision=1)
            else:
                await c.approvals.edit("default", output_id, {"title": "Call Mario"}, lead, 1)
                await c.approvals.decide("default", output_id, "approve", lead, revision=2)
            samples.append(time.perf_counter() - t)
        return samples

    kinds = ["plain", "revision", "edit+approve"] if snapshots else ["plain"]
    print(f"\nApprovalService on SQLite, {count} outputs each (builtin skill, no webhook)")
    print(f"{'decision':<16} {'p50 ms':>8} {'p99 ms':>8} {'per s':>8}")
    for kind in kinds:
        samples = asyncio.run(run(kind))
        print(
            f"{kind:<16} {statistics.median(samples) * 1000:>8.2f}"
            f" {_percentile(samples, 99) * 1000:>8.2f} {len(samples) / sum(samples):>8.0f}",
            flush=True,
        )
    db.dispose()


if __name__ == "__main__":
    main()
