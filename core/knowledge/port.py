"""The `KnowledgeIndex` port: where a knowledge base's passages and vectors live and are found.

`KnowledgeService` owns knowledge bases and documents (their rows, ingestion, ranking);
an index owns the chunks of those documents and answers two questions about them — which
chunks are nearest a query vector, and which contain the query's words. The embedded
provider (`core.knowledge.embedded`) keeps chunks in our own database and ranks them in
process with NumPy; a server-grade provider (pgvector) implements the same Protocol with
SQL. `tests/integration/test_knowledge_contract.py` runs one contract against each.

Writes take the caller's SQLAlchemy `Session`, so a document row and its chunks commit (or
roll back) together; providers that cache must touch their cache only once that session
commits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True)
class IndexTarget:
    """The knowledge base an index call is about.

    `revision` is the knowledge base's content revision: on reads, the one stored now; on
    writes, the one this write produces (the service bumps it in the same transaction).
    A cache that has seen `revision - 1` may apply the write; otherwise it must reload.
    """

    tenant_id: str
    knowledge_base_id: str
    dimension: int
    revision: int


@dataclass(frozen=True)
class ChunkRecord:
    """A passage of a document: its text and where it sits (what is stored and cited)."""

    id: str
    document_id: str
    ordinal: int
    text: str
    section: str | None
    page: int | None


@dataclass(frozen=True)
class Candidate:
    """A chunk one retriever found, with that retriever's own score (higher is better)."""

    chunk_id: str
    score: float


@dataclass(frozen=True)
class IndexQuery:
    """What to look for: the query's text (for keywords) and its unit vector.

    `min_similarity` is the cosine a chunk needs to count as a match by meaning;
    `candidates` is how many chunks each retriever returns at most. Keyword matches scoring
    under `keyword_floor` times the best keyword score may be left out (the service drops
    them anyway), which lets an index skip scoring chunks that hold only common words.
    """

    text: str
    vector: Vectors
    min_similarity: float
    candidates: int
    keyword_floor: float = 0.0


@dataclass(frozen=True)
class Candidates:
    """Each retriever's findings, best first; the service fuses them."""

    semantic: list[Candidate]
    keyword: list[Candidate]


def searchable_text(text: str, section: str | None) -> str:
    """What is embedded and keyword-indexed for a chunk: its section path, then its text.

    The heading path carries the topic of passages that never repeat it ("Refunds" over a
    paragraph about "money back within 30 days"), so both retrievers see it.
    """
    return f"{section}\n{text}" if section else text


class KnowledgeIndex(Protocol):
    """Stores chunks with their vectors and retrieves them, per knowledge base.

    Implementations must be safe to call from several threads at once. Every method is
    scoped by the target's tenant and knowledge base: ids from elsewhere are never found.
    """

    name: str

    def add(
        self, session: Session, target: IndexTarget, chunks: Sequence[ChunkRecord], vectors: Vectors
    ) -> None:
        """Store chunks (rows of `vectors` in the same order) inside the caller's session."""
        ...

    def remove_document(self, session: Session, target: IndexTarget, document_id: str) -> int:
        """Delete a document's chunks and vectors; returns how many were removed."""
        ...

    def drop(self, session: Session, target: IndexTarget) -> None:
        """Forget everything about a knowledge base that is being deleted."""
        ...

    def set_vectors(
        self, session: Session, target: IndexTarget, chunk_ids: Sequence[str], vectors: Vectors
    ) -> None:
        """Replace stored vectors (re-indexing with another embedder)."""
        ...

    def iter_chunks(self, target: IndexTarget, batch_size: int) -> Iterator[list[ChunkRecord]]:
        """Every chunk of the knowledge base in batches, in a stable order."""
        ...

    def search(self, target: IndexTarget, query: IndexQuery) -> Candidates:
        """Nearest chunks by cosine (at least `min_similarity`) and best keyword matches."""
        ...

    def chunks(self, target: IndexTarget, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        """The chunks with these ids (any order; missing ids are left out)."""
        ...

    def warm(self, targets: Sequence[tuple[IndexTarget, int]]) -> int:
        """Get ready to search these knowledge bases (each with its chunk count, most
        wanted first) so the first question after a start does not wait for a load;
        returns how many chunks were loaded. An index with nothing to load returns 0."""
        ...
