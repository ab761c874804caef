"""The `knowledge.ingest` job: extract, chunk, embed in batches and write them as it goes,
reporting `{done, total}` chunks; resumable after a shutdown or a crash (see
`core.knowledge.ingestion` for why a resumed attempt neither repeats nor skips a chunk).

`submit_document` is how adapters (REST upload, `cosmo kb ingest`, a file dropped in Slack)
hand a document over: its bytes, its `queued` row and this job commit together. An adapter
that wants to show the ingestion where it was asked for (a Slack thread) passes `notify`, an
opaque mapping stored in the job's payload; the worker's `IngestObserver` reads it and hears
about progress and the end. Core never interprets it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol

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
NOTIFY = "notify"
"""The payload key of what the adapter that submitted the document wants to be told."""


@dataclass(frozen=True)
class IngestOutcome:
    """How an ingestion that someone watches ended: `ready` (with its chunks), `failed`
    (with the reason the document now shows), or `superseded` by a newer upload."""

    status: Literal["ready", "failed", "superseded"]
    document: str
    chunks: int = 0
    reason: str | None = None


class IngestObserver(Protocol):
    """Hears about the ingestions submitted with `notify` (the worker wires Slack's). Its
    failures are logged and never fail the ingestion; it throttles on its own."""

    async def progress(self, notify: dict[str, Any], done: int, total: int) -> None: ...

    async def finished(self, notify: dict[str, Any], outcome: IngestOutcome) -> None: ...


def submit_document(
    knowledge: KnowledgeService,
    jobs: JobQueue,
    tenant_id: str,
    knowledge_base_id: str,
    name: str,
    data: bytes,
    *,
    content_type: str | None = None,
    notify: dict[str, Any] | None = None,
) -> Submission:
    """Store a document for ingestion and enqueue its `knowledge.ingest` job, together.
    `notify` goes into the job's payload for the worker's `IngestObserver`."""

    def enqueue(s: Session, request: IngestRequest) -> str:
        payload: dict[str, Any] = {
            "knowledge_base_id": request.knowledge_base_id,
            "document_id": request.document_id,
            "chunk_size": request.chunk_size,
            "chunk_overlap": request.chunk_overlap,
        }
        if notify:
            payload[NOTIFY] = notify
        job_id, _ = jobs.enqueue(
            s, tenant_id=tenant_id, kind=KIND, payload=payload, max_attempts=ATTEMPTS
        )
        return job_id

    return DocumentIngestion(knowledge).accept(
        tenant_id, knowledge_base_id, name, data, content_type=content_type, enqueue=enqueue
    )


class _Unreadable(JobFailed):
    """The document's content cannot be read (its observer was told already)."""


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

    def __init__(
        self,
        knowledge: KnowledgeService,
        *,
        batch: int = EMBED_BATCH,
        observer: IngestObserver | None = None,
    ) -> None:
        self.steps = DocumentIngestion(knowledge)
        self.batch = batch
        self.observer = observer

    def kind(self) -> JobKind:
        return JobKind(KIND, self.run, retry=RETRY)

    async def run(self, job: JobContext) -> dict[str, Any]:
        request = parse_request(job.payload)
        try:
            return await self._ingest(job, request)
        except Superseded as exc:
            log.info("job %s: %s; stopping", job.id, exc.detail)
            await self._tell(job, IngestOutcome("superseded", "", reason=exc.detail))
            return {"document_id": request.document_id, "superseded": exc.detail}
        except JobFailed as exc:
            if not isinstance(exc, _Unreadable):  # that one was told with its plain reason
                await self._tell(job, IngestOutcome("failed", "", reason=exc.detail))
            raise
        except LostClaim:
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
            await self._tell(job, IngestOutcome("failed", pending.name, reason=exc.reason))
            raise _Unreadable(f"{pending.name}: {exc.reason}") from None
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
        await self._progress(job, done, total)
        logged = done * LOG_STEPS // max(total, 1)
        while done < total:
            batch = prepared.chunks[done : done + self.batch]
            vectors = await run_sync(steps.embed, batch)
            done = await run_sync(
                steps.write, tenant, request, job.id, batch, vectors, fence=job.fence
            )
            await job.progress(done=done, total=total)
            await self._progress(job, done, total)
            step = done * LOG_STEPS // total
            if step > logged and done < total:
                logged = step
                log.info("job %s: %s: %d/%d chunks", job.id, pending.name, done, total)
        document = await run_sync(steps.finish, tenant, request, job.id, fence=job.fence)
        log.info("job %s: %s ready, %d chunks", job.id, pending.name, document.chunk_count)
        await self._tell(job, IngestOutcome("ready", document.name, document.chunk_count))
        return {"document_id": document.id, "chunks": document.chunk_count}

    def _notify(self, job: JobContext) -> dict[str, Any] | None:
        notify = job.payload.get(NOTIFY)
        return notify if self.observer is not None and isinstance(notify, dict) else None

    async def _progress(self, job: JobContext, done: int, total: int) -> None:
        notify = self._notify(job)
        if notify is None or self.observer is None:
            return
        try:
            await self.observer.progress(notify, done, total)
        except Exception:
            log.warning("job %s: could not report progress", job.id, exc_info=True)

    async def _tell(self, job: JobContext, outcome: IngestOutcome) -> None:
        notify = self._notify(job)
        if notify is None or self.observer is None:
            return
        try:
            await self.observer.finished(notify, outcome)
        except Exception:
            log.warning("job %s: could not report how it ended", job.id, exc_info=True)

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
        await self._tell(job, IngestOutcome("failed", "", reason=reason))
