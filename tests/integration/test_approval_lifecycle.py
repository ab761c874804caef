"""The approval lifecycle through REST and the config file: N-of-M approvals (each one
recorded, an edit resets the count, any reject ends it, first write wins when they race)
and the `approval:` policy (skill overrides agent, errors name the field, exported)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from core.approvals import lifecycle
from core.approvals.policy import Actor
from core.config_document import parse_document
from core.db import Database
from core.db.ids import new_id
from core.db.models import WebhookDeliveryRow
from core.errors import NotAllowedToDecide, OutputAlreadyDecided
from core.jobs import JobWorker
from core.outputs.port import NewOutput, Output
from core.outputs.snapshot import skill_snapshot
from core.schemas.approval import resolve
from core.schemas.skill import SkillSpec
from core.skills.runtime import SkillResult
from core.wiring import Container, build_container
from tests.conftest import BACKENDS, execution_worker, make_settings

CONFIG = """
apiVersion: cosmo/v1
personas: [{name: p, role: Sales assistant}]
skills:
  - name: create_task
    description: Create a CRM task.
    kind: action
    is_automatable: true
    input_schema: {type: object, properties: {title: {type: string}}, required: [title]}
    approval: {required_approvals: 2, remind_after: 30m}
  - name: draft_email
    description: Draft an email.
    kind: action
    input_schema: {type: object, properties: {to: {type: string}}, required: [to]}
agents:
  - name: bot
    persona: p
    skills: [create_task, draft_email]
    approvers: [U0LEAD, U0SEC, U0THIRD]
    approval: {expires_after: 24h, remind_after: 2h, remind_every: 4h, on_expiry: escalate,
               escalate_to: [S0BACKUP]}
    webhook: {url: "https://hooks.example.com/cosmo", secret_env: TEST_HOOK_SECRET}
"""


@pytest.fixture
def runs(container) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    async def create_task(arguments: dict[str, Any], ctx: Any) -> SkillResult:
        calls.append(arguments)
        return SkillResult(f"task created: {arguments['title']}")

    container.skill_factory.builtins.register("create_task", create_task)
    return calls


@pytest.fixture
def agent(client, runs) -> dict[str, Any]:
    r = client.post(
        "/api/v1/agents/import", content=CONFIG, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    return dict(client.get("/api/v1/agents").json()["items"][0])


def make_output(container: Container, agent: dict[str, Any], skill: str = "create_task") -> Output:
    """An output proposed the way the engine proposes one: under the merged policy."""
    view = container.agents.get("default", agent["id"])
    spec = container.skills.get("default", skill)
    policy = resolve(view.approval, spec.approval)
    runnable = SkillSpec.model_validate(spec.model_dump(include=set(SkillSpec.model_fields)))
    session = container.sessions.start("default", agent["id"], user_id="U0REQ")
    new = NewOutput(
        id=new_id("out"),
        tenant_id="default",
        agent_id=agent["id"],
        session_id=session.id,
        skill=skill,
        is_automatable=skill == "create_task",
        arguments={"title": "Call Ana"} if skill == "create_task" else {"to": "a@b.c"},
        content="Proposed: call Ana",
        requested_by="U0REQ",
        approval_policy=policy.to_json(),
        skill_snapshot=skill_snapshot(runnable, spec.version),
    )
    return container.outputs.create(new, container.events.created(agent["webhook"]["url"], new))


def event_types(db: Database, output_id: str) -> list[str]:
    with db.session() as s:
        rows = s.scalars(
            select(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.output_id == output_id)
            .order_by(WebhookDeliveryRow.created_at, WebhookDeliveryRow.id)
        )
        return [r.event_type for r in rows]


def approve(client, output_id: str, user: str, **body: Any):
    return client.post(f"/api/v1/outputs/{output_id}/approve", json={"user_id": user, **body})


# -- N of M -----------------------------------------------------------------------


def test_two_of_two_runs_on_the_second_distinct_approval(client, container, agent, runs, db):
    output = make_output(container, agent)

    first = approve(client, output.id, "U0LEAD")

    assert first.status_code == 200, first.text
    assert first.json()["output"]["status"] == "pending"
    assert runs == []
    shown = client.get(f"/api/v1/outputs/{output.id}").json()
    assert shown["approval_count"] == 1
    assert shown["approval_policy"]["required_approvals"] == 2
    assert [(a["by"], a["revision"], a["identity"]) for a in shown["approvals"]] == [
        ("U0LEAD", 1, "asserted")
    ]

    second = approve(client, output.id, "U0SEC")

    assert second.json()["output"]["status"] == "executed", second.text
    assert second.json()["output"]["decided_by"] == "U0SEC"
    assert runs == [{"title": "Call Ana"}]
    # (the deciding approval and the decision share a transaction: no order between them)
    assert sorted(event_types(db, output.id)) == [
        "output.approval_recorded",
        "output.approval_recorded",
        "output.created",
        "output.decided",
        "output.executed",
    ]
    audit = client.get(f"/api/v1/outputs/{output.id}/audit").json()["items"]
    assert [(a["actor"], a["action"], a["outcome"]) for a in audit][:2] == [
        ("U0LEAD", "approve", "recorded"),
        ("U0SEC", "approve", "applied"),
    ]


def test_an_approver_who_already_approved_is_told_so(client, container, agent, runs):
    output = make_output(container, agent)
    approve(client, output.id, "U0LEAD")

    again = approve(client, output.id, "U0LEAD")

    assert again.status_code == 409
    assert "U0LEAD already approved revision 1" in again.json()["detail"]
    assert "1 more approval from someone else" in again.json()["detail"]
    shown = client.get(f"/api/v1/outputs/{output.id}").json()
    assert (shown["status"], shown["approval_count"]) == ("pending", 1)
    assert runs == []


def test_an_edit_resets_the_count(client, container, agent, runs):
    output = make_output(container, agent)
    approve(client, output.id, "U0LEAD")

    edited = client.patch(
        f"/api/v1/outputs/{output.id}",
        json={"user_id": "U0THIRD", "arguments": {"title": "Call Ana at 10"}},
        headers={"If-Match": '"1"'},
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["approval_count"] == 0

    # The first approval was of revision 1: it does not count for revision 2.
    still = approve(client, output.id, "U0SEC", revision=2)
    assert still.json()["output"]["status"] == "pending"
    done = approve(client, output.id, "U0LEAD", revision=2)
    assert done.json()["output"]["status"] == "executed"
    assert runs == [{"title": "Call Ana at 10"}]


def test_any_reject_ends_it(client, container, agent, runs, db):
    output = make_output(container, agent)
    approve(client, output.id, "U0LEAD")

    r = client.post(
        f"/api/v1/outputs/{output.id}/reject", json={"user_id": "U0SEC", "reason": "not now"}
    )

    assert r.json()["output"]["status"] == "rejected"
    late = approve(client, output.id, "U0THIRD")
    assert late.status_code == 409
    assert runs == []
    assert event_types(db, output.id)[-1] == "output.decided"


def test_a_skill_without_its_own_count_needs_one_approval(client, container, agent, runs):
    output = make_output(container, agent, skill="draft_email")
    assert output.required_approvals == 1
    assert approve(client, output.id, "U0LEAD").json()["output"]["status"] == "manual"


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
async def test_three_racing_approvals_of_a_two_of_two_output_decide_once(real_db, tmp_path):
    container = build_container(make_settings(tmp_path / "data"), db=real_db)
    calls: list[dict[str, Any]] = []

    async def create_task(arguments: dict[str, Any], ctx: Any) -> SkillResult:
        calls.append(arguments)
        return SkillResult("done")

    container.skill_factory.builtins.register("create_task", create_task)
    container.config.apply("default", parse_document(CONFIG), actor="t")
    agent = container.agents.get_by_name("default", "bot").model_dump(mode="json")
    output = make_output(container, agent)

    results = await asyncio.gather(
        *(
            container.approvals.decide("default", output.id, "approve", Actor(u, "api"))
            for u in ("U0LEAD", "U0SEC", "U0THIRD")
        ),
        return_exceptions=True,
    )
    await execution_worker(container).run_until_idle()

    unexpected = [r for r in results if isinstance(r, BaseException)]
    assert unexpected == []
    applied = [r for r in results if not isinstance(r, BaseException) and r.applied]
    lost = [r for r in results if not isinstance(r, BaseException) and not r.applied]
    # Two approvals recorded (the second of them decided); the third found it decided.
    assert len(applied) == 2 and len(lost) == 1
    final = container.outputs.get("default", output.id)
    assert final.status == "executed"
    assert final.approval_count == 2
    assert len({a.by for a in final.approvals or ()}) == 2
    assert calls == [{"title": "Call Ana"}]
    types = event_types(real_db, output.id)
    assert types.count("output.decided") == 1
    assert types.count("output.approval_recorded") == 2
    with pytest.raises(OutputAlreadyDecided):
        await container.approvals.decide(
            "default", output.id, "reject", Actor("U0LEAD", "api"), reason="late"
        )


# -- the policy in configuration ------------------------------------------------------


def test_a_skill_overrides_the_agent_field_by_field(client, container, agent):
    output = make_output(container, agent)
    policy = output.approval_policy or {}
    assert policy["required_approvals"] == 2  # the skill's
    assert policy["remind_after_seconds"] == 1800  # the skill's 30m over the agent's 2h
    assert policy["remind_every_seconds"] == 4 * 3600  # the agent's
    assert policy["expires_after_seconds"] == 24 * 3600
    assert (policy["on_expiry"], policy["escalate_to"]) == ("escalate", ["S0BACKUP"])


def test_the_policy_is_exported_and_versioned(client, container, agent):
    exported = client.get(
        f"/api/v1/agents/{agent['id']}/export", headers={"Accept": "application/json"}
    ).json()
    skills = {s["name"]: s for s in exported["skills"]}
    assert skills["create_task"]["approval"] == {"required_approvals": 2, "remind_after": "30m"}
    assert exported["agents"][0]["approval"]["escalate_to"] == ["S0BACKUP"]

    r = client.patch(f"/api/v1/agents/{agent['id']}", json={"approval": {"required_approvals": 3}})
    assert r.status_code == 200, r.text
    versions = client.get(f"/api/v1/agents/{agent['id']}/versions").json()
    latest = versions["items"][0] if "items" in versions else versions[0]
    assert latest["snapshot"]["agent"]["approval"] == {"required_approvals": 3}


@pytest.mark.parametrize(
    ("approval", "field", "message"),
    [
        ({"expires_after": "tomorrow"}, "expires_after", "not a duration"),
        ({"remind_every": "0m"}, "remind_every", "between 1m and 90d"),
        ({"escalate_to": ["#backup", "U0OK"]}, "escalate_to", "#backup"),
        ({"required_approvals": 0}, "required_approvals", "greater than or equal to 1"),
        ({"on_expiry": "delete"}, "on_expiry", "'reject' or 'escalate'"),
        ({"on_expiry": "escalate", "escalate_to": []}, "approval", "escalate_to target"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(client, agent, approval, field, message):
    r = client.patch(f"/api/v1/agents/{agent['id']}", json={"approval": approval})

    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert any(field in e["loc"] and message in e["msg"] for e in errors), errors


# -- timers: reminders, escalation, expiry (jobs, an injected clock, two workers) ---------

TIMED = """
apiVersion: cosmo/v1
personas: [{name: p, role: r}]
skills:
  - {name: draft_email, description: d, kind: action,
     input_schema: {type: object, properties: {to: {type: string}}}}
agents:
  - name: bot
    persona: p
    skills: [draft_email]
    approvers: [U0LEAD, U0SEC]
    approval: {expires_after: 1h, on_expiry: escalate, escalate_to: [U0BACKUP],
               remind_after: 10m, remind_every: 20m}
    webhook: {url: "https://hooks.example.com/cosmo", secret_env: TEST_HOOK_SECRET}
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def timed(real_db, tmp_path):
    clock = Clock()
    container = build_container(make_settings(tmp_path / "data"), db=real_db, clock=clock)
    container.config.apply("default", parse_document(TIMED), actor="t")
    told: list[tuple[str, str, list[str]]] = []

    async def reminded(output: Output, who: list[str]) -> None:
        told.append(("remind", output.id, who))

    async def escalated(output: Output, who: list[str]) -> None:
        told.append(("escalate", output.id, who))

    container.lifecycle.on_remind(reminded)
    container.lifecycle.on_escalate(escalated)
    return container, clock, told


def propose(container: Container, clock) -> Output:
    agent = container.agents.get_by_name("default", "bot")
    policy = resolve(agent.approval, None)
    session = container.sessions.start("default", agent.id, user_id="U0REQ")
    new = NewOutput(
        id=new_id("out"),
        tenant_id="default",
        agent_id=agent.id,
        session_id=session.id,
        skill="draft_email",
        is_automatable=False,
        arguments={"to": "a@b.c"},
        content="Draft",
        requested_by="U0REQ",
        expires_at=clock() + (policy.expires_after or timedelta(0)),
        approval_policy=policy.to_json(),
    )
    # As the engine does: the timers commit with the output.
    return container.outputs.create(new, (), container.lifecycle.schedule)


async def two_workers_run(container) -> None:
    """Two workers race for the due timers, as two replicas would."""
    workers = [JobWorker(container.jobs, lifecycle.job_kinds(container)) for _ in range(2)]
    await asyncio.gather(*(w.run_until_idle() for w in workers))


def lifecycle_events(db: Database, output_id: str) -> list[str]:
    return [t for t in event_types(db, output_id) if t in ("output.reminded", "output.escalated")]


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
async def test_reminders_escalation_and_expiry_fire_once_each(timed, real_db):
    container, clock, told = timed
    output = propose(container, clock)

    await two_workers_run(container)
    assert told == []  # nothing is due yet

    clock.advance(minutes=11)
    await two_workers_run(container)
    assert told == [("remind", output.id, ["U0LEAD", "U0SEC"])]

    clock.advance(minutes=21)  # the second reminder (remind_every 20m)
    await two_workers_run(container)
    assert [t[0] for t in told] == ["remind", "remind"]

    clock.advance(minutes=30)  # past expires_after (1h): escalate, once
    await two_workers_run(container)
    escalations = [t for t in told if t[0] == "escalate"]
    assert escalations == [("escalate", output.id, ["U0BACKUP"])]
    current = container.outputs.get("default", output.id)
    assert current.status == "pending" and current.escalated_at == clock.now
    assert current.expires_at == clock.now + timedelta(hours=1)

    clock.advance(minutes=61)  # the restarted clock runs out: now it expires
    await two_workers_run(container)
    final = container.outputs.get("default", output.id)
    assert final.status == "expired"
    assert [t[0] for t in told].count("escalate") == 1
    events = lifecycle_events(real_db, output.id)
    assert events.count("output.escalated") == 1
    assert events.count("output.reminded") == [t[0] for t in told].count("remind")
    history = container.sessions.history("default", output.session_id)
    assert "[Approval expired]" in str(history)


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
async def test_a_reminder_for_an_output_decided_a_moment_ago_does_nothing(timed, real_db):
    container, clock, told = timed
    output = propose(container, clock)
    clock.advance(minutes=11)
    await container.approvals.decide("default", output.id, "approve", Actor("U0LEAD", "api"))

    await two_workers_run(container)

    assert told == []
    assert lifecycle_events(real_db, output.id) == []


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
async def test_an_escalation_target_may_decide_once_escalated(timed, real_db):
    container, clock, _told = timed
    output = propose(container, clock)
    backup = Actor("U0BACKUP", "api")
    with pytest.raises(NotAllowedToDecide):
        await container.approvals.decide("default", output.id, "approve", backup)

    clock.advance(minutes=61)
    await two_workers_run(container)
    result = await container.approvals.decide("default", output.id, "approve", backup)

    assert result.output.status == "manual"


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
async def test_a_reminder_round_run_again_after_its_commit_reminds_nobody_twice(timed, real_db):
    container, clock, told = timed
    output = propose(container, clock)
    clock.advance(minutes=11)
    await two_workers_run(container)
    assert len(told) == 1

    # An attempt of round 1 that died after committing is run again by the next worker.
    container.jobs.submit(
        tenant_id="default",
        kind=lifecycle.REMIND,
        key=f"retry-of-round-1:{output.id}",
        payload={"output_id": output.id, "round": 1},
    )
    await two_workers_run(container)

    assert len(told) == 1
    assert lifecycle_events(real_db, output.id) == ["output.reminded"]


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
async def test_the_expiry_job_and_the_sweep_racing_escalate_once_and_expire_nothing(timed, real_db):
    container, clock, told = timed
    output = propose(container, clock)
    clock.advance(minutes=61)
    stale = container.outputs.get("default", output.id)  # what both read: due, not escalated
    runner = lifecycle.runner_of(container)

    outcomes = await asyncio.gather(
        runner.expire_or_escalate(stale), runner.expire_or_escalate(stale)
    )

    assert sorted(outcomes) == ["escalated", "escalated by another run"]
    final = container.outputs.get("default", output.id)
    assert final.status == "pending" and final.escalated_at is not None
    assert [t[0] for t in told] == ["escalate"]
