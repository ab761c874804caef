"""Knowledge bases at the boundaries: what admins send, what core returns, what goes wrong."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from core.db.ids import KNOWLEDGE_BASE_ID_PREFIX
from core.errors import Conflict, FieldError, ValidationFailed
from core.schemas.common import ShortText, Slug, StrictModel, refuse_id_shaped
from core.schemas.views import View

DEFAULT_CHUNK_SIZE = 800  # characters; all-MiniLM-L6-v2 reads ~256 word pieces (~1,000 chars)
DEFAULT_CHUNK_OVERLAP = 100
DEFAULT_TOP_K = 5
DEFAULT_SCORE_THRESHOLD = 0.3


ChunkSize = Annotated[int, Field(ge=100, le=8000, description="Largest chunk, in characters.")]
ChunkOverlap = Annotated[
    int,
    Field(
        ge=0,
        description="Characters a chunk repeats from the previous one in the same section; "
        "at most half of chunk_size.",
    ),
]
TopK = Annotated[int, Field(ge=1, le=50, description="Passages a search returns.")]
ScoreThreshold = Annotated[
    float,
    Field(
        ge=-1.0,
        le=1.0,
        description="Cosine similarity a passage needs to match by meaning; passages that "
        "contain the query's keywords match whatever their similarity.",
    ),
]


class KnowledgeBaseSpec(StrictModel):
    """A knowledge base as an admin declares it. Chunking applies to documents ingested
    after it is set (re-ingesting re-chunks them); `top_k` and `score_threshold` apply to
    every search."""

    name: Slug
    description: ShortText = ""
    chunk_size: ChunkSize = DEFAULT_CHUNK_SIZE
    chunk_overlap: ChunkOverlap = DEFAULT_CHUNK_OVERLAP
    top_k: TopK = DEFAULT_TOP_K
    score_threshold: ScoreThreshold = DEFAULT_SCORE_THRESHOLD

    @field_validator("name")
    @classmethod
    def _not_an_id(cls, value: str) -> str:
        return refuse_id_shaped(value, KNOWLEDGE_BASE_ID_PREFIX, "a knowledge base")

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_fits(cls, overlap: int, info: ValidationInfo) -> int:
        size = info.data.get("chunk_size")  # absent when chunk_size itself was invalid
        if size is not None and overlap > size // 2:
            raise ValueError(
                f"chunk_overlap ({overlap}) must be at most half of chunk_size ({size})"
            )
        return overlap


class KnowledgeBasePatch(StrictModel):
    """Settings to change; fields left out keep their value. The name is fixed (agents
    refer to it). New chunk settings apply to documents ingested afterwards: re-run
    `cosmo kb ingest` (or upload again) to re-chunk the existing ones."""

    description: ShortText | None = None
    chunk_size: ChunkSize | None = None
    chunk_overlap: ChunkOverlap | None = None
    top_k: TopK | None = None
    score_threshold: ScoreThreshold | None = None


class KnowledgeBaseView(View):
    id: str
    tenant_id: str
    name: str
    description: str
    chunk_size: int
    chunk_overlap: int
    top_k: int
    score_threshold: float
    embedding_model: str
    embedding_dimension: int
    document_count: int
    chunk_count: int
    created_at: datetime
    updated_at: datetime


DocumentStatus = Literal["queued", "ingesting", "ready", "failed"]


class DocumentView(View):
    id: str
    knowledge_base_id: str
    name: str
    content_type: str
    size: int
    sha256: str = Field(
        description="SHA-256 over the chunk settings the document was cut with "
        "(`chunk_size/chunk_overlap`) and its bytes: uploading the same bytes again is "
        "skipped only while the knowledge base's chunk settings are unchanged."
    )
    chunk_count: int = Field(description="Chunks written so far (all of them once `ready`).")
    pages: int | None
    title: str | None
    status: DocumentStatus = Field(
        description="`queued` until a worker picks its ingestion up, `ingesting` while chunks "
        "are written (search finds those written so far), then `ready` or `failed`."
    )
    error: str | None = Field(description="Why ingestion failed (when `failed`).")
    job_id: str | None = Field(
        description="The `knowledge.ingest` job of its latest upload: `GET /api/v1/jobs/{id}`."
    )
    created_at: datetime
    updated_at: datetime


IngestStatus = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class IngestResult:
    """What ingesting one document did; `unchanged` means its bytes were already indexed."""

    document: DocumentView
    status: IngestStatus

    @property
    def chunks(self) -> int:
        return self.document.chunk_count


@dataclass(frozen=True)
class Submission:
    """What handing a document over for ingestion did: `created`/`updated` with the job
    that ingests it, or `unchanged` (no job: the same bytes are ingested or on their way,
    in which case `job_id` is the job already doing it)."""

    document: DocumentView
    status: IngestStatus
    job_id: str | None


@dataclass(frozen=True)
class KnowledgeMatch:
    """One passage a search found, with what a citation needs.

    `score` is the reciprocal-rank fusion of both retrievers, scaled so that 1.0 means
    ranked first by meaning and by keywords; `similarity` is the cosine to the query (None
    when only keywords found it) and `keyword_score` the BM25 score (None when no keyword
    matched).
    """

    knowledge_base: str
    document_id: str
    document: str
    chunk_id: str
    section: str | None
    page: int | None
    text: str
    snippet: str
    score: float
    similarity: float | None
    keyword_score: float | None


# --- errors ---------------------------------------------------------------------------


class ReindexRequired(Conflict):
    """The knowledge base's vectors come from another embedder than the one running now.

    Comparing vectors across models returns confident nonsense, so searches and ingestion
    refuse until `cosmo kb reindex` re-embeds the stored chunks.
    """

    title = "Knowledge base needs re-indexing"

    def __init__(self, name: str, stored: str, stored_dimension: int, current: str, dim: int):
        super().__init__(
            f"knowledge base {name!r} was indexed with {stored} ({stored_dimension}-d) but the "
            f"embedder now is {current} ({dim}-d); run `cosmo kb reindex {name}` to re-embed it"
        )


class DocumentRejected(ValidationFailed):
    """A document that cannot be ingested (unsupported type, unreadable, no text, too big).

    A `ValidationFailed` on the `file` field, so REST answers 422 and the CLI reports the
    file and goes on with the next one.
    """

    title = "Document rejected"

    def __init__(self, name: str, reason: str) -> None:
        super().__init__([FieldError(("file",), f"{name}: {reason}")])
        self.name = name
        self.reason = reason


class KnowledgeBaseInUse(Conflict):
    """Agents list the knowledge base; deleting it would leave them pointing at nothing.

    `agents` names them, so the caller can detach it or delete with `force`.
    """

    title = "Knowledge base in use"

    def __init__(self, name: str, agents: list[str]) -> None:
        super().__init__(
            f"knowledge base {name!r} is attached to agent(s) {', '.join(agents)}; detach it "
            f"first, or delete with force (`?force=true`, `cosmo kb delete {name} --force`) to "
            "remove it from their lists as well"
        )
        self.knowledge_base = name
        self.agents = agents
