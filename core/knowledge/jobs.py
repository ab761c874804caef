"""The `knowledge.ingest` job: extract, chunk, embed in batches and write them as it goes,
reporting `{done, total}` chunks; resumable after a shutdown or a crash (see
`core.knowledge.ingestion` for why a resumed attempt neither repeats nor skips a chunk).

`submit_document` is how adapters (REST upload, `cosmo kb ingest`) hand a document over:
its bytes, its `queued` row and this job commit together.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from core.concurrency import run_sync
from core.jobs import JobContext, JobFailed, JobKind, JobQueue, LostClaim, RetryPolicy
from core.knowledge.ingestion import DocumentIngestion, IngestRequest, Superseded
from core.knowledge.schemas import DocumentRejected, Submission
from core.knowledge.service import EMBED_BATCH, KnowledgeService

log = logging.getLogger("cosmo.knowledge")

KIND = "knowledge.ingest"
ATTEMPTS = 5
#: Failures worth retrying are outages (the embedding service, the database): wait for them.
RETRY = RetryPolicy(max_attempts=ATTEMPTS, backoff=timedelta(seconds=5), cap=timedelta(minutes=5))
#: Progress is logged each time another tenth of the chunks is written.
LOG_STEPS = 10


def submit_document(
    knowledge: KnowledgeService,
    jobs: JobQueue,
    tenant_id: str,
    knowledge_base_id: str,
    name: str,
    data: bytes,
    *,
    content_type: str | None = None,
) -> Submission:
    """Store a document for ingestion and enqueue its `knowledge.ingest` job, together."""

    def enqueue(s: Session, request: IngestRequest) -> str:
        job_id, _ = jobs.enqueue(
            s,
            tenant_id=tenant_id,
            kind=KIND,
            payload={
                "knowledge_base_id": request.knowledge_base_id,
                "document_id": request.document_id,
                "chunk_size": request.chunk_size,
                "chunk_overlap": request.chunk_overlap,
            },
            max_attempts=ATTEMPTS,
        )
        return job_id

    return DocumentIngestion(knowledge).accept(
        tenant_id, knowledge_base_id, name, data, content_type=content_type, enqueue=enqueue
    )


def parse_request(payload: dict[str, Any]) -> IngestRequest:
    try:
        return IngestRequest(
            knowledge_base_id=str(payload["knowledge_base_id"]),
            document_id=str(payload["document_id"]),
            chunk_size=int(payload["chunk_size"]),
            chunk_overlap=int(payload["chunk_overlap"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise JobFailed(f"not an ingestion request ({type(exc).__name__}: {exc})") from None


class IngestJob:
    """The handler of `knowledge.ingest` jobs."""

    def __init__(self, knowledge: KnowledgeService, *, batch: int = EMBED_BATCH) -> None:
        self.steps = DocumentIngestion(knowledge)
        self.batch = batch

    def kind(self) -> JobKind:
        return JobKind(KIND, self.run, retry=RETRY)

    async def run(self, job: JobContext) -> dict[str, Any]:
        request = parse_request(job.payload)
        try:
            return await self._ingest(job, request)
        except Superseded as exc:
            log.info("job %s: %s; stopping", job.id, exc.detail)
            return {"document_id": request.document_id, "superseded": exc.detail}
        except (JobFailed, LostClaim):
            raise
        except asyncio.CancelledError:
            # Shutdown leaves the document as it is, for the next attempt to resume; a
            # cancel request ends the ingestion, and the document says so.
            if await job.cancel_requested():
                await self._settle_failed(job, request, "ingestion was cancelled")
            raise
        except Exception as exc:
            if job.claim.failures + 1 >= ATTEMPTS:  # this failure is the last one
                reason = f"gave up after {ATTEMPTS} attempts: {type(exc).__name__}: {exc}"
                await self._settle_failed(job, request, reason)
            raise

    async def _ingest(self, job: JobContext, request: IngestRequest) -> dict[str, Any]:
        steps, tenant = self.steps, job.tenant_id
        pending = await run_sync(steps.pending, tenant, request, job.id)
        try:
            prepared = await run_sync(
                steps.prepare, pending.name, pending.data, pending.declared_type, request
            )
        except DocumentRejected as exc:
            await run_sync(steps.fail, tenant, request, job.id, exc.reason, fence=job.fence)
            raise JobFailed(f"{pending.name}: {exc.reason}") from None
        total, done = len(prepared.chunks), pending.written
        log.info(
            "job %s: ingesting %s (%d bytes, %d chunks) into %s, attempt %d%s",
            job.id,
            pending.name,
            len(pending.data),
            total,
            request.knowledge_base_id,
            job.claim.attempt,
            f", resuming after {done} chunks written" if done else "",
        )
        await run_sync(steps.start, tenant, request, job.id, prepared, fence=job.fence)
        await job.progress(done=done, total=total)
        logged = done * LOG_STEPS // max(total, 1)
        while done < total:
            batch = prepared.chunks[done : done + self.batch]
            vectors = await run_sync(steps.embed, batch)
            done = await run_sync(
                steps.write, tenant, request, job.id, batch, vectors, fence=job.fence
            )
            await job.progress(done=done, total=total)
            step = done * LOG_STEPS // total
            if step > logged and done < total:
                logged = step
                log.info("job %s: %s: %d/%d chunks", job.id, pending.name, done, total)
        document = await run_sync(steps.finish, tenant, request, job.id, fence=job.fence)
        log.info("job %s: %s ready, %d chunks", job.id, pending.name, document.chunk_count)
        return {"document_id": document.id, "chunks": document.chunk_count}

    async def _settle_failed(self, job: JobContext, request: IngestRequest, reason: str) -> None:
        try:
            await run_sync(
                self.steps.fail,
                job.tenant_id,
                request,
                job.id,
                reason,
                fence=job.fence,
            )
        except Exception:  # the job's own end is recorded whatever happens here
            log.exception("job %s: could not mark its document failed", job.id)
