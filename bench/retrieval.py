"""Knowledge-base retrieval on both providers: embedding, ingestion and search.

Not a test: numbers depend on the machine. Runs the embedded provider (SQLite, or
`--database-url`) and the pgvector provider (a PostgreSQL with pgvector: `--pgvector-url`,
else a temporary one from the `pgserver` dev dependency). Prints

* embedding throughput of all-MiniLM-L6-v2 on chunk-sized passages (and of the hashing
  fallback), in chunks per second;
* ingest throughput end to end (extract, chunk, embed with MiniLM, write) on a small
  generated Markdown corpus, and how fast an unchanged re-run skips it;
* search latency p50/p99 at 10k and 100k chunks: synthetic chunks with random unit vectors
  and Zipf-distributed words (so both retrievers have work), the full `KnowledgeService.search`
  path (query embedding excluded: a random vector), plus the bare NumPy top-5 scan and the
  first search's load of the knowledge base into memory (embedded), and pgvector's HNSW
  recall@10 against the exact answer over the same stored vectors.

`python bench/retrieval.py [--providers embedded pgvector] [--sizes 10000 100000]
[--queries 300] [--database-url URL] [--pgvector-url URL]`.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `cosmo serve` does
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from sqlalchemy import select

from core.db import Database, upgrade
from core.db.models import KnowledgeBaseRow, KnowledgeChunkRow
from core.embeddings import HashingEmbedder, MiniLMEmbedder, is_available
from core.embeddings.port import Embedder, Vectors
from core.knowledge.embedded import EmbeddedKnowledgeIndex
from core.knowledge.pgvector import PgvectorKnowledgeIndex
from core.knowledge.port import IndexQuery, IndexTarget, KnowledgeIndex
from core.knowledge.schemas import KnowledgeBaseSpec
from core.knowledge.service import KnowledgeService

if TYPE_CHECKING:  # pgserver is a dev-only dependency, imported when a pgvector run needs it
    from pgserver.postgres_server import PostgresServer

TENANT = "bench"
DIMENSION = 384


class RandomEmbedder:
    """Stands in for the model where only the index is measured: unit vectors around 2,000
    random topics (a topic's members have cosine ~0.6 with each other, ~0 with the rest),
    which is how sentence embeddings of a real corpus bunch up. Uniformly random vectors
    would be the worst case for HNSW and unlike any text."""

    model_name = "bench-random-384"
    dimension = DIMENSION
    _topics = np.random.default_rng(0).standard_normal((2000, DIMENSION)).astype(np.float32)
    _topics /= np.linalg.norm(_topics, axis=1, keepdims=True)

    def __init__(self, seed: int = 1) -> None:
        self._rng = np.random.default_rng(seed)

    def embed(self, texts: Sequence[str]) -> Vectors:
        topics = self._topics[self._rng.integers(0, len(self._topics), len(texts))]
        noise = self._rng.standard_normal((len(texts), DIMENSION)).astype(np.float32)
        vectors = topics + noise * np.float32(0.8 / np.sqrt(DIMENSION))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors.astype(np.float32)


def vocabulary(n: int = 20_000, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choices(letters, k=rng.randint(4, 10))) for _ in range(n)]


def zipf_words(rng: np.random.Generator, words: list[str], count: int) -> list[str]:
    ranks = np.minimum(rng.zipf(1.3, size=count), len(words)) - 1
    return [words[int(r)] for r in ranks]


def passage(rng: random.Random) -> str:
    subjects = ["The deploy", "Our refund policy", "The on-call engineer", "Ticket OPS-4411"]
    verbs = ["applies to", "was escalated to", "depends on", "is documented for"]
    objects = ["enterprise customers", "the billing team", "the EU data centre", "API keys"]
    sentences = [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} "
        f"in case {rng.randrange(10_000)}."
        for _ in range(rng.randint(6, 10))
    ]
    return " ".join(sentences)


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def embed_in_batches(embedder: Embedder, texts: list[str], size: int) -> None:
    for i in range(0, len(texts), size):
        embedder.embed(texts[i : i + size])


Provider = Callable[[Database], KnowledgeIndex]
PROVIDERS: dict[str, Provider] = {
    "embedded": EmbeddedKnowledgeIndex,
    "pgvector": PgvectorKnowledgeIndex,
}


class Databases:
    """Fresh migrated databases: SQLite files (or `--database-url`'s server) for the
    embedded provider, databases on a pgvector server for the pgvector one."""

    def __init__(self, workdir: Path, url: str | None, pgvector_url: str | None) -> None:
        self.workdir = workdir
        self.url = url
        self.pgvector_url = pgvector_url
        self._server: PostgresServer | None = None
        self._count = 0

    def fresh(self, provider: str, name: str) -> Database:
        self._count += 1
        if provider == "pgvector":
            url = self._new_postgres(self._pgvector_base(), f"bench_{name}_{self._count}")
        elif self.url and self.url.startswith("postgresql"):
            url = self._new_postgres(self.url, f"bench_{name}_{self._count}")
        else:
            url = self.url or f"sqlite:///{self.workdir / name}-{self._count}.db"
        upgrade(url)
        return Database.from_url(url)

    def _pgvector_base(self) -> str:
        if self.pgvector_url is None:
            os.environ.setdefault("XDG_RUNTIME_DIR", str(self.workdir))
            from pgserver.postgres_server import get_server

            self._server = get_server(self.workdir / "pgvector", cleanup_mode="stop")
            uri = self._server.get_uri()
            self.pgvector_url = uri.replace("postgresql://", "postgresql+psycopg://", 1)
        return self.pgvector_url

    @staticmethod
    def _new_postgres(base: str, name: str) -> str:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        url = make_url(base)
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return url.set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()


# --- embedding ------------------------------------------------------------------------------


def bench_embedding(embedders: list[Embedder]) -> None:
    rng = random.Random(5)
    texts = [passage(rng) for _ in range(256)]
    average = statistics.mean(len(t) for t in texts)
    print(f"\nembedding {len(texts)} passages of ~{average:.0f} characters, batches of 64")
    for embedder in embedders:
        embedder.embed(texts[:2])  # load weights outside the timing
        elapsed = timed(partial(embed_in_batches, embedder, texts, 64))
        single = [timed(partial(embedder.embed, [t])) * 1000 for t in texts[:40]]
        print(
            f"  {embedder.model_name:45s} {len(texts) / elapsed:7.0f} chunks/s batched, "
            f"one query p50 {statistics.median(single):.1f} ms"
        )


# --- ingestion ------------------------------------------------------------------------------


def bench_ingest(databases: Databases, provider: str, embedder: Embedder) -> None:
    rng = random.Random(9)
    documents = []
    for d in range(30):
        sections = [f"## Section {s}\n\n{passage(rng)}\n\n{passage(rng)}\n" for s in range(4)]
        documents.append((f"doc-{d:02}.md", f"# Document {d}\n\n" + "\n".join(sections)))
    size = sum(len(text) for _, text in documents)
    db = databases.fresh(provider, "ingest")
    service = KnowledgeService(db, embedder, PROVIDERS[provider](db))
    kb = service.create(TENANT, KnowledgeBaseSpec(name="corpus"))
    embedder.embed(["warm up"])
    chunks = 0
    start = time.perf_counter()
    for name, text in documents:
        chunks += service.ingest(TENANT, kb.id, name, text.encode()).chunks
    elapsed = time.perf_counter() - start
    skip = timed(lambda: [service.ingest(TENANT, kb.id, n, t.encode()) for n, t in documents])
    print(
        f"\n[{provider}] ingest {len(documents)} Markdown files ({size / 1024:.0f} KiB) with "
        f"{embedder.model_name} into {db.backend}:\n"
        f"  {chunks} chunks in {elapsed:.2f} s = {chunks / elapsed:.0f} chunks/s "
        f"({len(documents) / elapsed:.1f} files/s); unchanged re-run "
        f"{len(documents) / skip:.0f} files/s"
    )
    db.dispose()


# --- search ---------------------------------------------------------------------------------


def fill(service: KnowledgeService, kb_id: str, n: int, words: list[str]) -> tuple[float, int]:
    """Ingest ~`n` synthetic chunks (one ~60-word paragraph each) as 5,000-chunk documents."""
    rng = np.random.default_rng(11)
    written = 0
    start = time.perf_counter()
    for offset in range(0, n, 5000):
        count = min(5000, n - offset)
        text = "\n\n".join(" ".join(zipf_words(rng, words, 60)) for _ in range(count))
        written += service.ingest(TENANT, kb_id, f"synthetic-{offset}.txt", text.encode()).chunks
    return time.perf_counter() - start, written


def bench_search(databases: Databases, provider: str, sizes: list[int], queries: int) -> None:
    words = vocabulary()
    rng = np.random.default_rng(13)
    for n in sizes:
        db = databases.fresh(provider, f"search_{n}")
        index = PROVIDERS[provider](db)
        service = KnowledgeService(db, RandomEmbedder(), index)
        kb = service.create(TENANT, KnowledgeBaseSpec(name=f"synthetic-{n}", score_threshold=-1.0))
        write, n = fill(service, kb.id, n, words)
        load = timed(partial(service.search, TENANT, kb.id, "warm up"))
        texts = [" ".join(zipf_words(rng, words, 3)) for _ in range(queries)]
        latencies = [timed(partial(service.search, TENANT, kb.id, t)) * 1000 for t in texts]
        other = KnowledgeService(db, RandomEmbedder(seed=5), PROVIDERS[provider](db))
        other.ingest(TENANT, kb.id, "from-elsewhere.txt", b"A late paragraph.\n\nAnd one more.")
        refresh = timed(partial(service.search, TENANT, kb.id, "late"))
        ids, matrix = stored_vectors(db, kb.id)
        semantic, recall = semantic_only(db, index, kb.id, ids, matrix, queries=100)
        print(
            f"\n[{provider}] search {n:,} chunks x {DIMENSION} ({db.backend}; ingested at "
            f"{n / write:,.0f} chunks/s, first search {load:.2f} s):\n"
            f"  hybrid top-{kb.top_k} (vector + BM25 + RRF + fetch): "
            f"p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms "
            f"over {queries} queries\n"
            f"  by meaning only, top-10: p50 {percentile(semantic, 50):.1f} ms, "
            f"p99 {percentile(semantic, 99):.1f} ms; recall@10 against exact {recall:.3f}\n"
            f"  first search after another process added a document: {refresh * 1000:.0f} ms"
        )
        if provider == "embedded":
            query = RandomEmbedder(seed=3).embed(["q"])[0]

            def scan(m: Vectors = matrix, q: Vectors = query) -> None:
                scores = m @ q
                top = np.argpartition(-scores, 4)[:5]
                top[np.argsort(-scores[top])]

            scans = [timed(scan) * 1000 for _ in range(50)]
            print(
                f"  bare NumPy exact top-5 scan: p50 {percentile(scans, 50):.1f} ms, "
                f"p99 {percentile(scans, 99):.1f} ms"
            )
        db.dispose()


def stored_vectors(db: Database, kb_id: str) -> tuple[list[str], Vectors]:
    with db.session() as s:
        rows = s.execute(
            select(KnowledgeChunkRow.id, KnowledgeChunkRow.embedding).where(
                KnowledgeChunkRow.knowledge_base_id == kb_id
            )
        ).all()
    matrix = np.frombuffer(b"".join(bytes(r.embedding) for r in rows), dtype=np.float32)
    return [r.id for r in rows], matrix.reshape(len(rows), DIMENSION)


def semantic_only(
    db: Database, index: KnowledgeIndex, kb_id: str, ids: list[str], matrix: Vectors, queries: int
) -> tuple[list[float], float]:
    """The index's nearest-10 by meaning alone: latency, and recall against exact NumPy."""
    with db.session() as s:
        revision = int(
            s.scalar(select(KnowledgeBaseRow.revision).where(KnowledgeBaseRow.id == kb_id)) or 0
        )
    target = IndexTarget(TENANT, kb_id, DIMENSION, revision)
    vectors = RandomEmbedder(seed=17).embed(["q"] * queries)
    latencies, hits = [], 0
    for q in vectors:
        query = IndexQuery(text="", vector=q, min_similarity=-1.0, candidates=10)
        start = time.perf_counter()
        found = index.search(target, query).semantic
        latencies.append((time.perf_counter() - start) * 1000)
        exact = {ids[i] for i in np.argsort(-(matrix @ q))[:10]}
        hits += len(exact & {c.chunk_id for c in found})
    return latencies, hits / (10 * queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--database-url", help="embedded provider; default: SQLite files")
    parser.add_argument("--pgvector-url", help="pgvector provider; default: pgserver")
    parser.add_argument("--skip-ingest", action="store_true", help="search figures only")
    args = parser.parse_args()
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, cpus={os.cpu_count()}")
    model: Embedder = MiniLMEmbedder() if is_available() else HashingEmbedder()
    if not is_available():
        print("all-MiniLM-L6-v2 is not installed: the hashing embedder stands in for it")
    with tempfile.TemporaryDirectory() as tmp:
        databases = Databases(Path(tmp), args.database_url, args.pgvector_url)
        try:
            if not args.skip_ingest:
                bench_embedding([model, HashingEmbedder()] if is_available() else [model])
                for provider in args.providers:
                    bench_ingest(databases, provider, model)
            for provider in args.providers:
                bench_search(databases, provider, args.sizes, args.queries)
        finally:
            databases.close()


if __name__ == "__main__":
    main()
