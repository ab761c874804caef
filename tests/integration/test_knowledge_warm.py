"""Warming knowledge bases ahead of the first question (what `cosmo serve` does at start and
every few minutes): a fresh process's embedded index loads them, most recently changed
first and within its memory budget, and later runs only reload what changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bot.server import create_app
from core.db import Database, upgrade
from core.embeddings import HashingEmbedder
from core.knowledge.embedded import EmbeddedKnowledgeIndex
from core.knowledge.schemas import KnowledgeBaseSpec
from core.knowledge.service import KnowledgeService
from core.wiring import build_container
from tests.conftest import BACKENDS, make_settings
from tests.slack_support import eventually

EMBEDDER = HashingEmbedder(dimension=64)


def guide(i: int, parts: int = 4) -> bytes:
    sections = [f"## Part {j}\n\nGuide {i} part {j} covers code-{i}-{j}." for j in range(parts)]
    return f"# Guide {i}\n\n".encode() + "\n\n".join(sections).encode()


real_db_on_every_backend = pytest.mark.parametrize("real_db", BACKENDS, indirect=True)


def fresh(db: Database, **index_options: int) -> tuple[KnowledgeService, EmbeddedKnowledgeIndex]:
    """A service as a newly started process has it: nothing loaded."""
    index = EmbeddedKnowledgeIndex(db, **index_options)
    return KnowledgeService(db, EMBEDDER, index), index


def loaded(index: EmbeddedKnowledgeIndex, knowledge_base_id: str) -> int | None:
    cache = index._cached(knowledge_base_id)
    return None if cache is None or cache.revision is None else cache.count


@real_db_on_every_backend
def test_a_fresh_process_loads_every_knowledge_base_then_only_what_changed(real_db: Database):
    writer, _ = fresh(real_db)
    handbook = writer.create("t1", KnowledgeBaseSpec(name="handbook"))
    tickets = writer.create("t2", KnowledgeBaseSpec(name="tickets"))
    writer.ingest("t1", handbook.id, "a.md", guide(1))
    writer.ingest("t2", tickets.id, "b.md", guide(2, parts=2))
    sizes = {
        kb: writer.get(t, kb).chunk_count for t, kb in (("t1", handbook.id), ("t2", tickets.id))
    }

    service, index = fresh(real_db)
    assert service.warm() == sum(sizes.values())
    assert loaded(index, handbook.id) == sizes[handbook.id]
    assert loaded(index, tickets.id) == sizes[tickets.id]
    assert service.warm() == 0  # everything current: nothing read again

    writer.ingest("t2", tickets.id, "c.md", guide(3))  # another process writes
    assert service.warm() == writer.get("t2", tickets.id).chunk_count
    assert loaded(index, handbook.id) == sizes[handbook.id]
    assert service.search("t2", tickets.id, "code-3-1")[0].document == "c.md"


@real_db_on_every_backend
def test_warming_stops_at_the_memory_budget_most_recently_changed_first(real_db: Database):
    writer, _ = fresh(real_db)
    old = writer.create("t1", KnowledgeBaseSpec(name="old"))
    writer.ingest("t1", old.id, "a.md", guide(1))
    recent = writer.create("t1", KnowledgeBaseSpec(name="recent"))
    writer.ingest("t1", recent.id, "b.md", guide(2))
    size = writer.get("t1", recent.id).chunk_count

    service, index = fresh(real_db, max_cached_chunks=size + 1)

    assert service.warm() == size
    assert loaded(index, recent.id) == size
    assert loaded(index, old.id) is None


@real_db_on_every_backend
def test_knowledge_bases_of_another_embedder_are_not_warmed(real_db: Database):
    writer, _ = fresh(real_db)
    kb = writer.create("t1", KnowledgeBaseSpec(name="handbook"))
    writer.ingest("t1", kb.id, "a.md", guide(1))
    index = EmbeddedKnowledgeIndex(real_db)
    other = KnowledgeService(real_db, HashingEmbedder(dimension=32), index)

    assert other.warm() == 0
    assert loaded(index, kb.id) is None


def test_the_server_warms_knowledge_bases_when_it_starts(tmp_path: Path):
    settings = make_settings(tmp_path)
    upgrade(settings.resolved_database_url)
    writer = build_container(settings, embedder=EMBEDDER)
    kb = writer.knowledge.create("T", KnowledgeBaseSpec(name="handbook"))
    writer.knowledge.ingest("T", kb.id, "a.md", guide(1))
    writer.db.dispose()

    container = build_container(settings, embedder=EMBEDDER)
    index = container.knowledge.index
    assert isinstance(index, EmbeddedKnowledgeIndex)
    assert loaded(index, kb.id) is None
    with TestClient(create_app(settings, container, background=True)):
        eventually(lambda: loaded(index, kb.id))
