"""One contract for every `KnowledgeIndex` provider, through `KnowledgeService`.

Each case is a provider on a database: the embedded provider on SQLite (and PostgreSQL
when TEST_DATABASE_URL is set), the pgvector provider on a PostgreSQL with pgvector
(`pgserver`, see the `pgvector_server` fixture). Search by meaning needs the real model
(installed by `make install`); with only the hashing fallback those tests skip and the
rest still run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, func, select

from core.db import Database, make_engine
from core.db.models import KnowledgeChunkRow
from core.embeddings import HashingEmbedder, MiniLMEmbedder, is_available
from core.embeddings.port import Embedder
from core.errors import NotFound
from core.knowledge.embedded import EmbeddedKnowledgeIndex
from core.knowledge.pgvector import PgvectorKnowledgeIndex
from core.knowledge.port import Candidate, KnowledgeIndex
from core.knowledge.ranking import reciprocal_rank_fusion, strong_keyword_matches
from core.knowledge.schemas import KnowledgeBaseSpec, ReindexRequired
from core.knowledge.service import KnowledgeService
from tests.conftest import BACKENDS

PROVIDERS: dict[str, Callable[[Database], KnowledgeIndex]] = {
    "embedded": EmbeddedKnowledgeIndex,
    # An index from the first chunk, so the contract runs through HNSW, not only exact scans.
    "pgvector": lambda db: PgvectorKnowledgeIndex(db, hnsw_from=1),
}
# (provider, database) pairs the contract runs on.
CASES = [("embedded", backend) for backend in BACKENDS] + [("pgvector", "pgvector")]
needs_model = pytest.mark.skipif(
    not is_available(), reason="all-MiniLM-L6-v2 is not installed: no search by meaning"
)

HANDBOOK = b"""# Handbook

## Refunds
Customers get their money back within 30 days of purchase, no questions asked.

## Pricing
The Team plan costs 12 dollars per seat per month, billed yearly.

## Security
API keys are rotated every 90 days and stored in the vault.

## Support
Ticket ABC-1234 tracks the outage of the European data centre.
"""
TICKETS = b"""# Tickets

Ticket ABC-1243 is about a typo on the login page.

Ticket XYZ-9 covers the onboarding checklist.
"""


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return MiniLMEmbedder() if is_available() else HashingEmbedder()


@pytest.fixture(scope="module")
def engines(
    migrated_database_url_factory: Callable[[str], str],
) -> Iterator[Callable[[str], Engine]]:
    """A migrated engine per backend, made when a case first needs it."""
    made: dict[str, Engine] = {}

    def engine(backend: str) -> Engine:
        if backend not in made:
            made[backend] = make_engine(migrated_database_url_factory(backend))
        return made[backend]

    yield engine
    for e in made.values():
        e.dispose()


@pytest.fixture(params=CASES, ids=[f"{p}-{b}" if p != b else p for p, b in CASES])
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def db(
    request: pytest.FixtureRequest, case: tuple[str, str], engines: Callable[[str], Engine]
) -> Iterator[Database]:
    """This case's database; everything a test writes is rolled back afterwards.

    pgvector gets a fresh copy of a template instead: it builds its HNSW indexes after a
    write commits, on a connection of its own, which must see the rows.
    """
    if case[1] == "pgvector":
        url = request.getfixturevalue("pgvector_server").create(
            template=request.getfixturevalue("pgvector_template")
        )
        database = Database.from_url(url)
        yield database
        database.dispose()
        return
    connection = engines(case[1]).connect()
    outer = connection.begin()
    try:
        yield Database.bound_to(connection)
    finally:
        outer.rollback()
        connection.close()


@pytest.fixture
def make_service(
    case: tuple[str, str], db: Database, embedder: Embedder
) -> Callable[..., KnowledgeService]:
    """Builds services over one database: a second one stands for another process."""

    def make(embedder_: Embedder | None = None) -> KnowledgeService:
        return KnowledgeService(db, embedder_ or embedder, PROVIDERS[case[0]](db))

    return make


@pytest.fixture
def service(make_service: Callable[..., KnowledgeService]) -> KnowledgeService:
    return make_service()


@pytest.fixture
def handbook(service: KnowledgeService) -> str:
    kb = service.create("t1", KnowledgeBaseSpec(name="handbook", score_threshold=0.25))
    assert service.ingest("t1", kb.id, "handbook.md", HANDBOOK).status == "created"
    assert service.ingest("t1", kb.id, "tickets.md", TICKETS).status == "created"
    return kb.id


def chunk_rows(db: Database, **where: str) -> int:
    with db.session() as s:
        stmt = select(func.count()).select_from(KnowledgeChunkRow)
        for column, value in where.items():
            stmt = stmt.where(getattr(KnowledgeChunkRow, column) == value)
        return int(s.scalar(stmt) or 0)


@needs_model
def test_a_question_finds_the_passage_that_answers_it_by_meaning(service, handbook):
    found = service.search("t1", handbook, "Can I be reimbursed if I return the product?")
    best = found[0]
    assert (best.document, best.section) == ("handbook.md", "Handbook > Refunds")
    assert best.text.startswith("Customers get their money back")
    assert best.snippet == best.text
    assert best.similarity is not None and best.similarity > 0.3
    assert best.keyword_score is None  # no word of the question is in the passage


def test_an_exact_identifier_finds_its_passage_by_keyword(service, handbook):
    found = service.search("t1", handbook, "ABC-1234")
    assert found[0].section == "Handbook > Support"
    assert "ABC-1234" in found[0].text
    assert found[0].keyword_score is not None
    # The neighbour id shares only its parts, so it ranks below (if at all).
    near = [m for m in found if "ABC-1243" in m.text]
    assert all(m.score < found[0].score for m in near)


def test_a_passage_both_retrievers_rank_first_gets_the_top_fused_score(service, handbook):
    found = service.search("t1", handbook, "Team plan price per seat")
    assert found[0].section == "Handbook > Pricing"
    assert found[0].keyword_score is not None
    if is_available():  # the model also ranks it first
        assert found[0].similarity is not None and found[0].score == 1.0
    assert all(0.0 < m.score <= 1.0 for m in found)
    assert [m.score for m in found] == sorted((m.score for m in found), reverse=True)


def test_reciprocal_rank_fusion_rewards_agreement_and_keeps_both_scales_apart():
    semantic = [Candidate("a", 0.9), Candidate("b", 0.8), Candidate("c", 0.7)]
    keyword = [Candidate("c", 12.0), Candidate("d", 3.0)]
    fused = reciprocal_rank_fusion(semantic, keyword)
    # c: 3rd + 1st beats a: 1st alone; b and d tie (2nd alone), the one with a cosine first.
    assert [f.chunk_id for f in fused] == ["c", "a", "b", "d"]
    assert fused[0].similarity == 0.7 and fused[0].keyword_score == 12.0
    assert fused[1].score == pytest.approx(0.5)  # first in one list only
    assert fused[3].similarity is None and fused[3].keyword_score == 3.0
    both_first = reciprocal_rank_fusion([Candidate("x", 0.1)], [Candidate("x", 1.0)])
    assert both_first[0].score == pytest.approx(1.0)


def test_a_keyword_match_must_be_at_least_half_as_strong_as_the_best():
    keyword = [Candidate("exact", 5.0), Candidate("half", 2.5), Candidate("fragment", 1.2)]
    assert [c.chunk_id for c in strong_keyword_matches(keyword)] == ["exact", "half"]
    assert strong_keyword_matches([]) == []


def test_top_k_and_limit_cap_the_results(service):
    kb = service.create("t1", KnowledgeBaseSpec(name="capped", top_k=2, score_threshold=-1.0))
    service.ingest("t1", kb.id, "handbook.md", HANDBOOK)
    assert len(service.search("t1", kb.id, "days")) == 2
    assert len(service.search("t1", kb.id, "days", limit=3)) == 3
    assert len(service.search("t1", kb.id, "days", limit=1)) == 1


def test_the_threshold_drops_weak_meaning_matches_but_not_keyword_matches(service):
    strict = service.create("t1", KnowledgeBaseSpec(name="strict", score_threshold=0.99))
    loose = service.create("t1", KnowledgeBaseSpec(name="loose", score_threshold=-1.0))
    for kb in (strict, loose):
        service.ingest("t1", kb.id, "handbook.md", HANDBOOK)
    question = "what happens to customer money after a purchase"
    assert all(m.similarity is None for m in service.search("t1", strict.id, question))
    assert any(m.similarity is not None for m in service.search("t1", loose.id, question))
    assert service.search("t1", strict.id, "unrelated gibberish zzqx") == []
    keyword = service.search("t1", strict.id, "vault")
    assert [m.section for m in keyword] == ["Handbook > Security"]


def test_deleting_a_document_removes_its_chunks_and_vectors(service, handbook, db):
    tickets = next(d for d in service.documents("t1", handbook).items if d.name == "tickets.md")
    assert chunk_rows(db, document_id=tickets.id) == tickets.chunk_count > 0
    assert any(m.document == "tickets.md" for m in service.search("t1", handbook, "ABC-1243"))
    before = service.get("t1", handbook)

    service.delete_document("t1", handbook, tickets.id)

    assert chunk_rows(db, document_id=tickets.id) == 0
    assert all(m.document != "tickets.md" for m in service.search("t1", handbook, "ABC-1243"))
    after = service.get("t1", handbook)
    assert (after.document_count, after.chunk_count) == (
        before.document_count - 1,
        before.chunk_count - tickets.chunk_count,
    )
    with pytest.raises(NotFound):
        service.document("t1", handbook, tickets.id)


def test_an_unchanged_file_is_skipped_by_its_hash_and_a_changed_one_replaced(service, handbook, db):
    original = next(d for d in service.documents("t1", handbook).items if d.name == "tickets.md")
    again = service.ingest("t1", handbook, "tickets.md", TICKETS)
    assert again.status == "unchanged"
    assert again.document == original

    changed = service.ingest("t1", handbook, "tickets.md", b"Ticket QRS-77 replaced the rest.")
    assert changed.status == "updated"
    assert changed.document.id == original.id
    assert changed.document.sha256 != original.sha256
    assert chunk_rows(db, document_id=original.id) == changed.chunks == 1
    assert all("ABC-1243" not in m.text for m in service.search("t1", handbook, "ABC-1243"))
    assert service.search("t1", handbook, "QRS-77")[0].document == "tickets.md"


def test_another_embedder_must_reindex_before_searching_or_ingesting(
    make_service, service, handbook
):
    other = make_service(HashingEmbedder(dimension=128))
    with pytest.raises(ReindexRequired) as refused:
        other.search("t1", handbook, "refunds")
    assert "cosmo kb reindex handbook" in refused.value.detail
    assert service.embedder.model_name in refused.value.detail
    with pytest.raises(ReindexRequired):
        other.ingest("t1", handbook, "new.md", b"# New\n\nFresh text.")
    assert other.search_many("t1", ["handbook"], "refunds") == []  # skipped, not failed

    reindexed = other.reindex("t1", handbook)

    assert reindexed == service.get("t1", handbook).chunk_count
    kb = other.get("t1", handbook)
    assert (kb.embedding_model, kb.embedding_dimension) == (other.embedder.model_name, 128)
    assert other.search("t1", handbook, "vault")[0].section == "Handbook > Security"
    with pytest.raises(ReindexRequired):  # and now the first embedder is the stale one
        service.search("t1", handbook, "vault")


def test_an_empty_knowledge_base_adopts_a_new_embedder_without_reindexing(make_service, service):
    kb = service.create("t1", KnowledgeBaseSpec(name="empty"))
    other = make_service(HashingEmbedder(dimension=64))
    assert other.search("t1", kb.id, "anything") == []
    assert other.ingest("t1", kb.id, "a.txt", b"Vault rotation policy.").status == "created"
    assert other.get("t1", kb.id).embedding_dimension == 64


def test_writes_from_another_process_are_seen_by_the_next_search(make_service, service, handbook):
    other = make_service()  # its own index and cache, like another replica
    assert other.search("t1", handbook, "QRS-77") == []  # loads its cache

    service.ingest("t1", handbook, "late.md", b"# Late\n\nTicket QRS-77 arrived late.")
    assert other.search("t1", handbook, "QRS-77")[0].document == "late.md"

    service.ingest("t1", handbook, "late.md", b"# Late\n\nTicket QRS-88 replaced it.")
    assert all("QRS-77" not in m.text for m in other.search("t1", handbook, "QRS-77"))
    assert other.search("t1", handbook, "QRS-88")[0].text == "Ticket QRS-88 replaced it."
    assert other.search("t1", handbook, "vault")[0].section == "Handbook > Security"

    late = next(d for d in service.documents("t1", handbook).items if d.name == "late.md")
    service.delete_document("t1", handbook, late.id)
    assert all(m.document != "late.md" for m in other.search("t1", handbook, "QRS-88"))


def test_search_many_merges_an_agents_knowledge_bases_and_skips_unknown_ones(service, handbook):
    faq = service.create("t1", KnowledgeBaseSpec(name="faq"))
    service.ingest("t1", faq.id, "faq.txt", b"The vault is opened by the security team only.")
    found = service.search_many("t1", ["handbook", "faq", "no-such-kb"], "vault", limit=5)
    assert {(m.knowledge_base, m.document) for m in found} == {
        ("handbook", "handbook.md"),
        ("faq", "faq.txt"),
    }
    assert [m.score for m in found] == sorted((m.score for m in found), reverse=True)
    assert service.search_many("t1", [], "vault") == []


def test_tenants_never_see_each_others_knowledge(service, handbook, db):
    assert service.list("t2").items == []
    with pytest.raises(NotFound):
        service.get("t2", handbook)
    with pytest.raises(NotFound):
        service.search("t2", handbook, "vault")
    with pytest.raises(NotFound):
        service.ingest("t2", handbook, "x.txt", b"sneaky")
    doc = service.documents("t1", handbook).items[0]
    with pytest.raises(NotFound):
        service.delete_document("t2", handbook, doc.id)
    assert service.search_many("t2", ["handbook"], "vault") == []

    # The same name in another tenant is a different knowledge base.
    theirs = service.create("t2", KnowledgeBaseSpec(name="handbook"))
    service.ingest("t2", theirs.id, "other.txt", b"The vault of tenant two.")
    assert {m.document for m in service.search_many("t2", ["handbook"], "vault")} == {"other.txt"}
    assert "other.txt" not in {m.document for m in service.search("t1", handbook, "vault")}
    assert chunk_rows(db, tenant_id="t2") == 1


def test_deleting_a_knowledge_base_removes_its_documents_and_chunks(service, handbook, db):
    service.delete("t1", handbook)
    assert chunk_rows(db, knowledge_base_id=handbook) == 0
    with pytest.raises(NotFound):
        service.search("t1", handbook, "vault")


def test_warming_is_safe_and_changes_no_answer(make_service, service, handbook):
    before = service.search("t1", handbook, "ABC-1234 refunds")
    fresh = make_service()
    assert fresh.warm() >= 0
    assert fresh.warm() == 0  # nothing changed since
    assert fresh.search("t1", handbook, "ABC-1234 refunds") == before
