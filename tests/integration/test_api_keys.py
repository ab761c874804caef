"""Tenant keys over REST: one tenant each, a role each, managed by tenant admins, revocable
at once; decisions made with a key name the key and, for a bound key, its verified user."""

from __future__ import annotations

from typing import Any

import pytest

from bot.api.auth import Caller
from core.approvals.policy import Actor
from core.db.ids import new_id
from core.errors import Forbidden, ValidationFailed
from core.keys.roles import Role
from core.keys.service import KeySpec
from core.outputs.port import NewOutput
from core.skills.runtime import SkillResult

CONFIG = """
apiVersion: cosmo/v1
personas: [{name: p, role: Sales assistant}]
skills:
  - name: create_task
    description: Create a CRM task.
    kind: action
    is_automatable: true
    input_schema: {type: object, properties: {title: {type: string}}, required: [title]}
agents:
  - name: bot
    persona: p
    skills: [create_task]
    approvers: [U0LEAD]
"""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keys(container) -> dict[str, str]:
    """A key of each role for the default tenant, a bound reviewer, and an admin of tenant T2."""
    made = {}
    for label, tenant, spec in [
        ("reader", "default", KeySpec(name="dash", role=Role.READER)),
        ("reviewer", "default", KeySpec(name="ops", role=Role.REVIEWER)),
        ("admin", "default", KeySpec(name="tenant-admin", role=Role.ADMIN)),
        ("lead", "default", KeySpec(name="lena", role=Role.REVIEWER, user_id="U0LEAD")),
        ("other", "T2", KeySpec(name="t2-admin", role=Role.ADMIN)),
    ]:
        _, made[label] = container.keys.create(tenant, spec, created_by="test")
    return made


@pytest.fixture
def agent(client, container) -> dict[str, Any]:
    async def create_task(arguments: dict[str, Any], ctx: Any) -> SkillResult:
        return SkillResult(f"task created: {arguments['title']}")

    container.skill_factory.builtins.register("create_task", create_task)
    r = client.post(
        "/api/v1/agents/import", content=CONFIG, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    return dict(client.get("/api/v1/agents").json()["items"][0])


def make_output(container, agent, requested_by: str = "U0REQ"):
    session = container.sessions.start("default", agent["id"], user_id=requested_by)
    new = NewOutput(
        id=new_id("out"),
        tenant_id="default",
        agent_id=agent["id"],
        session_id=session.id,
        skill="create_task",
        is_automatable=True,
        arguments={"title": "Call Ana"},
        content="Proposed: call Ana",
        requested_by=requested_by,
    )
    return container.outputs.create(new, container.events.created(None, new))


# --- one tenant per key -------------------------------------------------------------------


def test_a_tenant_key_acts_on_its_own_tenant_without_the_header(client, keys):
    client.post(
        "/api/v1/personas", json={"name": "t2p", "role": "r"}, headers={"X-Cosmo-Tenant": "T2"}
    )
    r = client.get("/api/v1/personas", headers=bearer(keys["other"]))
    assert r.status_code == 200
    assert [p["name"] for p in r.json()["items"]] == ["t2p"]


def test_a_tenant_key_naming_another_tenant_gets_a_clear_403(client, keys):
    r = client.get(
        "/api/v1/personas", headers={**bearer(keys["other"]), "X-Cosmo-Tenant": "default"}
    )
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["title"] == "Forbidden"
    assert "belongs to tenant T2 and cannot act on tenant default" in body["detail"]
    assert "root key" in body["detail"]
    assert keys["other"] not in r.text  # the key itself never echoes back


def test_the_root_key_reaches_every_tenant(client, keys):
    r = client.post(
        "/api/v1/personas", json={"name": "t2p", "role": "r"}, headers={"X-Cosmo-Tenant": "T2"}
    )
    assert r.status_code == 201
    assert client.get("/api/v1/personas", headers={"X-Cosmo-Tenant": "T2"}).json()["items"]


def test_a_revoked_key_is_refused_on_its_next_request(client, container, keys):
    assert client.get("/api/v1/agents", headers=bearer(keys["admin"])).status_code == 200
    key_id = next(k.id for k in container.keys.list("default") if k.name == "tenant-admin")
    container.keys.revoke(key_id)
    r = client.get("/api/v1/agents", headers=bearer(keys["admin"]))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


def test_a_key_with_a_wrong_secret_is_refused(client, keys):
    key = keys["admin"]
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert client.get("/api/v1/agents", headers=bearer(forged)).status_code == 401


# --- /api/v1/keys -------------------------------------------------------------------------


def test_a_tenant_admin_creates_lists_and_revokes_keys_of_its_tenant(client, keys):
    admin = bearer(keys["admin"])
    r = client.post("/api/v1/keys", json={"name": "ci", "role": "reviewer"}, headers=admin)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["key"].startswith("cosmo_key_")
    assert created["tenant_id"] == "default" and created["role"] == "reviewer"
    new_key = created["key"]
    assert client.get("/api/v1/outputs", headers=bearer(new_key)).status_code == 200

    listed = client.get("/api/v1/keys", headers=admin).json()["items"]
    assert {k["name"] for k in listed} == {"dash", "ops", "tenant-admin", "lena", "ci"}
    assert all("key" not in k and "secret_sha256" not in k for k in listed)
    assert new_key not in client.get("/api/v1/keys", headers=admin).text

    revoked = client.delete(f"/api/v1/keys/{created['id']}", headers=admin)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert client.get("/api/v1/outputs", headers=bearer(new_key)).status_code == 401


def test_a_key_cannot_create_a_key_above_its_role(client, container, keys):
    # Only admins reach /keys at all; an admin may make admins, a lesser key nothing.
    r = client.post(
        "/api/v1/keys", json={"name": "x", "role": "admin"}, headers=bearer(keys["reviewer"])
    )
    assert r.status_code == 403
    with pytest.raises(Forbidden, match="a reviewer key cannot create an admin key"):
        container.keys.create(
            "default",
            KeySpec(name="x", role=Role.ADMIN),
            created_by="t",
            creator_role=Role.REVIEWER,
        )


def test_a_tenant_admin_cannot_create_or_revoke_keys_of_another_tenant(client, container, keys):
    admin = bearer(keys["admin"])
    r = client.post(
        "/api/v1/keys",
        json={"name": "x", "role": "reader"},
        headers={**admin, "X-Cosmo-Tenant": "T2"},
    )
    assert r.status_code == 403
    t2_key = next(k for k in container.keys.list("T2"))
    r = client.delete(f"/api/v1/keys/{t2_key.id}", headers=admin)
    assert r.status_code == 404
    assert container.keys.list("T2")[0].revoked_at is None


def test_key_creation_names_the_bad_field(client, keys):
    r = client.post("/api/v1/keys", json={"name": "r", "role": "reader", "user_id": "U0LEAD"})
    assert r.status_code == 422
    assert "cannot be bound" in r.json()["detail"]
    r = client.post("/api/v1/keys", json={"name": "r", "role": "owner"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body.role"


def test_only_the_hash_of_a_key_is_stored(container, db):
    from core.db.models import ApiKeyRow

    view, key = container.keys.create(
        "default", KeySpec(name="k", role=Role.READER), created_by="t"
    )
    with db.session() as s:
        row = s.get(ApiKeyRow, view.id)
        assert row is not None
        stored = " ".join(str(v) for v in vars(row).values())
    # The secret is base64url, so it may itself contain "_": cut at the id, not at a "_".
    secret = key.removeprefix(f"cosmo_{view.id}_")
    assert len(secret) >= 43 and key.startswith(f"cosmo_{view.id}_")
    assert secret not in stored and key not in stored
    assert container.keys.authenticate(key) == view


# --- roles --------------------------------------------------------------------------------


def test_a_reader_reads_but_cannot_decide_or_configure(client, container, agent, keys):
    output = make_output(container, agent)
    reader = bearer(keys["reader"])
    assert client.get(f"/api/v1/outputs/{output.id}", headers=reader).status_code == 200
    r = client.post(f"/api/v1/outputs/{output.id}/approve", json={}, headers=reader)
    assert r.status_code == 403
    assert "needs the reviewer role" in r.json()["detail"]
    assert "is a reader key" in r.json()["detail"]
    r = client.patch(f"/api/v1/agents/{agent['id']}", json={"description": "x"}, headers=reader)
    assert r.status_code == 403


def test_memories_are_personal_data_for_admins_only(claude_client, claude_container):
    _, reviewer = claude_container.keys.create(
        "default", KeySpec(name="ops", role=Role.REVIEWER), created_by="t"
    )
    r = claude_client.get("/api/v1/agents/agt_x/memory", headers=bearer(reviewer))
    assert r.status_code == 403
    assert "needs the admin role" in r.json()["detail"]


# --- decisions ----------------------------------------------------------------------------


def test_a_bound_reviewer_key_decides_as_its_user(client, container, agent, keys):
    output = make_output(container, agent)
    r = client.post(f"/api/v1/outputs/{output.id}/approve", headers=bearer(keys["lead"]))
    assert r.status_code == 200, r.text
    assert r.json()["output"]["decided_by"] == "U0LEAD"


def test_a_bound_key_naming_another_user_is_403(client, container, agent, keys):
    output = make_output(container, agent)
    r = client.post(
        f"/api/v1/outputs/{output.id}/approve",
        json={"user_id": "U0SOMEONE"},
        headers=bearer(keys["lead"]),
    )
    assert r.status_code == 403
    assert "bound to Slack user U0LEAD and cannot act as U0SOMEONE" in r.json()["detail"]
    assert container.outputs.get("default", output.id).status.value == "pending"


def test_a_bound_key_still_obeys_the_agents_approver_rules(client, container, agent):
    _, key = container.keys.create(
        "default", KeySpec(name="bob", role=Role.REVIEWER, user_id="U0BOB"), created_by="t"
    )
    output = make_output(container, agent)
    r = client.post(f"/api/v1/outputs/{output.id}/approve", headers=bearer(key))
    assert r.status_code == 403
    assert "approvers" in r.json()["detail"]


def test_an_unbound_reviewer_must_name_who_decides(client, container, agent, keys):
    output = make_output(container, agent)
    r = client.post(f"/api/v1/outputs/{output.id}/approve", headers=bearer(keys["reviewer"]))
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "body.user_id"
    r = client.post(
        f"/api/v1/outputs/{output.id}/approve",
        json={"user_id": "U0LEAD"},
        headers=bearer(keys["reviewer"]),
    )
    assert r.status_code == 200
    assert r.json()["output"]["decided_by"] == "U0LEAD"


def test_an_admin_key_without_a_user_decides_as_itself(client, container, agent, keys):
    output = make_output(container, agent)
    r = client.post(f"/api/v1/outputs/{output.id}/approve", headers=bearer(keys["admin"]))
    assert r.status_code == 200, r.text
    key_id = next(k.id for k in container.keys.list("default") if k.name == "tenant-admin")
    assert r.json()["output"]["decided_by"] == key_id


def test_a_bound_key_starts_sessions_as_its_user(client, agent, keys):
    lead = bearer(keys["lead"])
    r = client.post(f"/api/v1/agents/{agent['id']}/sessions", json={}, headers=lead)
    assert r.status_code == 201
    assert r.json()["user_id"] == "U0LEAD"
    r = client.post(
        f"/api/v1/agents/{agent['id']}/sessions", json={"user_id": "U0REQ"}, headers=lead
    )
    assert r.status_code == 403


# --- the Actor each kind of key builds ----------------------------------------------------


def caller(role: Role, user_id: str | None = None, *, root: bool = False) -> Caller:
    if root:
        return Caller("default", Role.ADMIN, "root", "COSMO_API_TOKEN", root=True)
    return Caller("default", role, "key_1", "ci", user_id=user_id)


def test_every_actor_names_its_key_and_says_how_sure_we_are() -> None:
    bound = caller(Role.REVIEWER, "U0LEAD").decider(None)
    assert bound == Actor("U0LEAD", "api", verified=True, key_id="key_1", key_name="ci")
    assert bound.identity == "verified"

    asserted = caller(Role.REVIEWER).decider("U0LEAD")
    assert asserted == Actor("U0LEAD", "api", key_id="key_1", key_name="ci")
    assert asserted.identity == "asserted"

    admin = caller(Role.ADMIN).decider(None)
    assert admin == Actor(
        "key_1", "api", trusted=True, verified=True, key_id="key_1", key_name="ci"
    )
    assert admin.identity == "verified"  # the key itself decides, and presenting it proves it

    root = caller(Role.ADMIN, root=True).decider(None)
    assert root == Actor(
        "api", "api", trusted=True, verified=True, key_id="root", key_name="COSMO_API_TOKEN"
    )

    with pytest.raises(Forbidden):
        caller(Role.ADMIN, "U0LEAD").decider("U0OTHER")
    with pytest.raises(ValidationFailed):
        caller(Role.REVIEWER).decider(None)
