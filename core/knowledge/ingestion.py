"""Ingesting a document in steps a job can resume: accept, then write chunks batch by batch.

`accept` stores the uploaded bytes (`knowledge_uploads`, in the database every replica and
worker shares), marks the document `queued` and lets the caller enqueue its job, all in one
transaction. The `knowledge.ingest` job (`core.knowledge.jobs`) then reads the bytes back,
extracts and chunks them with the chunk settings of the upload, and writes the chunks in
batches, each batch one transaction with the document's new chunk count. The chunks in the
database are the progress: a resumed attempt counts them and carries on after them, so
nothing is written twice and nothing is skipped. Every write checks that the job still holds
its claim and that the document still names the job (a newer upload of the same document
supersedes it), so a stale attempt cannot write late.

While a document is `ingesting`, search finds the chunks written so far; uploading a new
version removes the old chunks at once (the document is about to say something else).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import Database
from core.db.ids import DOCUMENT_ID_PREFIX, new_id
from core.db.models import (
    JobRow,
    KnowledgeChunkRow,
    KnowledgeDocumentRow,
    KnowledgeUploadRow,
)
from core.db.repository import flush_unique
from core.errors import CosmoError
from core.jobs import FINISHED, JobFailed
from core.knowledge.chunking import Chunk, chunk_blocks
from core.knowledge.extractors import SUPPORTED_EXTENSIONS, content_type_for, extract
from core.knowledge.port import ChunkRecord, Vectors, searchable_text
from core.knowledge.schemas import DocumentRejected, DocumentView, Submission
from core.knowledge.service import (
    MAX_NAME_CHARS,
    KnowledgeService,
    _bump,
    _document_named,
    _has_documents,
    _KnowledgeBase,
    _load,
    check_document_name,
    ingest_key,
)

Fence = Callable[[Session], None]
"""Refuses a write (raises `LostClaim`) unless the job still holds its claim."""


@dataclass(frozen=True)
class IngestRequest:
    """What the job needs to ingest a document: which, and the chunk settings its upload
    was accepted with (a change of settings meanwhile must not change a resumed attempt's
    chunks, or the chunks already written would no longer line up)."""

    knowledge_base_id: str
    document_id: str
    chunk_size: int
    chunk_overlap: int


Enqueue = Callable[[Session, IngestRequest], str]
"""Adds the ingestion job in the given transaction and returns its id."""


@dataclass(frozen=True)
class PendingDocument:
    """A document as its ingestion job finds it: its bytes and how many chunks are written."""

    name: str
    data: bytes
    declared_type: str | None
    written: int


@dataclass(frozen=True)
class PreparedDocument:
    content_type: str
    title: str | None
    pages: int | None
    chunks: list[Chunk]


class Superseded(CosmoError):
    """A newer upload of the document replaced the one this job was ingesting."""

    title = "Ingestion superseded"


class DocumentIngestion:
    """The steps of ingesting documents through jobs, over a `KnowledgeService`."""

    def __init__(self, knowledge: KnowledgeService) -> None:
        self.knowledge = knowledge

    @property
    def db(self) -> Database:
        return self.knowledge.db

    # -- accepting an upload -------------------------------------------------------------

    def accept(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        name: str,
        data: bytes,
        *,
        content_type: str | None = None,
        enqueue: Enqueue,
    ) -> Submission:
        """Store `data` as the next version of the document called `name` and enqueue its
        ingestion, in one transaction; `unchanged` (and no new job) when the same bytes
        with the same chunk settings are ingested already or on their way.

        Refuses here only what needs no reading of the content (a bad name, too many
        bytes, an unsupported type; `DocumentRejected`, `ValidationFailed`) and a knowledge
        base holding another embedder's vectors (`ReindexRequired`); content that cannot
        be read fails the job, and the document says why.
        """
        knowledge = self.knowledge
        name = check_document_name(name)
        if len(data) > knowledge.max_document_bytes:
            raise DocumentRejected(
                name,
                f"is {len(data)} bytes; documents are limited to {knowledge.max_document_bytes}",
            )
        detected = content_type_for(name, content_type)
        if detected is None:
            supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
            raise DocumentRejected(name, f"unsupported file type (supported: {supported})")
        with self.db.session() as s:
            kb = _KnowledgeBase.of(_load(s, tenant_id, knowledge_base_id))
            digest = ingest_key(data, kb.chunk_size, kb.chunk_overlap)
            row = _document_named(s, kb.id, name)
            if row is not None and row.sha256 == digest and _ingested_or_on_its_way(s, row):
                job_id = None if row.status == "ready" else row.job_id
                return Submission(DocumentView.model_validate(row), "unchanged", job_id)
            if not knowledge._current(kb):
                if _has_documents(s, kb.id):
                    raise knowledge._reindex_required(kb)
                knowledge._adopt_embedder(s, kb.id)  # an empty knowledge base can switch freely
            created = row is None
            if row is None:
                row = KnowledgeDocumentRow(
                    id=new_id(DOCUMENT_ID_PREFIX),
                    tenant_id=tenant_id,
                    knowledge_base_id=kb.id,
                    name=name,
                )
                s.add(row)
            elif row.chunk_count or row.status != "ready":
                revision = _bump(s, tenant_id, kb.id)
                target = kb.target(revision=revision, dimension=knowledge.embedder.dimension)
                knowledge.index.remove_document(s, target, row.id)
            row.content_type = detected
            row.size = len(data)
            row.sha256 = digest
            row.chunk_count = 0
            row.pages = None
            row.title = None
            row.status = "queued"
            row.error = None
            flush_unique(s, "document", name)
            upload = s.get(KnowledgeUploadRow, row.id)
            if upload is None:
                upload = KnowledgeUploadRow(document_id=row.id, tenant_id=tenant_id, data=b"")
                s.add(upload)
            upload.content_type = content_type
            upload.data = data
            request = IngestRequest(kb.id, row.id, kb.chunk_size, kb.chunk_overlap)
            row.job_id = enqueue(s, request)
            s.flush()
            return Submission(
                DocumentView.model_validate(row), "created" if created else "updated", row.job_id
            )

    # -- the job's steps -----------------------------------------------------------------

    def pending(self, tenant_id: str, request: IngestRequest, job_id: str) -> PendingDocument:
        """The document's bytes and the chunks already written; `Superseded` or `JobFailed`
        (deleted, or its bytes are gone) when there is nothing left for this job to do."""
        with self.db.session() as s:
            row = self._document(s, tenant_id, request, job_id)
            upload = s.get(KnowledgeUploadRow, row.id)
            if upload is None:
                raise JobFailed(f"the uploaded bytes of document {row.name!r} are gone")
            return PendingDocument(row.name, upload.data, upload.content_type, _written(s, row.id))

    @staticmethod
    def prepare(
        name: str, data: bytes, declared_type: str | None, request: IngestRequest
    ) -> PreparedDocument:
        """Extract and chunk (deterministic: every attempt cuts the same chunks);
        `DocumentRejected` when the content cannot be read."""
        extracted = extract(name, data, declared_type)
        chunks = chunk_blocks(
            extracted.blocks, size=request.chunk_size, overlap=request.chunk_overlap
        )
        return PreparedDocument(extracted.content_type, extracted.title, extracted.pages, chunks)

    def start(
        self,
        tenant_id: str,
        request: IngestRequest,
        job_id: str,
        prepared: PreparedDocument,
        *,
        fence: Fence,
    ) -> None:
        with self.db.session() as s:
            fence(s)
            row = self._document(s, tenant_id, request, job_id, lock=True)
            row.status = "ingesting"
            row.content_type = prepared.content_type
            row.title = prepared.title[:MAX_NAME_CHARS] if prepared.title else None
            row.pages = prepared.pages

    def embed(self, chunks: Sequence[Chunk]) -> Vectors:
        return self.knowledge._embed([searchable_text(c.text, c.section) for c in chunks])

    def write(
        self,
        tenant_id: str,
        request: IngestRequest,
        job_id: str,
        chunks: Sequence[Chunk],
        vectors: Vectors,
        *,
        fence: Fence,
    ) -> int:
        """Write one batch with the document's new chunk count; returns the count. A batch
        another attempt wrote meanwhile cannot exist: the fence refuses the older one."""
        knowledge = self.knowledge
        with self.db.session() as s:
            fence(s)
            row = self._document(s, tenant_id, request, job_id, lock=True)
            written = _written(s, row.id)
            if chunks and chunks[0].ordinal != written:
                raise RuntimeError(  # a bug, not bad luck: retried from the stored chunks
                    f"document {row.name!r} has {written} chunks; batch starts at "
                    f"{chunks[0].ordinal}"
                )
            kb = _KnowledgeBase.of(_load(s, tenant_id, request.knowledge_base_id))
            if not knowledge._current(kb):
                raise JobFailed(knowledge._reindex_required(kb).detail)
            revision = _bump(s, tenant_id, kb.id)
            target = kb.target(revision=revision, dimension=knowledge.embedder.dimension)
            knowledge.index.add(
                s,
                target,
                [
                    ChunkRecord(new_id("chk"), row.id, c.ordinal, c.text, c.section, c.page)
                    for c in chunks
                ],
                vectors,
            )
            row.chunk_count = written + len(chunks)
            return row.chunk_count

    def finish(
        self, tenant_id: str, request: IngestRequest, job_id: str, *, fence: Fence
    ) -> DocumentView:
        with self.db.session() as s:
            fence(s)
            row = self._document(s, tenant_id, request, job_id, lock=True)
            row.status = "ready"
            row.error = None
            upload = s.get(KnowledgeUploadRow, row.id)
            if upload is not None:  # its chunks are the document now
                s.delete(upload)
            s.flush()
            return DocumentView.model_validate(row)

    def fail(
        self,
        tenant_id: str,
        request: IngestRequest,
        job_id: str,
        reason: str,
        *,
        fence: Fence,
    ) -> None:
        """Mark the document `failed` with `reason`. Its chunks stay (search finds what was
        written); its bytes go (uploading them again starts over)."""
        with self.db.session() as s:
            fence(s)
            row = self._document(s, tenant_id, request, job_id, lock=True)
            row.status = "failed"
            row.error = reason
            upload = s.get(KnowledgeUploadRow, row.id)
            if upload is not None:
                s.delete(upload)

    @staticmethod
    def _document(
        s: Session, tenant_id: str, request: IngestRequest, job_id: str, *, lock: bool = False
    ) -> KnowledgeDocumentRow:
        # Locked (PostgreSQL) so an upload superseding this job waits for the batch, or the
        # batch for the upload, never both writing in between.
        row = s.get(KnowledgeDocumentRow, request.document_id, with_for_update=lock or None)
        if (
            row is None
            or row.tenant_id != tenant_id
            or row.knowledge_base_id != request.knowledge_base_id
        ):
            raise JobFailed(f"document {request.document_id} was deleted")
        if row.job_id != job_id:
            raise Superseded(f"document {row.name!r} was replaced by a newer upload")
        return row


def _ingested_or_on_its_way(s: Session, row: KnowledgeDocumentRow) -> bool:
    if row.status == "ready":
        return True
    if row.status == "failed" or row.job_id is None:
        return False
    # A job that ended without settling the document (its workers kept dying) is not
    # on its way: the same bytes uploaded again get a new one.
    state = s.scalar(select(JobRow.state).where(JobRow.id == row.job_id))
    return state is not None and state not in FINISHED


def _written(s: Session, document_id: str) -> int:
    return int(
        s.scalar(
            select(func.count())
            .select_from(KnowledgeChunkRow)
            .where(KnowledgeChunkRow.document_id == document_id)
        )
        or 0
    )
