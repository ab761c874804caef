"""Approvals bound to what the reviewer saw: snapshots, edits before approval, stale
revisions refused, asserted identities recorded, the session told about edits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.approvals.policy import Actor
from core.config_document import parse_document
from core.db import Database
from core.db.ids import new_id
from core.errors import CosmoError, StaleRevision
from core.outputs.port import NewOutput, Output, OutputStatus
from core.outputs.snapshot import MAX_ARGUMENTS_BYTES, skill_snapshot
from core.skills.runtime import SkillResult
from core.wiring import Container, build_container
from tests.conftest import BACKENDS, execution_worker, make_settings

EMAIL_SCHEMA = {
    "type": "object",
    "properties": {
        "to": {"type": "string", "format": "email", "description": "Who gets it"},
        "subject": {"type": "string", "maxLength": 200},
        "body": {"type": "string"},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["to", "body"],
}

CONFIG = f"""
apiVersion: cosmo/v1
personas: [{{name: p, role: Sales assistant}}]
skills:
  - name: send_email
    description: Send an email.
    kind: action
    is_automatable: true
    input_schema: {EMAIL_SCHEMA}
agents:
  - name: bot
    persona: p
    skills: [send_email]
    approvers: [U0LEAD, U0PEER, U0REQ]
"""
ARGS = {"to": "ana@example.com", "body": "Helo Ana", "priority": 2}


def install(container: Container) -> list[dict[str, Any]]:
    """A `send_email` builtin that records what it was asked to send."""
    sent: list[dict[str, Any]] = []

    async def send_email(arguments: dict[str, Any], ctx: Any) -> SkillResult:
        sent.append(arguments)
        return SkillResult("sent", data={"id": len(sent)})

    container.skill_factory.builtins.register("send_email", send_email)
    return sent


@pytest.fixture
def sent(container: Container) -> list[dict[str, Any]]:
    return install(container)


@pytest.fixture
def agent(client, sent) -> dict[str, Any]:
    r = client.post(
        "/api/v1/agents/import", content=CONFIG, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    return dict(client.get("/api/v1/agents").json()["items"][0])


def propose(container: Container, agent_id: str, arguments: dict[str, Any] | None = None) -> Output:
    """An output as the engine makes it: the skill's snapshot, content rendered from it."""
    view = container.skills.get("default", "send_email")
    skill = container.skill_factory.build(_spec(container), view.version)
    checked = skill.validate(arguments or ARGS)
    content, content_type = skill.render_proposal(checked)
    session = container.sessions.start("default", agent_id, user_id="U0REQ")
    return container.outputs.create(
        NewOutput(
            id=new_id("out"),
            tenant_id="default",
            agent_id=agent_id,
            session_id=session.id,
            skill="send_email",
            is_automatable=True,
            arguments=checked,
            content=content,
            content_type=content_type,
            requested_by="U0REQ",
            skill_snapshot=skill_snapshot(skill.spec, skill.version),
        )
    )


def _spec(container: Container):
    from core.schemas.skill import SkillSpec

    view = container.skills.get("default", "send_email")
    return SkillSpec.model_validate(
        view.model_dump(include={"name", "description", "input_schema", "kind", "is_automatable"})
        | {"executor": view.executor}
    )


def edit(client, output_id: str, arguments: dict[str, Any], **extra: Any):
    headers = extra.pop("headers", {})
    return client.patch(
        f"/api/v1/outputs/{output_id}",
        json={"arguments": arguments, "user_id": "U0LEAD", **extra},
        headers=headers,
    )


def test_an_edit_makes_revision_2_and_approval_runs_the_edited_arguments(
    client, container, agent, sent
):
    output = propose(container, agent["id"])
    fixed = {**ARGS, "body": "Hello Ana"}

    r = edit(client, output.id, fixed, headers={"If-Match": '"1"'})

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["revision"] == 2
    assert body["edits"][0]["edited_by"] == "U0LEAD"
    assert body["edits"][0]["identity"] == "asserted"
    assert body["edits"][0]["changes"] == [{"field": "body", "old": "Helo Ana", "new": "Hello Ana"}]
    assert "Hello Ana" in client.get(f"/api/v1/outputs/{output.id}/content").text
    r = client.post(
        f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0PEER", "revision": 2}
    )
    assert r.status_code == 200, r.text
    assert r.json()["output"]["status"] == "executed"
    assert sent == [fixed]


def test_invalid_edits_name_each_field_and_store_nothing(client, container, agent):
    output = propose(container, agent["id"])

    r = edit(client, output.id, {"to": "not an email", "priority": 9})

    assert r.status_code == 422, r.text
    where = {tuple(e["loc"]) for e in r.json()["errors"]}
    assert ("arguments", "to") in where
    assert ("arguments", "priority") in where
    assert ("arguments",) in where  # the missing required `body`
    stored = container.outputs.get("default", output.id)
    assert stored.revision == 1 and stored.arguments == output.arguments


def test_an_oversized_edit_is_refused_like_an_oversized_proposal(client, container, agent):
    output = propose(container, agent["id"])

    r = edit(client, output.id, {**ARGS, "body": "x" * (MAX_ARGUMENTS_BYTES + 1)})

    assert r.status_code == 422, r.text
    assert "at most" in r.text
    assert container.outputs.get("default", output.id).revision == 1


def test_an_edit_that_changes_nothing_is_refused(client, container, agent):
    output = propose(container, agent["id"])

    r = edit(client, output.id, dict(output.arguments))

    assert r.status_code == 422 and "changes nothing" in r.text


def test_stale_if_match_is_412_and_a_stale_revision_in_the_body_is_409(
    client, container, agent, sent
):
    output = propose(container, agent["id"])
    assert edit(client, output.id, {**ARGS, "body": "v2"}).status_code == 200

    by_header = edit(client, output.id, {**ARGS, "body": "v3"}, headers={"If-Match": '"1"'})
    by_body = client.post(
        f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0PEER", "revision": 1}
    )

    assert by_header.status_code == 412, by_header.text
    assert "revision 2 is current" in by_header.json()["detail"]
    assert by_body.status_code == 409, by_body.text
    assert "revision 2 is current" in by_body.json()["detail"]
    assert sent == []
    assert container.outputs.get("default", output.id).status == OutputStatus.PENDING


def test_decided_outputs_cannot_be_edited(client, container, agent):
    output = propose(container, agent["id"])
    client.post(f"/api/v1/outputs/{output.id}/reject", json={"user_id": "U0LEAD", "reason": "no"})

    r = edit(client, output.id, {**ARGS, "body": "late"})

    assert r.status_code == 409, r.text
    assert "already decided" in r.json()["detail"]


def test_the_requester_may_not_edit_their_own_output_unless_self_approval_is_allowed(
    client, container, agent
):
    output = propose(container, agent["id"])

    refused = edit(client, output.id, {**ARGS, "body": "mine"}, user_id="U0REQ")
    client.patch(f"/api/v1/agents/{agent['id']}", json={"allow_self_approval": True})
    allowed = edit(client, output.id, {**ARGS, "body": "mine"}, user_id="U0REQ")

    assert refused.status_code == 403, refused.text
    assert allowed.status_code == 200, allowed.text


def test_a_distinct_approver_can_be_required_after_an_edit(client, container, agent, sent):
    client.patch(f"/api/v1/agents/{agent['id']}", json={"require_distinct_editor_approver": True})
    output = propose(container, agent["id"])
    assert edit(client, output.id, {**ARGS, "body": "edited"}).status_code == 200

    own = client.post(f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0LEAD"})
    other = client.post(f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0PEER"})

    assert own.status_code == 403, own.text
    assert "edited this output" in own.json()["detail"]
    assert other.status_code == 200, other.text
    assert sent == [{**ARGS, "body": "edited"}]


def test_an_editor_may_approve_their_own_edit_and_the_audit_says_so(client, container, agent):
    output = propose(container, agent["id"])
    edit(client, output.id, {**ARGS, "body": "edited"})

    r = client.post(f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0LEAD"})

    assert r.status_code == 200, r.text
    audit = client.get(f"/api/v1/outputs/{output.id}/audit").json()["items"]
    approve = [e for e in audit if e["action"] == "approve" and e["outcome"] == "applied"]
    assert "approved their own edit" in (approve[0]["detail"] or "")
    assert [e["action"] for e in audit if e["outcome"] == "applied"][:2] == ["edit", "approve"]


def test_asserted_decisions_can_be_refused_by_the_agent(client, container, agent, sent):
    client.patch(f"/api/v1/agents/{agent['id']}", json={"accept_asserted_decisions": False})
    output = propose(container, agent["id"])

    asserted = client.post(f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0LEAD"})
    edit_asserted = edit(client, output.id, {**ARGS, "body": "x"})
    as_token_holder = client.post(f"/api/v1/outputs/{output.id}/approve")

    assert asserted.status_code == 403, asserted.text
    assert "asserted" in asserted.json()["detail"]
    assert edit_asserted.status_code == 403
    assert as_token_holder.status_code == 200, as_token_holder.text
    assert as_token_holder.json()["output"]["decision_identity"] == "verified"


def test_a_rest_user_id_is_recorded_as_asserted(client, container, agent):
    output = propose(container, agent["id"])

    r = client.post(f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0LEAD"})

    assert r.json()["output"]["decision_identity"] == "asserted"
    assert r.json()["output"]["decision_revision"] == 1


def test_the_session_learns_that_its_output_was_approved_with_edits(client, container, agent):
    output = propose(container, agent["id"])
    edit(client, output.id, {**ARGS, "body": "Hello Ana"})

    client.post(f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0PEER"})

    history = container.sessions.history("default", output.session_id)
    notes = [m for m in history if "approved by U0PEER" in str(m)]
    assert notes, history
    assert "body: Helo Ana → Hello Ana" in str(notes[-1])


def test_an_output_made_before_snapshots_cannot_be_edited(client, container, agent):
    session = container.sessions.start("default", agent["id"], user_id="U0REQ")
    legacy = container.outputs.create(
        NewOutput(
            id=new_id("out"),
            tenant_id="default",
            agent_id=agent["id"],
            session_id=session.id,
            skill="send_email",
            is_automatable=True,
            arguments=ARGS,
            content="old",
        )
    )

    r = edit(client, legacy.id, {**ARGS, "body": "new"})

    assert r.status_code == 409 and "snapshot" in r.json()["detail"]


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
async def test_racing_edits_and_approvals_decide_once_on_a_revision_that_existed(
    real_db: Database, tmp_path
):
    container = build_container(make_settings(tmp_path / "data"), db=real_db)
    sent = install(container)
    container.config.apply("default", parse_document(CONFIG), actor="test")
    agent_id = container.agents.get_by_name("default", "bot").id
    output = propose(container, agent_id)
    outcomes: list[str] = []

    async def editor(i: int) -> None:
        try:
            await container.approvals.edit(
                "default",
                output.id,
                {**ARGS, "body": f"edit {i}"},
                Actor("U0LEAD", "slack", verified=True),
            )
            outcomes.append("edited")
        except (StaleRevision, CosmoError):
            outcomes.append("refused")

    async def approver() -> None:
        # A reviewer decides the revision they were shown: whatever was current just now.
        seen = await asyncio.to_thread(container.outputs.get, "default", output.id)
        await asyncio.sleep(0)
        revision = seen.revision
        try:
            result = await container.approvals.decide(
                "default",
                output.id,
                "approve",
                Actor("U0PEER", "slack", verified=True),
                revision=revision,
            )
            outcomes.append("approved" if result.applied else "repeat")
        except CosmoError:
            outcomes.append("refused")

    tasks = [f(i) for i in range(50) for f in (editor, lambda _: approver())]
    await asyncio.gather(*tasks)
    if container.outputs.get("default", output.id).status == OutputStatus.PENDING:
        await approver()  # every racing approval was stale: one more, on the latest
    await execution_worker(container).run_until_idle()

    final = container.outputs.get("default", output.id)
    assert "edited" in outcomes and "refused" in outcomes
    assert outcomes.count("approved") == 1
    assert final.status == OutputStatus.EXECUTED
    assert final.decision_revision == final.revision  # approved exactly the last revision
    assert len(sent) == 1
    edits = {e.revision: e for e in final.edits or []}
    expected_args = output.arguments if final.revision == 1 else None
    if final.revision > 1:
        body = edits[final.revision].changes[0]["new"]
        expected_args = {**ARGS, "body": body}
    assert sent == [expected_args]


# -- the audit follows every step, written with the change it records ---------------------


def test_the_chain_records_proposal_edit_approval_and_execution_with_their_revisions(
    claude_client, claude_container, fake_claude
):
    from tests.fakes.anthropic_api import Reply

    install(claude_container)
    r = claude_client.post(
        "/api/v1/agents/import", content=CONFIG, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    agent_id = claude_client.get("/api/v1/agents").json()["items"][0]["id"]
    session = claude_client.post(
        f"/api/v1/agents/{agent_id}/sessions", json={"user_id": "U0REQ", "user_name": "Rey"}
    ).json()
    fake_claude.push(Reply.tool_use("send_email", ARGS), Reply.text("Proposed."))
    r = claude_client.post(f"/api/v1/sessions/{session['id']}/chat", json={"message": "mail"})
    assert r.status_code == 200, r.text
    (output,) = claude_client.get("/api/v1/outputs").json()["items"]
    proposed_sha = output["content_sha256"]

    edited = edit(claude_client, output["id"], {**ARGS, "body": "Hello Ana"}).json()
    claude_client.post(
        f"/api/v1/outputs/{output['id']}/approve", json={"user_id": "U0PEER", "revision": 2}
    )

    audit = claude_client.get(f"/api/v1/outputs/{output['id']}/audit").json()["items"]
    steps = [(e["action"], e["revision"], e["content_sha256"]) for e in audit]
    assert steps == [
        ("propose", 1, proposed_sha),
        ("edit", 2, edited["content_sha256"]),
        ("approve", 2, edited["content_sha256"]),
        ("execute", 2, edited["content_sha256"]),
    ]
    assert audit[0]["actor"] == "agent:bot" and audit[0]["identity"] == "system"
    assert claude_container.audit.verify_chain("default").intact
    receipt = claude_client.get(f"/api/v1/outputs/{output['id']}/receipt").json()
    assert receipt["latest"]["receipt"]["revision"] == 2


def test_a_decision_and_its_audit_entry_commit_or_fail_together(container, agent):
    """The sql store writes the entry inside the decision's transaction: if recording
    fails, the decision did not happen either (nothing decided without its record)."""
    from datetime import UTC, datetime

    from core.outputs.port import Transition

    output = propose(container, agent["id"])

    def broken(session: Any, decided: Output) -> None:
        raise RuntimeError("audit write failed")

    change = Transition(
        expected=OutputStatus.PENDING,
        to=OutputStatus.APPROVED,
        at=datetime.now(UTC),
        decided_by="U0LEAD",
        decision="approved",
        expected_revision=1,
    )
    with pytest.raises(RuntimeError):
        container.outputs.transition("default", output.id, change, (), broken)

    assert container.outputs.get("default", output.id).status == OutputStatus.PENDING
