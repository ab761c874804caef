"""The per-workspace, per-method limiter at the client: the real `slack_sdk` client against the
fake Slack with Slack's kind of limits switched on. Windows are scaled down (a few calls per
second instead of per minute) so the tests stay short; the arithmetic is the same."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from slack_sdk.errors import SlackApiError

from bot.slack.app import web_client
from bot.slack.limiter import MARGIN, SKEW, SlackLimiter, Tier
from tests.fakes.slack_api import BOT_TOKEN, CHANNEL_ID, FakeSlackAPI


@pytest.fixture(scope="module")
def _server() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI() as server:
        yield server


@pytest.fixture
def fake(_server: FakeSlackAPI) -> FakeSlackAPI:
    _server.reset()
    return _server


async def _updates(fake: FakeSlackAPI, limiter: SlackLimiter | None, count: int) -> list[bool]:
    client = web_client(BOT_TOKEN, fake.base_url, limiter)
    posted = [
        (await client.chat_postMessage(channel=f"C0CHAN{i:04d}", text="x"))["ts"]
        for i in range(count)
    ]

    async def update(i: int) -> bool:
        try:
            await client.chat_update(channel=f"C0CHAN{i:04d}", ts=posted[i], text="edited")
            return True
        except SlackApiError:
            return False

    return list(await asyncio.gather(*(update(i) for i in range(count))))


async def test_concurrent_calls_share_the_workspace_window_and_never_see_a_429(fake):
    fake.enforce_tiers({"chat.update": (4, 1.0, False)})
    limiter = SlackLimiter({"chat.update": Tier(4, 1.0)})

    done = await _updates(fake, limiter, 12)

    assert all(done)
    assert fake.rate_limited() == []
    assert len(fake.calls("chat.update", ok=True)) == 12


async def test_without_the_limiter_the_same_load_is_rate_limited(fake):
    fake.enforce_tiers({"chat.update": (4, 1.0, False)})

    await _updates(fake, None, 12)

    assert fake.rate_limited("chat.update")  # what the limiter is for


async def test_a_429_pauses_the_method_for_its_retry_after_and_the_call_is_retried(fake):
    limiter = SlackLimiter({})
    client = web_client(BOT_TOKEN, fake.base_url, limiter)
    fake.rate_limit("chat.postMessage", times=1, retry_after=1)

    sent = await client.chat_postMessage(channel=CHANNEL_ID, text="eventually")

    assert sent["ok"]
    assert [c.status for c in fake.calls("chat.postMessage")] == [429, 200]
    assert limiter.rate_limited == 1


async def test_a_burst_of_posts_in_one_channel_is_paced_after_slacks_first_429(fake):
    fake.enforce_tiers({"chat.postMessage": (1, 0.2, True)})
    limiter = SlackLimiter({"chat.postMessage": Tier(1, 0.2, per_channel=True, bursts=True)})
    client = web_client(BOT_TOKEN, fake.base_url, limiter)

    results = await asyncio.gather(
        *(client.chat_postMessage(channel=CHANNEL_ID, text=f"m{i}") for i in range(6))
    )

    assert all(r["ok"] for r in results)
    assert len(fake.messages_in(CHANNEL_ID)) == 6
    # Slack tolerates bursts, so the first ones go at once; after a 429 they are paced.
    assert 1 <= len(fake.rate_limited()) < 6


async def test_a_caller_can_ask_how_long_a_call_would_wait_without_taking_its_slot() -> None:
    now = [100.0]
    limiter = SlackLimiter({"chat.update": Tier(2, 60.0)}, clock=lambda: now[0])
    assert limiter.wait("W", "chat.update") == 0
    assert limiter.wait("W", "chat.update") == 0  # asking took nothing
    await limiter.acquire("W", "chat.update")
    await limiter.acquire("W", "chat.update")
    span = 60.0 * MARGIN + SKEW
    assert limiter.wait("W", "chat.update") == pytest.approx(span)
    assert limiter.wait("W2", "chat.update") == 0  # another workspace's window
    assert limiter.wait("W", "auth.test") == 0  # no tier: never held back before a 429
    now[0] += span + 0.01
    assert limiter.wait("W", "chat.update") == 0
