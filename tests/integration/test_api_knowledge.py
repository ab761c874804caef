"""`/api/v1/knowledge-bases`: CRUD, multipart upload, search and every error as problem+json.

An upload is accepted (202) and ingested by a `knowledge.ingest` job; `upload` runs the jobs
it queued afterwards, as a worker would, so the next request sees the document ingested.

The container embeds with the hashing embedder (keyword-like, no model to load): these tests
are about the HTTP contract; search quality is the contract test's business.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from bot.api.routes.knowledge import UPLOAD_ENVELOPE_BYTES
from bot.server import create_app
from core.db import Database
from core.embeddings import HashingEmbedder
from core.knowledge.jobs import KIND
from core.settings import Settings
from core.wiring import build_container
from tests.conftest import AUTH, make_settings
from tests.job_support import run_due_jobs

PROBLEM = "application/problem+json"
BASE = "/api/v1/knowledge-bases"
HANDBOOK = b"""# Handbook

## Refunds
Money back within 30 days of purchase.

## Security
API keys rotate every 90 days; secrets live in the vault.
"""


def client_for(db: Database, settings: Settings, embedder: HashingEmbedder) -> TestClient:
    container = build_container(settings, db=db, embedder=embedder)
    app = create_app(container=container, background=False)
    return TestClient(app, headers=AUTH, raise_server_exceptions=False)


@pytest.fixture
def api(db: Database, settings: Settings) -> Iterator[TestClient]:
    with client_for(db, settings, HashingEmbedder()) as c:
        yield c


@pytest.fixture
def kb(api: TestClient) -> dict[str, Any]:
    r = api.post(BASE, json={"name": "handbook", "description": "How we work", "top_k": 3})
    assert r.status_code == 201, r.text
    return dict(r.json())


def upload(api: TestClient, kb_id: object, filename: str, data: bytes, **form: str):
    """POST the file, then run the ingestion it queued (the answer is the acceptance)."""
    r = api.post(f"{BASE}/{kb_id}/documents", files={"file": (filename, data)}, data=form)
    # TestClient types `app` as any ASGI app; ours is the FastAPI app with its state.
    run_due_jobs(api.app.state.container, KIND)  # type: ignore[attr-defined]
    return r


def document_of(api: TestClient, r) -> dict[str, Any]:
    """The uploaded document as it is now (after its ingestion ran)."""
    document = r.json()["document"]
    url = f"{BASE}/{document['knowledge_base_id']}/documents/{document['id']}"
    return dict(api.get(url).json())


def assert_problem(r, status: int, *fragments: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = dict(r.json())
    assert body["status"] == status
    for fragment in fragments:
        assert fragment in str(body["detail"]), body
    return body


def test_a_knowledge_base_is_created_listed_read_and_deleted(api, kb):
    assert kb["name"] == "handbook"
    assert (kb["chunk_size"], kb["chunk_overlap"], kb["top_k"]) == (800, 100, 3)
    assert kb["embedding_model"] == HashingEmbedder().model_name
    assert (kb["embedding_dimension"], kb["document_count"], kb["chunk_count"]) == (384, 0, 0)

    listed = api.get(BASE).json()
    assert [k["name"] for k in listed["items"]] == ["handbook"]
    assert listed["next_cursor"] is None
    assert api.get(f"{BASE}/{kb['id']}").json() == kb

    assert api.delete(f"{BASE}/{kb['id']}").status_code == 204
    assert_problem(api.get(f"{BASE}/{kb['id']}"), 404, "knowledge base")


def test_a_duplicate_name_is_a_409(api, kb):
    assert_problem(api.post(BASE, json={"name": "handbook"}), 409, "already exists")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad Name"}, "body.name"),
        ({"name": "kb", "chunk_size": 50}, "body.chunk_size"),
        ({"name": "kb", "chunk_size": 400, "chunk_overlap": 300}, "body.chunk_overlap"),
        ({"name": "kb", "top_k": 0}, "body.top_k"),
        ({"name": "kb", "score_threshold": 2}, "body.score_threshold"),
        ({"name": "kb", "surprise": True}, "body.surprise"),
    ],
)
def test_an_invalid_knowledge_base_is_a_422_naming_the_field(api, body, field):
    problem = assert_problem(api.post(BASE, json=body), 422)
    assert field in [e["field"] for e in problem["errors"]]


def test_an_uploaded_document_is_chunked_and_found_with_its_source(api, kb):
    r = upload(api, kb["id"], "handbook.md", HANDBOOK)
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["status"], body["document"]["status"]) == ("created", "queued")
    assert r.headers["Location"] == f"/api/v1/jobs/{body['job']['id']}"
    assert (body["job"]["kind"], body["job"]["state"]) == ("knowledge.ingest", "queued")
    job = api.get(r.headers["Location"]).json()
    assert (job["state"], job["progress"], job["attempt"]) == (
        "succeeded",
        {"done": 2, "total": 2},
        1,
    )
    document = document_of(api, r)
    assert (document["status"], document["chunk_count"], document["job_id"]) == (
        "ready",
        2,
        job["id"],
    )
    assert (document["name"], document["content_type"], document["title"]) == (
        "handbook.md",
        "text/markdown",
        "Handbook",
    )
    assert document["size"] == len(HANDBOOK) and len(document["sha256"]) == 64

    found = api.get(f"{BASE}/{kb['id']}/search", params={"q": "vault"})
    assert found.status_code == 200, found.text
    results = found.json()
    assert (results["knowledge_base"], results["query"]) == ("handbook", "vault")
    hit = results["items"][0]
    assert hit["document"] == "handbook.md"
    assert hit["document_id"] == document["id"]
    assert hit["section"] == "Handbook > Security"
    assert hit["page"] is None
    assert "vault" in hit["snippet"] and hit["text"].startswith("API keys rotate")
    assert 0 < hit["score"] <= 1 and hit["keyword_score"] > 0

    assert api.get(f"{BASE}/{kb['id']}/documents/{document['id']}").json() == document
    listed = api.get(f"{BASE}/{kb['id']}/documents").json()["items"]
    assert [d["id"] for d in listed] == [document["id"]]
    counts = api.get(f"{BASE}/{kb['id']}").json()
    assert (counts["document_count"], counts["chunk_count"]) == (1, 2)


def test_the_same_bytes_again_are_200_unchanged_and_new_bytes_replace(api, kb):
    first = document_of(api, upload(api, kb["id"], "handbook.md", HANDBOOK))
    again = upload(api, kb["id"], "handbook.md", HANDBOOK)
    assert again.status_code == 200
    assert (again.json()["status"], again.json()["job"]) == ("unchanged", None)
    assert again.json()["document"] == first

    changed = upload(api, kb["id"], "handbook.md", b"# Handbook\n\nOnly refunds now.")
    assert changed.status_code == 202
    assert changed.json()["status"] == "updated"
    assert changed.json()["document"]["id"] == first["id"]
    assert document_of(api, changed)["chunk_count"] == 1
    found = api.get(f"{BASE}/{kb['id']}/search", params={"q": "vault"}).json()["items"]
    assert all("vault" not in hit["text"] for hit in found)


def test_the_name_field_overrides_the_file_name(api, kb):
    r = upload(api, kb["id"], "tmp123.txt", b"Plain words.", name="guides/intro.txt")
    assert r.json()["document"]["name"] == "guides/intro.txt"


def test_an_unsupported_type_is_a_422_at_once_and_nothing_is_stored(api, kb):
    problem = assert_problem(upload(api, kb["id"], "deck.pptx", b"PK\x03\x04"), 422)
    assert "unsupported file type" in str(problem["detail"])
    assert problem["errors"][0]["field"] == "file"
    assert api.get(f"{BASE}/{kb['id']}/documents").json()["items"] == []
    assert api.get("/api/v1/jobs").json()["items"] == []


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("empty.md", b"\n\n", "no text found"),
        ("latin1.txt", b"caf\xe9", "is not UTF-8 text"),
        ("broken.pdf", b"%PDF-1.4 garbage", "is not a readable PDF"),
    ],
)
def test_an_unreadable_document_fails_its_job_at_once_and_the_document_says_why(
    api, kb, name, data, fragment
):
    r = upload(api, kb["id"], name, data)
    assert r.status_code == 202, r.text

    job = api.get(r.headers["Location"]).json()
    assert (job["state"], job["attempt"]) == ("dead", 1)  # not retried: it cannot get better
    assert job["error"].startswith(f"{name}: ") and fragment in job["error"]
    document = document_of(api, r)
    assert (document["status"], document["chunk_count"]) == ("failed", 0)
    assert fragment in document["error"]
    dead = api.get("/api/v1/jobs", params={"state": "dead", "kind": "knowledge.ingest"})
    assert [j["id"] for j in dead.json()["items"]] == [job["id"]]
    assert api.get("/api/v1/jobs", params={"state": "succeeded"}).json()["items"] == []


def test_an_upload_without_a_file_is_a_422(api, kb):
    assert_problem(api.post(f"{BASE}/{kb['id']}/documents", data={"name": "x"}), 422, "file")


def multipart(filename: str, data: bytes) -> tuple[bytes, str]:
    """A one-file multipart body written by hand, to send in chunks without a length."""
    boundary = "cosmo-test-boundary"
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), boundary


@pytest.fixture
def small(db: Database, tmp_path: Path) -> Iterator[TestClient]:
    """Request bodies limited to 2 KiB, uploaded documents to 8 KiB."""
    settings = make_settings(
        tmp_path / "small", COSMO_MAX_BODY_BYTES=2048, COSMO_MAX_UPLOAD_BYTES=8192
    )
    with client_for(db, settings, HashingEmbedder()) as c:
        yield c


def test_an_upload_may_be_as_large_as_the_upload_limit_beyond_the_body_limit(small):
    kb_id = small.post(BASE, json={"name": "small"}).json()["id"]
    exactly = (b"word " * 2000)[:8192]
    r = upload(small, kb_id, "exactly.txt", exactly)
    assert r.status_code == 202, r.text
    assert r.json()["document"]["size"] == 8192


def test_an_upload_one_byte_over_the_upload_limit_is_a_413_naming_it(small):
    kb_id = small.post(BASE, json={"name": "small"}).json()["id"]
    r = upload(small, kb_id, "over.txt", b"w" * 8193)
    assert_problem(r, 413, "documents are limited to 8192 bytes (COSMO_MAX_UPLOAD_BYTES)")
    assert small.get(f"{BASE}/{kb_id}/documents").json()["items"] == []


def test_an_upload_far_over_the_limit_is_refused_before_it_is_read(small):
    kb_id = small.post(BASE, json={"name": "small"}).json()["id"]
    declared = upload(small, kb_id, "huge.txt", b"w" * 200_000)
    assert_problem(declared, 413, "8192 bytes (COSMO_MAX_UPLOAD_BYTES)")

    body, boundary = multipart("chunked.txt", b"w" * 200_000)
    chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))  # no Content-Length
    streamed = small.post(
        f"{BASE}/{kb_id}/documents",
        content=chunks,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_problem(streamed, 413, "8192 bytes (COSMO_MAX_UPLOAD_BYTES)")
    assert small.get(f"{BASE}/{kb_id}/documents").json()["items"] == []


def test_a_streamed_upload_is_cut_off_once_it_passes_the_limit(small):
    """Driven at the ASGI level to count what the app pulled: the rest is never read."""
    kb_id = small.post(BASE, json={"name": "small"}).json()["id"]
    body, boundary = multipart("endless.txt", b"w" * 1_000_000)
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        more = pulled < len(chunks)
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": more}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{BASE}/{kb_id}/documents",
        "raw_path": f"{BASE}/{kb_id}/documents".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", AUTH["Authorization"].encode()),
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    anyio.run(small.app, scope, receive, send)

    assert sent[0]["status"] == 413
    assert b"COSMO_MAX_UPLOAD_BYTES" in b"".join(m.get("body", b"") for m in sent[1:])
    allowed = 8192 + UPLOAD_ENVELOPE_BYTES
    assert pulled * 4096 <= allowed + 4096 < len(body)


def test_other_routes_keep_the_body_limit(small):
    r = small.post(BASE, json={"name": "small", "description": "x" * 3000})
    assert_problem(r, 413, "2048 bytes (COSMO_MAX_BODY_BYTES)")
    kb_id = small.post(BASE, json={"name": "small"}).json()["id"]
    r = small.patch(f"{BASE}/{kb_id}", json={"description": "x" * 3000})
    assert_problem(r, 413, "2048 bytes (COSMO_MAX_BODY_BYTES)")


def test_deleting_a_document_removes_it_from_search(api, kb):
    document = upload(api, kb["id"], "handbook.md", HANDBOOK).json()["document"]
    assert api.delete(f"{BASE}/{kb['id']}/documents/{document['id']}").status_code == 204
    assert_problem(api.get(f"{BASE}/{kb['id']}/documents/{document['id']}"), 404, "document")
    assert_problem(api.delete(f"{BASE}/{kb['id']}/documents/{document['id']}"), 404)
    assert api.get(f"{BASE}/{kb['id']}/search", params={"q": "vault"}).json()["items"] == []


def test_unknown_ids_are_404s(api, kb):
    missing = "kb_01m0000000000000000000000z"
    assert_problem(api.get(f"{BASE}/{missing}/search", params={"q": "x"}), 404)
    assert_problem(upload(api, missing, "a.txt", b"text"), 404)
    assert_problem(api.get(f"{BASE}/{missing}/documents"), 404)
    assert_problem(api.get(f"{BASE}/{kb['id']}/documents/doc_nope"), 404)
    assert_problem(api.delete(f"{BASE}/{missing}"), 404)


def test_another_tenant_sees_none_of_it(api, kb):
    other = {"X-Cosmo-Tenant": "T999"}
    assert api.get(BASE, headers=other).json()["items"] == []
    assert_problem(api.get(f"{BASE}/{kb['id']}", headers=other), 404)
    r = api.post(f"{BASE}/{kb['id']}/documents", files={"file": ("a.txt", b"x")}, headers=other)
    assert_problem(r, 404)
    assert api.get(f"{BASE}/{kb['id']}/documents").json()["items"] == []


def test_search_needs_a_query(api, kb):
    problem = assert_problem(api.get(f"{BASE}/{kb['id']}/search", params={"q": ""}), 422)
    assert "query.q" in [e["field"] for e in problem["errors"]]


def make_agent(api: TestClient, name: str, knowledge_bases: list[str]) -> dict[str, Any]:
    if api.get("/api/v1/personas").json()["items"] == []:
        assert api.post("/api/v1/personas", json={"name": "p", "role": "helper"}).status_code == 201
    r = api.post(
        "/api/v1/agents", json={"name": name, "persona": "p", "knowledge_bases": knowledge_bases}
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_a_knowledge_base_agents_use_is_a_409_naming_them(api, kb):
    api.post(BASE, json={"name": "faq"})
    make_agent(api, "support", ["faq", "handbook"])
    make_agent(api, "helper", ["handbook"])
    make_agent(api, "other", ["faq"])

    problem = assert_problem(api.delete(f"{BASE}/{kb['id']}"), 409, "helper, support", "force")
    assert problem["title"] == "Knowledge base in use"
    assert problem["agents"] == ["helper", "support"]
    assert api.get(f"{BASE}/{kb['id']}").status_code == 200


def test_force_deletes_it_and_removes_it_from_the_agents_as_a_new_version(api, kb):
    api.post(BASE, json={"name": "faq"})
    support = make_agent(api, "support", ["faq", "handbook"])
    other = make_agent(api, "other", ["faq"])
    upload(api, kb["id"], "handbook.md", HANDBOOK)

    assert api.delete(f"{BASE}/{kb['id']}", params={"force": "true"}).status_code == 204

    assert_problem(api.get(f"{BASE}/{kb['id']}"), 404)
    after = api.get(f"/api/v1/agents/{support['id']}").json()
    assert (after["knowledge_bases"], after["version"]) == (["faq"], 2)
    versions = api.get(f"/api/v1/agents/{support['id']}/versions").json()["items"]
    assert versions[0]["change"] == "knowledge base handbook deleted"
    assert versions[0]["created_by"] == "api"
    assert versions[0]["snapshot"]["agent"]["knowledge_bases"] == ["faq"]
    untouched = api.get(f"/api/v1/agents/{other['id']}").json()
    assert untouched["version"] == 1
    # The name is free again, and the agent can be given the new one.
    new = api.post(BASE, json={"name": "handbook"}).json()
    assert new["document_count"] == 0
    r = api.patch(f"/api/v1/agents/{support['id']}", json={"knowledge_bases": ["handbook"]})
    assert r.status_code == 200, r.text


def test_force_on_an_unused_knowledge_base_just_deletes_it(api, kb):
    assert api.delete(f"{BASE}/{kb['id']}", params={"force": "true"}).status_code == 204
    assert api.get(BASE).json()["items"] == []


# -- changing settings -------------------------------------------------------------------

GUIDE = b"# Guide\n\n" + b"\n\n".join(
    f"Paragraph {i} explains step {i} of the vault rotation in plain words.".encode()
    for i in range(30)
)


def test_patch_changes_only_the_given_settings(api, kb):
    r = api.patch(f"{BASE}/{kb['id']}", json={"top_k": 7, "description": "Policies"})
    assert r.status_code == 200, r.text
    changed = r.json()
    assert (changed["top_k"], changed["description"]) == (7, "Policies")
    assert changed["chunk_size"] == kb["chunk_size"]
    assert changed["score_threshold"] == kb["score_threshold"]
    assert api.get(f"{BASE}/{kb['id']}").json() == changed


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"top_k": 0}, "body.top_k"),
        ({"top_k": 51}, "body.top_k"),
        ({"score_threshold": 1.5}, "body.score_threshold"),
        ({"score_threshold": None}, "body.score_threshold"),
        ({"chunk_size": 99}, "body.chunk_size"),
        ({"chunk_overlap": -1}, "body.chunk_overlap"),
        ({"chunk_overlap": 401}, "body.chunk_overlap"),  # more than half of 800
        ({"chunk_size": 150}, "body.chunk_overlap"),  # the stored 100 is more than 75
        ({"description": "x" * 501}, "body.description"),
        ({"name": "renamed"}, "body.name"),
    ],
)
def test_an_invalid_patch_is_a_422_naming_the_field_and_changes_nothing(api, kb, body, field):
    problem = assert_problem(api.patch(f"{BASE}/{kb['id']}", json=body), 422)
    assert field in [e["field"] for e in problem["errors"]]
    assert api.get(f"{BASE}/{kb['id']}").json() == kb


def test_patch_of_an_unknown_knowledge_base_is_a_404(api):
    assert_problem(api.patch(f"{BASE}/kb_01m0000000000000000000000z", json={"top_k": 2}), 404)


def test_a_smaller_top_k_returns_fewer_passages_at_once(api):
    kb_id = api.post(BASE, json={"name": "guide", "chunk_size": 200, "chunk_overlap": 0}).json()[
        "id"
    ]
    upload(api, kb_id, "guide.md", GUIDE)
    found = api.get(f"{BASE}/{kb_id}/search", params={"q": "vault rotation"}).json()["items"]
    assert len(found) == 5  # the default top_k

    assert api.patch(f"{BASE}/{kb_id}", json={"top_k": 2}).status_code == 200
    found = api.get(f"{BASE}/{kb_id}/search", params={"q": "vault rotation"}).json()["items"]
    assert len(found) == 2


def test_new_chunk_settings_make_the_same_file_re_chunk_instead_of_unchanged(api, kb):
    accepted = upload(api, kb["id"], "guide.md", GUIDE)
    assert accepted.json()["status"] == "created"
    first = {"chunks": document_of(api, accepted)["chunk_count"], **accepted.json()}
    assert upload(api, kb["id"], "guide.md", GUIDE).json()["status"] == "unchanged"

    # Search settings are not part of how a document was cut: still unchanged.
    api.patch(f"{BASE}/{kb['id']}", json={"top_k": 4, "score_threshold": 0.1})
    assert upload(api, kb["id"], "guide.md", GUIDE).json()["status"] == "unchanged"

    r = api.patch(f"{BASE}/{kb['id']}", json={"chunk_size": 200, "chunk_overlap": 20})
    assert (r.json()["chunk_size"], r.json()["chunk_overlap"]) == (200, 20)
    again = upload(api, kb["id"], "guide.md", GUIDE)
    assert again.status_code == 202
    assert again.json()["status"] == "updated"
    rechunked = document_of(api, again)["chunk_count"]
    assert rechunked > first["chunks"]
    assert again.json()["document"]["id"] == first["document"]["id"]
    assert again.json()["document"]["sha256"] != first["document"]["sha256"]
    counts = api.get(f"{BASE}/{kb['id']}").json()
    assert counts["chunk_count"] == rechunked
    assert upload(api, kb["id"], "guide.md", GUIDE).json()["status"] == "unchanged"

    # Back to the first settings: cut like the first time again.
    api.patch(f"{BASE}/{kb['id']}", json={"chunk_size": 800, "chunk_overlap": 100})
    back = upload(api, kb["id"], "guide.md", GUIDE)
    assert back.json()["status"] == "updated"
    assert document_of(api, back)["chunk_count"] == first["chunks"]
    assert back.json()["document"]["sha256"] == first["document"]["sha256"]


def test_search_after_the_embedder_changed_is_a_409_asking_for_a_reindex(api, kb, db, settings):
    upload(api, kb["id"], "handbook.md", HANDBOOK)
    with client_for(db, settings, HashingEmbedder(dimension=128)) as changed:
        r = changed.get(f"{BASE}/{kb['id']}/search", params={"q": "vault"})
        assert_problem(r, 409, "cosmo kb reindex handbook")
        assert r.json()["title"] == "Knowledge base needs re-indexing"


def test_knowledge_base_and_documents_are_addressable_by_name(api, kb):
    r = upload(api, "handbook", "handbook.md", HANDBOOK, name="guides/handbook.md")
    assert r.status_code == 202, r.text
    document = r.json()["document"]

    assert api.get(f"{BASE}/handbook").json()["id"] == kb["id"]
    assert api.patch(f"{BASE}/handbook", json={"top_k": 4}).json()["top_k"] == 4
    url = f"{BASE}/handbook/documents/guides/handbook.md"
    assert api.get(url).json()["id"] == document["id"]
    hits = api.get(f"{BASE}/handbook/search", params={"q": "refunds"}).json()["items"]
    assert hits and hits[0]["document"] == "guides/handbook.md"
    listed = api.get(f"{BASE}/handbook/documents", params={"name": "guides/handbook.md"})
    assert [d["id"] for d in listed.json()["items"]] == [document["id"]]
    assert (
        api.get(f"{BASE}/handbook/documents", params={"name": "handbook.md"}).json()["items"] == []
    )
    assert len(api.get(f"{BASE}/handbook/documents", params={"q": "HANDBOOK"}).json()["items"]) == 1
    assert api.delete(url).status_code == 204
    assert_problem(api.get(url), 404, "guides/handbook.md")
    assert api.delete(f"{BASE}/handbook").status_code == 204
    assert_problem(api.get(f"{BASE}/{kb['id']}"), 404)


def test_knowledge_base_list_filters_by_name_and_q(api, kb):
    api.post(BASE, json={"name": "handbook-eu"})
    names = [k["name"] for k in api.get(BASE, params={"name": "handbook"}).json()["items"]]
    assert names == ["handbook"]
    names = [k["name"] for k in api.get(BASE, params={"q": "book"}).json()["items"]]
    assert names == ["handbook", "handbook-eu"]


def test_knowledge_base_name_shaped_like_an_id_is_refused(api, kb):
    r = api.post(BASE, json={"name": kb["id"]})
    body = assert_problem(r, 422, "kb_")
    assert [e["field"] for e in body["errors"]] == ["body.name"]
