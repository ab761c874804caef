"""The embedded memory provider: memories in our own database, searched in process.

Storage is the `memories` table (SQLite or PostgreSQL), so memories survive restarts and
every replica sees the same ones. Search is exact, not approximate: per scope (tenant,
user, agent) the process keeps a float32 matrix of the memories' embeddings plus an
inverted index of their words, and ranks with

    score = 0.7 * cosine(query, memory) + 0.3 * lexical(query, memory)

where `lexical` is the IDF-weighted share of the query's words (and whole identifiers
such as `ABC-123`) that the memory contains (`core.memory.lexical`). The embedder is
all-MiniLM-L6-v2 when installed (real semantic search); with `embedder=None` the score is
the lexical part alone. Vectors are stored with the embedder's `model_name`; rows embedded
by another model (or none) are re-embedded and written back the first time a scope loads.

Keeping the matrix in step: writes made through this instance update the cached scopes
directly; before every search a one-row query (`count(*)`, `max(created_at)` of the scope)
detects rows added or deleted by another process, and the scope is reloaded when they
differ. The exact scan over 10k memories of 384 dimensions costs about a millisecond.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, and_, delete, func, insert, select, update

from core.db import Database
from core.db.ids import new_id
from core.db.models import MemoryRow
from core.embeddings.port import Embedder
from core.memory import lexical
from core.memory.exchange import memory_texts
from core.memory.port import InvalidMemoryArgument, MemoryMessage, MemoryRecord

_log = logging.getLogger(__name__)

SEMANTIC_WEIGHT = 0.7
LEXICAL_WEIGHT = 0.3
DEFAULT_MAX_CACHED_ROWS = 100_000  # ~150 MB of 384-d float32 vectors

# Column widths of the `memories` table; checked up front so PostgreSQL never has to
# reject (and SQLite never silently accepts) an over-long id.
_MAX_LEN = {"tenant_id": 64, "user_id": 64, "agent_id": 40, "session_id": 40}

ScopeKey = tuple[str, str, str | None]
Signature = tuple[int, datetime | None]
_F32 = np.float32


def check_id(name: str, value: str | None, *, required: bool = False) -> None:
    """Reject empty or over-long ids before they reach the database."""
    if value is None:
        if required:
            raise InvalidMemoryArgument(name, "is required")
        return
    if not isinstance(value, str) or not value.strip():
        raise InvalidMemoryArgument(name, "must be a non-empty string")
    limit = _MAX_LEN[name]
    if len(value) > limit:
        raise InvalidMemoryArgument(name, f"is longer than {limit} characters")


def check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidMemoryArgument("limit", "must be a non-negative integer")


@dataclass(frozen=True)
class _Row:
    id: str
    text: str
    user_id: str | None
    agent_id: str | None
    session_id: str | None
    created_at: datetime

    def record(self, score: float | None = None) -> MemoryRecord:
        return MemoryRecord(
            id=self.id,
            text=self.text,
            user_id=self.user_id,
            agent_id=self.agent_id,
            session_id=self.session_id,
            created_at=self.created_at,
            score=score,
        )


class _ScopeIndex:
    """Every memory of one scope: rows, a vector matrix and an inverted word index.

    Deleting marks a row dead (its slot stays until the next reload), so deletes never
    shift row numbers that the postings lists point at. Guarded by its own lock.
    """

    def __init__(self, dimension: int | None) -> None:
        self.lock = threading.Lock()
        self.loaded = False
        self._dimension = dimension
        self._clear()

    def _clear(self) -> None:
        self.rows: builtins.list[_Row] = []
        self.alive = np.zeros(0, dtype=bool)
        self.vectors: npt.NDArray[np.float32] | None = (
            np.zeros((0, self._dimension), dtype=_F32) if self._dimension else None
        )
        self.position: dict[str, int] = {}
        self.postings: dict[str, builtins.list[int]] = {}
        self.document_frequency: dict[str, int] = {}
        self.count = 0
        self.max_created: datetime | None = None

    @property
    def size(self) -> int:
        return len(self.rows)

    def signature(self) -> Signature:
        return (self.count, self.max_created)

    def reset(self, rows: Sequence[_Row], vectors: npt.NDArray[np.float32] | None) -> None:
        self._clear()
        self._grow(len(rows))
        for i, row in enumerate(rows):
            self._put(row, None if vectors is None else vectors[i])
        self.loaded = True

    def append(self, row: _Row, vector: npt.NDArray[np.float32] | None) -> None:
        if row.id in self.position:  # a reload already picked it up from the database
            return
        if self.size == len(self.alive):
            self._grow(max(16, self.size))
        self._put(row, vector)

    def remove(self, memory_id: str) -> None:
        i = self.position.pop(memory_id, None)
        if i is None:
            return
        self.alive[i] = False
        self.count -= 1
        for token in lexical.tokens(self.rows[i].text):
            self.document_frequency[token] -= 1
        if self.max_created == self.rows[i].created_at:
            alive = [r.created_at for j, r in enumerate(self.rows) if self.alive[j]]
            self.max_created = max(alive, default=None)
        if self.size > 64 and self.count < self.size // 2:
            self.loaded = False  # mostly dead slots: rebuild from the database next search

    def _grow(self, extra: int) -> None:
        capacity = len(self.alive) + extra
        alive = np.zeros(capacity, dtype=bool)
        alive[: len(self.alive)] = self.alive
        self.alive = alive
        if self.vectors is not None:
            vectors = np.zeros((capacity, self.vectors.shape[1]), dtype=_F32)
            vectors[: len(self.vectors)] = self.vectors
            self.vectors = vectors

    def _put(self, row: _Row, vector: npt.NDArray[np.float32] | None) -> None:
        i = len(self.rows)
        self.rows.append(row)
        self.alive[i] = True
        if self.vectors is not None and vector is not None:
            self.vectors[i] = vector
        self.position[row.id] = i
        for token in lexical.tokens(row.text):
            self.postings.setdefault(token, []).append(i)
            self.document_frequency[token] = self.document_frequency.get(token, 0) + 1
        self.count += 1
        if self.max_created is None or row.created_at > self.max_created:
            self.max_created = row.created_at

    def rank(
        self,
        query_vector: npt.NDArray[np.float32] | None,
        query_tokens: frozenset[str],
        limit: int,
    ) -> builtins.list[MemoryRecord]:
        n = self.size
        if n == 0 or self.count == 0 or limit == 0:
            return []
        semantic = query_vector is not None and self.vectors is not None
        scores = np.zeros(n, dtype=_F32)
        if semantic:
            assert self.vectors is not None and query_vector is not None
            scores += _F32(SEMANTIC_WEIGHT) * (self.vectors[:n] @ query_vector)
        lexical_weight = _F32(LEXICAL_WEIGHT if semantic else 1.0)
        weights = lexical.query_weights(query_tokens, self.document_frequency, self.count)
        for token, weight in weights.items():
            hits = self.postings.get(token)
            if hits:
                scores[np.asarray(hits, dtype=np.intp)] += lexical_weight * _F32(weight)
        scores[~self.alive[:n]] = -np.inf
        k = min(limit, self.count)
        top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        # Best score first; among equal scores the newer memory (higher row) first.
        order = top[np.lexsort((-top, -scores[top]))]
        return [self.rows[i].record(float(scores[i])) for i in order if scores[i] > 0.0]


class LocalMemory:
    """`MemoryProvider` over the `memories` table; see the module docstring for ranking."""

    name = "local"

    def __init__(
        self,
        db: Database,
        embedder: Embedder | None,
        *,
        max_cached_rows: int = DEFAULT_MAX_CACHED_ROWS,
    ) -> None:
        self.db = db
        self.embedder = embedder
        self.max_cached_rows = max_cached_rows
        self._scopes: OrderedDict[ScopeKey, _ScopeIndex] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        """How search ranks: `semantic+lexical (<model>)` or `lexical`, for logs and doctor."""
        if self.embedder is None:
            return "lexical"
        return f"semantic+lexical ({self.embedder.model_name})"

    # -- writes --------------------------------------------------------------------------

    def add(
        self,
        tenant_id: str,
        messages: Sequence[MemoryMessage],
        *,
        user_id: str,
        agent_id: str,
        session_id: str | None = None,
    ) -> builtins.list[MemoryRecord]:
        check_id("tenant_id", tenant_id, required=True)
        check_id("user_id", user_id, required=True)
        check_id("agent_id", agent_id, required=True)
        check_id("session_id", session_id)
        texts = memory_texts(messages)
        if not texts:
            return []
        vectors = self._embed([t.text for t in texts])
        now = datetime.now(UTC)
        rows = [_Row(new_id("mem"), t.text, user_id, agent_id, session_id, now) for t in texts]
        model = self.embedder.model_name if self.embedder is not None else None
        values = [
            {
                "id": row.id,
                "tenant_id": tenant_id,
                "agent_id": agent_id,
                "user_id": user_id,
                "session_id": session_id,
                "text": row.text,
                "embedding": None if vectors is None else vectors[i].tobytes(),
                "embedding_model": model,
                "meta": {"role": texts[i].role},
                "created_at": now,
            }
            for i, row in enumerate(rows)
        ]
        # A memory is derived from the turn's messages, which are durable: it need not
        # wait for the WAL flush.
        with self.db.session(durable=False) as s:
            s.execute(insert(MemoryRow), values)
        for key in ((tenant_id, user_id, agent_id), (tenant_id, user_id, None)):
            index = self._cached(key)
            if index is None:
                continue
            with index.lock:
                if index.loaded:
                    for i, row in enumerate(rows):
                        index.append(row, None if vectors is None else vectors[i])
        return [row.record() for row in rows]

    def delete(self, tenant_id: str, memory_id: str) -> bool:
        check_id("tenant_id", tenant_id, required=True)
        with self.db.session() as s:
            row = s.execute(
                select(MemoryRow.user_id, MemoryRow.agent_id).where(
                    MemoryRow.id == memory_id, MemoryRow.tenant_id == tenant_id
                )
            ).first()
            if row is None:
                return False
            s.execute(
                delete(MemoryRow).where(MemoryRow.id == memory_id, MemoryRow.tenant_id == tenant_id)
            )
        user_id, agent_id = row
        if user_id is not None:
            for key in ((tenant_id, user_id, agent_id), (tenant_id, user_id, None)):
                index = self._cached(key)
                if index is not None:
                    with index.lock:
                        index.remove(memory_id)
        return True

    def clear(
        self, tenant_id: str, *, user_id: str | None = None, agent_id: str | None = None
    ) -> int:
        check_id("tenant_id", tenant_id, required=True)
        if user_id is None and agent_id is None:
            raise InvalidMemoryArgument("user_id", "clear needs user_id, agent_id or both")
        check_id("user_id", user_id)
        check_id("agent_id", agent_id)
        with self.db.session() as s:
            result = s.execute(delete(MemoryRow).where(_scope_filter(tenant_id, user_id, agent_id)))
            removed = int(getattr(result, "rowcount", 0) or 0)
        with self._lock:
            for key in builtins.list(self._scopes):
                t, u, a = key
                if t != tenant_id or (user_id is not None and u != user_id):
                    continue
                if agent_id is None or a is None or a == agent_id:
                    del self._scopes[key]  # reloads (now smaller) on next search
        return removed

    # -- reads ---------------------------------------------------------------------------

    def search(
        self,
        tenant_id: str,
        query: str,
        *,
        user_id: str,
        agent_id: str | None = None,
        limit: int = 5,
    ) -> builtins.list[MemoryRecord]:
        check_id("tenant_id", tenant_id, required=True)
        check_id("user_id", user_id, required=True)
        check_id("agent_id", agent_id)
        check_limit(limit)
        if limit == 0 or not query.strip():
            return []
        query_vector = None
        if self.embedder is not None:
            query_vector = self._embed([query])
            assert query_vector is not None
            query_vector = query_vector[0]
        query_tokens = lexical.tokens(query)
        key: ScopeKey = (tenant_id, user_id, agent_id)
        index = self._scope(key)
        with index.lock:
            self._refresh(key, index)
            found = index.rank(query_vector, query_tokens, limit)
        self._evict_beyond_budget(keep=key)
        return found

    def list(
        self,
        tenant_id: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        limit: int = 100,
    ) -> builtins.list[MemoryRecord]:
        check_id("tenant_id", tenant_id, required=True)
        check_id("user_id", user_id)
        check_id("agent_id", agent_id)
        check_limit(limit)
        stmt = (
            select(*_ROW_COLUMNS)
            .where(_scope_filter(tenant_id, user_id, agent_id))
            .order_by(MemoryRow.created_at.desc(), MemoryRow.id.desc())
            .limit(limit)
        )
        with self.db.read_session() as s:
            return [_row(r).record() for r in s.execute(stmt)]

    # -- cache ---------------------------------------------------------------------------

    def _cached(self, key: ScopeKey) -> _ScopeIndex | None:
        with self._lock:
            return self._scopes.get(key)

    def _scope(self, key: ScopeKey) -> _ScopeIndex:
        with self._lock:
            index = self._scopes.get(key)
            if index is None:
                dimension = self.embedder.dimension if self.embedder is not None else None
                index = self._scopes[key] = _ScopeIndex(dimension)
            self._scopes.move_to_end(key)
            return index

    def _evict_beyond_budget(self, *, keep: ScopeKey) -> None:
        with self._lock:
            total = sum(index.size for index in self._scopes.values())
            for key in builtins.list(self._scopes):
                if total <= self.max_cached_rows:
                    break
                if key != keep:
                    total -= self._scopes.pop(key).size

    def _refresh(self, key: ScopeKey, index: _ScopeIndex) -> None:
        """Reload the scope if it was never loaded or the database disagrees with it."""
        tenant_id, user_id, agent_id = key
        where = _scope_filter(tenant_id, user_id, agent_id)
        if index.loaded:
            with self.db.read_session() as s:
                count, newest = s.execute(
                    select(func.count(), func.max(MemoryRow.created_at)).where(where)
                ).one()
            if (int(count), newest) == index.signature():
                return
        columns = (*_ROW_COLUMNS, MemoryRow.embedding, MemoryRow.embedding_model)
        stmt = select(*columns).where(where).order_by(MemoryRow.created_at, MemoryRow.id)
        with self.db.read_session() as s:
            loaded = s.execute(stmt).all()
        rows = [_row(r) for r in loaded]
        vectors = self._vectors_for(rows, [(r.embedding, r.embedding_model) for r in loaded])
        index.reset(rows, vectors)

    def _vectors_for(
        self, rows: Sequence[_Row], stored: Sequence[tuple[bytes | None, str | None]]
    ) -> npt.NDArray[np.float32] | None:
        """Stored vectors as a matrix; rows from another model (or none) are re-embedded."""
        if self.embedder is None:
            return None
        dimension, model = self.embedder.dimension, self.embedder.model_name
        matrix = np.zeros((len(rows), dimension), dtype=_F32)
        stale: builtins.list[int] = []
        for i, (blob, blob_model) in enumerate(stored):
            if blob is not None and blob_model == model and len(blob) == dimension * 4:
                matrix[i] = np.frombuffer(blob, dtype=_F32)
            else:
                stale.append(i)
        if stale:
            _log.info("re-embedding %d memories with %s", len(stale), model)
            fresh = self._embed([rows[i].text for i in stale])
            assert fresh is not None
            matrix[stale] = fresh
            with self.db.session() as s:
                for j, i in enumerate(stale):
                    s.execute(
                        update(MemoryRow)
                        .where(MemoryRow.id == rows[i].id)
                        .values(embedding=fresh[j].tobytes(), embedding_model=model)
                    )
        return matrix

    def _embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32] | None:
        if self.embedder is None:
            return None
        return np.ascontiguousarray(self.embedder.embed(texts), dtype=_F32)


_ROW_COLUMNS = (
    MemoryRow.id,
    MemoryRow.text,
    MemoryRow.user_id,
    MemoryRow.agent_id,
    MemoryRow.session_id,
    MemoryRow.created_at,
)


def _row(r: Any) -> _Row:
    return _Row(r.id, r.text, r.user_id, r.agent_id, r.session_id, r.created_at)


def _scope_filter(tenant_id: str, user_id: str | None, agent_id: str | None) -> ColumnElement[bool]:
    conditions = [MemoryRow.tenant_id == tenant_id]
    if agent_id is not None:
        conditions.append(MemoryRow.agent_id == agent_id)
    if user_id is not None:
        conditions.append(MemoryRow.user_id == user_id)
    return and_(*conditions)
