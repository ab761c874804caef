"""`/knowledge-bases` — knowledge bases, their documents (multipart upload) and search."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Path, Query, Response, UploadFile
from pydantic import BaseModel, Field

from bot.api.auth import AdminDep, BearerRoute, ReaderDep
from bot.api.deps import ContainerDep
from bot.api.params import (
    ContainsFilter,
    Cursor,
    DocumentContainsFilter,
    DocumentNameFilter,
    Limit,
    NameFilter,
)
from bot.api.problems import problem_responses
from bot.api.routes import API_PREFIX
from bot.api.routes.jobs import job_location
from bot.api.schemas import PageOut
from core.db.pagination import DEFAULT_LIMIT
from core.jobs import JobView
from core.knowledge.jobs import submit_document
from core.knowledge.schemas import (
    DocumentView,
    KnowledgeBasePatch,
    KnowledgeBaseSpec,
    KnowledgeBaseView,
)
from core.knowledge.service import MAX_NAME_CHARS, MAX_QUERY_CHARS

PREFIX = API_PREFIX + "/knowledge-bases"
UPLOAD_LIMIT_SETTING = "COSMO_MAX_UPLOAD_BYTES"
UPLOAD_ENVELOPE_BYTES = 64 * 1024
"""Room on top of the document for the multipart boundaries, part headers and `name`."""
UPLOAD_PATH = rf"{PREFIX}/[^/]+/documents/?"
"""The upload route under the API prefix: the one route whose body limit is the upload's."""


def upload_limit_detail(limit: int) -> str:
    return f"documents are limited to {limit} bytes ({UPLOAD_LIMIT_SETTING})"


KnowledgeBaseRef = Annotated[
    str,
    Path(
        description="The knowledge base's id (`kb_…`) or name. An id-shaped value is always "
        "read as an id; names of that shape are refused on save."
    ),
]
DocumentRef = Annotated[
    str,
    Path(
        description="The document's id (`doc_…`) or name (its path in the knowledge base, "
        "slashes included, e.g. `guides/setup.md`)."
    ),
]


router = APIRouter(
    prefix=PREFIX,
    tags=["knowledge"],
    responses=problem_responses(401, 422),
    route_class=BearerRoute,
)


class DocumentAccepted(BaseModel):
    status: Literal["created", "updated", "unchanged"] = Field(
        description="`created`/`updated`: the document is queued for ingestion by `job`. "
        "`unchanged`: a document of that name with the same bytes was already ingested (or is "
        "being ingested, by `job`) with the knowledge base's current chunk settings."
    )
    document: DocumentView
    job: JobView | None = Field(
        description="The `knowledge.ingest` job ingesting it (also `Location`); null when "
        "nothing is left to do."
    )


class SearchHit(BaseModel):
    document_id: str
    document: str = Field(description="The document's name, to cite.")
    section: str | None = Field(description="Heading path the passage sits under.")
    page: int | None = Field(description="PDF page (1-based).")
    chunk_id: str
    snippet: str = Field(description="Up to 240 characters around the first matching word.")
    text: str = Field(description="The whole passage.")
    score: float = Field(description="Reciprocal-rank fusion of both retrievers; 1 is best.")
    similarity: float | None = Field(description="Cosine to the query; null: keywords only.")
    keyword_score: float | None = Field(description="BM25; null: matched by meaning only.")


class SearchResults(BaseModel):
    knowledge_base: str
    query: str
    items: list[SearchHit]


@router.get("", response_model=PageOut[KnowledgeBaseView])
def list_knowledge_bases(
    caller: ReaderDep,
    c: ContainerDep,
    name: NameFilter = None,
    q: ContainsFilter = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> PageOut[KnowledgeBaseView]:
    page = c.knowledge.list(caller.tenant_id, name=name, q=q, cursor=cursor, limit=limit)
    return PageOut.of(page)


@router.post("", status_code=201, responses=problem_responses(409))
def create_knowledge_base(
    body: KnowledgeBaseSpec, caller: AdminDep, c: ContainerDep
) -> KnowledgeBaseView:
    return c.knowledge.create(caller.tenant_id, body)


@router.get("/{knowledge_base}", responses=problem_responses(404))
def get_knowledge_base(
    knowledge_base: KnowledgeBaseRef, caller: ReaderDep, c: ContainerDep
) -> KnowledgeBaseView:
    knowledge_base_id = c.knowledge.resolve(caller.tenant_id, knowledge_base)
    return c.knowledge.get(caller.tenant_id, knowledge_base_id)


@router.patch("/{knowledge_base}", responses=problem_responses(404))
def update_knowledge_base(
    knowledge_base: KnowledgeBaseRef, body: KnowledgeBasePatch, caller: AdminDep, c: ContainerDep
) -> KnowledgeBaseView:
    """Change its description, search settings (at once) or chunk settings (for documents
    ingested afterwards: upload them again, or re-run `cosmo kb ingest`, to re-chunk)."""
    knowledge_base_id = c.knowledge.resolve(caller.tenant_id, knowledge_base)
    return c.knowledge.update(caller.tenant_id, knowledge_base_id, body)


@router.delete("/{knowledge_base}", status_code=204, responses=problem_responses(404, 409))
def delete_knowledge_base(
    knowledge_base: KnowledgeBaseRef,
    caller: AdminDep,
    c: ContainerDep,
    force: Annotated[
        bool,
        Query(description="Also remove it from the agents that list it (a new version each)."),
    ] = False,
) -> Response:
    """Delete it with its documents; 409 naming the agents that list it, unless `force`."""
    knowledge_base_id = c.knowledge.resolve(caller.tenant_id, knowledge_base)
    c.knowledge.delete(caller.tenant_id, knowledge_base_id, force=force, actor=caller.actor)
    return Response(status_code=204)


@router.get("/{knowledge_base}/documents", response_model=PageOut[DocumentView])
def list_documents(
    knowledge_base: KnowledgeBaseRef,
    caller: ReaderDep,
    c: ContainerDep,
    name: DocumentNameFilter = None,
    q: DocumentContainsFilter = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> PageOut[DocumentView]:
    knowledge_base_id = c.knowledge.resolve(caller.tenant_id, knowledge_base)
    page = c.knowledge.documents(
        caller.tenant_id, knowledge_base_id, name=name, q=q, cursor=cursor, limit=limit
    )
    return PageOut.of(page)


@router.post(
    "/{knowledge_base}/documents",
    status_code=202,
    responses={
        200: {"description": "Unchanged: already ingested", "model": DocumentAccepted},
        **problem_responses(404, 409, 413),
    },
)
def upload_document(
    knowledge_base: KnowledgeBaseRef,
    caller: AdminDep,
    c: ContainerDep,
    response: Response,
    file: Annotated[
        UploadFile, File(description="Text, Markdown, HTML, PDF or CSV (by extension).")
    ],
    name: Annotated[
        str | None,
        Form(max_length=MAX_NAME_CHARS, description="Document name (default: the file's name)."),
    ] = None,
) -> DocumentAccepted:
    """Add a document, or replace the one with the same name: stored at once and ingested
    in the background (202, `Location: /api/v1/jobs/{id}`; the job reports `{done, total}`
    chunks and the document turns `ready`, or `failed` with the reason when its content
    cannot be read). 200 when unchanged (same bytes, same chunk settings). An unsupported
    type is a 422 at once. Documents are limited to `COSMO_MAX_UPLOAD_BYTES` (default
    50 MiB); larger ones get 413."""
    knowledge_base_id = c.knowledge.resolve(caller.tenant_id, knowledge_base)
    limit = c.settings.max_upload_bytes
    # The body limit let at most the limit plus a multipart envelope through, and the
    # parser spooled the file to disk past 1 MiB: reading limit + 1 bytes is bounded.
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, upload_limit_detail(limit))
    submitted = submit_document(
        c.knowledge,
        c.jobs,
        caller.tenant_id,
        knowledge_base_id,
        name or file.filename or "",
        data,
        content_type=file.content_type,
    )
    job = c.jobs.get(caller.tenant_id, submitted.job_id) if submitted.job_id else None
    if job is not None:
        response.headers["Location"] = job_location(job.id)
    if submitted.status == "unchanged" and submitted.document.status == "ready":
        response.status_code = 200
    return DocumentAccepted(status=submitted.status, document=submitted.document, job=job)


@router.get("/{knowledge_base}/documents/{document:path}", responses=problem_responses(404))
def get_document(
    knowledge_base: KnowledgeBaseRef, document: DocumentRef, caller: ReaderDep, c: ContainerDep
) -> DocumentView:
    knowledge_base_id = c.knowledge.resolve(caller.tenant_id, knowledge_base)
    document_id = c.knowledge.resolve_document(caller.tenant_id, knowledge_base_id, document)
    return c.knowledge.document(caller.tenant_id, knowledge_base_id, document_id)


@router.delete(
    "/{knowledge_base}/documents/{document:path}",
    status_code=204,
    responses=problem_responses(404),
)
def delete_document(
    knowledge_base: KnowledgeBaseRef, document: DocumentRef, caller: AdminDep, c: ContainerDep
) -> Response:
    """Delete a document with its chunks and vectors."""
    knowledge_base_id = c.knowledge.resolve(caller.tenant_id, knowledge_base)
    document_id = c.knowledge.resolve_document(caller.tenant_id, knowledge_base_id, document)
    c.knowledge.delete_document(caller.tenant_id, knowledge_base_id, document_id)
    return Response(status_code=204)


@router.get("/{knowledge_base}/search", responses=problem_responses(404, 409))
def search_knowledge_base(
    knowledge_base: KnowledgeBaseRef,
    caller: ReaderDep,
    c: ContainerDep,
    q: Annotated[
        str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for.")
    ],
    limit: Annotated[
        int | None, Query(ge=1, le=50, description="Default: the knowledge base's top_k.")
    ] = None,
) -> SearchResults:
    """Hybrid search (meaning + keywords); 409 when the knowledge base needs re-indexing."""
    knowledge_base_id = c.knowledge.resolve(caller.tenant_id, knowledge_base)
    kb = c.knowledge.get(caller.tenant_id, knowledge_base_id)
    matches = c.knowledge.search(caller.tenant_id, knowledge_base_id, q, limit=limit)
    return SearchResults(
        knowledge_base=kb.name,
        query=q,
        items=[SearchHit.model_validate(asdict(m)) for m in matches],
    )
