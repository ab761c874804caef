"""The embedded knowledge index: chunks in our own database, searched exactly in process.

Storage is the `knowledge_chunks` table (SQLite or PostgreSQL) with each embedding as
float32 bytes, so nothing else needs running and every replica sees the same chunks.
Search loads a knowledge base lazily into memory — a float32 matrix of its vectors plus an
inverted index of its words — and answers both retrievers exactly:

* by meaning: cosine of the (unit) query vector with every chunk, one matrix product
  (about 9 ms for 100k chunks of 384 dimensions on a 2-vCPU machine);
* by keywords: BM25 over the distinct words of each chunk (`core.memory.lexical` tokens,
  so identifiers like `ABC-123` match whole), with document frequencies counted over the
  live chunks at query time, so deletes never leave them stale.

Keeping in step: writes through this instance are applied to the cached knowledge base
once their transaction commits, provided the cache had seen the revision just before;
every search compares the cache's revision with the knowledge base row's, which the
service reads anyway. When another process wrote in between, one grouped query finds the
documents whose chunks changed and only those are re-read (a full load of 100k chunks
takes seconds, mostly tokenising; re-reading one document takes milliseconds).
"""

from __future__ import annotations

import logging
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from core.db import Database
from core.db.models import KnowledgeBaseRow, KnowledgeChunkRow
from core.knowledge import chunk_table
from core.knowledge.port import (
    Candidate,
    Candidates,
    ChunkRecord,
    IndexQuery,
    IndexTarget,
    Vectors,
    searchable_text,
)
from core.knowledge.ranking import BM25_B, BM25_K1
from core.memory import lexical

_log = logging.getLogger(__name__)
_F32 = np.float32
DEFAULT_MAX_CACHED_CHUNKS = 200_000  # ~300 MB of 384-d float32 vectors
_PENDING = "cosmo.knowledge.pending"

_Op = Callable[["_KnowledgeBaseCache"], None]


class _KnowledgeBaseCache:
    """One knowledge base in memory. Rows are append-only slots; a delete marks its rows
    dead, so postings never need rewriting. Guarded by `lock`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.revision: int | None = None  # None: not loaded (or known stale)
        self._reset(0)

    def _reset(self, dimension: int) -> None:
        self.dimension = dimension
        self.ids: list[str] = []
        self.position: dict[str, int] = {}
        self.rows_of: dict[str, list[int]] = {}
        self.vectors = np.zeros((0, dimension), dtype=_F32)
        self.alive = np.zeros(0, dtype=bool)
        self.lengths = np.zeros(0, dtype=_F32)
        self.postings: dict[str, array[int]] = {}
        self.count = 0
        self.total_length = 0.0

    @property
    def size(self) -> int:
        return len(self.ids)

    def load(
        self, revision: int, dimension: int, rows: Sequence[tuple[str, str, str]], vectors: Vectors
    ) -> None:
        self._reset(dimension)
        self._grow(len(rows) + _headroom(len(rows)))
        for i, (chunk_id, document_id, text) in enumerate(rows):
            self._put(chunk_id, document_id, lexical.tokens(text), vectors[i])
        self.revision = revision

    def add(self, rows: Sequence[tuple[str, str, frozenset[str]]], vectors: Vectors) -> None:
        if vectors.shape[1] != self.dimension:
            self.revision = None
            return
        for i, (chunk_id, document_id, tokens) in enumerate(rows):
            if chunk_id in self.position:  # a reload already picked it up
                continue
            if self.size == len(self.alive):
                self._grow(_headroom(self.size))
            self._put(chunk_id, document_id, tokens, vectors[i])

    def signatures(self) -> dict[str, tuple[str, int]]:
        """Per document: its first chunk id and chunk count, to compare with the database."""
        return {
            document_id: (min(self.ids[i] for i in rows), len(rows))
            for document_id, rows in self.rows_of.items()
        }

    def remove(self, document_id: str) -> None:
        for i in self.rows_of.pop(document_id, []):
            if self.alive[i]:
                self.alive[i] = False
                self.count -= 1
                self.total_length -= float(self.lengths[i])
                self.position.pop(self.ids[i], None)
        if self.size > 64 and self.count < self.size // 2:
            self.revision = None  # mostly dead slots: rebuild from the database next search

    def _grow(self, extra: int) -> None:
        capacity = len(self.alive) + extra
        vectors = np.zeros((capacity, self.dimension), dtype=_F32)
        vectors[: self.size] = self.vectors[: self.size]
        self.vectors = vectors
        self.alive = np.concatenate([self.alive, np.zeros(extra, dtype=bool)])
        self.lengths = np.concatenate([self.lengths, np.zeros(extra, dtype=_F32)])

    def _put(
        self, chunk_id: str, document_id: str, tokens: frozenset[str], vector: Vectors
    ) -> None:
        i = self.size
        self.ids.append(chunk_id)
        self.position[chunk_id] = i
        self.rows_of.setdefault(document_id, []).append(i)
        self.vectors[i] = vector
        self.alive[i] = True
        self.lengths[i] = len(tokens)
        for token in tokens:
            posting = self.postings.get(token)
            if posting is None:
                posting = self.postings[token] = array("i")
            posting.append(i)
        self.count += 1
        self.total_length += len(tokens)

    def semantic(self, vector: Vectors, min_similarity: float, limit: int) -> list[Candidate]:
        n = self.size
        if self.count == 0 or limit <= 0:
            return []
        similarity = self.vectors[:n] @ vector.astype(_F32, copy=False)
        similarity[~self.alive[:n]] = -np.inf
        return self._top(similarity, limit, floor=min_similarity)

    def keyword(self, tokens: frozenset[str], limit: int) -> list[Candidate]:
        n = self.size
        if self.count == 0 or limit <= 0 or not tokens:
            return []
        average = max(self.total_length / self.count, 1.0)
        scores = np.zeros(n, dtype=_F32)
        for token in sorted(tokens):
            posting = self.postings.get(token)
            if not posting:
                continue
            rows = np.frombuffer(posting, dtype=np.intc)
            rows = rows[self.alive[rows]]
            if rows.size == 0:
                continue
            weight = lexical.idf(int(rows.size), self.count)
            norm = 1.0 - BM25_B + BM25_B * self.lengths[rows] / _F32(average)
            scores[rows] += _F32(weight * (BM25_K1 + 1.0)) / (_F32(1.0) + _F32(BM25_K1) * norm)
        return self._top(scores, limit, floor=None)

    def _top(
        self, scores: npt.NDArray[np.float32], limit: int, *, floor: float | None
    ) -> list[Candidate]:
        k = min(limit, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        order = top[np.lexsort((top, -scores[top]))]  # best first; older chunk first on ties
        out = []
        for i in order:
            score = float(scores[i])
            if not np.isfinite(score) or (floor is None and score <= 0.0):
                continue
            if floor is not None and score < floor:
                break
            out.append(Candidate(self.ids[i], score))
        return out


@dataclass(frozen=True)
class _Pending:
    revision: int
    ops: list[_Op]


class EmbeddedKnowledgeIndex:
    """`KnowledgeIndex` over the `knowledge_chunks` table; see the module docstring."""

    name = "embedded"

    def __init__(self, db: Database, *, max_cached_chunks: int = DEFAULT_MAX_CACHED_CHUNKS):
        self.db = db
        self.max_cached_chunks = max_cached_chunks
        self._caches: OrderedDict[str, _KnowledgeBaseCache] = OrderedDict()
        self._lock = threading.Lock()

    # -- writes (in the caller's transaction) ---------------------------------------------

    def add(
        self, session: Session, target: IndexTarget, chunks: Sequence[ChunkRecord], vectors: Vectors
    ) -> None:
        vectors = chunk_table.checked_vectors(target, len(chunks), vectors)
        if len(chunks) == 0:
            return
        chunk_table.insert_chunks(session, target, chunks, vectors)
        if self._cached(target.knowledge_base_id) is not None:
            rows = [
                (c.id, c.document_id, lexical.tokens(searchable_text(c.text, c.section)))
                for c in chunks
            ]
            self._defer(session, target, lambda cache: cache.add(rows, vectors))

    def remove_document(self, session: Session, target: IndexTarget, document_id: str) -> int:
        removed = chunk_table.delete_document_chunks(session, target, document_id)
        self._defer(session, target, lambda cache: cache.remove(document_id))
        return removed

    def drop(self, session: Session, target: IndexTarget) -> None:
        chunk_table.delete_all_chunks(session, target)
        self._defer(session, target, lambda _cache: self._evict(target.knowledge_base_id))

    def set_vectors(
        self, session: Session, target: IndexTarget, chunk_ids: Sequence[str], vectors: Vectors
    ) -> None:
        vectors = chunk_table.checked_vectors(target, len(chunk_ids), vectors)
        if not chunk_ids:
            return
        chunk_table.update_vectors(session, chunk_ids, vectors)
        self._defer(session, target, _forget)

    # -- reads -----------------------------------------------------------------------------

    def search(self, target: IndexTarget, query: IndexQuery) -> Candidates:
        tokens = lexical.tokens(query.text)
        cache = self._cache(target.knowledge_base_id)
        with cache.lock:
            self._refresh(target, cache)
            found = Candidates(
                semantic=cache.semantic(query.vector, query.min_similarity, query.candidates),
                keyword=cache.keyword(tokens, query.candidates),
            )
        self._evict_beyond_budget(keep=target.knowledge_base_id)
        return found

    def warm(self, targets: Sequence[tuple[IndexTarget, int]]) -> int:
        """Load knowledge bases, most wanted first, while they fit in the cache budget;
        one already current costs a revision comparison."""
        loaded = 0
        budget = self.max_cached_chunks
        for target, size in targets:
            if size > budget:
                break
            budget -= size
            cache = self._cache(target.knowledge_base_id)
            with cache.lock:
                before = cache.revision
                self._refresh(target, cache)
                if cache.revision != before:
                    loaded += cache.count
        return loaded

    def chunks(self, target: IndexTarget, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        return chunk_table.fetch_chunks(self.db, target, chunk_ids)

    def iter_chunks(self, target: IndexTarget, batch_size: int) -> Iterator[list[ChunkRecord]]:
        return chunk_table.iter_chunks(self.db, target, batch_size)

    # -- cache -----------------------------------------------------------------------------

    def _refresh(self, target: IndexTarget, cache: _KnowledgeBaseCache) -> None:
        """Bring the cache up to the database's revision: in full the first time, else by
        reloading only the documents whose chunks changed (their first chunk id or count
        differ), so another process's ingestion costs a re-read of that document only.

        The revision is read first: a write landing meanwhile costs one more refresh at
        worst, never a missed write.
        """
        if cache.revision is not None and cache.revision >= target.revision:
            return
        where = (
            KnowledgeChunkRow.tenant_id == target.tenant_id,
            KnowledgeChunkRow.knowledge_base_id == target.knowledge_base_id,
        )
        full = cache.revision is None or cache.dimension != target.dimension
        with self.db.read_session() as s:
            revision = int(
                s.scalar(
                    select(KnowledgeBaseRow.revision).where(
                        KnowledgeBaseRow.id == target.knowledge_base_id
                    )
                )
                or 0
            )
            changed: list[str] = []
            if not full:
                stored = {
                    document_id: (first, count)
                    for document_id, first, count in s.execute(
                        select(
                            KnowledgeChunkRow.document_id,
                            func.min(KnowledgeChunkRow.id),
                            func.count(),
                        )
                        .where(*where)
                        .group_by(KnowledgeChunkRow.document_id)
                    )
                }
                cached = cache.signatures()
                changed = [d for d, signature in stored.items() if cached.get(d) != signature]
                for document_id in cached.keys() - stored.keys():
                    cache.remove(document_id)
                for document_id in changed:
                    cache.remove(document_id)
                full = cache.revision is None  # removing compacted it: read it all
            statements = (
                [select(*_LOAD_COLUMNS).where(*where).order_by(KnowledgeChunkRow.id)]
                if full
                else [
                    select(*_LOAD_COLUMNS)
                    .where(*where, KnowledgeChunkRow.document_id.in_(changed[i : i + 500]))
                    .order_by(KnowledgeChunkRow.id)
                    for i in range(0, len(changed), 500)
                ]
            )
            rows: list[tuple[str, str, str]] = []
            blobs: list[bytes] = []
            width = target.dimension * 4
            for statement in statements:
                for r in s.execute(statement.execution_options(yield_per=5000)):
                    blob = bytes(r.embedding)
                    if len(blob) != width:  # re-indexing with another model was interrupted
                        _log.warning("chunk %s has no %d-d vector", r.id, target.dimension)
                        blob = bytes(width)
                    rows.append((r.id, r.document_id, searchable_text(r.text, r.section)))
                    blobs.append(blob)
        vectors = np.frombuffer(b"".join(blobs), dtype=_F32).reshape(len(rows), target.dimension)
        if full:
            cache.load(revision, target.dimension, rows, vectors)
        else:
            cache.add([(c, d, lexical.tokens(text)) for c, d, text in rows], vectors)
            cache.revision = revision

    def _evict(self, knowledge_base_id: str) -> None:
        with self._lock:
            self._caches.pop(knowledge_base_id, None)

    def _cached(self, knowledge_base_id: str) -> _KnowledgeBaseCache | None:
        with self._lock:
            return self._caches.get(knowledge_base_id)

    def _cache(self, knowledge_base_id: str) -> _KnowledgeBaseCache:
        with self._lock:
            cache = self._caches.get(knowledge_base_id)
            if cache is None:
                cache = self._caches[knowledge_base_id] = _KnowledgeBaseCache()
            self._caches.move_to_end(knowledge_base_id)
            return cache

    def _evict_beyond_budget(self, *, keep: str) -> None:
        with self._lock:
            total = sum(cache.size for cache in self._caches.values())
            for key in list(self._caches):
                if total <= self.max_cached_chunks:
                    break
                if key != keep:
                    total -= self._caches.pop(key).size

    def _defer(self, session: Session, target: IndexTarget, op: _Op) -> None:
        """Run `op` on the cached knowledge base once `session` commits (never on rollback)."""
        # A rolled-back session is discarded with its pending operations: `Database.session`
        # opens a new Session for every unit of work.
        pending: dict[str, _Pending] = session.info.setdefault(_PENDING, {})
        if not pending:
            event.listen(session, "after_commit", self._after_commit, once=True)
        entry = pending.setdefault(target.knowledge_base_id, _Pending(target.revision, []))
        entry.ops.append(op)

    def _after_commit(self, session: Session) -> None:
        pending: dict[str, _Pending] = session.info.pop(_PENDING, {})
        for knowledge_base_id, entry in pending.items():
            cache = self._cached(knowledge_base_id)
            if cache is None:
                continue
            with cache.lock:
                if cache.revision is None:
                    continue
                if cache.revision != entry.revision - 1:
                    cache.revision = None  # someone else wrote in between: reload
                    continue
                cache.revision = entry.revision
                for op in entry.ops:
                    op(cache)
                    if cache.revision is None:
                        break


def _headroom(size: int) -> int:
    """Free slots to add when growing: a quarter more, so appends rarely copy the matrix
    and growing never doubles the memory of a large knowledge base."""
    return max(64, size // 4)


def _forget(cache: _KnowledgeBaseCache) -> None:
    cache.revision = None


_LOAD_COLUMNS = (
    KnowledgeChunkRow.id,
    KnowledgeChunkRow.document_id,
    KnowledgeChunkRow.section,
    KnowledgeChunkRow.text,
    KnowledgeChunkRow.embedding,
)
