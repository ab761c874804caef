"""The server-grade knowledge index: PostgreSQL with pgvector, searched by the database.

Chunks stay in `knowledge_chunks` (the store of record every provider shares, see
`core.knowledge.chunk_table`); this provider adds `knowledge_vectors`, one row per chunk
with its embedding as a pgvector `vector`, its searchable words as a `tsvector`, and its
word count. Rows go with their chunk (`ON DELETE CASCADE`), inside the caller's
transaction, so replicas never see a passage without its vector or the reverse.

* **By meaning**: exact while a knowledge base is small (its rows, vectors and words
  together, scan at ~1.2 ms per 1,000 chunks here), then an HNSW index per knowledge base
  and dimension: a partial expression index `(embedding::vector(d)) vector_cosine_ops
  WHERE knowledge_base_id = '…' AND vector_dims(embedding) = d`. Per knowledge base,
  because a filter applied after a shared HNSW scan returns too few rows when one
  knowledge base is a small part of the table; per dimension, because the column holds
  any model's vectors while re-indexing. The id and dimension are written into the SQL as
  literals (validated) so the planner can prove the partial index applies; a bound
  parameter would hide it in a generic plan.
  Once a write takes the knowledge base past `hnsw_from` chunks, the index is built in
  bulk (about 8x faster per vector than inserting into an existing graph) right after that
  write commits, with `CREATE INDEX CONCURRENTLY`: writers and searches go on meanwhile,
  and no ingest transaction ever holds a table lock that another could deadlock on. One
  build runs at a time; a knowledge base whose build finds another running gets its index
  from the sweep (`warm`, every few minutes). The search is the same SQL with or without
  the index, so results never depend on timing.
* **By keywords**: the same BM25 as the embedded provider over the same tokens
  (`core.memory.lexical`), evaluated in SQL over a GIN index. Document frequencies live in
  `knowledge_terms`, kept in step by every write (upserts in term order, so concurrent
  writers never deadlock). Scoring starts with the chunks holding the query's rarer words;
  chunks holding only its common words are scored only when their best possible score could
  still reach the results — a word in most chunks weighs little, so that is seldom. Lexemes
  are stored verbatim (`array_to_tsvector`), so `abc-1234` matches whole and no PostgreSQL
  text-search dictionary second-guesses our tokenizer.

The schema is the provider's own (`prepare()`), not an Alembic migration: it needs the
`vector` extension, which a plain PostgreSQL (and SQLite) does not have. `prepare()` also
indexes chunks written while another provider was configured, so switching is a restart.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.db import Database
from core.errors import ServiceUnavailable
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

MAX_QUERY_TOKENS = 64
RARE_SHARE = 0.02  # words in at most this share of chunks are scored first
MAX_LEXEME_CHARS = 500  # PostgreSQL refuses lexemes over 2 KB; no real word is this long
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
HNSW_FROM = 5_000  # chunks (of one dimension) from which a knowledge base gets its index
MIN_EF_SEARCH = 100  # pgvector's default is 40; raised further to the candidates asked for
_PENDING = "cosmo.pgvector.maintain"
_INDEX_PREFIX = "kv_hnsw_"
_DDL_LOCK = 0x636F736D6F6B76  # one process at a time builds or drops HNSW indexes
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_SCHEMA = (
    "CREATE EXTENSION IF NOT EXISTS vector",
    """
    CREATE TABLE IF NOT EXISTS knowledge_vectors (
        chunk_id varchar(40) PRIMARY KEY
            REFERENCES knowledge_chunks (id) ON DELETE CASCADE,
        tenant_id varchar(64) NOT NULL,
        knowledge_base_id varchar(40) NOT NULL,
        embedding vector NOT NULL,
        lexemes tsvector NOT NULL,
        token_count integer NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS ix_knowledge_vectors_kb ON knowledge_vectors (knowledge_base_id)",
    "CREATE INDEX IF NOT EXISTS ix_knowledge_vectors_lexemes "
    "ON knowledge_vectors USING gin (lexemes)",
    """
    CREATE TABLE IF NOT EXISTS knowledge_terms (
        knowledge_base_id varchar(40) NOT NULL
            REFERENCES knowledge_bases (id) ON DELETE CASCADE,
        term text NOT NULL,
        df integer NOT NULL,
        PRIMARY KEY (knowledge_base_id, term)
    )
    """,
)


def pgvector_problem(db: Database) -> str | None:
    """Why the pgvector provider cannot run on this database, or None (for `cosmo doctor`)."""
    if db.engine.dialect.name != "postgresql":
        return f"DATABASE_URL is {db.engine.dialect.name}, not PostgreSQL"
    with db.read_connection() as conn:
        available = conn.execute(
            text(
                "SELECT installed_version, default_version FROM pg_available_extensions "
                "WHERE name = 'vector'"
            )
        ).first()
    if available is None:
        return "the pgvector extension is not installed on this PostgreSQL server"
    installed, default = available
    version = installed or default
    if tuple(int(p) for p in re.findall(r"\d+", version)[:2]) < (0, 5):
        return f"pgvector {version} has no HNSW indexes; 0.5 or newer is needed"
    return None


class PgvectorKnowledgeIndex:
    """`KnowledgeIndex` over PostgreSQL + pgvector; see the module docstring."""

    name = "pgvector"

    def __init__(self, db: Database, *, prepare: bool = True, hnsw_from: int = HNSW_FROM) -> None:
        if db.engine.dialect.name != "postgresql":
            raise ServiceUnavailable(
                "KNOWLEDGE_PROVIDER=pgvector needs DATABASE_URL to be a PostgreSQL database "
                f"with the pgvector extension (this one is {db.engine.dialect.name}); "
                "use KNOWLEDGE_PROVIDER=embedded otherwise"
            )
        self.db = db
        self.hnsw_from = hnsw_from
        self._stats: dict[str, tuple[int, int, float, int]] = {}  # kb -> revision, sizes
        self._lock = threading.Lock()
        if prepare:
            self.prepare()

    # -- schema ------------------------------------------------------------------------------

    def prepare(self, batch_size: int = 1000) -> int:
        """Create the extension, table and indexes if missing, then index every chunk that
        has no vector row yet (written under another provider). Returns how many."""
        # Replicas starting together would race on CREATE … IF NOT EXISTS (it is not atomic
        # against itself) and on indexing the same chunks: one of them does it at a time.
        lock = text("SELECT pg_advisory_xact_lock(hashtext('cosmo-knowledge-vectors'))")
        try:
            with self.db.session() as s:
                s.execute(lock)
                for statement in _SCHEMA:
                    s.execute(text(statement))
        except DBAPIError as exc:
            raise ServiceUnavailable(
                "KNOWLEDGE_PROVIDER=pgvector could not set up the pgvector extension in "
                "this database (is pgvector installed, and may this user CREATE EXTENSION?): "
                f"{exc.orig}"
            ) from exc
        total = 0
        while True:
            with self.db.session() as s:
                s.execute(lock)
                rows = s.execute(
                    text(
                        """
                        SELECT c.id, c.tenant_id, c.knowledge_base_id, c.section, c.text,
                               c.embedding
                        FROM knowledge_chunks c
                        LEFT JOIN knowledge_vectors v ON v.chunk_id = c.id
                        WHERE v.chunk_id IS NULL
                        ORDER BY c.id
                        LIMIT :n
                        """
                    ),
                    {"n": batch_size},
                ).all()
                if not rows:
                    break
                by_target: dict[IndexTarget, list[tuple[str, str | None, str]]] = {}
                vectors: dict[IndexTarget, list[Vectors]] = {}
                for r in rows:
                    vector = np.frombuffer(bytes(r.embedding), dtype=np.float32)
                    target = IndexTarget(r.tenant_id, r.knowledge_base_id, len(vector), 0)
                    by_target.setdefault(target, []).append((r.id, r.section, r.text))
                    vectors.setdefault(target, []).append(vector)
                for target, chunks in by_target.items():
                    self._insert_vectors(s, target, chunks, np.stack(vectors[target]))
            for target in by_target:
                self.maintain(target.knowledge_base_id, target.dimension)
            total += len(rows)
        if total:
            _log.info("pgvector: indexed %d chunks stored before this provider was used", total)
        return total

    # -- writes (in the caller's transaction) -----------------------------------------------

    def add(
        self, session: Session, target: IndexTarget, chunks: Sequence[ChunkRecord], vectors: Vectors
    ) -> None:
        vectors = chunk_table.checked_vectors(target, len(chunks), vectors)
        if len(chunks) == 0:
            return
        chunk_table.insert_chunks(session, target, chunks, vectors)
        self._insert_vectors(session, target, [(c.id, c.section, c.text) for c in chunks], vectors)
        self._after_commit(session, target.knowledge_base_id, target.dimension)

    def remove_document(self, session: Session, target: IndexTarget, document_id: str) -> int:
        counts = session.execute(
            text(
                """
                SELECT term, count(*) FROM knowledge_vectors v
                JOIN knowledge_chunks c ON c.id = v.chunk_id,
                LATERAL unnest(tsvector_to_array(v.lexemes)) AS term
                WHERE c.knowledge_base_id = :kb AND c.document_id = :doc
                GROUP BY term
                """
            ),
            {"kb": target.knowledge_base_id, "doc": document_id},
        ).all()
        self._count_terms(session, target, {term: -int(n) for term, n in counts})
        return chunk_table.delete_document_chunks(session, target, document_id)  # rows cascade

    def drop(self, session: Session, target: IndexTarget) -> None:
        chunk_table.delete_all_chunks(session, target)
        session.execute(
            text("DELETE FROM knowledge_terms WHERE knowledge_base_id = :kb"),
            {"kb": target.knowledge_base_id},
        )
        self._after_commit(session, target.knowledge_base_id, None)
        with self._lock:
            self._stats.pop(target.knowledge_base_id, None)

    def set_vectors(
        self, session: Session, target: IndexTarget, chunk_ids: Sequence[str], vectors: Vectors
    ) -> None:
        vectors = chunk_table.checked_vectors(target, len(chunk_ids), vectors)
        if not chunk_ids:
            return
        chunk_table.update_vectors(session, chunk_ids, vectors)
        session.execute(
            text(
                "UPDATE knowledge_vectors SET embedding = CAST(:embedding AS vector) "
                "WHERE chunk_id = :id AND knowledge_base_id = :kb"
            ),
            [
                {"id": cid, "kb": target.knowledge_base_id, "embedding": _literal(vectors[i])}
                for i, cid in enumerate(chunk_ids)
            ],
        )
        self._after_commit(session, target.knowledge_base_id, target.dimension)

    def _insert_vectors(
        self,
        session: Session,
        target: IndexTarget,
        chunks: Sequence[tuple[str, str | None, str]],
        vectors: Vectors,
    ) -> None:
        rows = []
        terms: Counter[str] = Counter()
        for i, (chunk_id, section, body) in enumerate(chunks):
            words = lexical.tokens(searchable_text(body, section))
            lexemes = sorted(w for w in words if len(w) <= MAX_LEXEME_CHARS)
            terms.update(lexemes)
            rows.append(
                {
                    "id": chunk_id,
                    "tenant": target.tenant_id,
                    "kb": target.knowledge_base_id,
                    "embedding": _literal(vectors[i]),
                    "lexemes": lexemes,
                    "count": len(words),
                }
            )
        session.execute(
            text(
                """
                INSERT INTO knowledge_vectors
                    (chunk_id, tenant_id, knowledge_base_id, embedding, lexemes, token_count)
                VALUES (:id, :tenant, :kb, CAST(:embedding AS vector),
                        array_to_tsvector(CAST(:lexemes AS text[])), :count)
                """
            ),
            rows,
        )
        self._count_terms(session, target, terms)

    @staticmethod
    def _count_terms(session: Session, target: IndexTarget, change: Mapping[str, int]) -> None:
        """Add `change` to the knowledge base's document frequencies, in term order (the
        lock order every writer shares), and forget terms no chunk holds any more."""
        if not change:
            return
        terms = sorted(change)
        session.execute(
            text(
                """
                INSERT INTO knowledge_terms (knowledge_base_id, term, df)
                SELECT :kb, t.term, t.df
                FROM unnest(CAST(:terms AS text[]), CAST(:dfs AS integer[]))
                    WITH ORDINALITY AS t(term, df, n)
                ORDER BY t.n
                ON CONFLICT (knowledge_base_id, term)
                DO UPDATE SET df = knowledge_terms.df + EXCLUDED.df
                """
            ),
            {"kb": target.knowledge_base_id, "terms": terms, "dfs": [change[t] for t in terms]},
        )
        if any(change[t] < 0 for t in terms):
            session.execute(
                text("DELETE FROM knowledge_terms WHERE knowledge_base_id = :kb AND df <= 0"),
                {"kb": target.knowledge_base_id},
            )

    # -- HNSW indexes (outside any write's transaction) -------------------------------------

    def _after_commit(
        self, session: Session, knowledge_base_id: str, dimension: int | None
    ) -> None:
        """Maintain the knowledge base's index once `session` commits (never on rollback);
        `dimension` None: the knowledge base is gone, drop its indexes."""
        pending: dict[str, int | None] = session.info.setdefault(_PENDING, {})
        if not pending:
            event.listen(session, "after_commit", self._maintain_pending, once=True)
        pending[knowledge_base_id] = dimension

    def _maintain_pending(self, session: Session) -> None:
        for knowledge_base_id, dimension in session.info.pop(_PENDING, {}).items():
            try:
                self.maintain(knowledge_base_id, dimension)
            except Exception:  # the write is committed; the next write or restart retries
                _log.exception("pgvector: could not maintain the index of %s", knowledge_base_id)

    def maintain(self, knowledge_base_id: str, dimension: int | None) -> bool:
        """Bring a knowledge base's HNSW indexes in line with its chunks: build the one for
        `dimension` once it holds `hnsw_from` such chunks, drop any other (another model's,
        a failed build's, or all of them when `dimension` is None). False: deferred.

        Runs on its own autocommit connection with the `CONCURRENTLY` forms. Two of those on
        one table wait for each other's transactions and deadlock, so one process at a time
        does this work, under an advisory lock it only *tries* to take (a blocked attempt
        would hold a snapshot the running build waits for). Whoever finds it taken leaves the
        work to the sweep (`warm`, every few minutes); searches are exact meanwhile.
        """
        kb = _safe(knowledge_base_id)
        want = None if dimension is None else _index_name(kb, int(dimension))
        with self._ddl_connection() as conn:
            if conn is None:
                return False
            self._reconcile(conn, kb, want, dimension)
        return True

    @contextmanager
    def _ddl_connection(self) -> Iterator[Connection | None]:
        """An autocommit connection holding the index-maintenance lock, or None when another
        process holds it (see `maintain` for why it is only tried, never waited for)."""
        with self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if not conn.scalar(text(f"SELECT pg_try_advisory_lock({_DDL_LOCK})")):
                yield None
                return
            try:
                yield conn
            finally:
                conn.execute(text(f"SELECT pg_advisory_unlock({_DDL_LOCK})"))

    def _reconcile(
        self, conn: Connection, kb: str, want: str | None, dimension: int | None
    ) -> None:
        for name, valid in self._hnsw_indexes(conn, kb).items():
            if name != want or not valid:
                conn.execute(text(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"'))
        if want is None or dimension is None or want in self._hnsw_indexes(conn, kb):
            return
        count = conn.scalar(
            text(
                "SELECT count(*) FROM knowledge_vectors WHERE knowledge_base_id = :kb "
                "AND vector_dims(embedding) = :dimension"
            ),
            {"kb": kb, "dimension": int(dimension)},
        )
        if int(count or 0) < self.hnsw_from:
            return
        conn.execute(text("SET maintenance_work_mem = '256MB'"))
        conn.execute(
            text(
                f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{want}" ON knowledge_vectors '
                f"USING hnsw ((embedding::vector({int(dimension)})) vector_cosine_ops) "
                f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) "
                f"WHERE knowledge_base_id = '{kb}' AND vector_dims(embedding) = {int(dimension)}"
            )
        )
        conn.execute(text("RESET maintenance_work_mem"))

    def warm(self, targets: Sequence[tuple[IndexTarget, int]]) -> int:
        """The sweep: build indexes that writes had to leave for later, and drop those of
        knowledge bases that are gone. Nothing is loaded into memory, so it returns 0."""
        wanted = {_index_name(t.knowledge_base_id, t.dimension) for t, _ in targets}
        for target, size in targets:
            if size >= self.hnsw_from:
                self.maintain(target.knowledge_base_id, target.dimension)
        with self._ddl_connection() as conn:
            if conn is not None:
                for name in self._hnsw_indexes(conn, None):
                    if name not in wanted:
                        conn.execute(text(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"'))
        return 0

    @staticmethod
    def _hnsw_indexes(conn: Connection | Session, knowledge_base_id: str | None) -> dict[str, bool]:
        """HNSW indexes of one knowledge base (None: of all) by name, with whether each is
        usable (a build that failed half way leaves an invalid one behind)."""
        prefix = _INDEX_PREFIX if knowledge_base_id is None else _index_prefix(knowledge_base_id)
        rows = conn.execute(
            text(
                "SELECT c.relname, i.indisvalid FROM pg_class c "
                "JOIN pg_index i ON i.indexrelid = c.oid "
                "WHERE c.relkind = 'i' AND starts_with(c.relname, :prefix)"
            ),
            {"prefix": prefix},
        )
        return {name: bool(valid) for name, valid in rows}

    # -- reads -------------------------------------------------------------------------------

    def search(self, target: IndexTarget, query: IndexQuery) -> Candidates:
        if query.candidates <= 0:
            return Candidates([], [])
        with self.db.read_session() as s:
            return Candidates(
                semantic=self._semantic(s, target, query),
                keyword=self._keyword(s, target, query),
            )

    def _semantic(self, s: Session, target: IndexTarget, query: IndexQuery) -> list[Candidate]:
        kb, dimension = _safe(target.knowledge_base_id), int(target.dimension)
        if query.vector.shape[-1] != dimension:
            raise ValueError(f"query vector has {query.vector.shape[-1]} dimensions")
        ef_search = min(max(MIN_EF_SEARCH, query.candidates), 1000)
        s.execute(text(f"SET LOCAL hnsw.ef_search = {ef_search}"))
        rows = s.execute(
            text(  # literals: a checked id and an int (see the module docstring)
                f"""
                SELECT chunk_id, embedding::vector({dimension}) <=> CAST(:q AS vector({dimension}))
                    AS distance
                FROM knowledge_vectors
                WHERE knowledge_base_id = '{kb}' AND vector_dims(embedding) = {dimension}
                  AND tenant_id = :tenant
                ORDER BY embedding::vector({dimension}) <=> CAST(:q AS vector({dimension}))
                LIMIT :n
                """  # noqa: S608
            ),
            {"q": _literal(query.vector), "tenant": target.tenant_id, "n": query.candidates},
        ).all()
        out = []
        for chunk_id, distance in rows:
            similarity = 1.0 - float(distance)
            if similarity < query.min_similarity:
                break
            out.append(Candidate(chunk_id, similarity))
        return out

    def _keyword(self, s: Session, target: IndexTarget, query: IndexQuery) -> list[Candidate]:
        words = sorted(w for w in lexical.tokens(query.text) if len(w) <= MAX_LEXEME_CHARS)
        if not words:
            return []
        chunks, average, shortest = self._size(s, target)
        if chunks == 0:
            return []
        found: dict[str, int] = {
            term: int(df)
            for term, df in s.execute(
                text(
                    "SELECT term, df FROM knowledge_terms WHERE knowledge_base_id = :kb "
                    "AND term = ANY(CAST(:terms AS text[]))"
                ),
                {"kb": target.knowledge_base_id, "terms": words},
            )
        }
        if not found:
            return []
        # Rarest first; the rest of the words only add to the scores of chunks found here.
        present = sorted(found, key=lambda w: (found[w], w))[:MAX_QUERY_TOKENS]
        weight = {w: lexical.idf(int(found[w]), chunks) for w in present}
        rare = [w for w in present if found[w] <= RARE_SHARE * chunks] or present[:1]
        common = [w for w in present if w not in rare]
        scored = self._bm25(s, target, present, weight, rare, average, query.candidates)
        if common and scored:
            best = scored[0].score
            floor = best * query.keyword_floor
            if len(scored) == query.candidates:
                floor = max(floor, scored[-1].score)
            # BM25's largest factor for one word is the shortest chunk's: a chunk holding
            # only common words scores at most this.
            factor = (BM25_K1 + 1.0) / (
                1.0 + BM25_K1 * (1.0 - BM25_B + BM25_B * shortest / max(average, 1.0))
            )
            reachable = factor * sum(weight[w] for w in common)
            if reachable < floor or (reachable == floor and query.keyword_floor > 0):
                return scored
        if common:
            return self._bm25(s, target, present, weight, present, average, query.candidates)
        return scored

    @staticmethod
    def _bm25(
        s: Session,
        target: IndexTarget,
        words: Sequence[str],
        weight: Mapping[str, float],
        among: Sequence[str],
        average: float,
        limit: int,
    ) -> list[Candidate]:
        """BM25 over `words` of the chunks holding any of `among`, best first."""
        # Only placeholders are generated; every word and weight is bound.
        terms = " + ".join(
            f"CASE WHEN lexemes @@ CAST(:w{i} AS tsquery) THEN CAST(:idf{i} AS float8) ELSE 0 END"
            for i in range(len(words))
        )
        params: dict[str, object] = {f"w{i}": _tsquery(w) for i, w in enumerate(words)}
        params |= {f"idf{i}": weight[w] for i, w in enumerate(words)}
        params |= {
            "any": " | ".join(_tsquery(w) for w in among),
            "avg": max(average, 1.0),
            "tenant": target.tenant_id,
            "kb": target.knowledge_base_id,
            "limit": limit,
            "k1": BM25_K1,
            "k1p1": BM25_K1 + 1.0,
            "b": BM25_B,
        }
        rows = s.execute(
            text(
                f"""
                SELECT chunk_id,
                       ({terms}) * CAST(:k1p1 AS float8)
                       / (1.0 + CAST(:k1 AS float8) * (1.0 - CAST(:b AS float8)
                          + CAST(:b AS float8) * token_count / CAST(:avg AS float8))) AS score
                FROM knowledge_vectors
                WHERE knowledge_base_id = :kb AND tenant_id = :tenant
                  AND lexemes @@ CAST(:any AS tsquery)
                ORDER BY score DESC, chunk_id
                LIMIT :limit
                """  # noqa: S608
            ),
            params,
        ).all()
        return [Candidate(chunk_id, float(score)) for chunk_id, score in rows if score > 0]

    def _size(self, s: Session, target: IndexTarget) -> tuple[int, float, int]:
        """Chunks in the knowledge base, their average and shortest word counts, cached per
        revision (every write bumps it)."""
        with self._lock:
            cached = self._stats.get(target.knowledge_base_id)
        if cached is not None and cached[0] == target.revision:
            return cached[1], cached[2], cached[3]
        chunks, average, shortest = s.execute(
            text(
                "SELECT count(*), coalesce(avg(token_count), 0), coalesce(min(token_count), 0) "
                "FROM knowledge_vectors WHERE knowledge_base_id = :kb AND tenant_id = :tenant"
            ),
            {"kb": target.knowledge_base_id, "tenant": target.tenant_id},
        ).one()
        stats = (target.revision, int(chunks), float(average), int(shortest))
        with self._lock:
            self._stats[target.knowledge_base_id] = stats
        return stats[1], stats[2], stats[3]

    def chunks(self, target: IndexTarget, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        return chunk_table.fetch_chunks(self.db, target, chunk_ids)

    def iter_chunks(self, target: IndexTarget, batch_size: int) -> Iterator[list[ChunkRecord]]:
        return chunk_table.iter_chunks(self.db, target, batch_size)


def _safe(knowledge_base_id: str) -> str:
    """An id fit to appear as a SQL literal (ours are `kb_` + ULID; anything else is refused)."""
    if not _SAFE_ID.match(knowledge_base_id):
        raise ValueError(f"unexpected knowledge base id {knowledge_base_id!r}")
    return knowledge_base_id


def _index_prefix(knowledge_base_id: str) -> str:
    """What the names of a knowledge base's HNSW indexes start with (one per dimension)."""
    digest = hashlib.sha256(_safe(knowledge_base_id).encode()).hexdigest()[:20]
    return f"{_INDEX_PREFIX}{digest}_"


def _index_name(knowledge_base_id: str, dimension: int) -> str:
    return f"{_index_prefix(knowledge_base_id)}{dimension}"


def _literal(vector: Vectors) -> str:
    """pgvector's text form; float32 values print exactly in 9 significant digits."""
    return "[" + ",".join(f"{x:.9g}" for x in np.asarray(vector, dtype=np.float32).ravel()) + "]"


def _tsquery(word: str) -> str:
    """A one-lexeme tsquery, quoted so the word is taken verbatim (no parsing, no stemming)."""
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"
