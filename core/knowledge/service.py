"""`KnowledgeService`: knowledge bases of a tenant — CRUD, ingestion, hybrid search, re-index.

Ingestion reads a document (`extractors`), cuts it into chunks that respect its structure
(`chunking`), embeds them outside any transaction, then writes the document row and its
chunks in one transaction that also bumps the knowledge base's `revision` (`ingest`, in one
go; uploads go through the resumable job of `core.knowledge.ingestion` instead). Re-ingesting
a document whose bytes and chunk settings did not change (same `ingest_key`) does nothing.
Search embeds the query once, asks the index for its nearest chunks (cosine at least the
knowledge base's `score_threshold`) and its best keyword matches, fuses both with
reciprocal rank fusion (`ranking`) and keeps the knowledge base's `top_k`.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from pydantic import ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core import metrics
from core.agent.service import agents_using_knowledge_base, detach_knowledge_base
from core.db import Database
from core.db.ids import DOCUMENT_ID_PREFIX, KNOWLEDGE_BASE_ID_PREFIX, is_id_of, new_id
from core.db.models import KnowledgeBaseRow, KnowledgeDocumentRow, KnowledgeUploadRow
from core.db.pagination import Page
from core.db.repository import flush_unique, name_filters, paginate, storable
from core.embeddings.port import Embedder
from core.errors import Conflict, FieldError, NotFound, ValidationFailed
from core.knowledge.chunking import chunk_blocks
from core.knowledge.extractors import extract
from core.knowledge.port import (
    ChunkRecord,
    IndexQuery,
    IndexTarget,
    KnowledgeIndex,
    Vectors,
    searchable_text,
)
from core.knowledge.ranking import (
    KEYWORD_FLOOR,
    reciprocal_rank_fusion,
    snippet,
    strong_keyword_matches,
)
from core.knowledge.schemas import (
    DocumentRejected,
    DocumentView,
    IngestResult,
    KnowledgeBaseInUse,
    KnowledgeBasePatch,
    KnowledgeBaseSpec,
    KnowledgeBaseView,
    KnowledgeMatch,
    ReindexRequired,
)
from core.schemas.validation import raise_validation_failed

_log = logging.getLogger(__name__)

DEFAULT_MAX_DOCUMENT_BYTES = 50 * 1024 * 1024
EMBED_BATCH = 64
MAX_QUERY_CHARS = 2000
MAX_NAME_CHARS = 500
CANDIDATES_PER_RESULT = 4
MIN_CANDIDATES = 20

Progress = Callable[[int], None]
"""Called with the number of chunks just embedded, for progress bars."""


@dataclass(frozen=True)
class _KnowledgeBase:
    """The knowledge base row as read at the start of an operation."""

    id: str
    tenant_id: str
    name: str
    chunk_size: int
    chunk_overlap: int
    top_k: int
    score_threshold: float
    embedding_model: str
    embedding_dimension: int
    revision: int

    @classmethod
    def of(cls, row: KnowledgeBaseRow) -> _KnowledgeBase:
        return cls(
            row.id,
            row.tenant_id,
            row.name,
            row.chunk_size,
            row.chunk_overlap,
            row.top_k,
            row.score_threshold,
            row.embedding_model,
            row.embedding_dimension,
            row.revision,
        )

    def target(self, *, revision: int | None = None, dimension: int | None = None) -> IndexTarget:
        return IndexTarget(
            self.tenant_id,
            self.id,
            dimension or self.embedding_dimension,
            self.revision if revision is None else revision,
        )


class KnowledgeService:
    """Everything about knowledge bases that adapters (REST, CLI, agents) ask for."""

    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        index: KnowledgeIndex,
        *,
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    ) -> None:
        self.db = db
        self.embedder = embedder
        self.index = index
        self.max_document_bytes = max_document_bytes

    # -- knowledge bases ---------------------------------------------------------------------

    def create(self, tenant_id: str, spec: KnowledgeBaseSpec) -> KnowledgeBaseView:
        with self.db.session() as s:
            if _named(s, tenant_id, spec.name) is not None:
                raise Conflict(f"a knowledge base named {spec.name!r} already exists")
            row = KnowledgeBaseRow(
                id=new_id(KNOWLEDGE_BASE_ID_PREFIX),
                tenant_id=tenant_id,
                name=spec.name,
                description=spec.description,
                chunk_size=spec.chunk_size,
                chunk_overlap=spec.chunk_overlap,
                top_k=spec.top_k,
                score_threshold=spec.score_threshold,
                embedding_model=self.embedder.model_name,
                embedding_dimension=self.embedder.dimension,
                revision=0,
            )
            s.add(row)
            flush_unique(s, "knowledge base", spec.name)
            return _view(row, 0, 0)

    def list(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        q: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[KnowledgeBaseView]:
        with self.db.session() as s:
            stmt = select(KnowledgeBaseRow).where(
                KnowledgeBaseRow.tenant_id == tenant_id,
                *name_filters(KnowledgeBaseRow.name, name=name, q=q),
            )
            page = paginate(s, stmt, KnowledgeBaseRow.id, cursor=cursor, limit=limit)
            counts = _counts(s, [r.id for r in page.items])
            items = [_view(r, *counts.get(r.id, (0, 0))) for r in page.items]
            return Page(items, page.next_cursor)

    def get(self, tenant_id: str, knowledge_base_id: str) -> KnowledgeBaseView:
        with self.db.session() as s:
            row = _load(s, tenant_id, knowledge_base_id)
            return _view(row, *_counts(s, [row.id]).get(row.id, (0, 0)))

    def get_by_name(self, tenant_id: str, name: str) -> KnowledgeBaseView:
        with self.db.session() as s:
            row = _named(s, tenant_id, name)
            if row is None:
                raise NotFound("knowledge base", name)
            return _view(row, *_counts(s, [row.id]).get(row.id, (0, 0)))

    def resolve(self, tenant_id: str, ref: str) -> str:
        """The id of the knowledge base `ref` names: an id-shaped `ref` is an id, anything
        else a name (core.db.ids.is_id_of)."""
        if is_id_of(ref, KNOWLEDGE_BASE_ID_PREFIX):
            return ref
        return self.get_by_name(tenant_id, ref).id

    def resolve_document(self, tenant_id: str, knowledge_base_id: str, ref: str) -> str:
        """The id of the document `ref` names in that knowledge base: an id-shaped `ref` is
        an id, anything else its name (a document named like an id is reachable by id)."""
        if is_id_of(ref, DOCUMENT_ID_PREFIX):
            return ref
        return self.document_named(tenant_id, knowledge_base_id, ref).id

    def update(
        self, tenant_id: str, knowledge_base_id: str, patch: KnowledgeBasePatch
    ) -> KnowledgeBaseView:
        """Change settings; validated as a whole like `create` (422 naming the field).

        Search settings apply at once. Chunk settings apply to documents ingested from now
        on, and since they are part of each document's ingest key, ingesting the same files
        again re-chunks them instead of skipping them as unchanged.
        """
        with self.db.session() as s:
            row = _load(s, tenant_id, knowledge_base_id, for_update=True)
            current = _spec(row)
            spec = parse_spec(current.model_dump() | patch.model_dump(exclude_unset=True))
            if spec != current:
                row.description = spec.description
                row.chunk_size = spec.chunk_size
                row.chunk_overlap = spec.chunk_overlap
                row.top_k = spec.top_k
                row.score_threshold = spec.score_threshold
                s.flush()
            return _view(row, *_counts(s, [row.id]).get(row.id, (0, 0)))

    def delete(
        self, tenant_id: str, knowledge_base_id: str, *, force: bool = False, actor: str = "api"
    ) -> builtins.list[str]:
        """Delete a knowledge base with its documents and chunks.

        While agents list it, `KnowledgeBaseInUse` names them; with `force` it is removed
        from their lists too (a new version of each, in the same transaction). Returns the
        agents it was removed from.
        """
        with self.db.session() as s:
            row = _load(s, tenant_id, knowledge_base_id)
            if force:
                # Agents first, then the knowledge base: the order an agent save takes them
                # (its row, then the knowledge bases it lists), so the two never deadlock.
                agents_using_knowledge_base(s, tenant_id, row.name, for_update=True)
            _lock(s, row.id)  # agents saved meanwhile listing it have committed: seen below
            if force:
                detached = detach_knowledge_base(s, tenant_id, row.name, actor=actor)
            else:
                users = agents_using_knowledge_base(s, tenant_id, row.name)
                if users:
                    raise KnowledgeBaseInUse(row.name, [a.name for a in users])
                detached = []
            self.index.drop(s, _KnowledgeBase.of(row).target())
            s.delete(row)
            return detached

    # -- documents ---------------------------------------------------------------------------

    def documents(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        *,
        name: str | None = None,
        q: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[DocumentView]:
        with self.db.session() as s:
            _load(s, tenant_id, knowledge_base_id)
            stmt = select(KnowledgeDocumentRow).where(
                KnowledgeDocumentRow.knowledge_base_id == knowledge_base_id,
                *name_filters(KnowledgeDocumentRow.name, name=name, q=q),
            )
            page = paginate(s, stmt, KnowledgeDocumentRow.id, cursor=cursor, limit=limit)
            return Page([DocumentView.model_validate(r) for r in page.items], page.next_cursor)

    def document(self, tenant_id: str, knowledge_base_id: str, document_id: str) -> DocumentView:
        with self.db.session() as s:
            return DocumentView.model_validate(
                _document(s, tenant_id, knowledge_base_id, document_id)
            )

    def document_named(self, tenant_id: str, knowledge_base_id: str, name: str) -> DocumentView:
        """The document called `name` (its path in the knowledge base)."""
        with self.db.session() as s:
            _load(s, tenant_id, knowledge_base_id)
            row = _document_named(s, knowledge_base_id, name) if storable(name) else None
            if row is None:
                raise NotFound("document", name)
            return DocumentView.model_validate(row)

    def delete_document(self, tenant_id: str, knowledge_base_id: str, document_id: str) -> None:
        """Delete a document with its chunks and vectors."""
        with self.db.session() as s:
            row = _document(s, tenant_id, knowledge_base_id, document_id)
            revision = _bump(s, tenant_id, knowledge_base_id)
            target = IndexTarget(tenant_id, knowledge_base_id, self.embedder.dimension, revision)
            self.index.remove_document(s, target, row.id)
            s.delete(row)

    def ingest(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        name: str,
        data: bytes,
        *,
        content_type: str | None = None,
        progress: Progress | None = None,
    ) -> IngestResult:
        """Add or replace the document called `name` in one go, in the caller's thread
        (scripts, benchmarks, tests; REST and the CLI hand documents to the
        `knowledge.ingest` job instead, see `core.knowledge.ingestion`); skipped when the
        same bytes were already cut with the knowledge base's current chunk settings.

        Raises `DocumentRejected` (unreadable, unsupported, empty, too large) before
        anything is written, and `ReindexRequired` when the knowledge base holds vectors
        of another embedder.
        """
        name = check_document_name(name)
        if len(data) > self.max_document_bytes:
            raise DocumentRejected(
                name, f"is {len(data)} bytes; documents are limited to {self.max_document_bytes}"
            )
        with self.db.read_session() as s:
            kb = _KnowledgeBase.of(_load(s, tenant_id, knowledge_base_id))
            digest = ingest_key(data, kb.chunk_size, kb.chunk_overlap)
            existing = _document_named(s, kb.id, name)
            if existing is not None and existing.sha256 == digest and existing.status == "ready":
                return IngestResult(DocumentView.model_validate(existing), "unchanged")
            if not self._current(kb) and _has_documents(s, kb.id):
                raise self._reindex_required(kb)
        extracted = extract(name, data, content_type)
        chunks = chunk_blocks(extracted.blocks, size=kb.chunk_size, overlap=kb.chunk_overlap)
        vectors = self._embed([searchable_text(c.text, c.section) for c in chunks], progress)
        with self.db.session() as s:
            revision = _bump(s, tenant_id, kb.id)
            row = _document_named(s, kb.id, name)
            if row is not None and row.sha256 == digest and row.status == "ready":
                # someone else just ingested it
                return IngestResult(DocumentView.model_validate(row), "unchanged")
            if not self._current(kb):
                if _has_documents(s, kb.id):
                    raise self._reindex_required(kb)
                self._adopt_embedder(s, kb.id)  # an empty knowledge base can switch freely
            target = kb.target(revision=revision, dimension=self.embedder.dimension)
            created = row is None
            if row is None:
                row = KnowledgeDocumentRow(
                    id=new_id(DOCUMENT_ID_PREFIX),
                    tenant_id=tenant_id,
                    knowledge_base_id=kb.id,
                    name=name,
                )
                s.add(row)
            else:
                self.index.remove_document(s, target, row.id)
            row.content_type = extracted.content_type
            row.size = len(data)
            row.sha256 = digest
            row.chunk_count = len(chunks)
            row.pages = extracted.pages
            row.title = extracted.title[:MAX_NAME_CHARS] if extracted.title else None
            # Replaces an upload still queued or ingesting: its job finds itself superseded.
            row.status, row.error, row.job_id = "ready", None, None
            s.execute(delete(KnowledgeUploadRow).where(KnowledgeUploadRow.document_id == row.id))
            flush_unique(s, "document", name)
            inputs = [
                ChunkRecord(new_id("chk"), row.id, c.ordinal, c.text, c.section, c.page)
                for c in chunks
            ]
            self.index.add(s, target, inputs, vectors)
            return IngestResult(
                DocumentView.model_validate(row), "created" if created else "updated"
            )

    # -- search ------------------------------------------------------------------------------

    def search(
        self, tenant_id: str, knowledge_base_id: str, query: str, *, limit: int | None = None
    ) -> builtins.list[KnowledgeMatch]:
        """The knowledge base's best passages for `query`, best first (at most `limit`, else
        its `top_k`); `ReindexRequired` if its vectors come from another embedder."""
        with self.db.read_session() as s:
            kb = _KnowledgeBase.of(_load(s, tenant_id, knowledge_base_id))
            if not self._current(kb):
                if not _has_documents(s, kb.id):
                    return []
                raise self._reindex_required(kb)
        text = query.strip()[:MAX_QUERY_CHARS]
        if not text:
            return []
        with metrics.knowledge_search():
            return self._search(kb, text, self._embed([text])[0], limit or kb.top_k)

    def search_many(
        self, tenant_id: str, names: Sequence[str], query: str, *, limit: int | None = None
    ) -> builtins.list[KnowledgeMatch]:
        """The best passages across several knowledge bases (an agent's), best first.

        Unknown names and knowledge bases that need re-indexing are skipped with a warning,
        so one broken knowledge base does not silence the others. `limit` defaults to the
        largest `top_k` among them.
        """
        text = query.strip()[:MAX_QUERY_CHARS]
        wanted = [n for n in dict.fromkeys(names) if storable(n)]
        if not text or not wanted:
            return []
        with self.db.read_session() as s:
            rows = s.scalars(
                select(KnowledgeBaseRow).where(
                    KnowledgeBaseRow.tenant_id == tenant_id, KnowledgeBaseRow.name.in_(wanted)
                )
            ).all()
            bases = [_KnowledgeBase.of(r) for r in rows]
        missing = set(wanted) - {kb.name for kb in bases}
        if missing:
            _log.warning("unknown knowledge base(s) %s in tenant %s", sorted(missing), tenant_id)
        usable = []
        for kb in bases:
            if self._current(kb):
                usable.append(kb)
            else:
                _log.warning("skipping knowledge base: %s", self._reindex_required(kb).detail)
        if not usable:
            return []
        k = limit or max(kb.top_k for kb in usable)
        with metrics.knowledge_search():
            vector = self._embed([text])[0]
            found = [m for kb in usable for m in self._search(kb, text, vector, k)]
        found.sort(key=lambda m: (-m.score, -(m.similarity or -2.0)))
        return found[:k]

    def _search(
        self, kb: _KnowledgeBase, text: str, vector: Vectors, limit: int
    ) -> builtins.list[KnowledgeMatch]:
        target = kb.target()
        query = IndexQuery(
            text=text,
            vector=vector,
            min_similarity=kb.score_threshold,
            candidates=max(limit * CANDIDATES_PER_RESULT, MIN_CANDIDATES),
            keyword_floor=KEYWORD_FLOOR,
        )
        found = self.index.search(target, query)
        keyword = strong_keyword_matches(found.keyword)
        fused = reciprocal_rank_fusion(found.semantic, keyword)[:limit]
        chunks = {c.id: c for c in self.index.chunks(target, [f.chunk_id for f in fused])}
        documents = self._document_names({c.document_id for c in chunks.values()})
        matches = []
        for f in fused:
            chunk = chunks.get(f.chunk_id)
            if chunk is None:  # deleted between ranking and reading
                continue
            matches.append(
                KnowledgeMatch(
                    knowledge_base=kb.name,
                    document_id=chunk.document_id,
                    document=documents.get(chunk.document_id, chunk.document_id),
                    chunk_id=chunk.id,
                    section=chunk.section,
                    page=chunk.page,
                    text=chunk.text,
                    snippet=snippet(chunk.text, text),
                    score=round(f.score, 6),
                    similarity=None if f.similarity is None else round(f.similarity, 6),
                    keyword_score=None if f.keyword_score is None else round(f.keyword_score, 6),
                )
            )
        return matches

    def _document_names(self, ids: set[str]) -> dict[str, str]:
        if not ids:
            return {}
        with self.db.read_session() as s:
            rows = s.execute(
                select(KnowledgeDocumentRow.id, KnowledgeDocumentRow.name).where(
                    KnowledgeDocumentRow.id.in_(sorted(ids))
                )
            )
            return {r.id: r.name for r in rows}

    def warm(self) -> int:
        """Load the knowledge bases into the index ahead of the first question: the most
        recently changed first, those needing a re-index skipped. Returns chunks loaded
        (0 when everything was current already, or the index has nothing to load)."""
        with self.db.read_session() as s:
            rows = s.scalars(
                select(KnowledgeBaseRow).order_by(
                    KnowledgeBaseRow.updated_at.desc(), KnowledgeBaseRow.id
                )
            ).all()
            bases = [_KnowledgeBase.of(r) for r in rows]
            sizes = _counts(s, [kb.id for kb in bases])
        targets = [
            (kb.target(), sizes[kb.id][1])
            for kb in bases
            if self._current(kb) and sizes.get(kb.id, (0, 0))[1] > 0
        ]
        return self.index.warm(targets)

    # -- re-indexing -------------------------------------------------------------------------

    def reindex(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        *,
        progress: Progress | None = None,
        batch_size: int = 256,
    ) -> int:
        """Re-embed every stored chunk with the current embedder; returns how many.

        Works from the stored chunk texts (the source files are not needed). Batches commit
        as they go; the knowledge base switches to the new model only at the end, so an
        interrupted run leaves it asking for a re-index still, and running again finishes.
        """
        kb = _KnowledgeBase.of(self._row(tenant_id, knowledge_base_id))
        total = 0
        for batch in self.index.iter_chunks(kb.target(), batch_size):
            vectors = self._embed([searchable_text(c.text, c.section) for c in batch], progress)
            with self.db.session() as s:
                revision = _bump(s, tenant_id, kb.id)
                target = kb.target(revision=revision, dimension=self.embedder.dimension)
                self.index.set_vectors(s, target, [c.id for c in batch], vectors)
            total += len(batch)
        with self.db.session() as s:
            _bump(s, tenant_id, kb.id)
            self._adopt_embedder(s, kb.id)
        return total

    # -- helpers -----------------------------------------------------------------------------

    def _row(self, tenant_id: str, knowledge_base_id: str) -> KnowledgeBaseRow:
        with self.db.session() as s:
            return _load(s, tenant_id, knowledge_base_id)

    def _current(self, kb: _KnowledgeBase) -> bool:
        return (
            kb.embedding_model == self.embedder.model_name
            and kb.embedding_dimension == self.embedder.dimension
        )

    def _reindex_required(self, kb: _KnowledgeBase) -> ReindexRequired:
        return ReindexRequired(
            kb.name,
            kb.embedding_model,
            kb.embedding_dimension,
            self.embedder.model_name,
            self.embedder.dimension,
        )

    def _adopt_embedder(self, s: Session, knowledge_base_id: str) -> None:
        s.execute(
            update(KnowledgeBaseRow)
            .where(KnowledgeBaseRow.id == knowledge_base_id)
            .values(
                embedding_model=self.embedder.model_name,
                embedding_dimension=self.embedder.dimension,
            )
        )

    def _embed(self, texts: Sequence[str], progress: Progress | None = None) -> Vectors:
        out = np.empty((len(texts), self.embedder.dimension), dtype=np.float32)
        for start in range(0, len(texts), EMBED_BATCH):
            batch = texts[start : start + EMBED_BATCH]
            out[start : start + len(batch)] = self.embedder.embed(batch)
            if progress is not None:
                progress(len(batch))
        return out


def check_document_name(name: str) -> str:
    """A document's name (its path in the knowledge base): 1-500 printable characters."""
    cleaned = name.replace("\\", "/").strip()
    problem = None
    if not cleaned:
        problem = "must not be empty"
    elif len(cleaned) > MAX_NAME_CHARS:
        problem = f"must be at most {MAX_NAME_CHARS} characters"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in cleaned):
        problem = "must not contain control characters"
    if problem:
        raise ValidationFailed([FieldError(("name",), problem)])
    return cleaned


def ingest_key(data: bytes, chunk_size: int, chunk_overlap: int) -> str:
    """What makes a document unchanged: its bytes and the chunk settings that cut them.

    Stored as the document's `sha256`, so a change of chunk settings makes re-ingesting
    the same file re-chunk it, without a column of its own.
    """
    digest = hashlib.sha256(f"chunking {chunk_size}/{chunk_overlap}\n".encode())
    digest.update(data)
    return digest.hexdigest()


def parse_spec(data: object) -> KnowledgeBaseSpec:
    """A `KnowledgeBaseSpec` from untrusted input, errors naming their fields."""
    try:
        return KnowledgeBaseSpec.model_validate(data)
    except ValidationError as exc:
        raise_validation_failed(exc, prefix=("body",))


def parse_patch(data: object) -> KnowledgeBasePatch:
    """A `KnowledgeBasePatch` from untrusted input, errors naming their fields."""
    try:
        return KnowledgeBasePatch.model_validate(data)
    except ValidationError as exc:
        raise_validation_failed(exc, prefix=("body",))


def _load(
    s: Session, tenant_id: str, knowledge_base_id: str, *, for_update: bool = False
) -> KnowledgeBaseRow:
    row = None
    if storable(knowledge_base_id):
        row = s.get(KnowledgeBaseRow, knowledge_base_id, with_for_update=for_update or None)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound("knowledge base", knowledge_base_id)
    return row


def _lock(s: Session, knowledge_base_id: str) -> None:
    """Hold the knowledge base's row until the transaction ends (PostgreSQL; SQLite
    already serialises writers)."""
    s.execute(
        select(KnowledgeBaseRow.id)
        .where(KnowledgeBaseRow.id == knowledge_base_id)
        .with_for_update()
    )


def _named(s: Session, tenant_id: str, name: str) -> KnowledgeBaseRow | None:
    if not storable(name):
        return None
    return s.scalar(
        select(KnowledgeBaseRow).where(
            KnowledgeBaseRow.tenant_id == tenant_id, KnowledgeBaseRow.name == name
        )
    )


def _document(
    s: Session, tenant_id: str, knowledge_base_id: str, document_id: str
) -> KnowledgeDocumentRow:
    _load(s, tenant_id, knowledge_base_id)
    row = s.get(KnowledgeDocumentRow, document_id) if storable(document_id) else None
    if row is None or row.knowledge_base_id != knowledge_base_id:
        raise NotFound("document", document_id)
    return row


def _document_named(s: Session, knowledge_base_id: str, name: str) -> KnowledgeDocumentRow | None:
    return s.scalar(
        select(KnowledgeDocumentRow).where(
            KnowledgeDocumentRow.knowledge_base_id == knowledge_base_id,
            KnowledgeDocumentRow.name == name,
        )
    )


def _has_documents(s: Session, knowledge_base_id: str) -> bool:
    return (
        s.scalar(
            select(KnowledgeDocumentRow.id)
            .where(KnowledgeDocumentRow.knowledge_base_id == knowledge_base_id)
            .limit(1)
        )
        is not None
    )


def _bump(s: Session, tenant_id: str, knowledge_base_id: str) -> int:
    """Take the next content revision (one conditional write; on PostgreSQL it also locks
    the row, so writers to one knowledge base queue instead of interleaving)."""
    revision = s.scalar(
        update(KnowledgeBaseRow)
        .where(KnowledgeBaseRow.id == knowledge_base_id, KnowledgeBaseRow.tenant_id == tenant_id)
        .values(revision=KnowledgeBaseRow.revision + 1, updated_at=datetime.now(UTC))
        .returning(KnowledgeBaseRow.revision)
    )
    if revision is None:
        raise NotFound("knowledge base", knowledge_base_id)
    return int(revision)


def _counts(s: Session, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    if not ids:
        return {}
    rows = s.execute(
        select(
            KnowledgeDocumentRow.knowledge_base_id,
            func.count(KnowledgeDocumentRow.id),
            func.coalesce(func.sum(KnowledgeDocumentRow.chunk_count), 0),
        )
        .where(KnowledgeDocumentRow.knowledge_base_id.in_(list(ids)))
        .group_by(KnowledgeDocumentRow.knowledge_base_id)
    )
    return {kb_id: (int(docs), int(chunks)) for kb_id, docs, chunks in rows}


def _spec(row: KnowledgeBaseRow) -> KnowledgeBaseSpec:
    return KnowledgeBaseSpec(
        name=row.name,
        description=row.description,
        chunk_size=row.chunk_size,
        chunk_overlap=row.chunk_overlap,
        top_k=row.top_k,
        score_threshold=row.score_threshold,
    )


def _view(row: KnowledgeBaseRow, documents: int, chunks: int) -> KnowledgeBaseView:
    return KnowledgeBaseView(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        description=row.description,
        chunk_size=row.chunk_size,
        chunk_overlap=row.chunk_overlap,
        top_k=row.top_k,
        score_threshold=row.score_threshold,
        embedding_model=row.embedding_model,
        embedding_dimension=row.embedding_dimension,
        document_count=documents,
        chunk_count=chunks,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
