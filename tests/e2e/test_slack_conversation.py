"""Slack end to end: signed requests to our /slack/events, the real Bolt app, the fake
Slack Web API, the fake Messages API and a real database."""

from __future__ import annotations

import json
from typing import Any

import pytest
from slack_sdk import WebClient
from sqlalchemy import select

from bot.slack.conversations import handle_event
from core.db.models import SessionRow
from core.jobs import JobContext
from core.outputs.port import OutputFilter
from core.skills.runtime import SkillResult
from tests.conftest import BACKENDS
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_ID, BOT_TOKEN, BOT_USER_ID, CHANNEL_ID, USER_ID
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.slack_support import SlackApp, eventually, portal_of, slack_app, slack_of

LEAD = "U0LEAD0001"
CONFIG = """
apiVersion: cosmo/v1
personas: [{name: seller, role: Sales assistant, instructions: "Help {{user_name}}."}]
skills:
  - name: draft_email
    description: Draft an email.
    kind: action
    input_schema: {type: object, properties: {to: {type: string}, body: {type: string}},
                   required: [to, body]}
  - name: create_task
    description: Create a CRM task.
    kind: action
    is_automatable: true
    input_schema: {type: object, properties: {title: {type: string}}, required: [title]}
agents:
  - name: sales-bot
    persona: seller
    skills: [draft_email, create_task]
    approvers: [U0LEAD0001]
"""


RUNS: list[dict[str, Any]] = []


async def create_task(arguments: dict[str, Any], ctx: Any) -> SkillResult:
    RUNS.append(arguments)
    return SkillResult("task T-9 created", data={"id": "T-9"})


@pytest.fixture
def app(real_db, tmp_path):
    RUNS.clear()
    with slack_app(real_db, tmp_path, CONFIG, {"create_task": create_task}) as running:
        running.slack.add_user(LEAD, "Lena Lead")
        yield running


def mention(app: SlackApp, text: str, **kw: Any) -> tuple[Any, str]:
    request = app.requests.app_mention(f"<@{BOT_USER_ID}> {text}", **kw)
    response = app.send(request)
    assert response.status_code == 200, response.text
    return request, request.payload["event"]["ts"]


def thread(app: SlackApp, ts: str) -> list[Any]:
    return [m for m in app.slack.messages_in(CHANNEL_ID, thread_ts=ts) if m.ts != ts]


def test_a_mention_is_answered_in_a_thread_with_the_text_escaped(app):
    app.claude.push(Reply.text("Hi Alice! <!channel> see <http://evil.example|your bank> & more"))

    _, ts = mention(app, "hello")
    app.run_jobs()

    replies = thread(app, ts)
    assert len(replies) == 1
    reply = replies[0]
    assert reply.user == BOT_USER_ID and reply.thread_ts == ts
    assert reply.text == (
        "Hi Alice! &lt;!channel&gt; see &lt;http://evil.example|your bank&gt; &amp; more"
    )
    post = app.slack.calls("chat.postMessage")[0]
    assert post.params["text"] == "_Thinking…_"  # the placeholder came first
    assert post.params["unfurl_links"] in (False, "false", "0", 0)
    request = app.claude.message_requests[0]
    assert request.last_user_text() == "hello"
    assert "Help " in request.system_text and "{{" not in request.system_text
    # The names Slack gave (users.info, conversations.info) are kept with the session,
    # written with the turn's start.
    with app.container.db.session() as s:
        [(user_name, channel_name)] = s.execute(
            select(SessionRow.user_name, SessionRow.channel_name)
        ).all()
    assert (user_name, channel_name) == ("alice", "#general")


def test_replies_in_the_thread_continue_the_session_without_a_mention(app):
    app.claude.push(Reply.text("First."), Reply.text("Second."))
    _, ts = mention(app, "one")
    app.run_jobs()
    app.send(app.requests.message("two", thread_ts=ts))
    app.run_jobs()

    assert [m.text for m in thread(app, ts)] == ["First.", "Second."]
    replay = app.claude.message_requests[1].messages
    assert [m["role"] for m in replay] == ["user", "assistant", "user"]


def test_channel_chatter_without_a_mention_is_ignored(app):
    app.send(app.requests.message("just talking"))
    app.run_jobs()
    assert app.claude.message_requests == []
    assert app.slack.calls("chat.postMessage") == []


def test_a_redelivered_event_runs_the_turn_once(app):
    app.claude.push(Reply.text("Once."))
    request, ts = mention(app, "hi")
    assert app.send(request.retry(1, "http_timeout")).status_code == 200
    assert app.send(request.retry(2, "http_timeout")).status_code == 200
    app.run_jobs()

    assert len(app.claude.message_requests) == 1
    assert [m.text for m in thread(app, ts)] == ["Once."]


def test_the_same_message_redelivered_under_a_new_event_id_is_answered_once(app):
    """Slack may deliver one message again as a new event (a new `event_id`); the message
    itself (team, channel, ts) is what gets one answer."""
    app.claude.push(Reply.text("Once."), Reply.text("Twice?"))
    first = app.requests.app_mention(f"<@{BOT_USER_ID}> hi", ts="1765000000.000100")
    again = app.requests.app_mention(f"<@{BOT_USER_ID}> hi", ts="1765000000.000100")
    assert first.payload["event_id"] != again.payload["event_id"]

    assert app.send(first).status_code == 200
    assert app.send(again).status_code == 200
    app.run_jobs()

    assert len(app.claude.message_requests) == 1
    assert [m.text for m in thread(app, "1765000000.000100")] == ["Once."]


def test_the_bots_own_messages_and_other_bots_never_trigger_a_turn(app):
    app.send(app.requests.message("me", user=BOT_USER_ID, bot_id=BOT_ID))
    app.send(app.requests.message("beep", subtype="bot_message", bot_id="B0OTHER"))
    app.run_jobs()
    assert app.claude.message_requests == []


def test_a_mention_in_a_thread_is_answered_once(app):
    """Slack sends one mention twice, as `app_mention` and as `message` (same ts), in
    either order."""
    app.claude.push(Reply.text("Started."), Reply.text("Once again."), Reply.text("And again."))
    _, ts = mention(app, "start")
    app.run_jobs()
    text = f"<@{BOT_USER_ID}> again"
    first = app.requests.next_ts()
    app.send(app.requests.app_mention(text, thread_ts=ts, ts=first))
    app.send(app.requests.message(text, thread_ts=ts, ts=first))
    app.run_jobs()
    second = app.requests.next_ts()
    app.send(app.requests.message(text, thread_ts=ts, ts=second))
    app.send(app.requests.app_mention(text, thread_ts=ts, ts=second))
    app.run_jobs()
    assert len(app.claude.message_requests) == 3
    assert "again" in str(app.claude.message_requests[-1].body["messages"][-1])


def test_a_mention_seen_only_as_a_message_event_starts_a_thread(app):
    """An app subscribed to `message.channels` may see the mention first (or only) as a
    `message`: the worker, which knows the bot's id, still reads it as a mention."""
    app.claude.push(Reply.text("Hello from a message event."))
    app.send(app.requests.message(f"<@{BOT_USER_ID}> hello there"))
    app.run_jobs()
    assert len(app.claude.message_requests) == 1
    sent = str(app.claude.message_requests[0].body["messages"][-1])
    assert "hello there" in sent and BOT_USER_ID not in sent


def test_a_model_failure_reaches_the_user_as_a_short_message(app):
    app.claude.push(Reply.error(401, "authentication_error", "bad key"))
    _, ts = mention(app, "hi")
    app.run_jobs()
    (reply,) = thread(app, ts)
    assert reply.text.startswith("⚠️") and "API key" in reply.text


def test_dms_are_answered_in_their_own_thread(app):
    app.claude.push(Reply.text("In your DMs."))
    request = app.requests.dm("hello there")
    app.send(request)
    app.run_jobs()
    channel = request.payload["event"]["channel"]
    replies = [m for m in app.slack.messages_in(channel) if m.user == BOT_USER_ID]
    assert [m.text for m in replies] == ["In your DMs."]
    assert replies[0].thread_ts == request.payload["event"]["ts"]


def approval_buttons(message: Any) -> list[dict[str, Any]]:
    actions = [b for b in message.blocks if b["type"] == "actions"]
    return actions[0]["elements"] if actions else []


def propose(app: SlackApp, tool: str, arguments: dict[str, Any]) -> tuple[str, Any]:
    app.claude.push(Reply.tool_use(tool, arguments), Reply.text("Sent for review."))
    _, ts = mention(app, f"please {tool}")
    app.run_jobs()
    approval = next(m for m in thread(app, ts) if approval_buttons(m))
    return ts, approval


def test_an_action_posts_an_approval_message_and_approve_runs_it(app):
    with WebhookReceiver() as receiver:
        app.client.patch(
            f"/api/v1/agents/{app.agent_id('sales-bot')}",
            json={"webhook": {"url": receiver.url, "secret": "whsec_" + "A" * 32}},
            headers={"Authorization": "Bearer test-token"},
        )
        ts, approval = propose(app, "create_task", {"title": "Call Globex"})

        buttons = approval_buttons(approval)
        assert [(b["action_id"], b.get("style")) for b in buttons] == [
            ("output_approve", "primary"),
            ("output_reject", "danger"),
            ("output_edit", None),
        ]
        assert "confirm" in buttons[0]
        output_id = buttons[0]["value"]
        assert buttons[1]["value"] == output_id
        assert app.container.outputs.get("default", output_id).status == "pending"

        click = app.requests.block_action(
            "output_approve", output_id, user=LEAD, message_ts=approval.ts, thread_ts=ts
        )
        assert app.send(click).status_code == 200
        app.run_jobs()

        updated = app.slack.message(CHANNEL_ID, approval.ts)
        assert approval_buttons(updated) == []
        decided = " ".join(str(b) for b in updated.blocks)
        assert "Approved and done" in decided and LEAD in decided and "T-9" in decided
        assert RUNS == [{"title": "Call Globex"}]
        outcome = thread(app, ts)[-1]
        assert outcome.text.startswith("✅") and "task T-9 created" in outcome.text

        app.client.portal.call(app.container.webhooks.run_once)
        delivered = eventually(lambda: receiver.requests if len(receiver.requests) >= 3 else None)
        kinds = sorted(json.loads(r.body)["type"] for r in delivered)
        assert kinds == ["output.created", "output.decided", "output.executed"]


def test_reject_asks_for_a_reason_and_the_agent_sees_it_next_turn(app):
    ts, approval = propose(app, "draft_email", {"to": "ana@example.com", "body": "Hi Ana"})
    output_id = approval_buttons(approval)[1]["value"]

    click = app.requests.block_action(
        "output_reject", output_id, user=LEAD, message_ts=approval.ts, thread_ts=ts
    )
    assert app.send(click).status_code == 200
    opened = app.slack.last("views.open").params["view"]
    view = opened if isinstance(opened, dict) else json.loads(opened)
    assert view["callback_id"] == "output_reject_reason"

    submit = app.requests.view_submission(
        "output_reject_reason",
        {"reason": {"reason_input": "Use the enterprise price list"}},
        user=LEAD,
        private_metadata=view["private_metadata"],
    )
    response = app.send(submit)
    assert response.status_code == 200
    app.run_jobs()

    output = app.container.outputs.get("default", output_id)
    assert output.status == "rejected" and output.decided_by == LEAD
    assert output.decision_reason == "Use the enterprise price list"
    updated = app.slack.message(CHANNEL_ID, approval.ts)
    assert approval_buttons(updated) == []
    assert "Rejected" in str(updated.blocks)
    assert "enterprise price list" in thread(app, ts)[-1].text

    app.claude.push(Reply.text("Revised with enterprise pricing."))
    app.send(app.requests.message("ok, try again", thread_ts=ts))
    app.run_jobs()
    last = app.claude.message_requests[-1]
    sent = str(last.messages[-1]["content"])
    assert "[Reviewer feedback]" in sent and "enterprise price list" in sent


def test_an_empty_reason_is_refused_on_the_field(app):
    _ts, approval = propose(app, "draft_email", {"to": "a@b.c", "body": "x"})
    output_id = approval_buttons(approval)[1]["value"]
    app.send(app.requests.block_action("output_reject", output_id, user=LEAD))
    view = app.slack.last("views.open").params["view"]
    view = view if isinstance(view, dict) else json.loads(view)
    response = app.send(
        app.requests.view_submission(
            "output_reject_reason",
            {"reason": {"reason_input": "   "}},
            user=LEAD,
            private_metadata=view["private_metadata"],
        )
    )
    assert response.json() == {"response_action": "errors", "errors": {"reason": "Please say why."}}
    assert app.container.outputs.get("default", output_id).status == "pending"


def test_someone_who_may_not_decide_is_told_why_and_nothing_changes(app):
    ts, approval = propose(app, "draft_email", {"to": "a@b.c", "body": "x"})
    output_id = approval_buttons(approval)[0]["value"]

    app.send(
        app.requests.block_action(
            "output_approve", output_id, user=USER_ID, message_ts=approval.ts, thread_ts=ts
        )
    )
    app.run_jobs()

    assert app.container.outputs.get("default", output_id).status == "pending"
    (note,) = app.slack.ephemeral_messages(user=USER_ID)
    assert "approvers" in note.text or "someone else" in note.text
    assert approval_buttons(app.slack.message(CHANNEL_ID, approval.ts))


def test_a_double_click_decides_once_and_the_second_is_told_it_was_too_late(app):
    ts, approval = propose(app, "draft_email", {"to": "a@b.c", "body": "x"})
    output_id = approval_buttons(approval)[0]["value"]
    first = app.requests.block_action(
        "output_approve", output_id, user=LEAD, message_ts=approval.ts, thread_ts=ts
    )
    app.send(first)
    app.run_jobs()
    app.send(
        app.requests.block_action(
            "output_approve", output_id, user=LEAD, message_ts=approval.ts, thread_ts=ts
        )
    )
    app.run_jobs()
    assert app.container.outputs.get("default", output_id).status == "manual"
    decided = [
        a
        for a in app.container.audit.for_output("default", output_id)
        if a.outcome == "applied" and a.action == "approve"
    ]
    assert len(decided) == 1
    outcomes = [m for m in thread(app, ts) if m.text.startswith("✅")]
    assert len(outcomes) == 1


def test_a_decision_made_over_rest_updates_the_slack_message(app):
    ts, approval = propose(app, "draft_email", {"to": "a@b.c", "body": "x"})
    output_id = approval_buttons(approval)[0]["value"]
    r = app.client.post(
        f"/api/v1/outputs/{output_id}/reject",
        json={"reason": "not now"},
        headers={"Authorization": "Bearer test-token"},
    )
    assert r.status_code == 200
    app.run_jobs()
    assert approval_buttons(app.slack.message(CHANNEL_ID, approval.ts)) == []
    assert "not now" in thread(app, ts)[-1].text


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_a_turn_recorded_before_a_crash_is_answered_once_after_restart(real_db, tmp_path):
    with slack_app(real_db, tmp_path, CONFIG, {"create_task": create_task}) as first:
        # Acked (the event's job is recorded), then the process "crashes" before any worker ran.
        _, ts = mention(first, "are you there?")
    with slack_app(real_db, tmp_path, CONFIG, {"create_task": create_task}) as second:
        second.claude.push(Reply.text("Yes, I'm back."))
        assert second.run_jobs() == 2  # the event, then its turn
        assert second.run_jobs() == 0
        replies = [m.text for m in thread(second, ts)]
        assert replies == ["Yes, I'm back."]
        assert len(second.claude.message_requests) == 1


def test_without_an_agent_the_bot_explains_how_to_pick_one(real_db, tmp_path):
    config = "apiVersion: cosmo/v1\npersonas: [{name: p, role: r}]\n"
    with slack_app(real_db, tmp_path, config) as empty:
        _, ts = mention(empty, "hi")
        empty.run_jobs()
        (reply,) = thread(empty, ts)
        assert "/agent create" in reply.text


def test_forged_and_malformed_requests_are_refused(app):
    good = app.requests.app_mention(f"<@{BOT_USER_ID}> hi")
    assert app.send(good.resigned(signing_secret="wrong")).status_code == 401
    assert app.send(good.with_headers({"X-Slack-Request-Timestamp": "abc"})).status_code == 401
    assert app.send(good.with_headers({"X-Slack-Signature": "v0=zz"})).status_code == 401
    assert app.send(good.with_body(b"{not json")).status_code == 400
    app.run_jobs()
    assert app.claude.message_requests == []


def test_each_speaker_in_a_thread_is_addressed_and_remembered_as_themselves(app):
    bob = "U0BOB00001"
    app.slack.add_user(bob, "bob", display_name="Bob Builder")
    app.claude.push(
        Reply.text("Hi Alice."),
        Reply.tool_use("draft_email", {"to": "x@y.z", "body": "b"}),
        Reply.text("Drafted, Bob."),
    )
    _, ts = mention(app, "hello")
    app.run_jobs()
    app.send(app.requests.message("I am Bob and I like Fridays", user=bob, thread_ts=ts))
    app.run_jobs()

    first, second = app.claude.message_requests[:2]
    assert second.system[0] == first.system[0]  # one persona block for every speaker
    assert "Help the current speaker." in second.system_text
    speakers = [m["content"][0]["text"] for m in second.messages if m["role"] == "user"]
    assert "name: alice\n" in speakers[0] and "name: Bob Builder\n" in speakers[-1]
    (output,) = app.container.outputs.list("default", OutputFilter(), cursor=None, limit=10).items
    assert output.requested_by == bob
    agent_id = app.agent_id("sales-bot")
    remembered = app.container.memory.list("default", user_id=bob, agent_id=agent_id)
    assert any("Fridays" in m.text for m in remembered)


def test_a_placeholder_posted_by_an_attempt_that_died_before_recording_it_is_reused(
    real_db, tmp_path
):
    with slack_app(real_db, tmp_path, CONFIG, {"create_task": create_task}) as app:
        _, ts = mention(app, "are you there?")
        jobs = app.container.jobs
        # The event is recorded as a turn; its turn job is then claimed by a worker that posts
        # its placeholder and dies before it can write down the placeholder's ts.
        runtime = slack_of(app.client).runtime
        [event] = jobs.claim("w-event", kinds=["slack.event"], limit=1)
        portal_of(app.client).call(handle_event, runtime, JobContext(jobs, event))
        jobs.finish(event)
        [turn_job] = jobs.claim("w-dead", kinds=["slack.turn"], limit=1)
        bot = WebClient(token=BOT_TOKEN, base_url=app.slack.base_url)
        orphan = bot.chat_postMessage(channel=CHANNEL_ID, thread_ts=ts, text="_Thinking…_")["ts"]
        jobs.release(turn_job)  # its lease ends (as after a kill, without the 15 s wait)

        app.claude.push(Reply.text("Yes, I'm here."))
        app.run_jobs()
        replies = thread(app, ts)
        assert [(m.ts, m.text) for m in replies] == [(orphan, "Yes, I'm here.")]
