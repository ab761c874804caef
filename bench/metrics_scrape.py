"""What a Prometheus scrape of `/metrics` costs, with a realistic amount to report.

A temporary SQLite database with 20 agents and 1,000 outputs across four statuses, 200
queued jobs of four kinds, and every instrument holding series for those 20 agents (turns,
tokens, cost, decisions, executions, webhook attempts, Slack methods). Measured through the
real app (`create_app`, Starlette's TestClient) with the root key:

* `GET /metrics`: median and p99 latency, and the answer's size;
* the database part alone (`StoreCollector`: outputs by status, the queue by kind).

Not a test: the figures depend on the machine (and on what else runs on it).
Run: `.venv/bin/python bench/metrics_scrape.py [--scrapes 300]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient
from sqlalchemy import update

from bench._support import migrated_settings, percentiles
from bot.server import create_app
from bot.server.metrics import _ContainerFigures
from core import metrics
from core.config_document import parse_document
from core.db.ids import new_id
from core.db.models import OutputRow
from core.outputs.port import NewOutput
from core.wiring import Container, build_container

ROOT = "bench-root-token"
AGENTS = 20
OUTPUTS = 1_000
JOBS = 200
STATUSES = ("pending", "executed", "rejected", "manual")


def populate(container: Container) -> None:
    agents = "\n".join(f"  - {{name: agent-{n:02d}, persona: p}}" for n in range(AGENTS))
    doc = f"apiVersion: cosmo/v1\npersonas: [{{name: p, role: r}}]\nagents:\n{agents}\n"
    container.config.apply("default", parse_document(doc), actor="bench")
    ids = [container.agents.get_by_name("default", f"agent-{n:02d}").id for n in range(AGENTS)]
    sessions = [container.sessions.start("default", agent, user_id="U1").id for agent in ids]
    for n in range(OUTPUTS):
        new = NewOutput(
            id=new_id("out"),
            tenant_id="default",
            agent_id=ids[n % AGENTS],
            session_id=sessions[n % AGENTS],
            skill="create_task",
            is_automatable=True,
            arguments={"title": f"task {n}"},
            content=f"Proposed: task {n}",
            requested_by="U1",
        )
        container.outputs.create(new, [])
    with container.db.session() as s:  # spread the statuses without running decisions
        for n, status in enumerate(STATUSES[1:], start=1):
            s.execute(
                update(OutputRow)
                .where(OutputRow.id.in_(_every(s, n)))
                .values(status=status)
                .execution_options(synchronize_session=False)
            )
    with container.db.session() as s:
        for n in range(JOBS):
            container.jobs.enqueue(s, tenant_id="default", kind=f"bench.kind{n % 4}")
    for n in range(AGENTS):
        agent = f"agent-{n:02d}"
        metrics.turn_finished(agent, "completed", 1.5)
        metrics.turn_finished(agent, "failed", 0.5)
        metrics.model_usage(
            agent,
            "claude-sonnet-4-6",
            input_tokens=100,
            output_tokens=50,
            cache_read_tokens=900,
            cache_write_tokens=10,
            cost_micros=1_234,
        )
    for via in ("slack", "api", "webhook"):
        metrics.decided(via, "approved", 60.0)
    for outcome in ("executed", "execution_failed", "manual"):
        metrics.executed(outcome)
    for attempt in range(1, 6):
        metrics.webhook_attempt("retry", attempt)
    for method in ("chat.postMessage", "chat.update", "chat.startStream", "users.info"):
        metrics.slack_api_call(method)
    metrics.slack_acked("event", 0.002)


def _every(s, n: int):
    from sqlalchemy import select

    ids = list(s.scalars(select(OutputRow.id).order_by(OutputRow.id)))
    return ids[n :: len(STATUSES)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scrapes", type=int, default=300)
    args = parser.parse_args()
    with migrated_settings(
        "cosmo-bench-metrics-",
        COSMO_API_TOKEN=ROOT,
        COSMO_SECRET_KEY="bench",
        COSMO_EMBEDDER="hashing",
    ) as settings:
        container = build_container(settings)
        started = time.perf_counter()
        populate(container)
        print(f"populated in {time.perf_counter() - started:.1f} s")
        app = create_app(container=container, background=False)
        auth = {"Authorization": f"Bearer {ROOT}"}
        scrapes: list[float] = []
        with TestClient(app) as client:
            for _ in range(20):  # warm up
                client.get("/metrics", headers=auth)
            size = 0
            for _ in range(args.scrapes):
                start = time.perf_counter()
                r = client.get("/metrics", headers=auth)
                scrapes.append(time.perf_counter() - start)
                assert r.status_code == 200, r.text
                size = len(r.content)
            figures = _ContainerFigures(container)
            store: list[float] = []
            for _ in range(args.scrapes):
                start = time.perf_counter()
                outputs = figures.outputs_by_status()
                figures.jobs_by_kind()
                store.append(time.perf_counter() - start)
        container.close()
    p50, p99 = percentiles(scrapes)
    s50, s99 = percentiles(store)
    print(f"{AGENTS} agents, {OUTPUTS} outputs {outputs}, {JOBS} queued jobs (SQLite, TestClient)")
    print(f"GET /metrics, {len(scrapes)} scrapes: p50 {p50 * 1000:.2f} ms  p99 {p99 * 1000:.2f} ms")
    print(f"  answer: {size} bytes")
    print(f"database part alone: p50 {s50 * 1000:.2f} ms  p99 {s99 * 1000:.2f} ms")


if __name__ == "__main__":
    main()
