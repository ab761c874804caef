"""The `knowledge_chunks` table: every provider's store of record for passages.

Chunk text, position and the float32 embedding live here whichever index searches them,
so switching `KNOWLEDGE_PROVIDER` never loses a passage (the pgvector index rebuilds
itself from these rows) and reads by id or in batches are the same SQL for every provider.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from core.db import Database
from core.db.models import KnowledgeChunkRow
from core.knowledge.port import ChunkRecord, IndexTarget, Vectors

_F32 = np.float32

CHUNK_COLUMNS = (
    KnowledgeChunkRow.id,
    KnowledgeChunkRow.document_id,
    KnowledgeChunkRow.ordinal,
    KnowledgeChunkRow.text,
    KnowledgeChunkRow.section,
    KnowledgeChunkRow.page,
)


def checked_vectors(target: IndexTarget, count: int, vectors: Vectors) -> Vectors:
    """Contiguous float32 rows, one per chunk, of the target's dimension (or ValueError)."""
    if count != len(vectors):
        raise ValueError("one vector per chunk is required")
    vectors = np.ascontiguousarray(vectors, dtype=_F32)
    if count and vectors.shape[1] != target.dimension:
        raise ValueError(f"vectors have {vectors.shape[1]} dimensions, not {target.dimension}")
    return vectors


def insert_chunks(
    session: Session, target: IndexTarget, chunks: Sequence[ChunkRecord], vectors: Vectors
) -> None:
    session.execute(
        insert(KnowledgeChunkRow),
        [
            {
                "id": c.id,
                "tenant_id": target.tenant_id,
                "knowledge_base_id": target.knowledge_base_id,
                "document_id": c.document_id,
                "ordinal": c.ordinal,
                "section": c.section,
                "page": c.page,
                "text": c.text,
                "embedding": vectors[i].tobytes(),
            }
            for i, c in enumerate(chunks)
        ],
    )


def delete_document_chunks(session: Session, target: IndexTarget, document_id: str) -> int:
    result = session.execute(
        delete(KnowledgeChunkRow).where(
            KnowledgeChunkRow.tenant_id == target.tenant_id,
            KnowledgeChunkRow.knowledge_base_id == target.knowledge_base_id,
            KnowledgeChunkRow.document_id == document_id,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def delete_all_chunks(session: Session, target: IndexTarget) -> None:
    session.execute(
        delete(KnowledgeChunkRow).where(
            KnowledgeChunkRow.tenant_id == target.tenant_id,
            KnowledgeChunkRow.knowledge_base_id == target.knowledge_base_id,
        )
    )


def update_vectors(session: Session, chunk_ids: Sequence[str], vectors: Vectors) -> None:
    session.execute(  # ORM bulk UPDATE by primary key; the ids come from `iter_chunks`
        update(KnowledgeChunkRow),
        [{"id": cid, "embedding": vectors[i].tobytes()} for i, cid in enumerate(chunk_ids)],
    )


def fetch_chunks(db: Database, target: IndexTarget, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
    if not chunk_ids:
        return []
    with db.read_session() as s:  # by primary key; the scope is checked below
        rows = s.execute(
            select(
                *CHUNK_COLUMNS,
                KnowledgeChunkRow.tenant_id,
                KnowledgeChunkRow.knowledge_base_id,
            ).where(KnowledgeChunkRow.id.in_(list(chunk_ids)))
        ).all()
    return [
        stored(r)
        for r in rows
        if r.tenant_id == target.tenant_id and r.knowledge_base_id == target.knowledge_base_id
    ]


def iter_chunks(db: Database, target: IndexTarget, batch_size: int) -> Iterator[list[ChunkRecord]]:
    after = ""
    while True:
        with db.read_session() as s:
            rows = s.execute(
                select(*CHUNK_COLUMNS)
                .where(
                    KnowledgeChunkRow.tenant_id == target.tenant_id,
                    KnowledgeChunkRow.knowledge_base_id == target.knowledge_base_id,
                    KnowledgeChunkRow.id > after,
                )
                .order_by(KnowledgeChunkRow.id)
                .limit(batch_size)
            ).all()
        if not rows:
            return
        yield [stored(r) for r in rows]
        after = rows[-1].id


def stored(r: Any) -> ChunkRecord:
    return ChunkRecord(r.id, r.document_id, r.ordinal, r.text, r.section, r.page)
