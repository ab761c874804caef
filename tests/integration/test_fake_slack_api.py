"""The real `slack_sdk` clients against FakeSlackAPI.

Every Slack test trusts this fake, so these pin down that the SDK really gets what it expects:
payload shapes, `SlackApiError` for `ok: false`, 429 handling by the SDK's retry handlers,
streaming, and the bookkeeping (`messages_in`, `wait_for`) that tests assert on.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook import WebhookClient

from tests.fakes.slack_api import (
    BOT_ID,
    BOT_TOKEN,
    BOT_USER_ID,
    CHANNEL_ID,
    CLIENT_ID,
    CLIENT_SECRET,
    HANDLER_THREAD_NAME,
    TEAM_ID,
    USER_ID,
    Channel,
    FakeSlackAPI,
    User,
)

BOB = "U0BOB00001"
SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*Approve?*"}}
MODAL = {
    "type": "modal",
    "callback_id": "output_reject_reason",
    "title": {"type": "plain_text", "text": "Reject"},
    "blocks": [],
    "private_metadata": "out_1",
}


@pytest.fixture(scope="module")
def _server() -> Iterator[FakeSlackAPI]:
    seeded = FakeSlackAPI(
        users=[User(BOB, "bob", "Bob Admin", "bobby", is_admin=True)],
        channels=[Channel("C0APPROVAL", "approvals", is_private=True)],
        usergroups={"S0REVIEWER": [USER_ID, BOB]},
    )
    with seeded as server:
        yield server


@pytest.fixture
def fake(_server: FakeSlackAPI) -> FakeSlackAPI:
    """One server for the module, reset per test: starting one per test costs more."""
    _server.reset()
    return _server


@pytest.fixture
def client(fake: FakeSlackAPI) -> WebClient:
    return WebClient(token=BOT_TOKEN, base_url=fake.base_url)


def _error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as caught:
        call()
    return caught.value


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def test_auth_test_identifies_the_bot(client: WebClient) -> None:
    response = client.auth_test()
    assert (response["user_id"], response["bot_id"], response["team_id"]) == (
        BOT_USER_ID,
        BOT_ID,
        TEAM_ID,
    )
    assert "chat:write" in response.headers["x-oauth-scopes"]


def test_post_message_answers_like_slack_and_is_recorded(
    fake: FakeSlackAPI, client: WebClient
) -> None:
    first = client.chat_postMessage(channel=CHANNEL_ID, text="Approve?", blocks=[SECTION])
    second = client.chat_postMessage(channel=CHANNEL_ID, text="again")

    assert first["channel"] == CHANNEL_ID
    assert first["message"]["bot_id"] == BOT_ID
    assert first["message"]["blocks"] == [SECTION]
    assert float(second["ts"]) > float(first["ts"])
    call = fake.last("chat.postMessage")
    assert call.token == BOT_TOKEN
    assert call.params == {"channel": CHANNEL_ID, "text": "again"}
    assert call.content_type.startswith("application/json")
    assert [m.text for m in fake.messages_in(CHANNEL_ID)] == ["Approve?", "again"]


def test_timestamps_stay_unique_and_ordered_under_concurrency(
    fake: FakeSlackAPI, client: WebClient
) -> None:
    stamps: list[str] = []
    lock = threading.Lock()

    def post(n: int) -> None:
        for i in range(10):
            ts = client.chat_postMessage(channel=CHANNEL_ID, text=f"{n}-{i}")["ts"]
            with lock:
                stamps.append(ts)

    threads = [threading.Thread(target=post, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(stamps)) == 60
    assert [m.ts for m in fake.messages_in(CHANNEL_ID)] == sorted(stamps, key=float)
    assert len(fake.calls("chat.postMessage")) == 60


def test_form_encoded_fields_are_recorded_decoded(fake: FakeSlackAPI, client: WebClient) -> None:
    client.api_call(
        "chat.postMessage", data={"channel": CHANNEL_ID, "blocks": json.dumps([SECTION])}
    )
    call = fake.last("chat.postMessage")
    assert call.params["blocks"] == [SECTION]
    assert call.raw_params["blocks"] == json.dumps([SECTION])
    assert fake.messages_in(CHANNEL_ID)[0].blocks == [SECTION]


def test_update_changes_the_message_and_keeps_blocks_it_leaves_out(
    fake: FakeSlackAPI, client: WebClient
) -> None:
    posted = client.chat_postMessage(channel=CHANNEL_ID, text="pending", blocks=[SECTION])

    updated = client.chat_update(channel=CHANNEL_ID, ts=posted["ts"], text="approved by bob")

    assert updated["ts"] == posted["ts"]
    [message] = fake.messages_in(CHANNEL_ID)
    assert (message.text, message.blocks, message.edited_ts is not None) == (
        "approved by bob",
        [SECTION],
        True,
    )
    client.chat_update(channel=CHANNEL_ID, ts=posted["ts"], text="done", blocks=[])
    assert fake.message(CHANNEL_ID, posted["ts"]).blocks == []


def test_only_the_apps_own_messages_can_be_updated_or_deleted(
    fake: FakeSlackAPI, client: WebClient
) -> None:
    theirs = fake.add_message(CHANNEL_ID, "a human wrote this")

    assert _error(lambda: client.chat_update(channel=CHANNEL_ID, ts=theirs.ts, text="x")).response[
        "error"
    ] == ("cant_update_message")
    assert _error(lambda: client.chat_delete(channel=CHANNEL_ID, ts=theirs.ts)).response[
        "error"
    ] == ("cant_delete_message")
    missing = _error(lambda: client.chat_update(channel=CHANNEL_ID, ts="1.000001", text="x"))
    assert missing.response["error"] == "message_not_found"


def test_delete_removes_the_message(fake: FakeSlackAPI, client: WebClient) -> None:
    posted = client.chat_postMessage(channel=CHANNEL_ID, text="oops")
    client.chat_delete(channel=CHANNEL_ID, ts=posted["ts"])
    assert fake.messages_in(CHANNEL_ID) == []


def test_ephemeral_messages_stay_out_of_the_channel(fake: FakeSlackAPI, client: WebClient) -> None:
    response = client.chat_postEphemeral(channel=CHANNEL_ID, user=BOB, text="only you")

    assert response["message_ts"]
    assert fake.messages_in(CHANNEL_ID) == []
    [ephemeral] = fake.ephemeral_messages(CHANNEL_ID, user=BOB)
    assert ephemeral.text == "only you"


def test_threads_and_conversations_replies(fake: FakeSlackAPI, client: WebClient) -> None:
    question = fake.add_message(CHANNEL_ID, "<@U0COSMOBOT> what is acme?")
    for n in range(3):
        client.chat_postMessage(channel=CHANNEL_ID, thread_ts=question.ts, text=f"part {n}")

    thread = fake.messages_in(CHANNEL_ID, thread_ts=question.ts)
    assert [m.text for m in thread] == ["<@U0COSMOBOT> what is acme?", "part 0", "part 1", "part 2"]
    replies = client.conversations_replies(channel=CHANNEL_ID, ts=question.ts, limit=2)
    assert [m["text"] for m in replies["messages"]] == ["<@U0COSMOBOT> what is acme?", "part 0"]
    assert replies["messages"][0]["reply_count"] == 3
    assert replies["has_more"] is True
    rest = client.conversations_replies(
        channel=CHANNEL_ID, ts=question.ts, cursor=replies["response_metadata"]["next_cursor"]
    )
    assert [m["text"] for m in rest["messages"]] == ["part 1", "part 2"]
    assert _error(lambda: client.conversations_replies(channel=CHANNEL_ID, ts="1.000002")).response[
        "error"
    ] == ("thread_not_found")


def test_posting_to_a_user_id_opens_a_dm(fake: FakeSlackAPI, client: WebClient) -> None:
    response = client.chat_postMessage(channel=BOB, text="your approval is needed")

    dm = response["channel"]
    assert dm.startswith("D")
    assert client.conversations_info(channel=dm)["channel"]["is_im"] is True
    assert [m.text for m in fake.messages_in(dm)] == ["your approval is needed"]


def test_a_strict_workspace_refuses_unknown_channels() -> None:
    with FakeSlackAPI(strict=True) as strict:
        client = WebClient(token=BOT_TOKEN, base_url=strict.base_url)
        error = _error(lambda: client.chat_postMessage(channel="C0NOWHERE1", text="hi"))
        assert error.response["error"] == "channel_not_found"
        assert client.chat_postMessage(channel=CHANNEL_ID, text="hi")["ok"]


def test_reactions_and_permalinks(fake: FakeSlackAPI, client: WebClient) -> None:
    posted = client.chat_postMessage(channel=CHANNEL_ID, text="done")
    client.reactions_add(channel=CHANNEL_ID, timestamp=posted["ts"], name="white_check_mark")

    assert fake.message(CHANNEL_ID, posted["ts"]).reactions == {"white_check_mark": [BOT_USER_ID]}
    again = _error(
        lambda: client.reactions_add(
            channel=CHANNEL_ID, timestamp=posted["ts"], name="white_check_mark"
        )
    )
    assert again.response["error"] == "already_reacted"
    link = client.chat_getPermalink(channel=CHANNEL_ID, message_ts=posted["ts"])["permalink"]
    assert link.endswith(f"/archives/{CHANNEL_ID}/p{posted['ts'].replace('.', '')}")


# --------------------------------------------------------------------------------------------
# Views, people, channels
# --------------------------------------------------------------------------------------------


def test_views_open_update_and_publish(fake: FakeSlackAPI, client: WebClient) -> None:
    opened = client.views_open(trigger_id="123.456.abc", view=MODAL)["view"]

    assert opened["id"].startswith("V")
    assert (opened["callback_id"], opened["private_metadata"]) == ("output_reject_reason", "out_1")
    reused = _error(lambda: client.views_open(trigger_id="123.456.abc", view=MODAL))
    assert reused.response["error"] == "exchanged_trigger_id"

    updated = client.views_update(
        view_id=opened["id"], hash=opened["hash"], view={**MODAL, "private_metadata": "out_2"}
    )["view"]
    assert fake.view(opened["id"])["private_metadata"] == "out_2"
    stale = _error(
        lambda: client.views_update(view_id=opened["id"], hash=opened["hash"], view=MODAL)
    )
    assert stale.response["error"] == "hash_conflict"
    assert updated["hash"] != opened["hash"]

    home = {"type": "home", "blocks": [SECTION]}
    client.views_publish(user_id=USER_ID, view=home)
    assert fake.home_view(USER_ID)["blocks"] == [SECTION]  # type: ignore[index]
    wrong = _error(lambda: client.views_open(trigger_id="t2", view=home))
    assert wrong.response["error"] == "invalid_arguments"


def test_users_info_gives_names_and_admin_flag(fake: FakeSlackAPI, client: WebClient) -> None:
    bob = client.users_info(user=BOB)["user"]
    assert (bob["real_name"], bob["profile"]["display_name"], bob["is_admin"]) == (
        "Bob Admin",
        "bobby",
        True,
    )
    fake.add_user("U0CAROL001", "carol", real_name="Carol")
    assert client.users_info(user="U0CAROL001")["user"]["is_admin"] is False
    unknown = _error(lambda: client.users_info(user="U0NOBODY01"))
    assert unknown.response["error"] == "user_not_found"


def test_conversations_info_and_usergroups(client: WebClient) -> None:
    info = client.conversations_info(channel="C0APPROVAL")["channel"]
    assert (info["name"], info["is_private"]) == ("approvals", True)
    assert client.usergroups_users_list(usergroup="S0REVIEWER")["users"] == [USER_ID, BOB]
    assert _error(lambda: client.usergroups_users_list(usergroup="S0NONE")).response["error"] == (
        "no_such_subteam"
    )
    assert _error(lambda: client.conversations_info(channel="C0NOWHERE1")).response["error"] == (
        "channel_not_found"
    )


# --------------------------------------------------------------------------------------------
# Authentication, errors, rate limits, latency
# --------------------------------------------------------------------------------------------


def test_missing_and_invalid_tokens_are_refused(fake: FakeSlackAPI) -> None:
    anonymous = WebClient(base_url=fake.base_url)
    stranger = WebClient(token="xoxb-not-ours", base_url=fake.base_url)

    assert _error(anonymous.auth_test).response["error"] == "not_authed"
    assert _error(stranger.auth_test).response["error"] == "invalid_auth"
    assert [c.ok for c in fake.calls("auth.test")] == [False, False]


def test_unknown_methods_are_a_404(client: WebClient) -> None:
    error = _error(lambda: client.api_call("files.upload"))
    assert (error.response.status_code, error.response["error"]) == (404, "unknown_method")


def test_injected_errors_raise_slack_api_error(fake: FakeSlackAPI, client: WebClient) -> None:
    fake.fail("chat.postMessage", "channel_not_found", channel="C0APPROVAL")
    fake.fail("chat.update", "msg_too_long", times=1)

    blocked = _error(lambda: client.chat_postMessage(channel="C0APPROVAL", text="x"))
    assert blocked.response["error"] == "channel_not_found"
    assert client.chat_postMessage(channel=CHANNEL_ID, text="x")["ok"]  # other channels work
    ts = fake.last("chat.postMessage").response["ts"]
    assert _error(lambda: client.chat_update(channel=CHANNEL_ID, ts=ts, text="y")).response[
        "error"
    ] == ("msg_too_long")
    assert client.chat_update(channel=CHANNEL_ID, ts=ts, text="y")["ok"]  # it was once only
    assert _error(lambda: client.chat_postMessage(channel="C0APPROVAL", text="x"))  # persistent
    fake.clear_failures()
    assert client.chat_postMessage(channel="C0APPROVAL", text="x")["ok"]


def test_a_429_without_a_retry_handler_surfaces_retry_after(
    fake: FakeSlackAPI, client: WebClient
) -> None:
    fake.rate_limit("chat.postMessage", retry_after=7)

    error = _error(lambda: client.chat_postMessage(channel=CHANNEL_ID, text="x"))

    assert error.response.status_code == 429
    assert error.response["error"] == "ratelimited"
    assert error.response.headers["Retry-After"] == "7"


def test_the_rate_limit_retry_handler_waits_and_retries(fake: FakeSlackAPI) -> None:
    client = WebClient(token=BOT_TOKEN, base_url=fake.base_url)
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=1))
    fake.rate_limit("chat.postMessage", retry_after=0)  # the SDK adds up to 1 s of jitter

    assert client.chat_postMessage(channel=CHANNEL_ID, text="eventually")["ok"]

    assert [c.status for c in fake.calls("chat.postMessage")] == [429, 200]
    assert len(fake.messages_in(CHANNEL_ID)) == 1


def test_throttle_limits_per_channel_like_slack(fake: FakeSlackAPI, client: WebClient) -> None:
    fake.throttle("chat.postMessage", limit=2, per=60)

    for _ in range(2):
        client.chat_postMessage(channel=CHANNEL_ID, text="fine")
    error = _error(lambda: client.chat_postMessage(channel=CHANNEL_ID, text="too fast"))
    assert error.response.status_code == 429
    assert 55 <= int(error.response.headers["Retry-After"]) <= 60
    assert client.chat_postMessage(channel="C0APPROVAL", text="another channel")["ok"]


def test_latency_delays_only_the_chosen_method(fake: FakeSlackAPI, client: WebClient) -> None:
    fake.set_latency(0.2, "users.info")

    started = time.monotonic()
    client.auth_test()
    quick = time.monotonic() - started
    client.users_info(user=USER_ID)
    slow = time.monotonic() - started - quick

    assert slow >= 0.2 > quick


def test_wait_for_blocks_until_calls_arrive(fake: FakeSlackAPI, client: WebClient) -> None:
    def later() -> None:
        time.sleep(0.05)
        for _ in range(2):
            client.chat_postMessage(channel=CHANNEL_ID, text="async reply")

    worker = threading.Thread(target=later)
    worker.start()
    calls = fake.wait_for("chat.postMessage", count=2, timeout=5)
    worker.join()

    assert [c.params["text"] for c in calls] == ["async reply", "async reply"]
    with pytest.raises(TimeoutError, match=r"expected 1 views.open call\(s\).*got 0"):
        fake.wait_for("views.open", timeout=0.05)


def test_last_names_what_was_called_when_nothing_matches(
    fake: FakeSlackAPI, client: WebClient
) -> None:
    client.auth_test()
    with pytest.raises(AssertionError, match=r"no chat.update call.*\['auth.test'\]"):
        fake.last("chat.update")


# --------------------------------------------------------------------------------------------
# Streaming and assistant threads
# --------------------------------------------------------------------------------------------


def test_chat_stream_builds_one_message_in_the_thread(
    fake: FakeSlackAPI, client: WebClient
) -> None:
    question = fake.add_message(CHANNEL_ID, "<@U0COSMOBOT> explain")
    stream = client.chat_stream(
        channel=CHANNEL_ID,
        thread_ts=question.ts,
        recipient_team_id=TEAM_ID,
        recipient_user_id=USER_ID,
        buffer_size=1,
    )
    stream.append(markdown_text="Acme is ")
    stream.append(markdown_text="a customer")
    stream.stop(markdown_text=".", blocks=[SECTION])

    assert [c.method for c in fake.calls()] == [
        "chat.startStream",
        "chat.appendStream",
        "chat.stopStream",
    ]
    [_, answer] = fake.messages_in(CHANNEL_ID, thread_ts=question.ts)
    assert (answer.text, answer.blocks, answer.streaming) == (
        "Acme is a customer.",
        [SECTION],
        False,
    )
    late = _error(
        lambda: client.chat_appendStream(channel=CHANNEL_ID, ts=answer.ts, markdown_text="x")
    )
    assert late.response["error"] == "message_not_in_streaming_state"


def test_streams_need_a_thread_and_in_channels_a_recipient(client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL_ID, text="q")["ts"]
    no_recipient = _error(
        lambda: client.chat_startStream(channel=CHANNEL_ID, thread_ts=parent, markdown_text="a")
    )
    assert no_recipient.response["error"] == "invalid_arguments"
    no_thread = _error(
        lambda: client.api_call(
            "chat.startStream", json={"channel": "D0ALICE001", "markdown_text": "a"}
        )
    )
    assert no_thread.response["error"] == "invalid_arguments"
    dm_parent = client.chat_postMessage(channel="D0ALICE001", text="q")["ts"]
    assert client.chat_startStream(channel="D0ALICE001", thread_ts=dm_parent, markdown_text="a")[
        "ok"
    ]


def test_streams_expire_like_slacks() -> None:
    with FakeSlackAPI(stream_lifetime=0.05) as short:
        client = WebClient(token=BOT_TOKEN, base_url=short.base_url)
        parent = client.chat_postMessage(channel="D0ALICE001", text="q")["ts"]
        ts = client.chat_startStream(channel="D0ALICE001", thread_ts=parent)["ts"]
        time.sleep(0.1)
        late = _error(lambda: client.chat_stopStream(channel="D0ALICE001", ts=ts))
        assert late.response["error"] == "message_not_in_streaming_state"


def test_stream_chunks_are_checked_like_slacks(fake: FakeSlackAPI, client: WebClient) -> None:
    parent = client.chat_postMessage(channel="D0ALICE001", text="q")["ts"]
    task = {"type": "task_update", "id": "t1", "title": "crm_lookup", "status": "in_progress"}
    ts = client.chat_startStream(channel="D0ALICE001", thread_ts=parent, chunks=[task])["ts"]
    done = {**task, "status": "complete", "output": "1 account"}
    client.chat_appendStream(channel="D0ALICE001", ts=ts, chunks=[done])

    for bad in (
        {**task, "status": "awaiting"},
        {"type": "task_update", "title": "no id", "status": "pending"},
        {"type": "plan_update"},
        {"type": "sparkles"},
    ):
        refused = _error(
            lambda b=bad: client.chat_appendStream(channel="D0ALICE001", ts=ts, chunks=[b])
        )
        assert refused.response["error"] == "invalid_chunks"
    empty = _error(lambda: client.chat_appendStream(channel="D0ALICE001", ts=ts))
    assert empty.response["error"] == "no_text"

    assert [c["status"] for c in fake.message("D0ALICE001", ts).chunks] == [
        "in_progress",
        "complete",
    ]


def test_streaming_refusals_can_be_scripted_per_workspace(
    fake: FakeSlackAPI, client: WebClient
) -> None:
    fake.fail("chat.startStream", "not_allowed")
    parent = client.chat_postMessage(channel="D0ALICE001", text="q")["ts"]

    refused = _error(lambda: client.chat_startStream(channel="D0ALICE001", thread_ts=parent))

    assert refused.response["error"] == "not_allowed"
    assert [m.ts for m in fake.messages_in("D0ALICE001")] == [parent]


def test_agent_session_status_is_recorded_per_thread(fake: FakeSlackAPI, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL_ID, text="q")["ts"]

    first = client.agents_sessions_setStatus(
        channel_id=CHANNEL_ID,
        thread_ts=parent,
        status="processing",
        title="Acme",
        initiator_user_id=USER_ID,
    )
    fake.subscribe_events("agent_session_stopped")
    second = client.agents_sessions_setStatus(
        channel_id=CHANNEL_ID, thread_ts=parent, status="suspended"
    )

    assert first["warning"] == "missing_agent_session_stopped_event_subscription"
    assert "warning" not in second.data
    assert fake.session_statuses(CHANNEL_ID, parent) == ["processing", "suspended"]
    assert fake.session_history(CHANNEL_ID, parent)[0].initiator_user_id == USER_ID
    bad = _error(
        lambda: client.agents_sessions_setStatus(
            channel_id=CHANNEL_ID, thread_ts=parent, status="thinking"
        )
    )
    assert bad.response["error"] == "invalid_arguments"
    nowhere = _error(
        lambda: client.agents_sessions_setStatus(
            channel_id="C0NOWHERE1", thread_ts=parent, status="active"
        )
    )
    assert nowhere.response["error"] == "channel_not_found"
    ts = client.chat_startStream(channel="D0ALICE001", thread_ts=parent)["ts"]
    client.chat_stopStream(channel="D0ALICE001", ts=ts, session_status="active")
    assert fake.session_statuses("D0ALICE001", parent) == ["active"]


def test_tiers_limit_per_method_across_the_workspace(fake: FakeSlackAPI, client: WebClient) -> None:
    fake.enforce_tiers({"chat.update": (3, 60.0, False)})
    ts = [client.chat_postMessage(channel=c, text="x")["ts"] for c in (CHANNEL_ID, "C0APPROVAL")]

    client.chat_update(channel=CHANNEL_ID, ts=ts[0], text="1")
    client.chat_update(channel="C0APPROVAL", ts=ts[1], text="2")
    client.chat_update(channel=CHANNEL_ID, ts=ts[0], text="3")
    limited = _error(lambda: client.chat_update(channel="C0APPROVAL", ts=ts[1], text="4"))

    assert limited.response.status_code == 429
    assert [c.method for c in fake.rate_limited()] == ["chat.update"]
    assert client.chat_postMessage(channel="C0APPROVAL", text="other methods are free")["ok"]


def test_assistant_thread_status_clears_when_the_app_replies(
    fake: FakeSlackAPI, client: WebClient
) -> None:
    thread = fake.add_message("D0ALICE001", "help me").ts
    client.assistant_threads_setStatus(
        channel_id="D0ALICE001", thread_ts=thread, status="is thinking…"
    )
    client.assistant_threads_setTitle(channel_id="D0ALICE001", thread_ts=thread, title="Help")
    prompts = [{"title": "Summarise", "message": "Summarise the thread"}]
    client.assistant_threads_setSuggestedPrompts(
        channel_id="D0ALICE001", thread_ts=thread, prompts=prompts
    )
    assert fake.assistant_thread("D0ALICE001", thread).status == "is thinking…"

    client.chat_postMessage(channel="D0ALICE001", thread_ts=thread, text="here you go")

    state = fake.assistant_thread("D0ALICE001", thread)
    assert (state.status, state.title, list(state.prompts)) == ("", "Help", prompts)


# --------------------------------------------------------------------------------------------
# response_url and OAuth
# --------------------------------------------------------------------------------------------


def test_response_url_replaces_the_original_message(fake: FakeSlackAPI, client: WebClient) -> None:
    posted = client.chat_postMessage(channel=CHANNEL_ID, text="Approve?", blocks=[SECTION])
    url = fake.response_url(CHANNEL_ID, posted["ts"])

    WebhookClient(url).send(text="Approved by <@U0BOB00001>", replace_original=True)

    assert fake.last("response_url").params["replace_original"] is True
    [message] = fake.messages_in(CHANNEL_ID)
    assert (message.text, message.blocks) == ("Approved by <@U0BOB00001>", [])
    WebhookClient(url).send(text="only you see this")
    assert [m.text for m in fake.ephemeral_messages(user=USER_ID)] == ["only you see this"]


def test_oauth_exchanges_a_code_once_for_a_working_token(fake: FakeSlackAPI) -> None:
    anonymous = WebClient(base_url=fake.base_url)
    code = fake.issue_oauth_code(redirect_uri="https://testserver/slack/oauth_redirect")

    granted = anonymous.oauth_v2_access(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        code=code,
        redirect_uri="https://testserver/slack/oauth_redirect",
    )

    assert granted["team"]["id"] == TEAM_ID
    assert granted["bot_user_id"] == BOT_USER_ID
    installed = WebClient(token=granted["access_token"], base_url=fake.base_url)
    assert installed.auth_test()["bot_id"] == BOT_ID
    reused = _error(
        lambda: anonymous.oauth_v2_access(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=code
        )
    )
    assert reused.response["error"] == "invalid_code"
    wrong = _error(
        lambda: anonymous.oauth_v2_access(client_id=CLIENT_ID, client_secret="x", code="c")
    )
    assert wrong.response["error"] == "bad_client_secret"


def test_oauth_token_rotation_refreshes(fake: FakeSlackAPI) -> None:
    anonymous = WebClient(base_url=fake.base_url)
    code = fake.issue_oauth_code(token_rotation=True)
    first = anonymous.oauth_v2_access(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=code)
    assert first["expires_in"] == 43_200

    refreshed = anonymous.oauth_v2_access(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        grant_type="refresh_token",
        refresh_token=first["refresh_token"],
    )

    assert refreshed["access_token"] != first["access_token"]
    assert refreshed["access_token"].startswith("xoxe.xoxb-")
    token = refreshed["access_token"]
    assert WebClient(token=token, base_url=fake.base_url).auth_test()["ok"]


# --------------------------------------------------------------------------------------------
# AsyncWebClient (what Bolt's AsyncApp uses)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def async_client(fake: FakeSlackAPI) -> AsyncWebClient:
    return AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url)


async def test_async_client_posts_updates_and_reads(
    fake: FakeSlackAPI, async_client: AsyncWebClient
) -> None:
    posted = await async_client.chat_postMessage(channel=CHANNEL_ID, text="hi", blocks=[SECTION])
    await async_client.chat_update(channel=CHANNEL_ID, ts=posted["ts"], text="bye")
    await async_client.chat_postEphemeral(channel=CHANNEL_ID, user=BOB, text="psst")
    opened = await async_client.views_open(trigger_id="t-async", view=MODAL)
    bob = await async_client.users_info(user=BOB)

    assert [m.text for m in fake.messages_in(CHANNEL_ID)] == ["bye"]
    assert opened["view"]["callback_id"] == "output_reject_reason"
    assert bob["user"]["is_admin"] is True
    assert len(await fake.wait_for_async("chat.update")) == 1


async def test_async_client_raises_injected_errors(
    fake: FakeSlackAPI, async_client: AsyncWebClient
) -> None:
    fake.fail("chat.postMessage", "channel_not_found")
    with pytest.raises(SlackApiError) as caught:
        await async_client.chat_postMessage(channel=CHANNEL_ID, text="x")
    assert caught.value.response["error"] == "channel_not_found"


async def test_async_rate_limit_handler_retries(
    fake: FakeSlackAPI, async_client: AsyncWebClient
) -> None:
    async_client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    fake.rate_limit("chat.postMessage", retry_after=0)

    assert (await async_client.chat_postMessage(channel=CHANNEL_ID, text="x"))["ok"]
    assert [c.status for c in fake.calls("chat.postMessage")] == [429, 200]


async def test_async_chat_stream(fake: FakeSlackAPI, async_client: AsyncWebClient) -> None:
    parent = fake.add_message("D0ALICE001", "hi").ts
    stream = await async_client.chat_stream(channel="D0ALICE001", thread_ts=parent, buffer_size=1)
    await stream.append(markdown_text="hel")
    await stream.stop(markdown_text="lo")
    assert fake.messages_in("D0ALICE001", thread_ts=parent)[-1].text == "hello"


# --------------------------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------------------------


def test_stop_leaves_no_handler_threads_behind() -> None:
    server = FakeSlackAPI().start()
    client = WebClient(token=BOT_TOKEN, base_url=server.base_url)
    client.auth_test()  # a keep-alive connection whose handler would otherwise idle on
    port = server.port
    server.stop()

    names = [t.name for t in threading.enumerate()]
    assert f"{HANDLER_THREAD_NAME}:{port}" not in names
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url
