"""`/api/v1/knowledge-bases`: CRUD, multipart upload, search and every error as problem+json.

The container embeds with the hashing embedder (keyword-like, no model to load): these tests
are about the HTTP contract; search quality is the contract test's business.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bot.server import create_app
from core.db import Database
from core.embeddings import HashingEmbedder
from core.settings import Settings
from core.wiring import build_container
from tests.conftest import AUTH, make_settings

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
def kb(api: TestClient) -> dict[str, object]:
    r = api.post(BASE, json={"name": "handbook", "description": "How we work", "top_k": 3})
    assert r.status_code == 201, r.text
    return dict(r.json())


def upload(api: TestClient, kb_id: object, filename: str, data: bytes, **form: str):  # type: ignore[no-untyped-def]
    return api.post(f"{BASE}/{kb_id}/documents", files={"file": (filename, data)}, data=form)


def assert_problem(r, status: int, *fragments: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
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
        ({"name": "kb", "chunk_size": 400, "chunk_overlap": 300}, "body"),
        ({"name": "kb", "top_k": 0}, "body.top_k"),
        ({"name": "kb", "score_threshold": 2}, "body.score_threshold"),
        ({"name": "kb", "surprise": True}, "body.surprise"),
    ],
)
def test_an_invalid_knowledge_base_is_a_422_naming_the_field(api, body, field):
    problem = assert_problem(api.post(BASE, json=body), 422)
    assert field in [e["field"] for e in problem["errors"]]  # type: ignore[union-attr]


def test_an_uploaded_document_is_chunked_and_found_with_its_source(api, kb):
    r = upload(api, kb["id"], "handbook.md", HANDBOOK)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["status"], body["chunks"]) == ("created", 2)
    document = body["document"]
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
    first = upload(api, kb["id"], "handbook.md", HANDBOOK).json()
    again = upload(api, kb["id"], "handbook.md", HANDBOOK)
    assert again.status_code == 200
    assert again.json()["status"] == "unchanged"
    assert again.json()["document"] == first["document"]

    changed = upload(api, kb["id"], "handbook.md", b"# Handbook\n\nOnly refunds now.")
    assert changed.status_code == 201
    assert (changed.json()["status"], changed.json()["chunks"]) == ("updated", 1)
    assert changed.json()["document"]["id"] == first["document"]["id"]
    found = api.get(f"{BASE}/{kb['id']}/search", params={"q": "vault"}).json()["items"]
    assert all("vault" not in hit["text"] for hit in found)


def test_the_name_field_overrides_the_file_name(api, kb):
    r = upload(api, kb["id"], "tmp123.txt", b"Plain words.", name="guides/intro.txt")
    assert r.json()["document"]["name"] == "guides/intro.txt"


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("deck.pptx", b"PK\x03\x04", "unsupported file type"),
        ("empty.md", b"\n\n", "no text found"),
        ("latin1.txt", b"caf\xe9", "is not UTF-8 text"),
        ("broken.pdf", b"%PDF-1.4 garbage", "is not a readable PDF"),
    ],
)
def test_a_document_that_cannot_be_read_is_a_422_and_nothing_is_stored(
    api, kb, name, data, fragment
):
    problem = assert_problem(upload(api, kb["id"], name, data), 422, fragment)
    assert problem["errors"][0]["field"] == "file"  # type: ignore[index]
    assert api.get(f"{BASE}/{kb['id']}/documents").json()["items"] == []


def test_an_upload_without_a_file_is_a_422(api, kb):
    assert_problem(api.post(f"{BASE}/{kb['id']}/documents", data={"name": "x"}), 422, "file")


def test_an_upload_over_the_body_limit_is_a_413(db, tmp_path: Path):
    settings = make_settings(tmp_path / "small", COSMO_MAX_BODY_BYTES=2048)
    with client_for(db, settings, HashingEmbedder()) as small:
        kb_id = small.post(BASE, json={"name": "small"}).json()["id"]
        r = upload(small, kb_id, "big.txt", b"word " * 1000)
        assert_problem(r, 413, "2048 bytes")
        assert small.get(f"{BASE}/{kb_id}/documents").json()["items"] == []


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
    assert "query.q" in [e["field"] for e in problem["errors"]]  # type: ignore[union-attr]


def test_a_knowledge_base_attached_to_an_agent_cannot_be_deleted(api, kb):
    assert api.post("/api/v1/personas", json={"name": "p", "role": "helper"}).status_code == 201
    agent = api.post(
        "/api/v1/agents", json={"name": "helper", "persona": "p", "knowledge_bases": ["handbook"]}
    )
    assert agent.status_code == 201, agent.text
    assert_problem(api.delete(f"{BASE}/{kb['id']}"), 409, "attached to agent(s) helper")


def test_search_after_the_embedder_changed_is_a_409_asking_for_a_reindex(api, kb, db, settings):
    upload(api, kb["id"], "handbook.md", HANDBOOK)
    with client_for(db, settings, HashingEmbedder(dimension=128)) as changed:
        r = changed.get(f"{BASE}/{kb['id']}/search", params={"q": "vault"})
        assert_problem(r, 409, "cosmo kb reindex handbook")
        assert r.json()["title"] == "Knowledge base needs re-indexing"
