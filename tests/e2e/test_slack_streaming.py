"""Slack end to end on the native agent surface: replies streamed with `chat.startStream` /
`appendStream` / `stopStream` (tool calls as task updates), the thread's agent session status,
the fallback where Slack refuses streaming. Signed requests to our /slack/events, the real
Bolt app, the fake Slack Web API, the fake Messages API, a real database and the job worker."""

from __future__ import annotations

from typing import Any

import pytest
from slack_sdk import WebClient
from sqlalchemy import select

from bot.slack.conversations import handle_event
from bot.slack.stop import NOT_YOURS, NOTHING_RUNNING
from core.db.models import TurnRow
from core.jobs import JobContext
from core.skills.runtime import SkillResult
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_TOKEN, BOT_USER_ID, CHANNEL_ID, TEAM_ID, USER_ID
from tests.job_support import running_worker
from tests.slack_support import SlackApp, eventually, portal_of, slack_app, slack_of

LEAD = "U0LEAD0001"
CONFIG = """
apiVersion: cosmo/v1
personas: [{name: seller, role: Sales assistant, instructions: "Help {{user_name}}."}]
skills:
  - name: lookup_account
    description: Look up an account in the CRM.
    kind: read
    input_schema: {type: object, properties: {name: {type: string}}, required: [name]}
  - name: create_task
    description: Create a CRM task.
    kind: action
    input_schema: {type: object, properties: {title: {type: string}}, required: [title]}
agents:
  - name: sales-bot
    persona: seller
    skills: [lookup_account, create_task]
    approvers: [U0LEAD0001]
"""


async def lookup_account(arguments: dict[str, Any], ctx: Any) -> SkillResult:
    return SkillResult(f"{arguments['name']}: renews in March <!channel>\nowner: Bea")


async def create_task(arguments: dict[str, Any], ctx: Any) -> SkillResult:
    return SkillResult("task T-9 created", data={"id": "T-9"})


BUILTINS = {"lookup_account": lookup_account, "create_task": create_task}


@pytest.fixture
def app(real_db, tmp_path):
    with slack_app(real_db, tmp_path, CONFIG, BUILTINS, COSMO_SLACK_STREAMING=True) as running:
        running.slack.add_user(LEAD, "Lena Lead")
        running.slack.subscribe_events("agent_session_stopped")
        yield running


def mention(app: SlackApp, text: str) -> str:
    request = app.requests.app_mention(f"<@{BOT_USER_ID}> {text}")
    assert app.send(request).status_code == 200
    return str(request.payload["event"]["ts"])


def thread(app: SlackApp, ts: str) -> list[Any]:
    return [m for m in app.slack.messages_in(CHANNEL_ID, thread_ts=ts) if m.ts != ts]


def tasks(app: SlackApp) -> list[tuple[str, str, str]]:
    """Every task update streamed, as (title, status, output or details)."""
    found = []
    for call in app.slack.calls():
        if call.method.startswith("chat.") and call.method.endswith("Stream"):
            for chunk in call.params.get("chunks") or []:
                if chunk["type"] == "task_update":
                    note = chunk.get("output") or chunk.get("details") or ""
                    found.append((chunk["title"], chunk["status"], note))
    return found


def test_a_reply_streams_with_task_updates_and_the_session_follows_the_approval(app):
    app.claude.push(
        Reply.tool_use("lookup_account", {"name": "Acme"}, text="Let me check."),
        Reply.tool_use("create_task", {"title": "Call Acme"}),
        Reply.text("Acme renews in March; I proposed a task."),
    )

    ts = mention(app, "when does Acme renew?")
    app.run_jobs()

    start = app.slack.last("chat.startStream")
    assert (start.params["thread_ts"], start.params["recipient_user_id"]) == (ts, USER_ID)
    assert start.params["recipient_team_id"] == TEAM_ID
    assert tasks(app) == [
        ("lookup_account", "in_progress", ""),
        ("lookup_account", "complete", "Acme: renews in March &lt;!channel&gt;"),
        ("create_task", "pending", "Awaiting approval"),
    ]
    [answer, approval] = thread(app, ts)
    assert answer.ts == start.response["ts"] and not answer.streaming
    assert answer.text.startswith("Let me check.")
    assert answer.text.endswith("Acme renews in March; I proposed a task.")
    assert answer.text.count("Acme renews") == 1  # the final reply did not repeat the stream
    assert not app.slack.calls("chat.update")  # nothing was edited
    assert app.slack.session_statuses(CHANNEL_ID, ts) == ["processing", "suspended"]

    output_id = next(b for b in approval.blocks if b["type"] == "actions")["elements"][0]["value"]
    click = app.requests.block_action(
        "output_approve", output_id, user=LEAD, message_ts=approval.ts, thread_ts=ts
    )
    assert app.send(click).status_code == 200
    app.run_jobs()

    assert app.slack.session_statuses(CHANNEL_ID, ts) == ["processing", "suspended", "active"]


def test_the_first_text_is_sent_at_once_and_the_answer_ends_the_stream(app):
    app.claude.push(Reply.text("Hello Alice, <b>welcome</b> & more."))

    ts = mention(app, "hi")
    app.run_jobs()

    methods = [c.method for c in app.slack.calls() if c.method.startswith("chat.")]
    assert methods[0] == "chat.startStream" and methods[-1] == "chat.stopStream"
    first = app.slack.calls("chat.appendStream")[0].params["markdown_text"]
    assert first and "Hello Alice".startswith(first.strip()[:11])
    [answer] = thread(app, ts)
    assert answer.text == "Hello Alice, &lt;b&gt;welcome&lt;/b&gt; &amp; more."
    assert app.slack.session_statuses(CHANNEL_ID, ts) == ["processing", "active"]


def test_where_slack_refuses_streaming_replies_are_edited_and_the_workspace_is_remembered(app):
    app.slack.fail("chat.startStream", "not_allowed")
    app.claude.push(Reply.text("First."), Reply.text("Second."))

    first = mention(app, "one")
    app.run_jobs()
    second = mention(app, "two")
    app.run_jobs()

    assert [m.text for m in thread(app, first)] == ["First."]
    assert [m.text for m in thread(app, second)] == ["Second."]
    assert len(app.slack.calls("chat.startStream")) == 1  # asked once, then remembered
    assert app.slack.calls("chat.postMessage")[0].params["text"] == "_Thinking…_"
    assert app.slack.calls("chat.update")
    assert app.slack.session_statuses(CHANNEL_ID, second) == ["processing", "active"]


def test_a_failing_session_status_never_fails_the_turn(app):
    app.slack.fail("agents.sessions.setStatus", "internal_error")
    app.claude.push(Reply.text("Still answered."))

    ts = mention(app, "hi")
    app.run_jobs()

    assert [m.text for m in thread(app, ts)] == ["Still answered."]
    assert app.slack.calls("agents.sessions.setStatus")  # it was tried


# -- Stop ------------------------------------------------------------------------------------

ESSAY = Reply.text("word " * 400).with_options(delta_delay=0.05)


def slack_kinds(app: SlackApp) -> list[Any]:
    return list(slack_of(app.client).job_kinds())


def turn_status(app: SlackApp) -> str:
    with app.container.db.session() as s:
        return str(s.scalars(select(TurnRow.status)).one())


def test_stop_cancels_the_running_turn_and_nothing_more_is_streamed(app):
    app.claude.push(ESSAY)
    ts = mention(app, "write me an essay")

    with running_worker(app.client, app.container, slack_kinds(app)):
        eventually(lambda: app.slack.calls("chat.appendStream"))
        streams = app.slack.stop_streams(CHANNEL_ID, ts)  # the click, as Slack handles it
        shown = app.slack.message(CHANNEL_ID, streams[0]).text
        stop = app.requests.agent_session_stopped(thread_ts=ts, streaming_message_ts=streams)
        assert app.send(stop).status_code == 200
        eventually(lambda: turn_status(app) == "cancelled")
        app.claude.wait_for_hang_ups(1, timeout=10)

    [answer, note] = thread(app, ts)
    assert answer.ts == streams[0] and answer.text == shown  # nothing appended after Stop
    assert note.text == f"Stopped by <@{USER_ID}>."
    assert app.container.sessions.history("default", session_of(app, ts)) == []  # not kept
    assert app.slack.session_statuses(CHANNEL_ID, ts)[0] == "processing"
    assert app.slack.session_statuses(CHANNEL_ID, ts)[-1] == "active"


def session_of(app: SlackApp, ts: str) -> str:
    found = app.container.sessions.find_by_key("default", f"slack:T0COSMO001:{CHANNEL_ID}:{ts}")
    assert found is not None
    return found.id


def test_stop_on_a_finished_turn_or_by_a_bystander_cancels_nothing(app):
    app.claude.push(Reply.text("Done."))
    ts = mention(app, "hi")
    app.run_jobs()

    app.send(app.requests.agent_session_stopped(thread_ts=ts))
    app.send(app.requests.agent_session_stopped(thread_ts=ts, user=LEAD))
    app.run_jobs()

    assert turn_status(app) == "completed"
    assert [m.text for m in thread(app, ts)] == ["Done."]
    told = {m.ephemeral_to: m.text for m in app.slack.ephemeral_messages(CHANNEL_ID)}
    assert told == {USER_ID: NOTHING_RUNNING, LEAD: NOT_YOURS}


def test_a_stop_redelivered_by_slack_is_handled_once(app):
    app.claude.push(Reply.text("Done."))
    ts = mention(app, "hi")
    app.run_jobs()
    stop = app.requests.agent_session_stopped(thread_ts=ts, event_id="Ev0STOP1")

    assert app.send(stop).status_code == 200
    assert app.send(stop).status_code == 200
    app.run_jobs()

    assert len(app.slack.ephemeral_messages(CHANNEL_ID)) == 1


# -- closed ----------------------------------------------------------------------------------


def test_ending_the_session_over_rest_or_with_agent_end_shows_it_closed(app):
    app.claude.push(Reply.text("One."), Reply.text("Two."))
    first = mention(app, "one")
    second = mention(app, "two")
    app.run_jobs()

    r = app.client.post(
        f"/api/v1/sessions/{session_of(app, first)}/end",
        headers={"Authorization": "Bearer test-token"},
    )
    assert r.status_code == 200, r.text
    app.run_jobs()
    assert app.send(app.requests.slash_command("/agent", "end")).status_code == 200
    app.run_jobs()

    assert app.slack.session_statuses(CHANNEL_ID, first)[-1] == "closed"
    assert app.slack.session_statuses(CHANNEL_ID, second)[-1] == "closed"


# -- many turns at once ----------------------------------------------------------------------

CHANNELS = [f"C0BUSY{i:04d}" for i in range(10)]


def test_fifty_concurrent_turns_in_one_workspace_end_without_a_failed_call(real_db, tmp_path):
    many = {"COSMO_WORKER_CONCURRENCY": 50, "COSMO_AGENT_CONCURRENCY": 50}
    with slack_app(real_db, tmp_path, CONFIG, BUILTINS, COSMO_SLACK_STREAMING=True, **many) as app:
        app.slack.enforce_tiers()  # Slack's limits, per method, for the whole workspace
        app.claude.push(*(Reply.text(f"Answer {i}.") for i in range(50)))
        threads = []
        for i in range(50):
            request = app.requests.app_mention(
                f"<@{BOT_USER_ID}> question {i}", channel=CHANNELS[i % len(CHANNELS)]
            )
            assert app.send(request).status_code == 200
            threads.append((request.payload["event"]["channel"], request.payload["event"]["ts"]))
        app.run_jobs()

        answers = [
            [m.text for m in app.slack.messages_in(channel, thread_ts=ts) if m.ts != ts]
            for channel, ts in threads
        ]
        assert all(len(a) == 1 and a[0].startswith("Answer ") for a in answers)
        assert sorted(a[0] for a in answers) == sorted(f"Answer {i}." for i in range(50))
        assert len(app.slack.calls("chat.stopStream", ok=True)) == 50
        # A 429 may meet a burst of posts in one channel (Slack tolerates some); each was
        # retried after its Retry-After. Nothing failed, and the minute tiers never hit one.
        limited = {c.method for c in app.slack.rate_limited()}
        assert limited <= {"chat.startStream"}
        failed = [c for c in app.slack.calls() if not c.ok and c.status != 429]
        assert failed == []


# -- crash recovery --------------------------------------------------------------------------


def _die_holding_the_turn(app: SlackApp, ts: str, *, record: bool) -> str:
    """The turn's first attempt starts its stream, streams a little and dies (its lease then
    lapses), having recorded the stream's ts in the job's progress or not."""
    jobs = app.container.jobs
    runtime = slack_of(app.client).runtime
    [event] = jobs.claim("w-event", kinds=["slack.event"], limit=1)
    portal_of(app.client).call(handle_event, runtime, JobContext(jobs, event))
    jobs.finish(event)
    [turn_job] = jobs.claim("w-dead", kinds=["slack.turn"], limit=1)
    bot = WebClient(token=BOT_TOKEN, base_url=app.slack.base_url)
    stream = bot.chat_startStream(
        channel=CHANNEL_ID, thread_ts=ts, recipient_team_id=TEAM_ID, recipient_user_id=USER_ID
    )["ts"]
    if record:
        bot.chat_appendStream(channel=CHANNEL_ID, ts=stream, markdown_text="Half an ans")
        context = JobContext(jobs, turn_job)
        portal_of(app.client).call(lambda: context.progress(placeholder_ts=stream))
    jobs.release(turn_job)
    return str(stream)


@pytest.mark.parametrize("record", [True, False], ids=["recorded", "not recorded"])
def test_a_rerun_after_a_crash_ends_the_old_stream_and_answers_in_it(app, record):
    ts = mention(app, "are you there?")
    stream = _die_holding_the_turn(app, ts, record=record)

    app.claude.push(Reply.text("Yes, I'm here."))
    app.run_jobs()

    [answer] = thread(app, ts)
    assert (answer.ts, answer.text, answer.streaming) == (stream, "Yes, I'm here.", False)
    assert app.slack.session_statuses(CHANNEL_ID, ts)[-1] == "active"
