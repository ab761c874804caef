"""Slack's AI-app surface end to end: assistant thread events and turns in the assistant
container, through our /slack/events, the real Bolt app, fake Slack and fake Claude."""

from __future__ import annotations

from typing import Any

import pytest

from bot.slack.assistant import AgentBrief, SkillBrief, first_sentence, suggested_prompts
from core.skills.runtime import SkillResult
from tests.fakes.anthropic_api import RecordedRequest, Reply
from tests.fakes.slack_api import BOT_USER_ID, USER_ID
from tests.slack_support import SlackApp, slack_app

DM = "D" + USER_ID[1:]
CONFIG = """
apiVersion: cosmo/v1
personas: [{name: seller, role: Sales assistant, instructions: "Help {{user_name}}."}]
skills:
  - name: lookup_account
    description: Look up an account in the CRM. Use it before quoting a price.
    kind: read
  - name: draft_email
    description: Draft an email.
    kind: action
    input_schema: {type: object, properties: {to: {type: string}}, required: [to]}
agents:
  - name: sales-bot
    persona: seller
    skills: [lookup_account, draft_email]
"""


async def lookup_account(arguments: dict[str, Any], ctx: Any) -> SkillResult:
    return SkillResult("Acme: renews in March")


@pytest.fixture
def app(real_db, tmp_path):
    with slack_app(real_db, tmp_path, CONFIG, {"lookup_account": lookup_account}) as running:
        yield running


def assistant_event(app: SlackApp, kind: str, thread_ts: str, **kw: Any) -> Any:
    event = {
        "type": kind,
        "assistant_thread": {
            "user_id": USER_ID,
            "context": {"channel_id": "C0GENERAL1", "team_id": app.requests.team_id},
            "channel_id": DM,
            "thread_ts": thread_ts,
        },
        "event_ts": app.requests.next_ts(),
    }
    return app.requests.event_callback(event, **kw)


def open_container(app: SlackApp) -> str:
    """The user opens the assistant container: Slack starts a thread and tells us."""
    thread_ts = app.requests.next_ts()
    response = app.send(assistant_event(app, "assistant_thread_started", thread_ts))
    assert response.status_code == 200, response.text
    app.run_jobs()
    return thread_ts


def bot_replies(app: SlackApp, thread_ts: str) -> list[str]:
    return [m.text for m in app.slack.messages_in(DM, thread_ts=thread_ts) if m.user == BOT_USER_ID]


def test_opening_the_container_greets_with_the_agent_and_suggested_prompts(app):
    thread_ts = open_container(app)

    (greeting,) = bot_replies(app, thread_ts)
    assert "*sales-bot*" in greeting and "Sales assistant" in greeting
    prompts = app.slack.assistant_thread(DM, thread_ts).prompts
    assert [p["title"] for p in prompts] == [
        "What can you do?",
        "Look up an account in the CRM",
        "Draft an email",
    ]
    assert all(p["message"] for p in prompts)
    assert app.claude.message_requests == []


def test_a_message_in_the_assistant_thread_shows_the_status_while_the_agent_works(app):
    thread_ts = open_container(app)
    seen_while_working: list[str] = []

    def answer(request: RecordedRequest) -> Reply:
        seen_while_working.append(app.slack.assistant_thread(DM, thread_ts).status)
        return Reply.text("Acme renews in March.")

    app.claude.respond_with(answer)
    app.send(app.requests.dm("When does Acme renew?", thread_ts=thread_ts))
    app.run_jobs()

    assert seen_while_working == ["is thinking…"]
    assert bot_replies(app, thread_ts)[1:] == ["Acme renews in March."]  # no placeholder
    calls = [
        c.method
        for c in app.slack.calls()
        if c.params.get("thread_ts") == thread_ts and not c.method.startswith("agents.")
    ]
    assert calls[-2:] == ["assistant.threads.setStatus", "chat.postMessage"]
    assert app.slack.last("assistant.threads.setStatus").params["status"] == "is thinking…"
    assert app.slack.assistant_thread(DM, thread_ts).status == ""  # cleared by the answer
    assert app.claude.message_requests[0].last_user_text() == "When does Acme renew?"


def test_a_streamed_answer_goes_up_at_the_first_text_and_then_grows(app):
    thread_ts = open_container(app)
    app.claude.push(Reply.text("Acme renews in March, and Globex in June."))
    app.send(app.requests.dm("renewals?", thread_ts=thread_ts))
    app.run_jobs()

    assert bot_replies(app, thread_ts)[1:] == ["Acme renews in March, and Globex in June."]
    first = [c for c in app.slack.calls("chat.postMessage") if c.params["thread_ts"] == thread_ts]
    assert first[-1].params["text"] == "Acme ren"  # the first 8-character delta, at once
    assert app.slack.calls("chat.update")[-1].params["text"].endswith("Globex in June.")
    assert app.slack.assistant_thread(DM, thread_ts).status == ""


def test_where_slack_refuses_the_status_the_placeholder_is_used(app):
    thread_ts = open_container(app)
    app.slack.fail("assistant.threads.setStatus", "not_allowed_token_type")
    app.claude.push(Reply.text("Still here."))
    app.send(app.requests.dm("hello", thread_ts=thread_ts))
    app.run_jobs()

    assert bot_replies(app, thread_ts)[1:] == ["Still here."]
    posts = [c for c in app.slack.calls("chat.postMessage") if c.params["thread_ts"] == thread_ts]
    assert posts[-1].params["text"] == "_Thinking…_"


def test_a_redelivered_thread_started_event_greets_once(app):
    thread_ts = app.requests.next_ts()
    request = assistant_event(app, "assistant_thread_started", thread_ts)
    assert app.send(request).status_code == 200
    assert app.send(request.retry(1, "http_timeout")).status_code == 200
    app.run_jobs()
    assert len(bot_replies(app, thread_ts)) == 1


def test_a_context_change_is_acknowledged_and_changes_nothing(app):
    thread_ts = open_container(app)
    before = len(app.slack.calls())
    response = app.send(assistant_event(app, "assistant_thread_context_changed", thread_ts))
    app.run_jobs()
    assert response.status_code == 200
    assert [c.method for c in app.slack.calls()[before:]] == []


def test_channel_threads_keep_the_placeholder(app):
    app.claude.push(Reply.text("In the channel."))
    request = app.requests.app_mention(f"<@{BOT_USER_ID}> hi")
    app.send(request)
    app.run_jobs()
    assert app.slack.calls("assistant.threads.setStatus") == []
    assert app.slack.calls("chat.postMessage")[0].params["text"] == "_Thinking…_"


def test_without_an_agent_the_greeting_says_how_to_get_one(real_db, tmp_path):
    config = "apiVersion: cosmo/v1\npersonas: [{name: p, role: r}]\n"
    with slack_app(real_db, tmp_path, config) as empty:
        thread_ts = open_container(empty)
        (greeting,) = bot_replies(empty, thread_ts)
        assert "/agent create" in greeting
        assert empty.slack.calls("assistant.threads.setSuggestedPrompts") == []


def test_suggested_prompts_come_from_skill_descriptions_and_stay_within_slacks_limits():
    skills = tuple(
        SkillBrief(f"s{i}", text)
        for i, text in enumerate(
            [
                "Find a contact by name!  Returns the email.",
                "Find a contact by name.",
                "Create a CRM task for a follow-up that somebody has to do later this week",
                "Current time",
                "Never reached.",
            ]
        )
    )
    prompts = suggested_prompts(AgentBrief("bot", "Helper", skills))
    assert [p["title"] for p in prompts] == [
        "What can you do?",
        "Find a contact by name",
        "Create a CRM task for a follow-up that…",
        "Current time",
    ]
    assert prompts[2]["message"].endswith("later this week.")
    lonely = suggested_prompts(AgentBrief("bot", "Helper"))
    assert len(lonely) == 2
    assert first_sentence("Draft an email.\nKeep it short.") == "Draft an email"
