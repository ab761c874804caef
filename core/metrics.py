"""Prometheus metrics: the instruments the seams record into, and what a scrape reads.

Instruments are process-wide (Prometheus' model); the seams call the small functions below,
so label rules live here. Labels stay bounded: agent and model names, Slack method names,
outcomes and statuses, never user, output or session ids.

Processes. `cosmo serve` supervises `cosmo worker` processes; what they count must reach
the scrape of `serve`. A supervised worker is started with `PROMETHEUS_MULTIPROC_DIR` set
to a directory of its supervisor's (`prometheus_client` then keeps its values in files there,
its documented multiprocess mode); the scrape adds those files to the serving process's own
values (`render`). A `cosmo worker` run on its own serves its values on `COSMO_METRICS_PORT`.
Figures read from the database (outputs by status, the job queue) are computed at scrape
time by `StoreCollector`, by the serving process only, so replicas never double them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

log = logging.getLogger("cosmo.metrics")

#: The variable `prometheus_client` reads at import: set, this process writes its values to
#: files in that directory instead of keeping them in memory.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV))

# `_created` series cannot be summed across processes; nothing here needs them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
"""This process's instruments (not the library's global registry: nothing else lands here)."""

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_TURN = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# Proposal to decision: people decide in seconds to days.
_DECISION = (5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 3 * 86400.0)

SLACK_ACKED = Counter(
    "cosmo_slack_events_acked",
    "Slack requests (events, interactivity, commands) answered 2xx at /slack/events.",
    ["kind"],
    registry=REGISTRY,
)
SLACK_ACK_SECONDS = Histogram(
    "cosmo_slack_ack_seconds",
    "Time from receiving a Slack request to acking it (Slack retries after 3 s).",
    ["kind"],
    buckets=(*_LATENCY[:-2], 3.0, 5.0),
    registry=REGISTRY,
)
TURNS = Counter(
    "cosmo_turns", "Turns finished, by agent and outcome.", ["agent", "outcome"], registry=REGISTRY
)
TURN_SECONDS = Histogram(
    "cosmo_turn_duration_seconds",
    "How long a turn ran (prompt, model calls, tools), by agent and outcome.",
    ["agent", "outcome"],
    buckets=_TURN,
    registry=REGISTRY,
)
MODEL_TOKENS = Counter(
    "cosmo_model_tokens",
    "Claude tokens by agent, model and kind (input, output, cache_read, cache_write).",
    ["agent", "model", "kind"],
    registry=REGISTRY,
)
MODEL_COST = Counter(
    "cosmo_model_cost_usd",
    "Estimated Claude cost in US dollars (the pricing table's), by agent and model.",
    ["agent", "model"],
    registry=REGISTRY,
)
DECISIONS = Counter(
    "cosmo_decisions",
    "Outputs decided, by channel (slack, api, webhook, system) and decision.",
    ["via", "decision"],
    registry=REGISTRY,
)
DECISION_SECONDS = Histogram(
    "cosmo_decision_latency_seconds",
    "Time from an output's proposal to its decision, by channel.",
    ["via"],
    buckets=_DECISION,
    registry=REGISTRY,
)
EXECUTIONS = Counter(
    "cosmo_executions",
    "Approved outputs closed, by outcome (executed, execution_failed, manual).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "cosmo_webhook_deliveries",
    "Webhook delivery attempts, by outcome (delivered, retry, failed) and attempt number.",
    ["outcome", "attempt"],
    registry=REGISTRY,
)
SLACK_API_CALLS = Counter(
    "cosmo_slack_api_calls",
    "Slack Web API calls made, by method (a retry after a 429 is the same call).",
    ["method"],
    registry=REGISTRY,
)
SLACK_API_RATE_LIMITED = Counter(
    "cosmo_slack_api_rate_limited",
    "Slack Web API answers 429 (rate limited), by method.",
    ["method"],
    registry=REGISTRY,
)
KNOWLEDGE_SEARCH_SECONDS = Histogram(
    "cosmo_knowledge_search_seconds",
    "Knowledge-base search latency (embedding the query and ranking passages).",
    buckets=_LATENCY,
    registry=REGISTRY,
)

#: A webhook delivery's attempt number past this is counted under it (bounded labels).
MAX_ATTEMPT_LABEL = 10


def slack_acked(kind: str, seconds: float) -> None:
    SLACK_ACKED.labels(kind).inc()
    SLACK_ACK_SECONDS.labels(kind).observe(seconds)


def turn_finished(agent: str, outcome: str, seconds: float) -> None:
    TURNS.labels(agent, outcome).inc()
    TURN_SECONDS.labels(agent, outcome).observe(seconds)


def model_usage(
    agent: str,
    model: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
    cost_micros: int,
) -> None:
    for kind, count in (
        ("input", input_tokens),
        ("output", output_tokens),
        ("cache_read", cache_read_tokens),
        ("cache_write", cache_write_tokens),
    ):
        if count:
            MODEL_TOKENS.labels(agent, model, kind).inc(count)
    if cost_micros:
        MODEL_COST.labels(agent, model).inc(cost_micros / 1_000_000)


def decided(via: str, decision: str, seconds: float) -> None:
    DECISIONS.labels(via, decision).inc()
    DECISION_SECONDS.labels(via).observe(max(0.0, seconds))


def executed(outcome: str) -> None:
    EXECUTIONS.labels(outcome).inc()


def webhook_attempt(outcome: str, attempt: int) -> None:
    WEBHOOK_DELIVERIES.labels(outcome, str(min(attempt, MAX_ATTEMPT_LABEL))).inc()


def slack_api_call(method: str) -> None:
    SLACK_API_CALLS.labels(method).inc()


def slack_api_rate_limited(method: str) -> None:
    SLACK_API_RATE_LIMITED.labels(method).inc()


@contextmanager
def knowledge_search() -> Iterator[None]:
    with KNOWLEDGE_SEARCH_SECONDS.time():
        yield


class StoreFigures(Protocol):
    """What a scrape reads from the database (the serving process's container)."""

    def outputs_by_status(self) -> dict[str, int] | None:
        """None when the store cannot count cheaply (DynamoDB: a count is a scan)."""
        ...

    def jobs_by_kind(self) -> list[tuple[str, int, int, float]]:
        """(kind, queued, running, seconds the oldest due job has waited)."""
        ...


class StoreCollector(Collector):
    """Gauges read from the database at scrape time: a few grouped counts, no scans of
    content. A failed read reports `cosmo_store_up 0` instead of failing the scrape."""

    def __init__(self, figures: StoreFigures) -> None:
        self.figures = figures

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("cosmo_store_up", "1 when the scrape could read the database.")
        try:
            outputs = self.figures.outputs_by_status()
            jobs = self.figures.jobs_by_kind()
        except Exception as exc:
            log.warning("metrics: reading the database failed: %s", type(exc).__name__)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        found: list[Metric] = [up]
        if outputs is not None:
            by_status = GaugeMetricFamily(
                "cosmo_outputs", "Outputs by status (every tenant).", labels=["status"]
            )
            for status, count in sorted(outputs.items()):
                by_status.add_metric([status], count)
            found.append(by_status)
        queued = GaugeMetricFamily("cosmo_jobs_queued", "Jobs waiting, by kind.", labels=["kind"])
        running = GaugeMetricFamily("cosmo_jobs_running", "Jobs running, by kind.", labels=["kind"])
        age = GaugeMetricFamily(
            "cosmo_jobs_oldest_due_age_seconds",
            "How long the oldest due job of each kind has waited.",
            labels=["kind"],
        )
        for kind, waiting, busy, oldest in jobs:
            queued.add_metric([kind], waiting)
            running.add_metric([kind], busy)
            age.add_metric([kind], oldest)
        return [*found, queued, running, age]


def merged(extra: Sequence[Collector] = (), worker_dir: Path | None = None) -> Iterator[Metric]:
    """This process's values, the values of the worker processes writing to `worker_dir`,
    and `extra` collectors, one family per name: series of the same name and labels are
    summed (counters and histograms add up across processes)."""
    sources: list[Collector] = []
    if MULTIPROCESS:
        # This process writes its own values to the directory too: read them from there only.
        sources.append(MultiProcessCollector(None, os.environ[MULTIPROC_ENV]))  # type: ignore[no-untyped-call]
    else:
        sources.append(REGISTRY)
        if worker_dir is not None and worker_dir.is_dir():
            sources.append(MultiProcessCollector(None, str(worker_dir)))  # type: ignore[no-untyped-call]
    sources.extend(extra)
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for source in sources:
        for family in source.collect():
            if family.name not in families:
                families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
                values[family.name] = {}
            summed = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                summed[key] = summed.get(key, 0.0) + sample.value
    for name, family in families.items():
        family.samples = [
            Sample(sample, dict(labels), value) for (sample, labels), value in values[name].items()
        ]
        yield family


def prepare_worker_dir(path: Path) -> Path:
    """An empty directory for supervised workers' files (a previous run's are stale)."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path
