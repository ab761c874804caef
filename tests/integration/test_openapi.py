"""The checked-in OpenAPI document is the app's, and it tells clients how to authenticate."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bot.api.openapi_export import build_openapi, render_openapi
from bot.server import create_app
from core.wiring import Container

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
METHODS = ("get", "put", "post", "patch", "delete")
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return build_openapi()


# Authenticated by a signed token of their own instead of the API token (see callbacks.py).
TOKEN_AUTHENTICATED = {"/api/v1/webhooks/approval", "/api/v1/shared/outputs/{output_id}/content"}
# Public on purpose: outsiders verify receipts with it (see receipts.py).
PUBLIC = {"/api/v1/receipts/public-key"}


def api_operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        if path.startswith("/api/v1/") and path not in TOKEN_AUTHENTICATED | PUBLIC:
            for method in METHODS:
                if method in item:
                    yield path, method, item[method]


def test_checked_in_openapi_document_matches_the_app() -> None:
    assert DOCUMENT.exists(), "docs/openapi.yaml is missing: run `make openapi`"
    generated = render_openapi()
    checked_in = DOCUMENT.read_text(encoding="utf-8")
    if checked_in != generated:
        diff = list(
            difflib.unified_diff(
                checked_in.splitlines(),
                generated.splitlines(),
                "docs/openapi.yaml (checked in)",
                "docs/openapi.yaml (generated)",
                lineterm="",
            )
        )
        shown = "\n".join(diff[:60]) + ("\n..." if len(diff) > 60 else "")
        pytest.fail(
            "docs/openapi.yaml is out of date with the app: run `make openapi` and commit it\n"
            + shown,
            pytrace=False,
        )


def test_the_api_has_operations_to_check(openapi: dict[str, Any]) -> None:
    # Guards the loops below against passing vacuously if the prefix ever changes.
    labels = {f"{m.upper()} {p}" for p, m, _ in api_operations(openapi)}
    assert {
        "GET /api/v1/agents",
        "POST /api/v1/agents/import",
        "PATCH /api/v1/personas/{persona_id}",
        "GET /api/v1/skills/{name}",
    } <= labels


def test_every_api_operation_documents_the_401_problem(openapi: dict[str, Any]) -> None:
    missing = []
    for path, method, operation in api_operations(openapi):
        unauthorized = operation["responses"].get("401", {})
        content = unauthorized.get("content", {})
        if content.get("application/problem+json", {}).get("schema") != PROBLEM_REF:
            missing.append(f"{method.upper()} {path}")
    assert missing == [], "operations without a documented 401 problem+json response"
    assert openapi["components"]["schemas"]["Problem"]["required"] == ["title", "status", "detail"]


def test_every_api_operation_requires_the_bearer_scheme(openapi: dict[str, Any]) -> None:
    assert openapi["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <key>`: a tenant key (`cosmo keys create`; one "
        "tenant, one role) or `COSMO_API_TOKEN`, the operator's root key (every tenant, every "
        "role: root-equivalent).",
    }
    unsecured = [
        f"{method.upper()} {path}"
        for path, method, operation in api_operations(openapi)
        if operation.get("security") != [{"HTTPBearer": []}]
    ]
    assert unsecured == []


def test_the_token_is_not_documented_as_a_plain_header_parameter(openapi: dict[str, Any]) -> None:
    # Clients and generators read `security`; an `authorization` header parameter next to it
    # would be a second, contradictory way to send the token.
    plain = [
        f"{method.upper()} {path}"
        for path, method, operation in api_operations(openapi)
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "header" and parameter["name"].lower() == "authorization"
    ]
    assert plain == []


def test_health_probes_need_no_token(openapi: dict[str, Any]) -> None:
    for path in ("/healthz", "/readyz"):
        assert "security" not in openapi["paths"][path]["get"], path


@pytest.fixture
def anonymous(container: Container) -> Iterator[TestClient]:
    with TestClient(
        create_app(container=container, background=False), raise_server_exceptions=False
    ) as c:
        yield c


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Basic dGVzdC10b2tlbg==", "test-token", "Bearer"],
    ids=["no header", "wrong token", "basic scheme", "no scheme", "no token"],
)
def test_every_api_operation_answers_401_problem_without_a_valid_token(
    anonymous: TestClient, openapi: dict[str, Any], authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answers = {}
    for path, method, _ in api_operations(openapi):
        url = re.sub(r"\{[^}]+\}", "x1", path)
        r = anonymous.request(method, url, headers=headers)
        answers[f"{method.upper()} {path}"] = (
            r.status_code,
            r.headers.get("content-type"),
            r.headers.get("www-authenticate"),
            r.json().get("detail"),
        )
    expected = (401, "application/problem+json", "Bearer", "a valid bearer token is required")
    assert answers == dict.fromkeys(answers, expected)


def test_every_api_route_checks_the_token_before_parsing_the_body(client):
    """Without the token, a malformed body is a 401, never a 422 that leaks the schema."""
    schema = client.get("/openapi.json").json()
    checked = 0
    for path, operations in schema["paths"].items():
        if not path.startswith("/api/v1") or path in TOKEN_AUTHENTICATED:
            continue
        for method, operation in operations.items():
            if "requestBody" not in operation:
                continue
            url = re.sub(r"\{[^}]+\}", "x", path)
            r = client.request(
                method.upper(),
                url,
                content=b"{not json",
                headers={"Authorization": "", "Content-Type": "application/json"},
            )
            assert r.status_code == 401, f"{method.upper()} {path}: {r.status_code}"
            checked += 1
    assert checked >= 10


def test_token_authenticated_routes_refuse_a_bad_token_with_401(client):
    r = client.post(
        "/api/v1/webhooks/approval",
        json={"approvalToken": "v1.approve.x", "decision": "approve", "userId": "U1"},
        headers={"Authorization": ""},
    )
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    r = client.get(
        "/api/v1/shared/outputs/out_01m00000000000000000000000/content",
        params={"token": "garbage"},
        headers={"Authorization": ""},
    )
    assert r.status_code == 401


def test_swagger_ui_is_served_from_local_assets_without_a_token(anonymous):
    page = anonymous.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # Nothing from another host: the page works where the service has no Internet access.
    assert re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", page.text) == []
    assert "cdn" not in page.text.lower()
    assets = re.findall(r"""(?:src|href)=["']?(/docs/assets/[^"'\s>]+)""", page.text)
    assert {a.rsplit("/", 1)[1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for asset in assets:
        r = anonymous.get(asset)
        assert r.status_code == 200, asset
        assert r.content, asset
    assert "url: '/openapi.json'" in page.text or '"url": "/openapi.json"' in page.text
    assert anonymous.get("/openapi.json").json()["info"]["title"] == "Cosmo Agents API"


def test_every_list_is_a_page_of_items_never_a_bare_array(openapi):
    bare = []
    for path, method, operation in api_operations(openapi):
        for status, response in operation.get("responses", {}).items():
            for media in response.get("content", {}).values():
                if media.get("schema", {}).get("type") == "array":
                    bare.append(f"{method.upper()} {path} ({status})")
    assert bare == [], "lists answer {items, next_cursor}"
