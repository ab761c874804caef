"""The review queue in the App Home, end to end: signed `app_home_opened` events and clicks
to our /slack/events, the real Bolt app, the fake Slack Web API, a real database.

The viewer sees the outputs they may decide, newest first, narrows them by agent, skill
and age, and approves the N shown: each is its own first-write-wins decision, and the
result says which someone else decided first."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from bot.slack import review_blocks as review
from core.db.ids import new_id
from core.outputs.port import NewOutput, OutputFilter, OutputStatus, SlackStatus
from core.skills.runtime import SkillResult
from tests.conftest import AUTH, BACKENDS
from tests.e2e.test_slack_commands import decide_blocks, open_home
from tests.slack_support import SlackApp, slack_app

LEAD = "U0LEAD0001"
PEER = "U0PEER0001"
ADA = "U0ADA00001"  # workspace admin
CONFIG = """
apiVersion: cosmo/v1
personas: [{name: seller, role: Sales assistant}]
skills:
  - name: draft_email
    description: Draft an email.
    kind: action
    input_schema: {type: object, properties: {to: {type: string}}, required: [to]}
  - name: create_note
    description: Add a note.
    kind: action
    input_schema: {type: object, properties: {body: {type: string}}, required: [body]}
agents:
  - name: sales-bot
    persona: seller
    skills: [draft_email, create_note]
    approvers: [U0LEAD0001, U0PEER0001]
  - name: support-bot
    persona: seller
    skills: [draft_email]
    approvers: [U0LEAD0001]
  - name: loose-bot
    persona: seller
    skills: [draft_email]
"""


async def create_note(arguments: dict[str, Any], ctx: Any) -> SkillResult:
    return SkillResult("noted")


@pytest.fixture
def app(real_db, tmp_path):
    with slack_app(real_db, tmp_path, CONFIG, builtins={"create_note": create_note}) as running:
        running.slack.add_user(LEAD, "Lena Lead")
        running.slack.add_user(PEER, "Pat Peer")
        running.slack.add_user(ADA, "ada", is_admin=True)
        yield running


def propose(app: SlackApp, agent: str, skill: str, *, age: timedelta = timedelta()) -> str:
    """An output of `agent` as a turn would store it, created `age` ago."""
    c = app.container
    agent_id = app.agent_id(agent)
    session = c.sessions.start("default", agent_id, user_id="U0ASKER001")
    new = NewOutput(
        id=new_id("out"),
        tenant_id="default",
        agent_id=agent_id,
        session_id=session.id,
        skill=skill,
        is_automatable=False,
        arguments={"to": "a@example.com"} if skill == "draft_email" else {"body": "b"},
        content=f"{skill} by {agent}",
        requested_by="U0ASKER001",
    )
    created = c.outputs.create(new)
    if age:
        from sqlalchemy import update

        from core.db.models import OutputRow

        with c.db.session() as s:  # a store writes created_at itself: backdate it
            s.execute(
                update(OutputRow)
                .where(OutputRow.id == created.id)
                .values(created_at=created.created_at - age)
            )
    return created.id


def home_action(
    app: SlackApp, user: str, view: dict[str, Any], action: dict[str, Any], state: dict[str, Any]
) -> None:
    """A click in the App Home with the view as Slack sends it: its state and metadata."""
    payload = app.requests.block_action(
        action["action_id"], action.get("value"), user=user, action=action
    ).payload
    for key in ("channel", "message", "response_url"):
        payload.pop(key, None)
    payload["container"] = {"type": "view", "view_id": view["id"]}
    payload["view"] = {
        "id": view["id"],
        "type": "home",
        "blocks": view["blocks"],
        "private_metadata": view.get("private_metadata", ""),
        "state": {"values": state},
    }
    body = urlencode({"payload": json.dumps(payload)})
    request = app.requests.sign(
        body, content_type="application/x-www-form-urlencoded", payload=payload
    )
    assert app.send(request).status_code == 200
    app.run_jobs()


def select(action_id: str, value: str) -> dict[str, Any]:
    return {
        "type": "static_select",
        "action_id": action_id,
        "block_id": review.FILTERS_BLOCK,
        "selected_option": {"value": value, "text": {"type": "plain_text", "text": value}},
    }


def choose(app: SlackApp, user: str, view: dict[str, Any], **chosen: str) -> dict[str, Any]:
    """Pick filter values (`agent=`, `skill=`, `age=`) as the selects would; the new view."""
    ids = {"agent": review.FILTER_AGENT, "skill": review.FILTER_SKILL, "age": review.FILTER_AGE}
    state = {review.FILTERS_BLOCK: {ids[k]: select(ids[k], v) for k, v in chosen.items()}}
    last = next(iter(chosen))
    home_action(app, user, view, select(ids[last], chosen[last]), state)
    found = app.slack.home_view(user)
    assert found is not None
    return found


def shown_ids(view: dict[str, Any]) -> list[str]:
    return [b["block_id"].split(":")[1] for b in decide_blocks(view)]


def bulk_button(view: dict[str, Any]) -> dict[str, Any]:
    return next(
        e
        for b in view["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e.get("action_id") == review.APPROVE_SHOWN
    )


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_the_queue_shows_what_the_viewer_may_decide_newest_first_and_filters_it(app):
    old = propose(app, "sales-bot", "draft_email", age=timedelta(days=2))
    note = propose(app, "sales-bot", "create_note")
    support = propose(app, "support-bot", "draft_email")
    propose(app, "loose-bot", "draft_email")  # anyone may decide it: LEAD too
    loose = app.container.outputs.list("default", OutputFilter(), cursor=None, limit=9).items[-1]

    home = open_home(app, PEER)
    assert shown_ids(home) == [loose.id, note, old]  # not support-bot's: PEER may not

    lead = open_home(app, LEAD)
    assert shown_ids(lead) == [loose.id, support, note, old]
    by_agent = choose(app, LEAD, lead, agent=app.agent_id("sales-bot"))
    assert shown_ids(by_agent) == [note, old]
    by_skill = choose(app, LEAD, by_agent, agent=app.agent_id("sales-bot"), skill="draft_email")
    assert shown_ids(by_skill) == [old]
    aged = choose(app, LEAD, by_skill, age="1d")
    assert shown_ids(aged) == [old]
    assert json.loads(aged["private_metadata"]) == {"agent": None, "skill": None, "age": "1d"}
    everything = choose(app, LEAD, aged, age="any")
    assert shown_ids(everything) == [loose.id, support, note, old]


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_approve_the_n_shown_decides_each_and_says_which_someone_else_took(app):
    ids = [propose(app, "sales-bot", "draft_email") for _ in range(4)]
    home = choose(app, LEAD, open_home(app, LEAD), agent=app.agent_id("sales-bot"))
    button = bulk_button(home)
    assert button["text"]["text"] == "Approve the 4 shown"
    confirm = button["confirm"]["text"]["text"]
    assert len(confirm) <= 300 and confirm.count("Draft email (sales-bot, rev 1)") == 4

    # Another reviewer rejects one after LEAD's Home was published, before the click.
    taken = ids[1]
    r = app.client.post(
        f"/api/v1/outputs/{taken}/reject",
        json={"user_id": PEER, "reason": "wrong customer"},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    app.run_jobs()

    home_action(app, LEAD, home, {**button, "type": "button"}, {})

    outputs = {i: app.container.outputs.get("default", i) for i in ids}
    assert outputs[taken].status == OutputStatus.REJECTED and outputs[taken].decided_by == PEER
    for i in ids:
        if i != taken:
            assert outputs[i].status == OutputStatus.MANUAL and outputs[i].decided_by == LEAD
    said = [
        c.params["text"] for c in app.slack.calls("chat.postMessage") if c.params["channel"] == LEAD
    ]
    assert said[-1].startswith("✅ Approved 3 of 4.")
    assert f"Someone else decided first: `{taken}` (<@{PEER}>)" in said[-1]
    assert shown_ids(app.slack.home_view(LEAD) or {}) == []  # republished: nothing left


def test_a_stale_bulk_click_decides_nothing_unseen(app):
    """The button names the revision each output showed: an edit since refuses that one."""
    [output_id] = [propose(app, "support-bot", "draft_email")]
    home = open_home(app, LEAD)
    button = bulk_button(home)
    stale = {**button, "type": "button", "value": f"{output_id}:7,not-an-id"}
    home_action(app, LEAD, home, stale, {})
    assert app.container.outputs.get("default", output_id).status == OutputStatus.PENDING
    said = [
        c.params["text"] for c in app.slack.calls("chat.postMessage") if c.params["channel"] == LEAD
    ]
    assert said[-1].startswith("✅ Approved 0 of 1.") and "Not approved" in said[-1]


def test_the_home_counts_todays_outputs_without_a_limit_and_shows_admins_unrouted_ones(app):
    """Seen: "0 outputs" after 5 outputs that day (the counter moved only with a limit)."""
    for _ in range(5):
        propose(app, "sales-bot", "draft_email")
    unrouted = propose(app, "loose-bot", "draft_email")
    app.container.outputs.set_slack_status("default", unrouted, SlackStatus.UNROUTED)

    home = open_home(app, ADA)
    usage = [
        f["text"] for b in home["blocks"] if b["type"] == "section" for f in b.get("fields", [])
    ]
    assert [u.rsplit("\n", 1)[-1] for u in usage if u.startswith("*sales-bot*")] == ["5 outputs"]
    admin = json.dumps(home)
    assert "1 pending output(s) reached nobody in Slack" in admin
    reviewer = json.dumps(open_home(app, LEAD))
    assert "reached nobody" not in reviewer  # admins only
