"""The guard, the request builders and the fake Web API around a real Bolt `AsyncApp`.

The shape the Slack layer will have: FastAPI route `/slack/events` -> `SlackRequestGuard` ->
`AsyncSlackRequestHandler` -> listeners that call the Web API (here `FakeSlackAPI`). Bolt
checks the signature a second time, which proves the guard hands the body on untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.verification import SlackRequestGuard, VerifiedRequest, verified_request
from tests.fakes.slack_api import BOT_TOKEN, BOT_USER_ID, CHANNEL_ID, USER_ID, FakeSlackAPI
from tests.fakes.slack_requests import SIGNING_SECRET, SlackRequests


class Harness:
    """A FastAPI app with Bolt behind the guard, and what its listeners saw."""

    def __init__(self, fake: FakeSlackAPI) -> None:
        self.verified: list[VerifiedRequest] = []
        self.submissions: list[dict[str, Any]] = []
        bolt = AsyncApp(
            client=AsyncWebClient(token=BOT_TOKEN, base_url=fake.base_url),
            signing_secret=SIGNING_SECRET,
            process_before_response=True,  # listeners finish before the response: deterministic
        )

        @bolt.event("app_mention")
        async def mention(event: dict[str, Any], say: Any) -> None:
            await say(text="On it.", thread_ts=event.get("thread_ts") or event["ts"])

        @bolt.action("output_approve")
        async def approve(ack: Any, body: dict[str, Any], client: AsyncWebClient) -> None:
            await ack()
            value = body["actions"][0]["value"]
            await client.chat_update(
                channel=body["channel"]["id"], ts=body["message"]["ts"], text=f"{value} approved"
            )

        @bolt.view("output_reject_reason")
        async def reject_reason(ack: Any, view: dict[str, Any]) -> None:
            await ack()
            self.submissions.append(view)

        @bolt.command("/agent")
        async def agent(ack: Any, command: dict[str, Any]) -> None:
            await ack(f"you asked for {command['text']}")

        handler = AsyncSlackRequestHandler(bolt)
        self.app = FastAPI()

        @self.app.post("/slack/events")
        async def events(request: Request) -> Response:
            self.verified.append(verified_request(request))
            response: Response = await handler.handle(request)
            return response

        self.app.add_middleware(SlackRequestGuard, signing_secret=SIGNING_SECRET)


@pytest.fixture(scope="module")
def _server() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI() as server:
        yield server


@pytest.fixture
def fake(_server: FakeSlackAPI) -> FakeSlackAPI:
    _server.reset()
    return _server


@pytest.fixture
def harness(fake: FakeSlackAPI) -> Harness:
    return Harness(fake)


@pytest.fixture
def client(harness: Harness) -> Iterator[TestClient]:
    with TestClient(harness.app) as test_client:
        yield test_client


slack = SlackRequests(SIGNING_SECRET)


def test_url_verification_is_answered_by_bolt(client: TestClient) -> None:
    response = slack.url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P").send(
        client
    )
    assert response.status_code == 200
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


def test_a_mention_in_a_thread_is_answered_in_that_thread(
    client: TestClient, fake: FakeSlackAPI
) -> None:
    question = fake.add_message(CHANNEL_ID, "<@U0COSMOBOT> status?")

    response = slack.app_mention("<@U0COSMOBOT> status?", ts=question.ts).send(client)

    assert response.status_code == 200
    reply = fake.last("chat.postMessage")
    assert (reply.params["thread_ts"], reply.params["text"]) == (question.ts, "On it.")
    assert [m.text for m in fake.messages_in(CHANNEL_ID, thread_ts=question.ts)] == [
        "<@U0COSMOBOT> status?",
        "On it.",
    ]


def test_an_approve_click_updates_the_approval_message(
    client: TestClient, fake: FakeSlackAPI
) -> None:
    posted = fake.add_message(CHANNEL_ID, "Approve out_7?", user=BOT_USER_ID)  # posted earlier

    click = slack.block_action("output_approve", "out_7", message_ts=posted.ts)
    assert click.send(client).status_code == 200

    assert fake.message(CHANNEL_ID, posted.ts).text == "out_7 approved"


def test_a_reject_reason_submission_reaches_the_view_listener(
    client: TestClient, harness: Harness
) -> None:
    submit = slack.view_submission(
        "output_reject_reason", {"reason": {"reason_input": "too risky"}}, private_metadata="out_9"
    )

    assert submit.send(client).status_code == 200

    [view] = harness.submissions
    assert view["private_metadata"] == "out_9"
    assert view["state"]["values"]["reason"]["reason_input"]["value"] == "too risky"


def test_a_slash_command_is_acked_with_text(client: TestClient) -> None:
    response = slack.slash_command("/agent", "help", user=USER_ID).send(client)
    assert response.status_code == 200
    assert response.text == "you asked for help"


def test_the_route_sees_slacks_retries(client: TestClient, harness: Harness) -> None:
    mention = slack.app_mention("<@U0COSMOBOT> hi")
    mention.send(client)
    mention.retry(1, "http_timeout").send(client)

    first, again = harness.verified
    assert first.payload["event_id"] == again.payload["event_id"]
    assert (first.retry_num, again.retry_num, again.retry_reason) == (None, 1, "http_timeout")


@pytest.mark.parametrize(
    "request_name",
    ["5000-digit timestamp", "non-ascii signature", "signed malformed JSON", "forged"],
)
def test_hostile_requests_stop_at_the_guard_and_bolt_logs_nothing(
    request_name: str,
    client: TestClient,
    fake: FakeSlackAPI,
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
) -> None:
    mention = slack.app_mention("<@U0COSMOBOT> secret plans")
    hostile = {
        "5000-digit timestamp": mention.with_headers({"X-Slack-Request-Timestamp": "1" * 5000}),
        "non-ascii signature": mention.with_headers(
            {"X-Slack-Signature": mention.headers["X-Slack-Signature"][:-1] + "ü"}
        ),
        "signed malformed JSON": mention.with_body(mention.body[:-1]),
        "forged": mention.resigned(signing_secret="guessed"),
    }[request_name]
    caplog.set_level(logging.DEBUG)

    response = client.post(
        "/slack/events",
        content=hostile.body,
        headers={k.encode(): v.encode("utf-8") for k, v in hostile.headers.items()},
    )

    assert response.status_code == (400 if request_name == "signed malformed JSON" else 401)
    assert response.headers["content-type"] == "application/problem+json"
    assert harness.verified == []
    assert fake.calls() == []
    assert not [r for r in caplog.records if r.name.startswith("slack_bolt")]
    assert "secret plans" not in caplog.text


@pytest.mark.xfail(
    strict=True,
    reason="slack_bolt.request.internals.parse_body treats any form body containing the "
    "substring 'payload' as interactivity, finds no payload field and dispatches an empty body: "
    "Bolt answers 404. Strict, so a Bolt fix or our workaround turns this red: drop the mark.",
)
def test_a_command_mentioning_payload_reaches_the_listener(client: TestClient) -> None:
    response = slack.slash_command("/agent", "show payload of out_1").send(client)
    assert response.status_code == 200
