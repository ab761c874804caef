"""Resident memory (RSS) of `cosmo serve --workers 0` and `cosmo worker`, for sizing.

Not a test: numbers depend on the machine and the package versions. Starts the two real
processes on a fresh database and prints their RSS (from /proc, in MB)

* at idle, once ready;
* after load: `--agents` agents created over REST, a knowledge base of `--chunks` synthetic
  chunks (written in this process with random unit vectors under the MiniLM model's name, so
  the server treats them as its own), `--searches` REST searches on it (the server embeds each
  query with MiniLM and holds the knowledge base's vectors in memory), and `--documents` real
  uploads that the worker ingests with MiniLM.

Also prints `cosmo serve` with its default supervised worker (one replica of `make run`).
No Claude turns: they need the model API (the e2e tests fake it), and a turn's memory is the
prompt and the reply, small next to the model and the vectors measured here.

`python bench/memory.py [--agents 20] [--chunks 100000] [--searches 50] [--documents 5]
[--database-url URL]` (default: SQLite in a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import numpy as np

from core.db import Database
from core.embeddings import MiniLMEmbedder
from core.embeddings.port import Vectors
from core.knowledge.embedded import EmbeddedKnowledgeIndex
from core.knowledge.service import KnowledgeService
from tests.cosmo_process import free_port

ROOT = Path(__file__).resolve().parent.parent
COSMO = [sys.executable, "-m", "bot.cli"]
TOKEN = "bench-memory-root-token"
TENANT = "default"


class RandomAsMiniLM:
    """Random unit vectors under MiniLM's name: fills a knowledge base fast, and the server
    searches it with the real model (the vectors' content does not change their size)."""

    model_name = MiniLMEmbedder.model_name
    dimension = MiniLMEmbedder.dimension

    def __init__(self) -> None:
        self._rng = np.random.default_rng(7)

    def embed(self, texts: Sequence[str]) -> Vectors:
        v = self._rng.standard_normal((len(texts), self.dimension)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if f"\nPPid:\t{pid}\n" in text:
            found.append(int(status.parent.name))
    return found


def wait(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


@contextmanager
def process(env: dict[str, str], *args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        p = subprocess.Popen([*COSMO, *args], env=env, cwd=ROOT, stdout=out, stderr=out)
    try:
        yield p
    finally:
        p.terminate()
        try:
            p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            p.kill()


def ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def fill_knowledge(url: str, kb_id: str, chunks: int) -> float:
    db = Database.from_url(url)
    service = KnowledgeService(db, RandomAsMiniLM(), EmbeddedKnowledgeIndex(db))
    rng = np.random.default_rng(11)
    words = [f"w{i}" for i in range(5000)]
    start = time.perf_counter()
    for offset in range(0, chunks, 5000):
        count = min(5000, chunks - offset)
        text = "\n\n".join(" ".join(rng.choice(words, 60)) for _ in range(count))
        service.ingest(TENANT, kb_id, f"synthetic-{offset}.txt", text.encode())
    db.dispose()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--searches", type=int, default=50)
    parser.add_argument("--documents", type=int, default=5)
    parser.add_argument("--database-url")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cosmo-bench-memory-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMO_", "SLACK_"))}
    env.update(COSMO_DATA_DIR=str(work / "data"), COSMO_API_TOKEN=TOKEN, COSMO_WORKER_NICE="0")
    env.pop("ANTHROPIC_API_KEY", None)
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    else:
        env.pop("DATABASE_URL", None)
    subprocess.run([*COSMO, "db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True)
    url = args.database_url or f"sqlite:///{work / 'data' / 'cosmo.db'}"
    auth = {"Authorization": f"Bearer {TOKEN}"}

    # One `make run` replica: serve plus the worker it supervises.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with process(env, "serve", "--port", str(port), log=work / "replica.log") as replica:
        wait(lambda: ready(base), 120, "cosmo serve")
        replica_log = work / "replica.log"
        wait(lambda: b"kinds of job" in replica_log.read_bytes(), 120, "its worker")
        time.sleep(5)
        kids = children(replica.pid)
        together = rss_mb(replica.pid) + sum(rss_mb(k) for k in kids)
        print(f"cosmo serve (1 supervised worker), idle: {together:.0f} MB in all")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (
        process(
            env, "serve", "--workers", "0", "--port", str(port), log=work / "serve.log"
        ) as serve,
        process(env, "worker", log=work / "worker.log") as worker,
    ):
        wait(lambda: ready(base), 120, "cosmo serve --workers 0")
        wait(lambda: b"kinds of job" in (work / "worker.log").read_bytes(), 120, "cosmo worker")
        time.sleep(5)
        print(
            f"idle: serve --workers 0 {rss_mb(serve.pid):.0f} MB, "
            f"worker {rss_mb(worker.pid):.0f} MB"
        )

        http = httpx.Client(base_url=f"{base}/api/v1", headers=auth, timeout=120)
        r = http.post("/personas", json={"name": "helper", "role": "Assistant"})
        assert r.status_code == 201, r.text
        for i in range(args.agents):
            r = http.post("/agents", json={"name": f"agent-{i}", "persona": "helper"})
            assert r.status_code == 201, r.text
        kb = http.post("/knowledge-bases", json={"name": "handbook"}).json()
        took = fill_knowledge(url, kb["id"], args.chunks)
        print(f"filled {args.chunks} chunks in {took:.0f}s")
        start = time.perf_counter()
        for i in range(args.searches):
            r = http.get(f"/knowledge-bases/{kb['id']}/search", params={"q": f"w{i} w{i + 1}"})
            assert r.status_code == 200, r.text
        print(f"{args.searches} searches in {time.perf_counter() - start:.1f}s")
        docs = http.post("/knowledge-bases", json={"name": "uploads"}).json()
        sentence = "Refunds are issued within fourteen days of a returned order. "
        for i in range(args.documents):
            body = (f"# Policy {i}\n\n" + sentence * 400).encode()
            r = http.post(
                f"/knowledge-bases/{docs['id']}/documents",
                files={"file": (f"policy-{i}.md", body)},
            )
            assert r.status_code in (200, 201, 202), r.text

        def ingested() -> bool:
            listed: Any = http.get(f"/knowledge-bases/{docs['id']}/documents").json()
            return len(listed["items"]) == args.documents and all(
                d["status"] == "ready" for d in listed["items"]
            )

        wait(ingested, 600, "ingestion")
        time.sleep(2)
        print(
            f"after load ({args.agents} agents, {args.chunks} chunks, {args.searches} searches, "
            f"{args.documents} documents): serve --workers 0 {rss_mb(serve.pid):.0f} MB, "
            f"worker {rss_mb(worker.pid):.0f} MB"
        )


if __name__ == "__main__":
    main()
