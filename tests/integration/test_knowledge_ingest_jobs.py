"""Knowledge ingestion as a job: the upload answers before embedding, the job shows chunks
done while it runs, a released attempt is resumed from the chunks already written, and jobs
are their tenant's only. Real databases with real connections, real workers; the embedder
is the hashing one held back batch by batch (tests/fakes/gated_embedder.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bot.server import create_app
from core.concurrency import run_sync
from core.db import Database
from core.db.models import KnowledgeChunkRow
from core.jobs import JobView, JobWorker
from core.knowledge.jobs import KIND, IngestJob, submit_document
from core.knowledge.schemas import KnowledgeBaseSpec
from core.wiring import Container, build_container
from tests.conftest import AUTH, BACKENDS, make_settings
from tests.fakes.gated_embedder import GatedEmbedder
from tests.job_support import run_due_jobs

BASE = "/api/v1/knowledge-bases"
TENANT = "T-ingest"
# One paragraph per chunk at chunk_size 100: 300 chunks, five batches of 64 and a rest.
GUIDE = "# Guide\n\n" + "\n\n".join(
    f"Step {i}: rotate vault key number {i} and write down ticket SEC-{1000 + i}."
    for i in range(300)
)

real_db_on_every_backend = pytest.mark.parametrize("real_db", BACKENDS, indirect=True)


def wait_for(read: Callable[[], Any], done: Callable[[Any], bool], within: float = 30) -> Any:
    """Poll `read()` until `done` says so (a bound on waiting, not a timing assertion)."""
    deadline = time.monotonic() + within
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r}"
        time.sleep(0.05)


def chunk_ordinals(db: Database, document_id: str) -> list[int]:
    with db.session() as s:
        return sorted(
            s.scalars(
                select(KnowledgeChunkRow.ordinal).where(
                    KnowledgeChunkRow.document_id == document_id
                )
            )
        )


@real_db_on_every_backend
def test_an_upload_answers_202_while_embedding_and_its_job_shows_chunks_done(
    real_db: Database, tmp_path: Path
) -> None:
    embedder = GatedEmbedder(timeout=10)
    container = build_container(make_settings(tmp_path / "data"), db=real_db, embedder=embedder)
    with TestClient(create_app(container=container, background=True), headers=AUTH) as api:
        kb = api.post(BASE, json={"name": "guide", "chunk_size": 100, "chunk_overlap": 0}).json()

        r = api.post(f"{BASE}/{kb['id']}/documents", files={"file": ("guide.md", GUIDE)})

        assert r.status_code == 202, r.text
        assert embedder.batches == 0  # answered with nothing embedded yet
        location = r.headers["Location"]
        document_url = f"{BASE}/{kb['id']}/documents/{r.json()['document']['id']}"

        embedder.allow(1)
        job = wait_for(lambda: api.get(location).json(), lambda j: j["progress"].get("done"))
        assert job["state"] == "running"
        assert job["progress"] == {"done": 64, "total": 300}
        document = api.get(document_url).json()
        assert (document["status"], document["chunk_count"]) == ("ingesting", 64)

        embedder.open()
        job = wait_for(lambda: api.get(location).json(), lambda j: j["state"] != "running")
        assert (job["state"], job["attempt"], job["error"]) == ("succeeded", 1, None)
        assert job["progress"] == {"done": 300, "total": 300}
        assert job["result"] == {"document_id": document["id"], "chunks": 300}
        document = api.get(document_url).json()
        assert (document["status"], document["chunk_count"]) == ("ready", 300)
        assert api.get(f"{BASE}/{kb['id']}").json()["chunk_count"] == 300
        found = api.get(f"{BASE}/{kb['id']}/search", params={"q": "SEC-1299"}).json()["items"]
        assert "SEC-1299" in found[0]["text"]
    assert chunk_ordinals(real_db, document["id"]) == list(range(300))


def ingest_worker(container: Container, **kw: Any) -> JobWorker:
    return JobWorker(container.jobs, [IngestJob(container.knowledge).kind()], **kw)


@real_db_on_every_backend
def test_a_job_released_at_shutdown_is_resumed_after_the_chunks_already_written(
    real_db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    embedder = GatedEmbedder(timeout=10)
    container = build_container(make_settings(tmp_path / "data"), db=real_db, embedder=embedder)
    spec = KnowledgeBaseSpec(name="guide", chunk_size=100, chunk_overlap=0)
    kb = container.knowledge.create(TENANT, spec)
    submitted = submit_document(
        container.knowledge, container.jobs, TENANT, kb.id, "guide.md", GUIDE.encode()
    )
    assert submitted.job_id is not None
    job_id = submitted.job_id

    async def job() -> JobView:
        return await run_sync(container.jobs.get, TENANT, job_id)

    async def scenario() -> None:
        first = ingest_worker(container, grace=0.0)
        await first.start()
        embedder.allow(2)
        for _ in range(600):  # polls the job row: other processes' workers write it too
            if (await job()).progress.get("done") == 128:
                break
            await asyncio.sleep(0.05)
        stopping = asyncio.create_task(first.stop())  # no grace: interrupted mid-batch
        await asyncio.sleep(0.2)
        embedder.allow(1)  # the batch being embedded returns; its write never happens
        await stopping

        released = await job()
        assert (released.state, released.attempt, released.progress["done"]) == ("queued", 1, 128)
        document = container.knowledge.document(TENANT, kb.id, submitted.document.id)
        assert (document.status, document.chunk_count) == ("ingesting", 128)

        embedder.open()
        assert await ingest_worker(container).run_until_idle() == 1

    caplog.set_level("INFO", logger="cosmo.knowledge")
    asyncio.run(scenario())

    finished = container.jobs.get(TENANT, job_id)
    assert (finished.state, finished.attempt) == ("succeeded", 2)
    assert finished.progress == {"done": 300, "total": 300}
    document = container.knowledge.document(TENANT, kb.id, submitted.document.id)
    assert (document.status, document.chunk_count) == ("ready", 300)
    assert chunk_ordinals(real_db, document.id) == list(range(300))  # each exactly once
    assert "attempt 2, resuming after 128 chunks written" in caplog.text
    assert f"job {job_id}: guide.md ready, 300 chunks" in caplog.text


def test_a_job_is_its_tenants_only(client: TestClient) -> None:
    kb = client.post(BASE, json={"name": "guide"}).json()
    accepted = client.post(
        f"{BASE}/{kb['id']}/documents", files={"file": ("a.md", b"# A\n\nVault keys.")}
    )
    job = accepted.json()["job"]
    other = {"X-Cosmo-Tenant": "T-other"}

    assert client.get(f"/api/v1/jobs/{job['id']}").json()["kind"] == KIND
    r = client.get(f"/api/v1/jobs/{job['id']}", headers=other)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert client.get("/api/v1/jobs", headers=other).json()["items"] == []
    assert [j["id"] for j in client.get("/api/v1/jobs").json()["items"]] == [job["id"]]


def test_jobs_are_listed_in_pages_by_state_and_kind(client: TestClient) -> None:
    kb = client.post(BASE, json={"name": "guide"}).json()
    for name, data in [("a.md", b"# A\n\nOne."), ("b.md", b"# B\n\nTwo."), ("c.pdf", b"nope")]:
        client.post(f"{BASE}/{kb['id']}/documents", files={"file": (name, data)})
    # TestClient types `app` as any ASGI app; ours is the FastAPI app with its state.
    run_due_jobs(client.app.state.container, KIND)  # type: ignore[attr-defined]

    first = client.get("/api/v1/jobs", params={"state": "succeeded", "limit": 1}).json()
    rest = client.get(
        "/api/v1/jobs", params={"state": "succeeded", "cursor": first["next_cursor"]}
    ).json()
    assert len(first["items"]) == len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert first["items"][0]["id"] < rest["items"][0]["id"]
    dead = client.get("/api/v1/jobs", params={"state": "dead", "kind": KIND}).json()["items"]
    assert [j["error"][:7] for j in dead] == ["c.pdf: "]
    assert client.get("/api/v1/jobs", params={"kind": "other.kind"}).json()["items"] == []
    bad = client.get("/api/v1/jobs", params={"state": "lost"})
    assert bad.status_code == 422
