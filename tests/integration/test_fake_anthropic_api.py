"""The real `anthropic` SDK against FakeAnthropicAPI.

Every other test that needs Claude trusts this fake, so these tests pin down that the SDK
really parses what it serves: messages, streams, tool calls, errors, retries and usage.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam, ToolParam

from tests.fakes.anthropic_api import (
    HANDLER_THREAD_NAME,
    FakeAnthropicAPI,
    RecordedRequest,
    Reply,
    Text,
    ToolUse,
    estimate_tokens,
)

MODEL = "claude-test-1"
HELLO: list[MessageParam] = [{"role": "user", "content": "hi"}]
SEARCH_TOOL: ToolParam = {
    "name": "search_crm",
    "description": "Search the CRM.",
    "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def _server() -> Iterator[FakeAnthropicAPI]:
    with FakeAnthropicAPI() as server:
        yield server


@pytest.fixture
def fake(_server: FakeAnthropicAPI) -> FakeAnthropicAPI:
    """One server for the module, wiped per test: starting one per test costs more than the
    tests themselves."""
    _server.reset()
    return _server


@pytest.fixture(scope="module")
def sdk(_server: FakeAnthropicAPI) -> Iterator[anthropic.Anthropic]:
    """The real SDK client, named so it does not shadow conftest's API `client`."""
    with anthropic.Anthropic(base_url=_server.base_url, api_key="test-key", max_retries=0) as c:
        yield c


@pytest.fixture
def make_sdk() -> Iterator[Callable[..., anthropic.Anthropic]]:
    """Extra SDK clients (other retries or keys), closed at teardown so no socket leaks."""
    made: list[anthropic.Anthropic] = []

    def make(
        fake: FakeAnthropicAPI, *, api_key: str = "test-key", max_retries: int = 0
    ) -> anthropic.Anthropic:
        made.append(
            anthropic.Anthropic(base_url=fake.base_url, api_key=api_key, max_retries=max_retries)
        )
        return made[-1]

    yield make
    for client in made:
        client.close()


def _raw_post(fake: FakeAnthropicAPI, body: Any, headers: dict[str, str] | None = None) -> Any:
    base = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    return httpx.post(
        fake.base_url + "/v1/messages",
        content=json.dumps(body),
        headers={**base, **(headers or {}), "content-type": "application/json"},
    )


def _sse_frames(raw: str) -> list[tuple[str, dict[str, Any]]]:
    frames = []
    for chunk in raw.split("\n\n"):
        if not chunk:
            continue
        event_line, data_line = chunk.split("\n")
        assert event_line.startswith("event: ")
        assert data_line.startswith("data: ")
        frames.append((event_line[len("event: ") :], json.loads(data_line[len("data: ") :])))
    return frames


# -- messages --------------------------------------------------------------------------------


def test_non_streaming_text_is_a_real_message(
    fake: FakeAnthropicAPI, sdk: anthropic.Anthropic
) -> None:
    fake.push(Reply.text("Hello from the fake"))

    message = sdk.messages.create(
        model=MODEL, max_tokens=64, system="You are Cosmo.", messages=HELLO
    )

    assert isinstance(message, anthropic.types.Message)
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert message.role == "assistant"
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the fake"
    assert message.stop_reason == "end_turn"
    # "You are Cosmo." is 14 chars -> 4 tokens; "hi" -> 1 token.
    assert message.usage.input_tokens == 5
    assert message.usage.output_tokens == estimate_tokens("Hello from the fake") == 5
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0
    assert message._request_id is not None and message._request_id.startswith("req_")

    (request,) = fake.requests
    assert request.method == "POST"
    assert request.path == "/v1/messages"
    assert request.model == MODEL
    assert request.system_text == "You are Cosmo."
    assert request.messages == HELLO
    assert request.body["max_tokens"] == 64
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.headers["anthropic-version"]
    assert fake.pending == 0


def test_max_tokens_and_stop_sequence_stop_reasons(
    fake: FakeAnthropicAPI, sdk: anthropic.Anthropic
) -> None:
    fake.push(
        Reply.text("cut of", stop_reason="max_tokens"),
        Reply.text("done", stop_reason="stop_sequence", stop_sequence="###"),
    )

    first = sdk.messages.create(model=MODEL, max_tokens=2, messages=HELLO)
    second = sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert first.stop_reason == "max_tokens"
    assert (second.stop_reason, second.stop_sequence) == ("stop_sequence", "###")


def test_parallel_tool_uses_get_distinct_ids(
    fake: FakeAnthropicAPI, sdk: anthropic.Anthropic
) -> None:
    fake.push(
        Reply.tool_uses(
            [("search_crm", {"q": "acme"}), ToolUse("get_deal", {"id": 7}, id="toolu_fixed")],
            text="Two lookups",
        )
    )

    message = sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO, tools=[SEARCH_TOOL])

    assert message.stop_reason == "tool_use"
    text, first, second = message.content
    assert text.type == "text" and text.text == "Two lookups"
    assert first.type == "tool_use" and second.type == "tool_use"
    assert (first.name, first.input) == ("search_crm", {"q": "acme"})
    assert (second.name, second.input, second.id) == ("get_deal", {"id": 7}, "toolu_fixed")
    assert first.id.startswith("toolu_") and first.id != second.id
    assert fake.last_request.tool_names == ["search_crm"]


# -- streaming -------------------------------------------------------------------------------


def test_stream_text_arrives_in_several_deltas(
    fake: FakeAnthropicAPI, sdk: anthropic.Anthropic
) -> None:
    text = "Streaming works across many small deltas."
    fake.push(Reply.text(text).with_options(chunk_size=5))

    with sdk.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()

    assert len(deltas) == 9  # ceil(41 / 5)
    assert "".join(deltas) == text
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == estimate_tokens(text)
    assert final.usage.input_tokens == 1
    assert fake.last_request.stream is True


def test_stream_wire_format_is_the_real_event_sequence(fake: FakeAnthropicAPI) -> None:
    fake.push(
        Reply.tool_use("search_crm", {"q": "acme corp"}, text="Looking").with_options(
            chunk_size=4, json_chunk_size=6
        )
    )

    response = _raw_post(
        fake, {"model": MODEL, "max_tokens": 64, "messages": HELLO, "stream": True}
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    frames = _sse_frames(response.text)
    for event, data in frames:
        assert data["type"] == event
    assert [e for e, _ in frames] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",  # "Look"
        "content_block_delta",  # "ing"
        "content_block_stop",
        "content_block_start",
        "content_block_delta",  # ""
        "content_block_delta",  # '{"q":"'
        "content_block_delta",  # 'acme c'
        "content_block_delta",  # 'orp"}'
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = frames[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["id"].startswith("msg_") and start["usage"]["input_tokens"] == 1
    tool_start = frames[6][1]
    assert tool_start["index"] == 1
    assert tool_start["content_block"]["type"] == "tool_use"
    assert tool_start["content_block"]["input"] == {}
    partials = [d["delta"]["partial_json"] for _, d in frames[7:11]]
    assert partials == ["", '{"q":"', "acme c", 'orp"}']
    assert frames[12][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert frames[12][1]["usage"]["output_tokens"] > 0


def test_streamed_tool_use_parses_input(fake: FakeAnthropicAPI, sdk: anthropic.Anthropic) -> None:
    tool_input = {"q": "acme", "filters": {"stage": ["won", "open"]}, "limit": 5}
    fake.push(Reply.tool_use("search_crm", tool_input, text="Let me look"))

    json_deltas: list[str] = []
    with sdk.messages.stream(
        model=MODEL, max_tokens=64, messages=HELLO, tools=[SEARCH_TOOL]
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                json_deltas.append(event.delta.partial_json)
        final = stream.get_final_message()

    assert len([d for d in json_deltas if d]) > 2
    assert json.loads("".join(json_deltas)) == tool_input
    assert final.stop_reason == "tool_use"
    text, tool = final.content
    assert text.type == "text" and text.text == "Let me look"
    assert tool.type == "tool_use"
    assert tool.name == "search_crm"
    assert tool.input == tool_input
    assert tool.id.startswith("toolu_")


async def test_async_client_streams(fake: FakeAnthropicAPI) -> None:
    fake.push(Reply.text("async hello world"))
    async with (
        anthropic.AsyncAnthropic(
            base_url=fake.base_url, api_key="test-key", max_retries=0
        ) as client,
        client.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream,
    ):
        deltas = [d async for d in stream.text_stream]
        final = await stream.get_final_message()

    assert len(deltas) > 1
    assert "".join(deltas) == "async hello world"
    assert final.stop_reason == "end_turn"


# -- tool loop and dynamic replies -------------------------------------------------------------


async def test_two_step_tool_loop_records_tool_result(fake: FakeAnthropicAPI) -> None:
    fake.push(
        Reply.tool_use("search_crm", {"q": "acme"}, text="Let me look"),
        Reply.text("Acme is an open deal worth $10k."),
    )
    async with anthropic.AsyncAnthropic(
        base_url=fake.base_url, api_key="test-key", max_retries=0
    ) as client:
        messages: list[Any] = [{"role": "user", "content": "How is Acme doing?"}]
        first = await client.messages.create(
            model=MODEL, max_tokens=256, messages=messages, tools=[SEARCH_TOOL]
        )
        assert first.stop_reason == "tool_use"
        tool = next(b for b in first.content if b.type == "tool_use")
        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool.id, "content": "deal: open, $10k"}
                ],
            },
        ]
        second = await client.messages.create(
            model=MODEL, max_tokens=256, messages=messages, tools=[SEARCH_TOOL]
        )

    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    assert second.content[0].text == "Acme is an open deal worth $10k."
    first_request, second_request = fake.requests
    assert first_request.tool_results() == []
    assert second_request.tool_results() == [
        {"type": "tool_result", "tool_use_id": tool.id, "content": "deal: open, $10k"}
    ]
    assert second_request.messages[1]["content"][1]["input"] == {"q": "acme"}
    assert second_request.last_user_text() == "How is Acme doing?"


def test_missing_tool_result_is_rejected_like_the_real_api(
    fake: FakeAnthropicAPI, sdk: anthropic.Anthropic
) -> None:
    fake.push(Reply.text("never served"))
    messages: Any = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_a", "name": "x", "input": {}}],
        },
        {"role": "user", "content": "I ignore the tool"},
    ]

    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(model=MODEL, max_tokens=64, messages=messages)

    assert caught.value.type == "invalid_request_error"
    assert "toolu_a" in str(caught.value.api_message)
    assert fake.pending == 1  # a rejected request does not consume the script


def test_respond_with_answers_after_the_queue(
    fake: FakeAnthropicAPI, sdk: anthropic.Anthropic
) -> None:
    seen: list[RecordedRequest] = []

    def echo(request: RecordedRequest) -> Reply:
        seen.append(request)
        return Reply.text(f"echo: {request.last_user_text()}")

    fake.push(Reply.text("scripted first"))
    fake.respond_with(echo)

    replies = [
        sdk.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": f"q{i}"}]
        )
        for i in range(3)
    ]

    texts = [r.content[0].text for r in replies if r.content[0].type == "text"]
    assert texts == ["scripted first", "echo: q1", "echo: q2"]
    assert [r.last_user_text() for r in seen] == ["q1", "q2"]


def test_exhausted_script_fails_loudly_without_retries(
    make_sdk: Callable[..., anthropic.Anthropic], fake: FakeAnthropicAPI
) -> None:
    client = make_sdk(fake, api_key="test-key", max_retries=2)

    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert "script ran out" in str(caught.value.api_message)
    assert len(fake.requests) == 1


def test_responder_exception_is_reported(fake: FakeAnthropicAPI, sdk: anthropic.Anthropic) -> None:
    def broken(request: RecordedRequest) -> Reply:
        raise KeyError("boom")

    fake.respond_with(broken)

    with pytest.raises(anthropic.InternalServerError, match="boom"):
        sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
    assert [type(e) for e in fake.errors] == [KeyError]


def test_a_broken_reply_is_a_clear_500_not_a_dropped_connection(
    fake: FakeAnthropicAPI, sdk: anthropic.Anthropic
) -> None:
    fake.push(Reply.tool_use("t", {"not_json": object()}))

    with pytest.raises(anthropic.InternalServerError, match="FakeAnthropicAPI failed"):
        sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
    assert [type(e) for e in fake.errors] == [TypeError]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "message", "exception"),
    [
        (401, "authentication_error", "invalid x-api-key", anthropic.AuthenticationError),
        (400, "invalid_request_error", "prompt is too long", anthropic.BadRequestError),
        (
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. "
            "Please go to Plans & Billing to upgrade or purchase credits.",
            anthropic.BadRequestError,
        ),
        (403, "permission_error", "no access to model", anthropic.PermissionDeniedError),
        (404, "not_found_error", "model: claude-nope", anthropic.NotFoundError),
        (429, "rate_limit_error", "Number of request tokens exceeded", anthropic.RateLimitError),
        (500, "api_error", "Internal server error", anthropic.InternalServerError),
        (529, "overloaded_error", "Overloaded", anthropic.OverloadedError),
    ],
)
def test_error_maps_to_sdk_exception(
    fake: FakeAnthropicAPI,
    sdk: anthropic.Anthropic,
    status: int,
    error_type: str,
    message: str,
    exception: type[anthropic.APIStatusError],
) -> None:
    fake.push(Reply.error(status, error_type, message))

    with pytest.raises(exception) as caught:
        sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    error = caught.value
    assert type(error) is exception
    assert error.status_code == status
    assert error.type == error_type
    assert error.api_message == message
    assert error.request_id is not None and error.request_id.startswith("req_")
    assert isinstance(error.body, dict)
    assert error.body["type"] == "error"
    assert error.body["error"] == {"type": error_type, "message": message}
    assert error.body["request_id"] == error.request_id


def test_rate_limit_exposes_retry_after(fake: FakeAnthropicAPI, sdk: anthropic.Anthropic) -> None:
    fake.push(Reply.error(429, "rate_limit_error", "slow down", retry_after=7))

    with pytest.raises(anthropic.RateLimitError) as caught:
        sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert caught.value.response.headers["retry-after"] == "7"


def test_spend_limit_error_code_selects_the_specific_class(
    fake: FakeAnthropicAPI, sdk: anthropic.Anthropic
) -> None:
    fake.push(
        Reply.error(
            429,
            "rate_limit_error",
            "You have reached your specified API usage limits.",
            details={"error_code": "enforced_spend_limit_reached"},
        )
    )

    with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as caught:
        sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert isinstance(caught.value, anthropic.RateLimitError)
    assert caught.value.error_code == "enforced_spend_limit_reached"


def test_sdk_retries_overloaded_then_succeeds(
    make_sdk: Callable[..., anthropic.Anthropic], fake: FakeAnthropicAPI
) -> None:
    fake.push(
        Reply.error(529, "overloaded_error", "Overloaded", retry_after=0.01),
        Reply.text("second time lucky"),
    )
    client = make_sdk(fake, api_key="test-key", max_retries=2)

    message = client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert message.content[0].type == "text"
    assert message.content[0].text == "second time lucky"
    first, second = fake.requests
    assert first.headers["x-stainless-retry-count"] == "0"
    assert second.headers["x-stainless-retry-count"] == "1"
    assert first.body == second.body


def test_error_in_the_middle_of_a_stream(fake: FakeAnthropicAPI, sdk: anthropic.Anthropic) -> None:
    fake.push(Reply.mid_stream_error("overloaded_error", "Overloaded", partial_text="Partial ans"))

    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream,
    ):
        received.extend(stream.text_stream)

    assert "".join(received) == "Partial ans"
    assert caught.value.type == "overloaded_error"
    assert caught.value.api_message == "Overloaded"


def test_mid_stream_error_given_to_a_plain_request_is_an_http_error(
    fake: FakeAnthropicAPI, sdk: anthropic.Anthropic
) -> None:
    fake.push(Reply.mid_stream_error("overloaded_error", "Overloaded"))

    with pytest.raises(anthropic.OverloadedError):
        sdk.messages.create(model=MODEL, max_tokens=64, messages=HELLO)


def test_missing_api_key_is_401(fake: FakeAnthropicAPI) -> None:
    fake.push(Reply.text("never served"))

    response = _raw_post(
        fake,
        {"model": MODEL, "max_tokens": 64, "messages": HELLO},
        headers={"x-api-key": ""},
    )

    assert response.status_code == 401
    assert response.headers["request-id"].startswith("req_")
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert fake.pending == 1


def test_wrong_api_key_is_rejected_when_one_is_required(
    make_sdk: Callable[..., anthropic.Anthropic],
) -> None:
    with FakeAnthropicAPI(api_key="right-key") as fake:
        client = make_sdk(fake, api_key="wrong", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError):
            client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"max_tokens": 5, "messages": HELLO}, "model: Field required"),
        ({"model": MODEL, "messages": HELLO}, "max_tokens: Field required"),
        ({"model": MODEL, "max_tokens": 5}, "messages: Field required"),
        ({"model": MODEL, "max_tokens": 0, "messages": HELLO}, "max_tokens: Input should be"),
        ({"model": MODEL, "max_tokens": 5, "messages": []}, "at least one message"),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]},
            "messages.0.role",
        ),
    ],
)
def test_invalid_requests_are_400(fake: FakeAnthropicAPI, body: Any, expected: str) -> None:
    response = _raw_post(fake, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert expected in error["message"]


# -- prompt caching ----------------------------------------------------------------------------


def test_prompt_cache_creation_then_read(fake: FakeAnthropicAPI, sdk: anthropic.Anthropic) -> None:
    system: Any = [{"type": "text", "text": "S" * 400, "cache_control": {"type": "ephemeral"}}]
    messages: Any = [{"role": "user", "content": "hello world!"}]
    fake.respond_with(lambda request: Reply.text("ok"))

    first = sdk.messages.create(model=MODEL, max_tokens=64, system=system, messages=messages)
    second = sdk.messages.create(model=MODEL, max_tokens=64, system=system, messages=messages)
    other_model = sdk.messages.create(
        model="claude-other", max_tokens=64, system=system, messages=messages
    )

    # 400 chars of system -> 100 cached tokens; "hello world!" -> 3 uncached tokens.
    assert first.usage.cache_creation_input_tokens == 100
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.cache_read_input_tokens == 100
    assert first.usage.input_tokens == second.usage.input_tokens == 3
    assert other_model.usage.cache_creation_input_tokens == 100
    assert fake.requests[1].system[0]["cache_control"] == {"type": "ephemeral"}

    # The next turn extends the prefix: the system part is read, the new part written.
    longer = [
        *messages,
        {"role": "assistant", "content": "ok"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "x" * 40, "cache_control": {"type": "ephemeral"}}],
        },
    ]
    third = sdk.messages.create(model=MODEL, max_tokens=64, system=system, messages=longer)
    assert third.usage.cache_read_input_tokens == 100
    assert third.usage.cache_creation_input_tokens == 3 + 1 + 10
    assert third.usage.input_tokens == 0


def test_a_moved_marker_still_reads_the_prefix_the_previous_turn_marked(
    fake: FakeAnthropicAPI, sdk: anthropic.Anthropic
) -> None:
    """The real API also checks the block boundaries before a marker (about 20): a
    conversation whose marker moves to the newest message reads the previous turn's prefix."""
    fake.respond_with(lambda request: Reply.text("ok"))
    mark = {"type": "ephemeral"}
    first_turn: Any = [{"role": "user", "content": [{"type": "text", "text": "q" * 400}]}]
    first_turn[0]["content"][0]["cache_control"] = mark
    first = sdk.messages.create(model=MODEL, max_tokens=64, messages=first_turn)
    second_turn: Any = [
        {"role": "user", "content": [{"type": "text", "text": "q" * 400}]},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": "r" * 40, "cache_control": mark}]},
    ]
    second = sdk.messages.create(model=MODEL, max_tokens=64, messages=second_turn)

    assert first.usage.cache_creation_input_tokens == 100
    assert second.usage.cache_read_input_tokens == 100
    assert second.usage.cache_creation_input_tokens == 1 + 10

    # Beyond the lookback the old prefix is out of sight: written anew, nothing read.
    filler: Any = [
        {"role": role, "content": [{"type": "text", "text": f"{role} {i}"}]}
        for i in range(11)
        for role in ("assistant", "user")
    ]
    far: Any = [second_turn[0], *filler]
    far[-1] = {"role": "user", "content": [{"type": "text", "text": "late", "cache_control": mark}]}
    third = sdk.messages.create(model=MODEL, max_tokens=64, messages=far)
    assert third.usage.cache_read_input_tokens == 0


def test_cached_tools_reported_in_streamed_usage(
    fake: FakeAnthropicAPI, sdk: anthropic.Anthropic
) -> None:
    tools: Any = [{**SEARCH_TOOL, "cache_control": {"type": "ephemeral"}}]
    fake.respond_with(lambda request: Reply.text("cached"))

    usages = []
    for _ in range(2):
        with sdk.messages.stream(model=MODEL, max_tokens=64, messages=HELLO, tools=tools) as stream:
            usages.append(stream.get_final_message().usage)

    assert usages[0].cache_creation_input_tokens is not None
    assert usages[0].cache_creation_input_tokens > 0
    assert usages[0].cache_read_input_tokens == 0
    assert usages[1].cache_read_input_tokens == usages[0].cache_creation_input_tokens
    assert usages[1].cache_creation_input_tokens == 0


def test_no_cache_control_means_no_cache(fake: FakeAnthropicAPI, sdk: anthropic.Anthropic) -> None:
    fake.respond_with(lambda request: Reply.text("ok"))
    for _ in range(2):
        message = sdk.messages.create(model=MODEL, max_tokens=64, system="S" * 400, messages=HELLO)
        assert message.usage.cache_read_input_tokens == 0
        assert message.usage.cache_creation_input_tokens == 0
        assert message.usage.input_tokens == 101


# -- concurrency, latency, lifecycle -----------------------------------------------------------


async def test_concurrent_turns_with_latency_run_in_parallel() -> None:
    turns = 40
    # Every responder waits at one barrier: it only opens once all 40 requests are inside the
    # fake together, so a client or server that took them one at a time breaks it (a 500 and
    # a failed turn) instead of merely being slower than a wall-clock bound.
    together = threading.Barrier(turns, timeout=30)

    def answer(request: RecordedRequest) -> Reply:
        together.wait()
        return Reply.text(f"answer to {request.last_user_text()}")

    with FakeAnthropicAPI(first_byte_delay=0.2, delta_delay=0.01, chunk_size=4) as fake:
        fake.respond_with(answer)
        async with anthropic.AsyncAnthropic(
            base_url=fake.base_url, api_key="test-key", max_retries=0
        ) as client:

            async def turn(i: int) -> tuple[str, int]:
                async with client.messages.stream(
                    model=MODEL, max_tokens=64, messages=[{"role": "user", "content": f"q{i}"}]
                ) as stream:
                    deltas = [d async for d in stream.text_stream]
                return "".join(deltas), len(deltas)

            results = await asyncio.gather(*(turn(i) for i in range(turns)))

        assert fake.errors == []
        assert len(fake.requests) == turns
    assert [text for text, _ in results] == [f"answer to q{i}" for i in range(turns)]
    assert all(n > 1 for _, n in results)


def test_delta_delay_spaces_out_deltas(fake: FakeAnthropicAPI, sdk: anthropic.Anthropic) -> None:
    fake.push(Reply.text("abcdefgh").with_options(chunk_size=2, delta_delay=0.05))

    stamps = []
    with sdk.messages.stream(model=MODEL, max_tokens=64, messages=HELLO) as stream:
        for _ in stream.text_stream:
            stamps.append(time.monotonic())

    assert len(stamps) == 4
    assert stamps[-1] - stamps[0] >= 0.12  # three gaps of 0.05 s


def test_explicit_start_stop_and_count_tokens(make_sdk: Callable[..., anthropic.Anthropic]) -> None:
    fake = FakeAnthropicAPI().start()
    try:
        client = make_sdk(fake, api_key="test-key", max_retries=0)
        counted = client.messages.count_tokens(model=MODEL, messages=HELLO, system="S" * 40)
        assert counted.input_tokens == 11
        fake.push(Reply.blocks(Text("a"), ToolUse("t", {})))
        message = client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
        assert message.stop_reason == "tool_use"
        assert [r.path for r in fake.message_requests] == ["/v1/messages"]
    finally:
        fake.stop()
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)


def test_stop_does_not_wait_out_a_slow_reply(make_sdk: Callable[..., anthropic.Anthropic]) -> None:
    fake = FakeAnthropicAPI().start()
    fake.push(Reply.text("slow").with_options(first_byte_delay=30))
    client = make_sdk(fake, api_key="test-key", max_retries=0)

    outcome: list[BaseException] = []

    def run() -> None:
        try:
            client.messages.create(model=MODEL, max_tokens=8, messages=HELLO)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    fake.wait_for_requests(1)
    handler_name = f"{HANDLER_THREAD_NAME}:{fake.port}"
    assert [t for t in threading.enumerate() if t.name == handler_name]
    started = time.monotonic()
    fake.stop()
    worker.join(timeout=5)

    assert time.monotonic() - started < 2
    assert not worker.is_alive()
    assert not [t for t in threading.enumerate() if t.name == handler_name]
    assert outcome and isinstance(outcome[0], anthropic.APIConnectionError)


def test_the_sdk_lists_every_model_across_pages_and_retrieves_one_by_id():
    models = [f"claude-test-{n}" for n in range(5)]
    with FakeAnthropicAPI(models=models, api_key="k") as fake:
        client = anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0)
        page = client.models.list(limit=2)
        assert [m.id for m in page.data] == models[:2] and page.has_more
        assert [m.id for m in client.models.list(limit=2)] == models  # auto-paginates
        assert client.models.retrieve("claude-test-3").id == "claude-test-3"
        with pytest.raises(anthropic.NotFoundError):
            client.models.retrieve("claude-sonet-4")
        wrong = anthropic.Anthropic(base_url=fake.base_url, api_key="nope", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError):
            wrong.models.list()
