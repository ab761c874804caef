"""What only the pgvector provider has: its own schema, HNSW indexes the planner can use,
indexing chunks stored under another provider, concurrent first writers, and the wiring.

The shared behaviour (ranking, deletes, re-index, tenancy) is in the contract suite.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, text

from bot.server import create_app
from core.db import Database, upgrade
from core.db.models import KnowledgeBaseRow
from core.embeddings import HashingEmbedder
from core.errors import ServiceUnavailable
from core.knowledge.embedded import EmbeddedKnowledgeIndex
from core.knowledge.jobs import KIND
from core.knowledge.pgvector import _DDL_LOCK, PgvectorKnowledgeIndex, pgvector_problem
from core.knowledge.port import Candidate, IndexQuery, IndexTarget
from core.knowledge.ranking import KEYWORD_FLOOR, strong_keyword_matches
from core.knowledge.schemas import KnowledgeBaseSpec
from core.knowledge.service import KnowledgeService
from core.wiring import build_container
from tests.conftest import AUTH, PG_URL, make_settings
from tests.job_support import run_due_jobs

EMBEDDER = HashingEmbedder(dimension=64)


def document(i: int) -> bytes:
    """A Markdown file of a few sections with words of its own (`topic7`, `code-7-2`)."""
    parts = [f"# Guide {i}"]
    for j in range(4):
        parts.append(
            f"## Part {j}\n\nTopic{i} section{j} explains code-{i}-{j} for team {i % 5} "
            f"and the {['billing', 'security', 'onboarding', 'outage'][j]} process."
        )
    return "\n\n".join(parts).encode()


@pytest.fixture
def database(pgvector_url: str) -> Iterator[Database]:
    """The pgvector database with real connections; each test uses its own tenant."""
    db = Database.from_url(pgvector_url)
    yield db
    db.dispose()


def hnsw_indexes(db: Database, knowledge_base_id: str) -> list[str]:
    """The knowledge base's usable HNSW indexes."""
    index = PgvectorKnowledgeIndex(db, prepare=False)
    with db.session() as s:
        return sorted(name for name, ok in index._hnsw_indexes(s, knowledge_base_id).items() if ok)


def test_a_small_knowledge_base_is_searched_exactly_until_it_earns_an_index(
    database: Database,
):
    per_document = 4  # one chunk per part; the title joins the first
    index = PgvectorKnowledgeIndex(database, hnsw_from=5 * per_document + 1)
    service = KnowledgeService(database, EMBEDDER, index)
    kb = service.create("t-grow", KnowledgeBaseSpec(name="guides"))
    for i in range(5):
        service.ingest("t-grow", kb.id, f"guide-{i}.md", document(i))
    assert service.get("t-grow", kb.id).chunk_count == 5 * per_document
    assert hnsw_indexes(database, kb.id) == []
    assert service.search("t-grow", kb.id, "Topic4 section3 outage")[0].document == "guide-4.md"

    service.ingest("t-grow", kb.id, "guide-5.md", document(5))  # past the threshold

    assert len(hnsw_indexes(database, kb.id)) == 1
    assert service.search("t-grow", kb.id, "Topic5 section1 security")[0].section == (
        "Guide 5 > Part 1"
    )


def test_an_sqlite_database_is_refused_with_a_clear_message(tmp_path: Path):
    db = Database.from_url(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ServiceUnavailable) as refused:
        PgvectorKnowledgeIndex(db)
    assert "KNOWLEDGE_PROVIDER=pgvector needs DATABASE_URL to be a PostgreSQL" in str(
        refused.value.detail
    )
    db.dispose()


def test_search_by_meaning_can_use_the_knowledge_bases_hnsw_index(database: Database):
    service = KnowledgeService(database, EMBEDDER, PgvectorKnowledgeIndex(database, hnsw_from=1))
    kb = service.create("t-hnsw", KnowledgeBaseSpec(name="guides"))
    for i in range(40):
        service.ingest("t-hnsw", kb.id, f"guide-{i}.md", document(i))
    (index_name,) = hnsw_indexes(database, kb.id)
    assert index_name.endswith("_64")

    statements: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "<=>" in statement:
            statements.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", capture)
    try:
        found = service.search("t-hnsw", kb.id, "Topic7 section2 onboarding")
    finally:
        event.remove(database.engine, "before_cursor_execute", capture)
    assert found[0].document == "guide-7.md" and found[0].section == "Guide 7 > Part 2"

    (statement, parameters) = statements[-1]
    with database.engine.connect() as conn:
        # Whether the planner can order by the HNSW index, not whether it prefers to on a
        # table this small: with sorting priced out, only an index that orders will do.
        conn.exec_driver_sql("SET enable_sort = off")
        plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters))
    assert index_name in plan, plan


def test_chunks_stored_by_the_embedded_provider_are_indexed_when_switching(database: Database):
    before = KnowledgeService(database, EMBEDDER, EmbeddedKnowledgeIndex(database))
    kb = before.create("t-switch", KnowledgeBaseSpec(name="guides"))
    for i in range(3):
        before.ingest("t-switch", kb.id, f"guide-{i}.md", document(i))
    chunks = before.get("t-switch", kb.id).chunk_count

    index = PgvectorKnowledgeIndex(database, prepare=False, hnsw_from=1)
    assert index.prepare() >= chunks  # other tests' leftovers may be indexed too
    assert index.prepare() == 0  # nothing left to do the second time
    after = KnowledgeService(database, EMBEDDER, index)

    found = after.search("t-switch", kb.id, "code-1-3")
    assert (found[0].document, found[0].section) == ("guide-1.md", "Guide 1 > Part 3")
    assert found[0].keyword_score is not None and found[0].similarity is not None
    assert len(hnsw_indexes(database, kb.id)) == 1


def test_deleting_a_knowledge_base_drops_its_index_and_vectors(database: Database):
    service = KnowledgeService(database, EMBEDDER, PgvectorKnowledgeIndex(database, hnsw_from=1))
    kb = service.create("t-drop", KnowledgeBaseSpec(name="guides"))
    service.ingest("t-drop", kb.id, "guide.md", document(1))
    assert len(hnsw_indexes(database, kb.id)) == 1

    service.delete("t-drop", kb.id)

    assert hnsw_indexes(database, kb.id) == []
    with database.session() as s:
        left = s.scalar(
            text("SELECT count(*) FROM knowledge_vectors WHERE knowledge_base_id = :kb"),
            {"kb": kb.id},
        )
    assert left == 0


def test_reindexing_with_another_dimension_swaps_the_index(database: Database):
    service = KnowledgeService(database, EMBEDDER, PgvectorKnowledgeIndex(database, hnsw_from=1))
    kb = service.create("t-dim", KnowledgeBaseSpec(name="guides"))
    service.ingest("t-dim", kb.id, "guide.md", document(3))
    wider = KnowledgeService(
        database, HashingEmbedder(dimension=96), PgvectorKnowledgeIndex(database, hnsw_from=1)
    )

    wider.reindex("t-dim", kb.id)

    (name,) = hnsw_indexes(database, kb.id)
    assert name.endswith("_96")
    found = wider.search("t-dim", kb.id, "Topic3 section1 security")
    assert found[0].section == "Guide 3 > Part 1" and found[0].similarity is not None


def test_concurrent_first_writers_create_one_index_and_lose_nothing(database: Database):
    service = KnowledgeService(database, EMBEDDER, PgvectorKnowledgeIndex(database, hnsw_from=1))
    kb = service.create("t-race", KnowledgeBaseSpec(name="guides"))
    writers = 6
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def ingest(i: int) -> None:
        try:
            barrier.wait()
            service.ingest("t-race", kb.id, f"guide-{i}.md", document(i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert len(hnsw_indexes(database, kb.id)) == 1
    stored = service.get("t-race", kb.id)
    assert stored.document_count == writers
    with database.session() as s:
        vectors = s.scalar(
            text("SELECT count(*) FROM knowledge_vectors WHERE knowledge_base_id = :kb"),
            {"kb": kb.id},
        )
    assert vectors == stored.chunk_count
    for i in range(writers):
        assert service.search("t-race", kb.id, f"code-{i}-0")[0].document == f"guide-{i}.md"


def test_the_service_serves_knowledge_from_pgvector_when_configured(
    pgvector_url: str, tmp_path: Path
):
    settings = make_settings(tmp_path, DATABASE_URL=pgvector_url, KNOWLEDGE_PROVIDER="pgvector")
    container = build_container(settings, embedder=EMBEDDER)
    assert container.knowledge.index.name == "pgvector"
    with TestClient(create_app(settings, container, background=False)) as client:
        made = client.post(
            "/api/v1/knowledge-bases", json={"name": "served-by-pgvector"}, headers=AUTH
        )
        assert made.status_code == 201, made.text
        kb = made.json()["id"]
        upload = client.post(
            f"/api/v1/knowledge-bases/{kb}/documents",
            files={"file": ("guide.md", document(9), "text/markdown")},
            headers=AUTH,
        )
        assert upload.status_code == 202, upload.text
        run_due_jobs(container, KIND)  # ingested, as a worker would
        found = client.get(
            f"/api/v1/knowledge-bases/{kb}/search", params={"q": "code-9-2"}, headers=AUTH
        )
        assert found.status_code == 200, found.text
        best = found.json()["items"][0]
        assert (best["document"], best["section"]) == ("guide.md", "Guide 9 > Part 2")
        assert client.delete(f"/api/v1/knowledge-bases/{kb}", headers=AUTH).status_code == 204
    container.db.dispose()


def test_the_service_refuses_pgvector_on_sqlite_at_startup(tmp_path: Path):
    settings = make_settings(tmp_path, KNOWLEDGE_PROVIDER="pgvector")
    with pytest.raises(ServiceUnavailable, match="KNOWLEDGE_PROVIDER=pgvector"):
        build_container(settings, embedder=EMBEDDER)


@pytest.mark.skipif(not PG_URL, reason="TEST_DATABASE_URL (a PostgreSQL without pgvector) unset")
def test_a_postgresql_without_pgvector_is_named_as_the_problem():
    db = Database.from_url(PG_URL)
    try:
        assert pgvector_problem(db) == (
            "the pgvector extension is not installed on this PostgreSQL server"
        )
        with pytest.raises(ServiceUnavailable, match="could not set up the pgvector extension"):
            PgvectorKnowledgeIndex(db)
    finally:
        db.dispose()


def test_the_pgvector_server_passes_the_check(database: Database):
    assert pgvector_problem(database) is None


def zipf_corpus(chunks: int, seed: int) -> list[bytes]:
    """Paragraphs of Zipf-distributed words: a few words in most chunks, most in few."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(300)]
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(words))]
    paragraphs = [
        " ".join(rng.choices(words, weights, k=rng.randint(5, 40))) for _ in range(chunks)
    ]
    # A heading per paragraph: one chunk each (a section never shares a chunk), 50 per file.
    sections = [f"# S{i}\n\n{p}" for i, p in enumerate(paragraphs)]
    return ["\n\n".join(sections[i : i + 50]).encode() for i in range(0, chunks, 50)]


@pytest.fixture
def zipf_kb(database: Database) -> tuple[KnowledgeService, str]:
    service = KnowledgeService(database, EMBEDDER, PgvectorKnowledgeIndex(database))
    kb = service.create("t-zipf", KnowledgeBaseSpec(name=f"zipf-{uuid.uuid4().hex[:8]}"))
    for i, body in enumerate(zipf_corpus(400, seed=7)):
        service.ingest("t-zipf", kb.id, f"part-{i}.md", body)
    return service, kb.id


def keyword_scores(index: Any, target: IndexTarget, q: str, candidates: int) -> list[Candidate]:
    query = IndexQuery(q, np.zeros(64, np.float32), 2.0, candidates, keyword_floor=KEYWORD_FLOOR)
    return strong_keyword_matches(index.search(target, query).keyword)


def test_keyword_ranking_matches_the_embedded_providers_bm25(database, zipf_kb):
    """Both providers read the same chunks here, so their BM25 must agree exactly: same
    chunks above the floor, same scores, whether or not the common words were pruned."""
    service, kb_id = zipf_kb
    with database.session() as s:
        revision = s.scalar(select(KnowledgeBaseRow.revision).where(KnowledgeBaseRow.id == kb_id))
    target = IndexTarget("t-zipf", kb_id, 64, int(revision or 0))
    pg, embedded = service.index, EmbeddedKnowledgeIndex(database)
    rng = random.Random(3)
    for _ in range(60):
        q = " ".join(f"w{rng.choice([0, 1, 2, 5, 20, 80, 150, 299])}" for _ in range(3))
        for candidates in (5, 1000):
            ours = keyword_scores(pg, target, q, candidates)
            theirs = keyword_scores(embedded, target, q, candidates)
            assert [round(c.score, 3) for c in ours] == [round(c.score, 3) for c in theirs], q
            assert {c.chunk_id for c in ours if c.score > ours[-1].score + 1e-3} == {
                c.chunk_id for c in theirs if c.score > theirs[-1].score + 1e-3
            }, q


def test_chunks_holding_only_common_words_are_not_scored_when_they_cannot_rank(database, zipf_kb):
    service, kb_id = zipf_kb
    scoring: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "token_count / CAST" in statement:
            scoring.append(statement)

    event.listen(database.engine, "before_cursor_execute", capture)
    try:
        found = service.search("t-zipf", kb_id, "w0 w1 w299")  # two of the commonest, one rare
        service.search("t-zipf", kb_id, "w0 w1")  # only common words: scored in full
    finally:
        event.remove(database.engine, "before_cursor_execute", capture)
    assert found and all(m.keyword_score is None or "w299" in m.text.split() for m in found)
    assert len(scoring) == 2  # one pass each: the rare word's chunks, then every match


def test_document_frequencies_follow_ingest_replace_and_delete(database: Database):
    service = KnowledgeService(database, EMBEDDER, PgvectorKnowledgeIndex(database))
    kb = service.create("t-df", KnowledgeBaseSpec(name="terms"))
    first = service.ingest("t-df", kb.id, "a.md", b"# A\n\nalpha beta\n\n# B\n\nalpha gamma")
    service.ingest("t-df", kb.id, "b.txt", b"alpha delta")

    def frequencies() -> dict[str, int]:
        with database.session() as s:
            rows = s.execute(
                text("SELECT term, df FROM knowledge_terms WHERE knowledge_base_id = :kb"),
                {"kb": kb.id},
            ).all()
        return {term: df for term, df in rows}

    assert first.chunks == 2
    assert frequencies() == {"alpha": 3, "beta": 1, "gamma": 1, "delta": 1}
    service.ingest("t-df", kb.id, "b.txt", b"epsilon")  # replaced
    assert frequencies() == {"alpha": 2, "beta": 1, "gamma": 1, "epsilon": 1}
    service.delete_document("t-df", kb.id, first.document.id)
    assert frequencies() == {"epsilon": 1}
    service.delete("t-df", kb.id)
    assert frequencies() == {}


def test_replicas_starting_together_prepare_the_schema_once(pgvector_server):
    """Several processes start on one new database: none fails, chunks are indexed once."""
    url = pgvector_server.create()
    upgrade(url)
    seed = Database.from_url(url)
    writer = KnowledgeService(seed, EMBEDDER, EmbeddedKnowledgeIndex(seed))
    kb = writer.create("t-boot", KnowledgeBaseSpec(name="guides"))
    for i in range(4):
        writer.ingest("t-boot", kb.id, f"guide-{i}.md", document(i))
    chunks = writer.get("t-boot", kb.id).chunk_count
    replicas = [Database.from_url(url) for _ in range(4)]
    barrier = threading.Barrier(len(replicas))
    indexed: list[int] = []
    errors: list[BaseException] = []

    def start(db: Database) -> None:
        try:
            barrier.wait()
            indexed.append(PgvectorKnowledgeIndex(db, prepare=False, hnsw_from=1).prepare())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(db,)) for db in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert sorted(indexed) == [0] * (len(replicas) - 1) + [chunks]
    service = KnowledgeService(seed, EMBEDDER, PgvectorKnowledgeIndex(seed))
    found = service.search("t-boot", kb.id, "code-2-1")
    best_keyword = max(found, key=lambda m: m.keyword_score or 0.0)
    assert (best_keyword.document, best_keyword.section) == ("guide-2.md", "Guide 2 > Part 1")
    for db in [seed, *replicas]:
        db.dispose()


def test_knowledge_bases_crossing_the_threshold_together_all_get_their_index(
    database: Database,
):
    """Each writer has already deleted vectors (a replaced document) when its knowledge
    base earns an index: building inside those transactions could deadlock them."""
    index = PgvectorKnowledgeIndex(database, hnsw_from=6)
    service = KnowledgeService(database, EMBEDDER, index)
    bases = [service.create("t-cross", KnowledgeBaseSpec(name=f"kb-{i}")) for i in range(4)]
    for kb in bases:
        service.ingest("t-cross", kb.id, "guide.md", document(1))  # 4 chunks: no index yet
    assert all(hnsw_indexes(database, kb.id) == [] for kb in bases)
    barrier = threading.Barrier(len(bases))
    errors: list[BaseException] = []

    def replace(kb_id: str) -> None:
        try:
            barrier.wait()
            bigger = document(2) + b"\n\n" + document(3).replace(b"# Guide 3", b"# More")
            service.ingest("t-cross", kb_id, "guide.md", bigger)  # 8 chunks
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replace, args=(kb.id,)) for kb in bases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    built = [kb for kb in bases if hnsw_indexes(database, kb.id)]
    assert built  # at least the first builder's; the others may wait for the sweep
    service.warm()
    assert all(len(hnsw_indexes(database, kb.id)) == 1 for kb in bases)


def test_the_sweep_drops_the_index_of_a_knowledge_base_deleted_during_another_build(
    database: Database,
):
    service = KnowledgeService(database, EMBEDDER, PgvectorKnowledgeIndex(database, hnsw_from=1))
    kb = service.create("t-sweep", KnowledgeBaseSpec(name="guides"))
    service.ingest("t-sweep", kb.id, "guide.md", document(4))
    assert len(hnsw_indexes(database, kb.id)) == 1
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as other:
        other.execute(text(f"SELECT pg_advisory_lock({_DDL_LOCK})"))  # a build elsewhere
        service.delete("t-sweep", kb.id)
        assert len(hnsw_indexes(database, kb.id)) == 1  # left for later
        other.execute(text(f"SELECT pg_advisory_unlock({_DDL_LOCK})"))

    service.warm()

    assert hnsw_indexes(database, kb.id) == []
