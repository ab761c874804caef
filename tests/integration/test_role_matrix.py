"""Every operation in the OpenAPI document, for every kind of caller: allowed, 401 or 403.

The matrix is generated from `app.openapi()`, so a route added later is checked the moment it
exists: one that declares no role (`x-cosmo-role`) fails here unless it is listed below as
deliberately unauthenticated, and `BearerRoute` refuses to build it in the first place.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import APIRouter

from bot.api.auth import ROLE_EXTENSION, AdminDep, BearerRoute
from core.keys.roles import Role
from core.keys.service import KeySpec
from core.wiring import Container

METHODS = ("get", "put", "post", "patch", "delete")

# Deliberately reachable without a key, each authenticated some other way or harmless.
UNAUTHENTICATED = {
    ("get", "/healthz"),  # liveness probe
    ("get", "/readyz"),  # readiness probe (schema revision only)
    ("post", "/api/v1/webhooks/approval"),  # signed approval token in the body
    ("get", "/api/v1/shared/outputs/{output_id}/content"),  # signed content token in the query
    ("get", "/api/v1/receipts/public-key"),  # public by nature: verifies receipts offline
}
# Slack's own endpoints (`/slack/events`, OAuth) are left out of the document; Slack signs
# every request to them (bot/slack/verification.py).

CALLERS = ("no key", "revoked", "wrong tenant", "reader", "reviewer", "admin", "root")
ROLE_OF = {"reader": Role.READER, "reviewer": Role.REVIEWER, "admin": Role.ADMIN}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, item[method])
        for path, item in document["paths"].items()
        for method in METHODS
        if method in item
    ]


@pytest.fixture
def document(client) -> dict[str, Any]:
    return dict(client.app.openapi())


@pytest.fixture
def headers(container: Container) -> dict[str, dict[str, str]]:
    """Authorization (and tenant) headers for each kind of caller, acting on tenant A."""

    def key(tenant: str, role: Role, name: str) -> str:
        return container.keys.create(tenant, KeySpec(name=name, role=role), created_by="t")[1]

    revoked = key("A", Role.ADMIN, "old")
    container.keys.revoke(next(k.id for k in container.keys.list("A") if k.name == "old"))
    tenant_a = {"X-Cosmo-Tenant": "A"}
    return {
        "no key": {"Authorization": ""},
        "revoked": {"Authorization": f"Bearer {revoked}"},
        "wrong tenant": {"Authorization": f"Bearer {key('B', Role.ADMIN, 'b')}", **tenant_a},
        **{
            label: {"Authorization": f"Bearer {key('A', role, label)}"}
            for label, role in ROLE_OF.items()
        },
        "root": tenant_a,  # the client's default Authorization is the root token
    }


def expected(caller: str, required: Role) -> str:
    if caller in ("no key", "revoked"):
        return "401"
    if caller == "wrong tenant":
        return "403"
    if caller == "root" or ROLE_OF[caller].includes(required):
        return "allowed"
    return "403"


def outcome(status: int) -> str:
    return str(status) if status in (401, 403) else "allowed"


def test_every_operation_declares_a_role_or_is_listed_as_unauthenticated(document):
    undeclared = [
        f"{method.upper()} {path}"
        for method, path, op in operations(document)
        if (method, path) not in UNAUTHENTICATED
        and op.get(ROLE_EXTENSION) not in {r.value for r in Role}
    ]
    assert undeclared == [], "declare a role: `caller: ReaderDep | ReviewerDep | AdminDep`"


def test_unauthenticated_operations_say_so(document):
    for method, path, op in operations(document):
        if (method, path) in UNAUTHENTICATED:
            assert ROLE_EXTENSION not in op and "security" not in op, f"{method} {path}"


def test_the_role_by_route_matrix(client, document, headers):
    """Each operation with no body and placeholder ids: only who may call it gets past auth
    (it then answers 404, 422 or the like; never 401/403)."""
    answers: dict[str, str] = {}
    wanted: dict[str, str] = {}
    for method, path, op in operations(document):
        if (method, path) in UNAUTHENTICATED:
            continue
        required = Role(op[ROLE_EXTENSION])
        url = re.sub(r"\{[^}]+\}", "x1", path)
        for caller in CALLERS:
            label = f"{method.upper()} {path} as {caller}"
            r = client.request(method, url, headers=headers[caller])
            answers[label] = outcome(r.status_code)
            wanted[label] = expected(caller, required)
            if r.status_code == 403:
                assert r.headers["content-type"] == "application/problem+json", label
    assert len(answers) >= 40 * len(CALLERS)  # the document was not empty
    assert {k: v for k, v in answers.items() if v != wanted[k]} == {}


def test_a_wrong_tenant_403_says_why(client, headers):
    r = client.get("/api/v1/outputs", headers=headers["wrong tenant"])
    assert r.status_code == 403
    assert "belongs to tenant B and cannot act on tenant A" in r.json()["detail"]


# The classification itself, by rule, so a new route under a known resource cannot be filed
# under too weak a role (e.g. an output edit as `reader`).
ADMIN_ONLY = re.compile(r"^/api/v1/(keys|agents/\{agent\}/memory)(/|$)")
CONFIGURATION = re.compile(
    r"^/api/v1/(agents|personas|skills|knowledge-bases|webhook-deliveries|keys)(/|$)"
)
SESSIONS = re.compile(r"^/api/v1/(agents/\{agent\}/sessions|sessions/)")


def least_role(method: str, path: str) -> Role | None:
    """What the rules say a route needs; None where they say nothing."""
    if ADMIN_ONLY.match(path):
        return Role.ADMIN  # memories are personal data; keys are power
    if method == "get":
        return None
    if path.startswith("/api/v1/outputs"):
        return Role.REVIEWER  # decide, retry, edit
    if SESSIONS.match(path):
        return Role.REVIEWER  # chatting acts through the agent; configuring it does not
    if CONFIGURATION.match(path):
        return Role.ADMIN
    return None


def test_routes_are_classified_by_the_rules(document):
    wrong = {}
    for method, path, op in operations(document):
        if (method, path) in UNAUTHENTICATED:
            continue
        declared = Role(op[ROLE_EXTENSION])
        rule = least_role(method, path)
        if rule is not None and declared is not rule:
            wrong[f"{method.upper()} {path}"] = f"{declared.value}, rules say {rule.value}"
        if method != "get" and declared is Role.READER:
            wrong[f"{method.upper()} {path}"] = "a reader key would change something"
    assert wrong == {}
    roles = {
        (m, p): Role(op[ROLE_EXTENSION])
        for m, p, op in operations(document)
        if (m, p) not in UNAUTHENTICATED
    }
    assert roles[("get", "/api/v1/usage")] is Role.READER
    # The payload of a delivery carries an approval token: whoever reads it can decide.
    assert roles[("get", "/api/v1/webhook-deliveries/{delivery_id}")] is Role.ADMIN


def test_a_keyed_route_without_a_role_cannot_be_built():
    router = APIRouter(route_class=BearerRoute)

    with pytest.raises(TypeError, match="declares no role"):

        @router.get("/forgotten")
        def forgotten() -> None: ...

    @router.get("/declared")
    def declared(caller: AdminDep) -> None: ...

    # `routes` is typed as the base route; the router makes a BearerRoute (an APIRoute).
    assert router.routes[-1].openapi_extra == {ROLE_EXTENSION: "admin"}  # type: ignore[attr-defined]
