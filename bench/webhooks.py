"""Webhook deliveries per second to a local receiver, with and without failing answers.

One `WebhookDispatcher` (the real one: lease, sign, URL check, POST, record) drains N
outbox rows into the local fake receiver (tests/fakes/webhook_receiver.py). Two runs:
every answer 200 (baseline), then 20% of answers 500 at random, so about a fifth of the
attempts are retried (each retry is a full attempt: lease, send, record). The retry delays
are skipped by moving the injected clock to the next due time, so the figures measure our
work, not the backoff.

Prints deliveries/s (rows that reached `delivered`), attempts/s, and the p50/p99 latency
of the HTTP round trip (a timing transport around httpx) and of a whole attempt as recorded
(URL check + round trip, whole milliseconds).
Run: `.venv/bin/python bench/webhooks.py [--events 2000] [--concurrency 16] [--db-threads 1]
[--pg URL]`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.db import Database, upgrade
from core.db.ids import new_id
from core.db.models import AgentRow, PersonaRow, WebhookAttemptRow, WebhookDeliveryRow
from core.outputs.port import NewEvent
from core.webhooks.delivery import WebhookDispatcher
from core.webhooks.outbox import Outbox
from core.webhooks.policy import DeliveryPolicy
from core.webhooks.signing import generate_secret
from tests.fakes.webhook_receiver import Reply, WebhookReceiver


class JumpClock:
    """Real time plus an offset that jumps over retry delays."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class TimingTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        # As the dispatcher's own client: no idle connections kept (see WebhookDispatcher).
        self.inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
        self.seconds: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        response = await self.inner.handle_async_request(request)
        self.seconds.append(time.perf_counter() - started)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@contextmanager
def database(pg_url: str | None) -> Iterator[Database]:
    if pg_url is None:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            upgrade(url)
            db = Database.from_url(url)
            try:
                yield db
            finally:
                db.dispose()
        return
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    name = f"cosmo_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        db = Database.from_url(url)
        try:
            yield db
        finally:
            db.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def seed(db: Database, url: str, events: int) -> None:
    with db.session() as s:
        persona = PersonaRow(id=new_id("per"), tenant_id="default", name="bench", role="r")
        s.add(persona)
        s.flush()
        agent = AgentRow(
            id=new_id("agt"),
            tenant_id="default",
            name="bench",
            persona_id=persona.id,
            webhook_secret=generate_secret(),
        )
        s.add(agent)
        s.flush()
        payload = {"type": "output.created", "data": {"id": "out_x", "preview": "x" * 400}}
        batch = [NewEvent("output.created", agent.id, url, payload) for _ in range(events)]
        Outbox(db).add_in(s, batch, tenant_id="default", output_id=None)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(
    events: int, failure_rate: float, concurrency: int, pg_url: str | None, db_threads: int = 1
) -> dict[str, float]:
    rng = random.Random(42)
    with WebhookReceiver() as receiver, database(pg_url) as db:
        receiver.respond_with(
            lambda _r: Reply.error(500) if rng.random() < failure_rate else Reply.ok()
        )
        seed(db, receiver.url, events)
        transport = TimingTransport()
        clock = JumpClock()
        async with httpx.AsyncClient(transport=transport) as http:
            dispatcher = WebhookDispatcher(
                db,
                http=http,
                policy=DeliveryPolicy(
                    allow_insecure=True, concurrency=concurrency, db_threads=db_threads
                ),
                clock=clock,
            )
            started = time.perf_counter()
            while True:
                if await dispatcher.run_once(limit=200):
                    continue
                with db.session() as s:
                    due = s.scalar(
                        select(func.min(WebhookDeliveryRow.next_attempt_at)).where(
                            WebhookDeliveryRow.status == "pending"
                        )
                    )
                if due is None:
                    break
                clock.offset += max(timedelta(0), due - clock())
            elapsed = time.perf_counter() - started
            await dispatcher.aclose()
        with db.session() as s:
            delivered = s.scalar(
                select(func.count()).where(WebhookDeliveryRow.status == "delivered")
            )
            failed = s.scalar(select(func.count()).where(WebhookDeliveryRow.status == "failed"))
            durations = [float(d) for d in s.scalars(select(WebhookAttemptRow.duration_ms))]
        attempts = len(receiver.requests)
    return {
        "delivered": float(delivered or 0),
        "failed": float(failed or 0),
        "attempts": float(attempts),
        "seconds": elapsed,
        "deliveries_per_s": (delivered or 0) / elapsed,
        "attempts_per_s": attempts / elapsed,
        "rtt_p50_ms": percentile(transport.seconds, 0.50) * 1000,
        "rtt_p99_ms": percentile(transport.seconds, 0.99) * 1000,
        "attempt_p50_ms": statistics.median(durations),
        "attempt_p99_ms": percentile(durations, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--db-threads", type=int, default=1)
    parser.add_argument("--pg", default=None, help="PostgreSQL URL to create a bench DB next to")
    args = parser.parse_args()
    backend = "PostgreSQL" if args.pg else "SQLite"
    print(
        f"webhook delivery, {args.events} events, concurrency {args.concurrency}, "
        f"{args.db_threads} DB thread(s), {backend}, local receiver (no keep-alive)"
    )
    head = (
        "failing",
        "deliv/s",
        "attempts/s",
        "attempts",
        "failed",
        "rtt p50",
        "rtt p99",
        "att p50",
        "att p99",
    )
    print(
        f"{head[0]:>8} {head[1]:>9} {head[2]:>11} {head[3]:>9} {head[4]:>7} "
        f"{head[5]:>8} {head[6]:>8} {head[7]:>8} {head[8]:>8}"
    )
    for rate in (0.0, 0.2):
        r = asyncio.run(run(args.events, rate, args.concurrency, args.pg, args.db_threads))
        print(
            f"{rate:>8.0%} {r['deliveries_per_s']:>9.0f} {r['attempts_per_s']:>11.0f} "
            f"{r['attempts']:>9.0f} {r['failed']:>7.0f} {r['rtt_p50_ms']:>6.2f}ms "
            f"{r['rtt_p99_ms']:>6.2f}ms {r['attempt_p50_ms']:>6.0f}ms {r['attempt_p99_ms']:>6.0f}ms"
        )


if __name__ == "__main__":
    main()
