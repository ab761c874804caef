"""Errors over REST: problem+json for auth, missing rows, conflicts, limits, bad input,
tenant isolation, and secrets that never come back out."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import API_TOKEN

API = "/api/v1"
AGENTS = f"{API}/agents"
MISSING_AGENT = "agt_01aaaaaaaaaaaaaaaaaaaaaaaa"
SECRET = "whsec_c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1sZWFr"
OTHER = {"X-Cosmo-Tenant": "T0OTHER"}

# A skill name need not be its function; it must name one that exists.
BUILTIN = {"executor": {"type": "builtin", "function": "current_time"}}


def problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def error_fields(body):
    return [e["field"] for e in body["errors"]]


@pytest.fixture
def agent(client):
    assert client.post(f"{API}/personas", json={"name": "helper", "role": "r"}).status_code == 201
    assert (
        client.post(
            f"{API}/skills", json={"name": "lookup", "description": "d", **BUILTIN}
        ).status_code
        == 201
    )
    r = client.post(AGENTS, json={"name": "sales", "persona": "helper", "skills": ["lookup"]})
    assert r.status_code == 201, r.text
    return r.json()


# -- 401 ---------------------------------------------------------------------------


BAD_AUTHORIZATION = {
    "missing": None,
    "empty": "",
    "wrong": "Bearer wrong-token",
    "token-plus-one": f"Bearer {API_TOKEN}x",
    "basic-scheme": f"Basic {API_TOKEN}",
    "no-scheme": API_TOKEN,
    "scheme-only": "Bearer",
    "no-space": f"Bearer{API_TOKEN}",
    "latin-1-byte": "Bearer t\xe9st-token".encode("latin-1"),
    "utf-8-bytes": "Bearer tést-token".encode(),
    "invalid-utf-8": b"Bearer \xff\xfe\x80",
}


def test_requests_without_a_valid_token_get_401(client, agent):
    client.headers.pop("Authorization")
    for case, authorization in BAD_AUTHORIZATION.items():
        headers = {"Authorization": authorization} if authorization is not None else {}
        for r in (
            client.get(AGENTS, headers=headers),
            client.get(f"{AGENTS}/{agent['id']}", headers=headers),
            client.post(AGENTS, json={"name": "x", "persona": "helper"}, headers=headers),
            client.delete(f"{AGENTS}/{agent['id']}", headers=headers),
        ):
            assert r.status_code == 401, (case, r.request.method, r.text)
            assert problem(r, 401)["title"] == "Unauthorized"
            assert r.headers["www-authenticate"] == "Bearer"
            assert API_TOKEN not in r.text
    # Nothing was done on the callers' behalf.
    client.headers["Authorization"] = f"Bearer {API_TOKEN}"
    assert [a["name"] for a in client.get(AGENTS).json()["items"]] == ["sales"]


def test_token_is_checked_before_the_body_is_parsed(client):
    r = client.post(
        AGENTS,
        content=b"{not json",
        headers={"Authorization": "Bearer wrong", "Content-Type": "application/json"},
    )
    problem(r, 401)
    r = client.post(f"{AGENTS}/import", content=b"agents: [", headers={"Authorization": ""})
    problem(r, 401)


def test_scheme_is_case_insensitive(client):
    r = client.get(AGENTS, headers={"Authorization": f"bearer {API_TOKEN}"})
    assert r.status_code == 200


def test_health_and_readiness_need_no_token(client):
    client.headers.pop("Authorization")
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    ready = r.json()
    assert ready["status"] == "ok"
    assert ready["schema"]["current"] == ready["schema"]["head"]
    assert ready["database"] in ("sqlite", "postgresql")


# -- 404 ---------------------------------------------------------------------------


# method, path, JSON body
Call = tuple[str, str, dict[str, Any] | None]

UNKNOWN: list[Call] = [
    ("GET", f"{AGENTS}/{MISSING_AGENT}", None),
    ("PATCH", f"{AGENTS}/{MISSING_AGENT}", {"description": "x"}),
    ("DELETE", f"{AGENTS}/{MISSING_AGENT}", None),
    ("PUT", f"{AGENTS}/{MISSING_AGENT}/skills", {"skills": []}),
    ("GET", f"{AGENTS}/{MISSING_AGENT}/versions", None),
    ("POST", f"{AGENTS}/{MISSING_AGENT}/rollback", {"version": 1}),
    ("GET", f"{AGENTS}/{MISSING_AGENT}/export", None),
    ("GET", f"{AGENTS}/not-an-id", None),
    ("GET", f"{AGENTS}/%00", None),
    ("PATCH", f"{AGENTS}/agt_%00x", {"description": "x"}),
    ("GET", f"{API}/personas/per_01aaaaaaaaaaaaaaaaaaaaaaaa", None),
    ("PATCH", f"{API}/personas/per_01aaaaaaaaaaaaaaaaaaaaaaaa", {"tone": "x"}),
    ("DELETE", f"{API}/personas/per_01aaaaaaaaaaaaaaaaaaaaaaaa", None),
    ("GET", f"{API}/personas/%00", None),
    ("GET", f"{API}/skills/nope", None),
    ("PATCH", f"{API}/skills/nope", {"description": "x"}),
    ("GET", f"{API}/skills/%00", None),
    ("GET", f"{API}/skills/%C3%A9%F0%9F%98%80", None),
]


def test_unknown_ids_are_404(client):
    for method, path, json_body in UNKNOWN:
        r = client.request(method, path, json=json_body)
        assert r.status_code == 404, (method, path, r.text)
        assert problem(r, 404)["title"] == "Not found"


def test_unknown_route_is_a_404_problem(client):
    problem(client.get(f"{API}/nothing-here"), 404)


# -- 409 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"{API}/personas", {"name": "helper", "role": "again"}),
        (f"{API}/skills", {"name": "lookup", "description": "again"}),
        (AGENTS, {"name": "sales", "persona": "helper"}),
    ],
)
def test_duplicate_names_are_409(client, agent, path, body):
    result = problem(client.post(path, json=body), 409)
    assert result["title"] == "Conflict"
    assert body["name"] in result["detail"]


def test_persona_in_use_is_409(client, agent):
    body = problem(client.delete(f"{API}/personas/{agent['persona_id']}"), 409)
    assert "sales" in body["detail"]


# -- 413 ---------------------------------------------------------------------------


def big_description():
    return "x" * (1_048_576 + 1)


def test_body_over_the_limit_by_content_length_is_413(client):
    r = client.post(
        AGENTS, json={"name": "big", "persona": "helper", "description": big_description()}
    )
    body = problem(r, 413)
    assert "1048576" in body["detail"]
    problem(client.post(f"{AGENTS}/import", content=b"#" * 1_048_577), 413)


def test_body_at_the_limit_is_read(client):
    text = ("# padding\n" + "#" * (1_048_576 - 11) + "\n").encode()
    assert len(text) == 1_048_576
    r = client.post(f"{AGENTS}/import", content=text)
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is False


@pytest.mark.parametrize("path", [AGENTS, f"{API}/personas", f"{AGENTS}/import"])
def test_streamed_body_without_content_length_over_the_limit_is_413(client, path):
    def chunks():
        yield b'{"name": "big", "description": "'
        for _ in range(5):
            yield b"x" * 262_144
        yield b'"}'

    request = client.build_request(
        "POST", path, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    body = problem(client.send(request), 413)
    assert "1048576" in body["detail"]


def asgi_post(app, path, chunks, headers):
    """POST straight to the ASGI app, one `http.request` message per chunk."""
    pending = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    pending.append({"type": "http.request", "body": b"", "more_body": False})
    received = []
    sent = []

    async def receive():
        if pending:
            message = pending.pop(0)
            received.append(message)
            return message
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start, json.loads(body), len(received)


@pytest.mark.parametrize("path", [AGENTS, f"{AGENTS}/import"])
def test_chunked_upload_is_cut_off_once_it_passes_the_limit(client, path):
    chunks = [b"x" * 262_144] * 40  # 10 MiB offered in 256 KiB pieces
    start, body, read = asgi_post(
        client.app,
        path,
        chunks,
        {"authorization": f"Bearer {API_TOKEN}", "content-type": "application/json"},
    )
    assert start["status"] == 413
    assert dict(start["headers"])[b"content-type"] == b"application/problem+json"
    assert body["status"] == 413
    assert read == 5  # stopped at the first chunk past 1 MiB, not after all 40


# -- 422 ---------------------------------------------------------------------------


INVALID_BODIES = [
    (AGENTS, {"persona": "helper"}, ["body.name"]),
    (AGENTS, {"name": "Sales Bot", "persona": "helper"}, ["body.name"]),
    (
        AGENTS,
        {"name": "a", "persona": "helper", "limits": {"daily_output_limit": -1}},
        ["body.limits.daily_output_limit"],
    ),
    (
        AGENTS,
        {"name": "a", "persona": "helper", "webhook": {"url": "https://x.io", "secret": "s"}},
        ["body.webhook.secret"],
    ),
    (
        AGENTS,
        {"name": "a", "persona": "helper", "approvers": ["U0OK", "bob"]},
        ["body.approvers"],
    ),
    (AGENTS, {"name": "a", "persona": "helper", "skills": ["ok", "Not OK"]}, ["body.skills.1"]),
    (AGENTS, {"name": "a", "persona": "helper", "extra": 1}, ["body.extra"]),
    (AGENTS, ["not", "an", "object"], ["body"]),
    (
        f"{API}/personas",
        {"name": "p", "role": "r", "instructions": "{{ghost}}"},
        ["body.instructions"],
    ),
    (
        f"{API}/personas",
        {"name": "p", "role": "r", "variables": {"1bad": {}}},
        ["body.variables.1bad.[key]"],
    ),
    (
        f"{API}/skills",
        {"name": "s", "description": "d", "input_schema": {"type": 5}},
        ["body.input_schema"],
    ),
    (
        f"{API}/skills",
        {"name": "s", "description": "d", "executor": {"type": "mcp"}},
        ["body.executor.mcp"],
    ),
    (
        f"{API}/skills",
        {"name": "s", "description": "d", "executor": {"type": "shell"}},
        ["body.executor"],
    ),
]


def test_invalid_bodies_are_422_naming_the_field(client):
    for path, payload, fields in INVALID_BODIES:
        r = client.post(path, json=payload)
        assert r.status_code == 422, (path, payload, r.text)
        body = problem(r, 422)
        assert body["title"] == "Validation failed"
        assert error_fields(body) == fields, payload
        assert all(".".join(map(str, e["loc"])) == e["field"] for e in body["errors"])


def test_patch_errors_name_the_field(client, agent):
    url = f"{AGENTS}/{agent['id']}"
    body = problem(client.patch(url, json={"approval_channel": "general"}), 422)
    assert error_fields(body) == ["body.approval_channel"]
    body = problem(client.patch(url, json={"name": None}), 422)
    assert error_fields(body) == ["body.name"]
    body = problem(client.patch(url, json={"persona": "ghost"}), 422)
    assert error_fields(body) == ["body.persona"]
    assert client.get(url).json()["version"] == 1


def test_malformed_json_is_a_422(client):
    r = client.post(AGENTS, content=b'{"name": ', headers={"Content-Type": "application/json"})
    body = problem(r, 422)
    assert body["errors"][0]["loc"] == ["body"]


def test_malformed_json_says_where_in_lines_and_columns_not_offsets(client):
    text = '{\n  "name": "sales",\n  "persona": helper\n}'
    r = client.post(AGENTS, content=text, headers={"Content-Type": "application/json"})
    body = problem(r, 422)
    assert body["detail"] == "the body is not valid JSON (line 3, column 14: expecting value)"
    assert "body.3" not in r.text and "decode error" not in r.text


def test_nul_characters_in_persona_text_are_422_not_500(client):
    for payload, field in [
        ({"name": "p", "role": "nul \x00 inside"}, "body.role"),
        ({"name": "p", "role": "r", "instructions": "a\x00b"}, "body.instructions"),
        (
            {"name": "p", "role": "r", "variables": {"v": {"default": "\x00"}}},
            "body.variables.v.default",
        ),
    ]:
        body = problem(client.post(f"{API}/personas", json=payload), 422)
        assert error_fields(body) == [field]
        assert "NUL" in body["errors"][0]["msg"]
    assert client.get(f"{API}/personas").json()["items"] == []


def test_nul_characters_in_skill_json_are_422_not_500(client):
    payload = {
        "name": "s",
        "description": "d",
        "input_schema": {"type": "object", "properties": {"a\x00": {"type": "string"}}},
    }
    body = problem(client.post(f"{API}/skills", json=payload), 422)
    assert error_fields(body) == ["body.input_schema"]
    payload = {
        "name": "s",
        "description": "d",
        "executor": {"type": "http", "url": "https://x.io", "body_template": {"k": ["\x00"]}},
    }
    body = problem(client.post(f"{API}/skills", json=payload), 422)
    assert error_fields(body) == ["body.executor.http.body_template"]


def test_nul_in_name_filter_matches_nothing(client, agent):
    r = client.get(AGENTS, params={"name": "\x00"})
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []


def test_deeply_nested_input_schema_is_422_not_500(client):
    deep = '{"type": "object", "properties": {"x": ' * 300 + "{}" + "}}" * 300
    text = '{"name": "deep", "description": "d", "input_schema": ' + deep + "}"
    r = client.post(f"{API}/skills", content=text, headers={"Content-Type": "application/json"})
    body = problem(r, 422)
    assert error_fields(body) == ["body.input_schema"]
    assert "nest" in body["errors"][0]["msg"]


def test_bad_cursor_is_a_422_on_the_query(client, agent):
    for cursor in ["garbage", "!!!", "YWdlbnQ", "x" * 201, "YWd0XzAxYWFhYWFhYWFhYWFhYWFh%00"]:
        for path in (AGENTS, f"{API}/personas", f"{API}/skills"):
            body = problem(client.get(path, params={"cursor": cursor}), 422)
            assert error_fields(body) == ["query.cursor"], (path, cursor)


def test_bad_active_filter_is_a_422_on_the_query(client):
    body = problem(client.get(AGENTS, params={"active": "perhaps"}), 422)
    assert error_fields(body) == ["query.active"]


# -- 400 ---------------------------------------------------------------------------


def test_malformed_if_match_is_a_400(client, agent):
    url = f"{AGENTS}/{agent['id']}"
    for if_match in ["abc", '"v1"', "1,2", '"1234567890"', "-1"]:
        r = client.patch(url, json={"description": "x"}, headers={"If-Match": if_match})
        assert "If-Match" in problem(r, 400)["detail"], if_match
        r = client.put(f"{url}/skills", json={"skills": []}, headers={"If-Match": if_match})
        problem(r, 400)
    assert client.get(url).json()["version"] == 1


def test_malformed_tenant_header_is_a_400(client):
    for tenant in ["has space", "x" * 65, "tenant/../other", "é", "a\tb"]:
        r = client.get(AGENTS, headers={"X-Cosmo-Tenant": tenant.encode()})
        assert "X-Cosmo-Tenant" in problem(r, 400)["detail"], tenant


# -- tenancy -------------------------------------------------------------------------


def test_rows_of_one_tenant_are_invisible_to_another(client, agent):
    aid, pid = agent["id"], agent["persona_id"]
    for path in ("/api/v1/agents", "/api/v1/personas", "/api/v1/skills"):
        r = client.get(path, headers=OTHER)
        assert r.status_code == 200
        assert r.json()["items"] == []
    calls: list[Call] = [
        ("GET", f"{AGENTS}/{aid}", None),
        ("PATCH", f"{AGENTS}/{aid}", {"description": "hijack"}),
        ("PUT", f"{AGENTS}/{aid}/skills", {"skills": []}),
        ("DELETE", f"{AGENTS}/{aid}", None),
        ("GET", f"{AGENTS}/{aid}/versions", None),
        ("POST", f"{AGENTS}/{aid}/rollback", {"version": 1}),
        ("GET", f"{AGENTS}/{aid}/export", None),
        ("GET", f"{API}/personas/{pid}", None),
        ("PATCH", f"{API}/personas/{pid}", {"tone": "hijack"}),
        ("DELETE", f"{API}/personas/{pid}", None),
        ("GET", f"{API}/skills/lookup", None),
        ("PATCH", f"{API}/skills/lookup", {"description": "hijack"}),
    ]
    for method, path, payload in calls:
        problem(client.request(method, path, json=payload, headers=OTHER), 404)
    # Untouched in the owning tenant.
    stored = client.get(f"{AGENTS}/{aid}").json()
    assert stored["description"] == "" and stored["skills"] == ["lookup"]
    assert client.get(f"{API}/personas/{pid}").json()["tone"] == ""
    assert client.get(f"{API}/skills/lookup").json()["description"] == "d"


def test_another_tenant_cannot_use_this_tenants_persona_or_skills(client, agent):
    body = problem(client.post(AGENTS, json={"name": "x", "persona": "helper"}, headers=OTHER), 422)
    assert error_fields(body) == ["body.persona"]
    client.post(f"{API}/personas", json={"name": "own", "role": "r"}, headers=OTHER)
    body = problem(
        client.post(
            AGENTS, json={"name": "x", "persona": "own", "skills": ["lookup"]}, headers=OTHER
        ),
        422,
    )
    assert error_fields(body) == ["body.skills"]


def test_the_same_names_can_exist_in_each_tenant(client, agent):
    assert (
        client.post(
            f"{API}/personas", json={"name": "helper", "role": "t2"}, headers=OTHER
        ).status_code
        == 201
    )
    assert (
        client.post(
            f"{API}/skills", json={"name": "lookup", "description": "t2", **BUILTIN}, headers=OTHER
        ).status_code
        == 201
    )
    r = client.post(AGENTS, json={"name": "sales", "persona": "helper"}, headers=OTHER)
    assert r.status_code == 201, r.text
    theirs = r.json()
    assert theirs["tenant_id"] == "T0OTHER"
    assert theirs["id"] != agent["id"]
    assert [a["id"] for a in client.get(AGENTS, headers=OTHER).json()["items"]] == [theirs["id"]]
    assert [a["id"] for a in client.get(AGENTS).json()["items"]] == [agent["id"]]
    assert client.get(f"{API}/skills/lookup").json()["description"] == "d"


# -- secrets -------------------------------------------------------------------------


def test_given_webhook_secret_never_appears_in_any_response_or_export(client, agent):
    url = f"{AGENTS}/{agent['id']}"
    hook = {"url": "https://hooks.example.com/sales", "secret": SECRET}
    responses = [client.patch(url, json={"webhook": hook})]
    assert responses[0].status_code == 200, responses[0].text
    assert responses[0].json()["webhook"] == {
        "url": "https://hooks.example.com/sales",
        "secret_set": True,
        "secret_env": None,
        "secret": None,
    }
    responses += [
        client.patch(url, json={"description": "after"}),
        client.put(f"{url}/skills", json={"skills": []}),
        client.get(url),
        client.get(AGENTS),
        client.get(f"{url}/versions"),
        client.get(f"{url}/export"),
        client.get(f"{url}/export", headers={"Accept": "application/json"}),
        client.post(f"{url}/rollback", json={"version": 2}),
    ]
    for r in responses:
        assert r.status_code == 200, r.text
        assert SECRET not in r.text
        assert "whsec_" not in r.text
        assert API_TOKEN not in r.text


def test_generated_secret_is_absent_from_versions_and_export(client, agent):
    url = f"{AGENTS}/{agent['id']}"
    r = client.patch(url, json={"webhook": {"url": "https://hooks.example.com/x"}})
    generated = r.json()["webhook"]["secret"]
    assert generated.startswith("whsec_")
    for r in (client.get(url), client.get(f"{url}/versions"), client.get(f"{url}/export")):
        assert generated not in r.text


def test_refused_webhook_url_with_credentials_is_not_echoed(client, agent):
    r = client.patch(
        f"{AGENTS}/{agent['id']}",
        json={"webhook": {"url": "https://bob:hunter2@hooks.example.com/"}},
    )
    body = problem(r, 422)
    assert error_fields(body) == ["body.webhook.url"]
    assert "hunter2" not in r.text
