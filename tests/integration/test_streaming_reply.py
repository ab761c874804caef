"""`StreamingReply` against the fake Slack through the real `AsyncWebClient`: what the thread
ends up showing for the text and steps a turn reports."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.app import web_client
from bot.slack.limiter import SlackLimiter, Tier
from bot.slack.reply import ThreadReply
from bot.slack.streaming import StreamingPolicy, StreamingReply
from core.agent.engine import ToolStep
from tests.fakes.slack_api import BOT_TOKEN, CHANNEL_ID, TEAM_ID, USER_ID, FakeSlackAPI


@pytest.fixture(scope="module")
def _server() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI() as server:
        yield server


@pytest.fixture
def fake(_server: FakeSlackAPI) -> FakeSlackAPI:
    _server.reset()
    return _server


def reply_in(
    fake: FakeSlackAPI, policy: StreamingPolicy | None = None, *, client: Any = None
) -> StreamingReply:
    parent = fake.add_message(CHANNEL_ID, "<@U0COSMOBOT> question")
    client = client or AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url)
    return StreamingReply(
        client, CHANNEL_ID, parent.ts, team_id=TEAM_ID, user_id=USER_ID, policy=policy, interval=0
    )


async def test_the_recorded_reply_does_not_repeat_what_was_streamed(fake):
    reply = reply_in(fake)
    await reply.start()
    for delta in ("Let me check.", "\n\n"):
        await reply.write(delta)
    await reply.tool(ToolStep("toolu_1", "lookup_account", "read", "in_progress"))
    for delta in ("\n\n", "Acme renews."):
        await reply.write(delta)
    await asyncio.sleep(0.2)  # the batched text goes out

    # The engine joins its texts with one blank line; the stream had two.
    await reply.finish("Let me check.\n\nAcme renews.")

    shown = fake.message(CHANNEL_ID, reply.stream_ts or "")
    assert shown.text.count("Acme renews.") == 1 and shown.text.startswith("Let me check.")
    assert not shown.streaming


async def test_a_final_text_that_does_not_continue_the_stream_follows_it(fake):
    reply = reply_in(fake)
    await reply.start()
    await reply.write("Half an answer")
    await reply.finish("⚠️ Something went wrong on my side.")

    shown = fake.message(CHANNEL_ID, reply.stream_ts or "")
    assert shown.text == "Half an answer\n\n⚠️ Something went wrong on my side."


async def test_a_stream_ended_elsewhere_gets_the_answer_in_the_same_message(fake):
    """Slack ended it, or a rerun of the turn stopped it to adopt it: either way one
    message holds the answer (the chaos test saw two full answers in one thread)."""
    reply = reply_in(fake)
    await reply.start()
    await reply.write("Partial")
    fake.stop_streams(CHANNEL_ID, reply.thread_ts)

    await reply.write(" more")
    await reply.finish("Partial more, and the end.")

    texts = [m.text for m in fake.messages_in(CHANNEL_ID, thread_ts=reply.thread_ts)][1:]
    assert texts == ["Partial more, and the end."]


async def test_only_refusals_of_the_workspace_are_remembered(fake):
    policy = StreamingPolicy()
    fake.fail("chat.startStream", "internal_error", times=1)
    first = reply_in(fake, policy)
    await first.start()
    fake.fail("chat.startStream", "not_allowed", times=1)
    second = reply_in(fake, policy)
    await second.start()

    assert first.fallback is not None and second.fallback is not None
    assert policy.refused == {TEAM_ID: "not_allowed"}
    assert not policy.allows(TEAM_ID) and policy.allows("T0OTHER001")


async def test_text_written_while_an_append_is_on_its_way_is_not_lost(fake):
    fake.set_latency(1.0, "chat.appendStream")
    reply = reply_in(fake)
    reply.interval = 5.0  # later text waits for the end
    await reply.start()
    first = asyncio.create_task(reply.write("first"))  # the first text goes out at once
    await asyncio.sleep(0.1)  # the fake holds its answer for 1 s
    assert not first.done()
    await reply.write(" second")  # while that append is still on its way
    await first

    await reply.finish("first second")

    assert fake.message(CHANNEL_ID, reply.stream_ts or "").text == "first second"


async def test_a_space_already_streamed_is_not_streamed_again(fake):
    reply = reply_in(fake)
    reply.interval = 5.0
    await reply.start()
    await reply.write("Hi from ")  # the first text goes out at once, its space with it
    await reply.write("your workspace.")

    await reply.finish("Hi from your workspace.")

    assert fake.message(CHANNEL_ID, reply.stream_ts or "").text == "Hi from your workspace."


def limited_client(fake: FakeSlackAPI, tiers: dict[str, Tier]) -> Any:
    """The client the app builds (`web_client`), with a limiter keeping `tiers`."""
    return web_client(BOT_TOKEN, fake.base_url, SlackLimiter(tiers))


async def test_text_a_full_window_would_hold_back_goes_with_the_final_call(fake):
    """Slack's appendStream window is full (here: one call a minute, taken by another
    turn's first text): a turn that ends before it opens shows all its text through
    `stopStream`, without an append queued behind the window, and without waiting for it."""
    client = limited_client(fake, {"chat.appendStream": Tier(1, 60.0)})
    earlier = reply_in(fake, client=client)
    await earlier.start()
    await earlier.write("The first text goes at once.")
    assert len(fake.calls("chat.appendStream")) == 1

    reply = reply_in(fake, client=client)
    await reply.start()
    await reply.write("Acme renews ")
    await reply.write("in May.")
    await asyncio.wait_for(reply.finish("Acme renews in May."), 5)

    assert fake.message(CHANNEL_ID, reply.stream_ts or "").text == "Acme renews in May."
    assert [c.params.get("ts") for c in fake.calls("chat.appendStream")] == [earlier.stream_ts]
    await earlier.finish("The first text goes at once.")


async def test_a_placeholder_edit_a_full_window_would_hold_back_goes_with_the_final_edit(fake):
    """The same without native streaming, where the final call is a `chat.update` too: the
    answer costs one edit, made when the window opens, instead of two in a row."""
    client = limited_client(fake, {"chat.update": Tier(1, 1.0)})
    other = await client.chat_postMessage(channel=CHANNEL_ID, text="another turn's answer")
    parent = fake.add_message(CHANNEL_ID, "<@U0COSMOBOT> question")
    reply = ThreadReply(client, CHANNEL_ID, parent.ts, interval=0)
    await reply.start()
    await client.chat_update(channel=CHANNEL_ID, ts=other["ts"], text="edited")  # fills it
    await reply.write("Acme renews ")
    await reply.write("in May.")
    await asyncio.wait_for(reply.finish("Acme renews in May."), 5)

    edits = [c.params.get("text") for c in fake.calls("chat.update")]
    assert edits == ["edited", "Acme renews in May."]
    assert fake.message(CHANNEL_ID, reply.message_ts[0]).text == "Acme renews in May."
