"""Time our code adds to a chat turn, with 10k memories stored for the user.

Two intervals per turn, measured around the real `AnthropicModelClient` talking to the
local fake Messages API (zero model latency):

* in  -> request: from `ConfigurableAgent.chat` being called to the model request leaving
  (turn recorded, token budget checked, memory searched, prompt built, history read);
* done -> reply: from the model's last byte to `chat` returning (turn, usage, history and
  memory written).

Baseline in the same run: the same agent with memory off. Prints median, p99 and ratios.
Run: `.venv/bin/python bench/turn_overhead.py [--turns 200] [--memories 10000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from sqlalchemy import insert

from core.agent.anthropic_client import AnthropicModelClient, anthropic_client
from core.agent.model import ModelReply, ModelRequest, TextSink
from core.config_document import parse_document
from core.db import Database, upgrade
from core.db.ids import new_id
from core.db.models import MemoryRow
from core.embeddings import default_embedder
from core.memory.local import LocalMemory
from core.settings import Settings
from core.wiring import build_container
from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply

CONFIG = """
apiVersion: cosmo/v1
personas:
  - {name: p, role: Sales assistant, instructions: "Help {{user_name}} in {{channel}}."}
skills:
  - {name: current_time, description: Current time., kind: read}
  - name: draft_email
    description: Draft an email.
    kind: action
    input_schema: {type: object, properties: {to: {type: string}}, required: [to]}
agents:
  - {name: with-memory, persona: p, skills: [current_time, draft_email], memory_enabled: true}
  - {name: no-memory, persona: p, skills: [current_time, draft_email], memory_enabled: false}
"""


class TimedModel:
    """Wraps the real client to stamp when the request leaves and when the answer is done."""

    def __init__(self, inner: AnthropicModelClient) -> None:
        self.inner = inner
        self.sent: list[float] = []
        self.done: list[float] = []

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None) -> ModelReply:
        self.sent.append(time.perf_counter())
        reply = await self.inner.complete(request, on_text)
        self.done.append(time.perf_counter())
        return reply


def seed_memories(db, memory: LocalMemory, agent_id: str, n: int) -> None:
    rng = np.random.default_rng(7)
    embedder = memory.embedder
    assert embedder is not None
    vectors = rng.standard_normal((n, embedder.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    topics = ["pricing", "renewal", "Tuesday meetings", "security review", "budget", "pilot"]
    rows = [
        {
            "id": new_id("mem"),
            "tenant_id": "default",
            "agent_id": agent_id,
            "user_id": "U1",
            "session_id": None,
            "text": f"user: note {i} about {topics[i % len(topics)]} for account {i % 97}",
            "embedding": vectors[i].tobytes(),
            "embedding_model": embedder.model_name,
            "meta": {},
        }
        for i in range(n)
    ]
    with db.session() as s:
        for start in range(0, n, 1000):
            s.execute(insert(MemoryRow), rows[start : start + 1000])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(turns: int, memories: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropicAPI() as fake:
        settings = Settings(
            _env_file=None,
            COSMO_DATA_DIR=tmp,
            ANTHROPIC_API_KEY="bench",
            ANTHROPIC_BASE_URL=fake.base_url,
            COSMO_API_TOKEN="bench",
        )
        upgrade(settings.resolved_database_url)
        memory = LocalMemory(Database.from_url(settings.resolved_database_url), default_embedder())
        timed = TimedModel(AnthropicModelClient(anthropic_client("bench", base_url=fake.base_url)))
        container = build_container(settings, model=timed, memory=memory)
        container.config.apply("default", parse_document(CONFIG), actor="bench")
        fake.respond_with(lambda req: Reply.text("Sure: here is a short, useful answer."))
        results: dict[str, tuple[list[float], list[float]]] = {}
        for name in ("no-memory", "with-memory"):
            agent_id = container.agents.get_by_name("default", name).id
            if name == "with-memory":
                t = time.perf_counter()
                seed_memories(container.db, memory, agent_id, memories)
                print(f"seeded {memories} memories in {time.perf_counter() - t:.1f}s")
            agent = await container.runner.agent("default", agent_id)
            session = container.sessions.start("default", agent_id, user_id="U1")
            await agent.chat(session, "warm up the pricing question")  # loads the scope
            ins, outs = [], []
            for i in range(turns):
                timed.sent.clear()
                timed.done.clear()
                # A fresh session per turn keeps history length constant across turns.
                session = container.sessions.start("default", agent_id, user_id="U1")
                t0 = time.perf_counter()
                await agent.chat(session, f"what did we agree on pricing for account {i % 97}?")
                t1 = time.perf_counter()
                ins.append((timed.sent[0] - t0) * 1000)
                outs.append((t1 - timed.done[-1]) * 1000)
            results[name] = (ins, outs)
        await container.aclose()
        print(f"\nturn overhead over {turns} turns (ms; SQLite; fake model with 0 latency)")
        head = ("agent", "in->request p50", "p99", "done->reply p50", "p99")
        print(f"{head[0]:<12} {head[1]:>16} {head[2]:>8} {head[3]:>16} {head[4]:>8}")
        for name, (ins, outs) in results.items():
            print(
                f"{name:<12} {statistics.median(ins):>16.2f} {pct(ins, 0.99):>8.2f} "
                f"{statistics.median(outs):>16.2f} {pct(outs, 0.99):>8.2f}"
            )
        base_in = statistics.median(results["no-memory"][0])
        mem_in = statistics.median(results["with-memory"][0])
        print(
            f"\nmemory search with {memories} memories adds {mem_in - base_in:.2f} ms p50 "
            f"(x{mem_in / base_in:.2f} of the no-memory path)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--memories", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(run(args.turns, args.memories))


if __name__ == "__main__":
    main()
