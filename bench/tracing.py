"""What tracing costs a turn: turn latency with OpenTelemetry on and off, in one run.

In process, the real `ConfigurableAgent` and `AnthropicModelClient` against the local fake
Messages API (zero model latency, so the ratio is an upper bound: a real model call takes
seconds). Each turn is a model call that asks for a read skill, the skill, and a second
model call: four spans (`invoke_agent`, two `chat`, `execute_tool`). On: the SDK's
`BatchSpanProcessor` with an exporter that drops the spans (what leaves the process is the
exporter's thread, not the turn's). Off and on alternate in rounds so drift in machine load
hits both alike. Prints p50/p90 per mode and the on/off ratio of the p50s.
Run: `.venv/bin/python bench/tracing.py [--turns 200] [--rounds 4]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from core import tracing
from core.config_document import parse_document
from core.db import upgrade
from core.settings import Settings
from core.wiring import build_container
from tests.fakes.anthropic_api import FakeAnthropicAPI, RecordedRequest, Reply

CONFIG = """
apiVersion: cosmo/v1
personas:
  - {name: p, role: Sales assistant, instructions: "Help {{user_name}}."}
skills:
  - {name: current_time, description: Current time., kind: read}
agents:
  - {name: traced, persona: p, skills: [current_time], memory_enabled: false}
"""


class Dropped(SpanExporter):
    """Counts what it is given and sends it nowhere."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def answer(request: RecordedRequest) -> Reply:
    last = request.body["messages"][-1]["content"]
    if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last):
        return Reply.text("It is late; here is your answer.")
    return Reply.tool_use("current_time", {})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(turns: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropicAPI() as fake:
        settings = Settings(
            _env_file=None,
            COSMO_DATA_DIR=tmp,
            ANTHROPIC_API_KEY="bench",
            ANTHROPIC_BASE_URL=fake.base_url,
            COSMO_API_TOKEN="bench",
            COSMO_EMBEDDER="hashing",
        )
        upgrade(settings.resolved_database_url)
        container = build_container(settings)
        container.config.apply("default", parse_document(CONFIG), actor="bench")
        fake.respond_with(answer)
        agent_id = container.agents.get_by_name("default", "traced").id
        agent = await container.runner.agent("default", agent_id)
        exporter = Dropped()
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(exporter))

        async def turn(i: int) -> float:
            session = container.sessions.start("default", agent_id, user_id="U1")
            started = time.perf_counter()
            result = await agent.chat(session, f"what time is it, question {i}?")
            elapsed = (time.perf_counter() - started) * 1000
            assert not result.failed, result.error
            return elapsed

        for i in range(20):  # warm up both paths
            if i % 2:
                tracing.install(provider)
            else:
                tracing.uninstall()
            await turn(i)
        timings: dict[str, list[float]] = {"off": [], "on": []}
        per_round = max(1, turns // rounds)
        for r in range(rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                if mode == "on":
                    tracing.install(provider)
                else:
                    tracing.uninstall()
                for i in range(per_round):
                    timings[mode].append(await turn(i))
        tracing.uninstall()
        provider.shutdown()
        await container.aclose()
        container.close()

        n = len(timings["on"])
        print(f"turn latency, {n} turns per mode in {rounds} alternating rounds (ms; SQLite;")
        print("fake model with 0 latency; 2 model calls + 1 read skill per turn)")
        print(f"{'tracing':<8} {'p50':>8} {'p90':>8}")
        for mode, values in timings.items():
            print(f"{mode:<8} {statistics.median(values):>8.2f} {pct(values, 0.9):>8.2f}")
        off, on = statistics.median(timings["off"]), statistics.median(timings["on"])
        print(f"\non/off p50 ratio: {on / off:.3f} ({on - off:+.2f} ms per turn)")
        print(f"spans exported: {exporter.spans} ({exporter.spans / max(1, n + 10):.1f} per turn)")


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    asyncio.run(run(args.turns, args.rounds))


if __name__ == "__main__":
    main()
