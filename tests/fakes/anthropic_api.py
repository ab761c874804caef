"""A local stand-in for the Anthropic Messages API that the real `anthropic` SDK can talk to.

Tests and benchmarks need Claude to behave predictably, quickly and offline, yet mocking the
SDK would hide the bugs that live at the wire: SSE parsing, retry headers, error classes,
tool_use / tool_result pairing. So this module serves the real HTTP wire format on
127.0.0.1 and lets a test script what "Claude" answers.

    with FakeAnthropicAPI() as fake:
        fake.push(Reply.tool_use("search_crm", {"q": "acme"}, text="Let me look"))
        fake.push(Reply.text("Acme is a customer."))
        client = anthropic.Anthropic(base_url=fake.base_url, api_key="k", max_retries=0)
        ...
        assert fake.requests[1].tool_results()[0]["tool_use_id"] == ...

Choices worth knowing (they are deliberate, not accidents):

* Script order: each `POST /v1/messages` that passes validation takes the next pushed
  `Reply`; when the queue is empty the `respond_with` callable answers; when there is
  neither, the fake answers **500 api_error with `x-should-retry: false`** whose message
  says the script ran out. Failing loudly beats a default echo that lets a wrong test pass;
  the header stops the SDK from retrying, so the test sees one clear error, not three.
* Authentication: a request needs `x-api-key` *or* `Authorization: Bearer ...` (the
  installed SDK sends its `api_key` as a Bearer token). Pass `api_key=` to require one
  exact key. Requests that fail authentication or validation do not consume the script.
* Token counts are a deterministic estimate: every text is `ceil(len(text) / 4)` tokens;
  any other block, a tool definition or a tool input counts the same way over its compact
  JSON; each block counts at least 1. `Reply(input_tokens=..., output_tokens=...)` overrides.
* Prompt caching follows the real prefix order tools -> system -> messages. Each
  `cache_control` marker ends a cacheable prefix (a top-level `cache_control` marks the last
  block), and only marked prefixes are written. A read looks, like the real API, at the
  marker and at up to `CACHE_LOOKBACK_BLOCKS` block boundaries before it, so the prefix a
  conversation's previous turn marked is found again although this turn's marker moved on.
  The longest prefix written before (same model, same content) is reported as
  `cache_read_input_tokens`; the rest up to the last marker as `cache_creation_input_tokens`;
  `input_tokens` counts only what follows the last marker, as the real API does. Prefixes
  shorter than `min_cacheable_tokens` (default 0) are not cached. There is no TTL.
* Models: `GET /v1/models` lists `models` (newest first, paged with `limit`, `after_id`,
  `before_id`: `data`, `has_more`, `first_id`, `last_id`) and `GET /v1/models/{id}` answers
  one, or 404 `not_found_error`. Messages are not checked against the list.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, Literal
from urllib.parse import parse_qs

from tests.fakes.local_server import ServedFake, TrackedHandler, TrackedHTTPServer

__all__ = [
    "ApiError",
    "FakeAnthropicAPI",
    "RecordedRequest",
    "Reply",
    "Responder",
    "Text",
    "ToolUse",
    "estimate_tokens",
]

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"]

#: How many block boundaries before a `cache_control` marker a read also checks (the real
#: API's documented lookback is about 20 blocks).
CACHE_LOOKBACK_BLOCKS = 20

# The status the real API pairs with each error type, used when an error that the script
# meant for the middle of a stream has to be sent to a non-streaming request instead.
_STATUS_FOR_ERROR_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_ALPHABET = string.ascii_letters + string.digits

# Handler threads are named "<this>:<port>" so a test can prove stop() left none behind.
HANDLER_THREAD_NAME = "fake-anthropic-api-handler"


def _new_id(prefix: str) -> str:
    return prefix + "01" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


def estimate_tokens(text: str) -> int:
    """Deterministic so tests can assert exact usage numbers without a tokenizer."""
    return max(1, math.ceil(len(text) / 4))


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _chunks(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


# --------------------------------------------------------------------------------------------
# Script objects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """A text content block the fake "model" answers with."""

    text: str


@dataclass(frozen=True)
class ToolUse:
    """A tool call; `id` is generated (toolu_...) per response when left as None."""

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


Block = Text | ToolUse


@dataclass(frozen=True)
class ApiError:
    """An error as the API reports it; kept separate so it can be sent as HTTP or as SSE."""

    status: int
    type: str
    message: str
    retry_after: float | None = None
    retry_after_ms: float | None = None
    details: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.details is not None:
            error["details"] = dict(self.details)
        return {"type": "error", "error": error, "request_id": request_id}


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Build it with the classmethods; tweak it with `with_options`.

    Latency and chunking fields left as None fall back to the `FakeAnthropicAPI` defaults, so
    a benchmark can set them once on the server and a test can override one reply.
    """

    content: tuple[Block, ...] = ()
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    http_error: ApiError | None = None
    sse_error: ApiError | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    chunk_size: int | None = None
    json_chunk_size: int | None = None
    first_byte_delay: float | None = None
    delta_delay: float | None = None

    @classmethod
    def text(
        cls, text: str, *, stop_reason: StopReason = "end_turn", stop_sequence: str | None = None
    ) -> Reply:
        return cls(content=(Text(text),), stop_reason=stop_reason, stop_sequence=stop_sequence)

    @classmethod
    def tool_use(
        cls,
        name: str,
        input: Mapping[str, Any],
        *,
        text: str | None = None,
        id: str | None = None,
    ) -> Reply:
        blocks: list[Block] = [Text(text)] if text else []
        blocks.append(ToolUse(name, input, id))
        return cls(content=tuple(blocks), stop_reason="tool_use")

    @classmethod
    def tool_uses(
        cls,
        calls: Sequence[ToolUse | tuple[str, Mapping[str, Any]]],
        *,
        text: str | None = None,
    ) -> Reply:
        """Parallel tool calls in one assistant turn, as Claude emits them."""
        blocks: list[Block] = [Text(text)] if text else []
        for call in calls:
            blocks.append(call if isinstance(call, ToolUse) else ToolUse(call[0], call[1]))
        return cls(content=tuple(blocks), stop_reason="tool_use")

    @classmethod
    def blocks(cls, *blocks: Block, stop_reason: StopReason | None = None) -> Reply:
        """Any mix of blocks; stop_reason defaults to tool_use if a tool is called."""
        return cls(content=blocks, stop_reason=stop_reason)

    @classmethod
    def error(
        cls,
        status: int,
        error_type: str,
        message: str,
        retry_after: float | None = None,
        *,
        retry_after_ms: float | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An HTTP error response; `details` feeds the SDK's `error_code`-specific classes."""
        return cls(
            http_error=ApiError(
                status, error_type, message, retry_after, retry_after_ms, details, headers or {}
            )
        )

    @classmethod
    def mid_stream_error(
        cls,
        error_type: str = "overloaded_error",
        message: str = "Overloaded",
        *,
        partial_text: str = "",
    ) -> Reply:
        """A stream that starts fine and then sends `event: error`, as the API does under load.

        A non-streaming request given this reply gets the matching HTTP error instead.
        """
        status = _STATUS_FOR_ERROR_TYPE.get(error_type, 500)
        content: tuple[Block, ...] = (Text(partial_text),) if partial_text else ()
        return cls(content=content, sse_error=ApiError(status, error_type, message))

    def with_options(
        self,
        *,
        chunk_size: int | None = None,
        json_chunk_size: int | None = None,
        first_byte_delay: float | None = None,
        delta_delay: float | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> Reply:
        """Latency, chunking or usage overrides for this reply; None keeps the current value."""

        def pick(new: Any, old: Any) -> Any:
            return old if new is None else new

        return dataclasses.replace(
            self,
            chunk_size=pick(chunk_size, self.chunk_size),
            json_chunk_size=pick(json_chunk_size, self.json_chunk_size),
            first_byte_delay=pick(first_byte_delay, self.first_byte_delay),
            delta_delay=pick(delta_delay, self.delta_delay),
            input_tokens=pick(input_tokens, self.input_tokens),
            output_tokens=pick(output_tokens, self.output_tokens),
        )

    @property
    def resolved_stop_reason(self) -> StopReason:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.content) else "end_turn"


@dataclass(frozen=True)
class RecordedRequest:
    """What the fake received; `body` is the parsed JSON ({} if it was not a JSON object)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: dict[str, Any]
    raw_body: bytes
    timestamp: float

    @property
    def model(self) -> str | None:
        model = self.body.get("model")
        return model if isinstance(model, str) else None

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def system(self) -> Any:
        return self.body.get("system")

    @property
    def system_text(self) -> str:
        """The system prompt as one string, whether it was sent as a string or as blocks."""
        system = self.system
        if isinstance(system, str):
            return system
        if isinstance(system, list):
            return "\n".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
        return ""

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def tools(self) -> list[dict[str, Any]]:
        tools = self.body.get("tools")
        return tools if isinstance(tools, list) else []

    @property
    def tool_names(self) -> list[str]:
        return [str(t.get("name")) for t in self.tools if isinstance(t, dict)]

    def tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks of the last message: what an agent loop just sent back."""
        if not self.messages:
            return []
        content = self.messages[-1].get("content")
        if not isinstance(content, list):
            return []
        return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]

    def last_user_text(self) -> str:
        """Text the user (not a tool result) last said, for responders that echo or branch.

        Text blocks that are `<data ...>` fences (the speaker block an app puts before the
        user's words) are context, not what the user said, and are left out."""
        for message in reversed(self.messages):
            if message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = [
                    str(b.get("text", ""))
                    for b in content
                    if isinstance(b, dict)
                    and b.get("type") == "text"
                    and not str(b.get("text", "")).startswith("<data ")
                ]
                if texts:
                    return "\n".join(texts)
        return ""


Responder = Callable[[RecordedRequest], Reply]


# --------------------------------------------------------------------------------------------
# Validation, token accounting and the prompt-cache model
# --------------------------------------------------------------------------------------------


class _Invalid(Exception):
    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def _invalid(message: str) -> _Invalid:
    return _Invalid(ApiError(400, "invalid_request_error", message))


def _block_ids(content: Any, block_type: str, key: str) -> list[str]:
    if not isinstance(content, list):
        return []
    return [str(b.get(key)) for b in content if isinstance(b, dict) and b.get("type") == block_type]


def _validate_body(body: Any, *, needs_max_tokens: bool) -> dict[str, Any]:
    """Light checks, worded like the real API, for the mistakes client code actually makes."""
    if not isinstance(body, dict):
        raise _invalid("The request body is not valid JSON.")
    model = body.get("model")
    if model is None:
        raise _invalid("model: Field required")
    if not isinstance(model, str) or not model:
        raise _invalid("model: Input should be a valid string")
    if needs_max_tokens:
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise _invalid("max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            raise _invalid("max_tokens: Input should be a valid integer")
        if max_tokens < 1:
            raise _invalid("max_tokens: Input should be greater than or equal to 1")
    messages = body.get("messages")
    if messages is None:
        raise _invalid("messages: Field required")
    if not isinstance(messages, list):
        raise _invalid("messages: Input should be a valid list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(f"messages.{i}: Input should be a valid dictionary")
        if message.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if content is None:
            raise _invalid(f"messages.{i}.content: Field required")
        if not isinstance(content, str | list):
            raise _invalid(f"messages.{i}.content: Input should be a valid list")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _invalid("system: Input should be a valid list")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _invalid("tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise _invalid(f"tools.{i}.name: Field required")
    _validate_tool_pairing(messages)
    return body


def _validate_tool_pairing(messages: list[dict[str, Any]]) -> None:
    """The rule agent loops break most often: every tool_use answered in the very next turn."""
    for i, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") == "assistant":
            uses = _block_ids(content, "tool_use", "id")
            if not uses or i + 1 >= len(messages):
                continue
            following = messages[i + 1]
            answered = set(_block_ids(following.get("content"), "tool_result", "tool_use_id"))
            missing = [u for u in uses if u not in answered]
            if following.get("role") != "user" or missing:
                raise _invalid(
                    f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing or uses)}. Each `tool_use` block "
                    "must have a corresponding `tool_result` block in the next message."
                )
        else:
            results = _block_ids(content, "tool_result", "tool_use_id")
            if not results:
                continue
            previous = messages[i - 1] if i > 0 else {}
            known = set(_block_ids(previous.get("content"), "tool_use", "id"))
            unexpected = [r for r in results if r not in known]
            if previous.get("role") != "assistant" or unexpected:
                raise _invalid(
                    f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {', '.join(unexpected or results)}. Each `tool_result` block "
                    "must have a corresponding `tool_use` block in the previous message."
                )


@dataclass(frozen=True)
class _Segment:
    key: str
    tokens: int
    breakpoint: bool


def _strip_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


def _block_tokens(block: Any) -> int:
    if isinstance(block, str):
        return estimate_tokens(block)
    if isinstance(block, dict) and block.get("type") == "text" and "text" in block:
        return estimate_tokens(str(block["text"]))
    return estimate_tokens(_compact(_strip_cache_control(block)))


def _segment(kind: str, block: Any) -> _Segment:
    marked = isinstance(block, dict) and block.get("cache_control") is not None
    key = kind + ":" + _compact(_strip_cache_control(block))
    return _Segment(key, _block_tokens(block), marked)


def _segments(body: Mapping[str, Any]) -> list[_Segment]:
    """The request flattened in cache-prefix order: tools, then system, then messages."""
    segments = [_segment("tool", t) for t in body.get("tools") or []]
    system = body.get("system")
    if isinstance(system, str):
        segments.append(_segment("system", system))
    elif isinstance(system, list):
        segments.extend(_segment("system", b) for b in system)
    for message in body.get("messages") or []:
        role = str(message.get("role"))
        content = message.get("content")
        blocks = [content] if isinstance(content, str) else content
        segments.extend(_segment(role, b) for b in blocks)
    if body.get("cache_control") is not None and segments:
        segments[-1] = dataclasses.replace(segments[-1], breakpoint=True)
    return segments


@dataclass(frozen=True)
class _Usage:
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


class _PromptCache:
    def __init__(self, min_cacheable_tokens: int) -> None:
        self._min = min_cacheable_tokens
        self._prefixes: set[str] = set()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._prefixes.clear()

    def usage(self, body: Mapping[str, Any], *, record: bool) -> _Usage:
        segments = _segments(body)
        total = sum(s.tokens for s in segments)
        digest = sha256(str(body.get("model")).encode())
        prefixes: list[tuple[str, int]] = []  # (prefix hash, prefix tokens) at each boundary
        marks: list[int] = []  # indexes into `prefixes` of the cacheable markers
        running = 0
        for segment in segments:
            digest.update(b"\x00" + segment.key.encode())
            running += segment.tokens
            prefixes.append((digest.copy().hexdigest(), running))
            if segment.breakpoint and running >= self._min:
                marks.append(len(prefixes) - 1)
        if not marks:
            return _Usage(total, 0, 0)
        looked_at = {
            prefixes[i] for m in marks for i in range(max(0, m - CACHE_LOOKBACK_BLOCKS), m + 1)
        }
        with self._lock:
            read = max((n for h, n in looked_at if h in self._prefixes), default=0)
            if record:
                self._prefixes.update(prefixes[m][0] for m in marks)
        cached = prefixes[marks[-1]][1]
        return _Usage(total - cached, cached - read, read)


#: What `GET /v1/models` lists unless a test passes its own (newest first, as the API does).
DEFAULT_MODELS = (
    "claude-opus-4-6",
    "claude-sonnet-4-6",
    "claude-opus-4-5-20251101",
    "claude-haiku-4-5-20251001",
    "claude-sonnet-4-5-20250929",
)


def _model_json(model_id: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id.replace("-", " ").title(),
        "created_at": "2026-01-01T00:00:00Z",
    }


def _count_input_tokens(body: Mapping[str, Any]) -> int:
    return sum(s.tokens for s in _segments(body))


# --------------------------------------------------------------------------------------------
# Rendering a reply as a Message or as SSE frames
# --------------------------------------------------------------------------------------------


def _output_tokens(reply: Reply) -> int:
    if reply.output_tokens is not None:
        return reply.output_tokens
    total = 0
    for block in reply.content:
        if isinstance(block, Text):
            total += estimate_tokens(block.text)
        else:
            total += estimate_tokens(block.name + _compact(dict(block.input)))
    return max(1, total)


def _content_json(content: Sequence[Block]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, Text):
            out.append({"type": "text", "text": block.text})
        else:
            out.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": dict(block.input)}
            )
    return out


def _usage_json(usage: _Usage, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


@dataclass(frozen=True)
class _Frame:
    event: str
    data: dict[str, Any]
    is_delta: bool = False

    def encode(self) -> bytes:
        payload = json.dumps(self.data, separators=(",", ":"), ensure_ascii=False)
        return f"event: {self.event}\ndata: {payload}\n\n".encode()


def _stream_frames(
    reply: Reply,
    *,
    message_id: str,
    model: str,
    usage: _Usage,
    chunk_size: int,
    json_chunk_size: int,
) -> Iterator[_Frame]:
    """The event sequence of the real API, including the leading empty input_json_delta."""
    start_usage = _usage_json(usage, 1)
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    yield _Frame("message_start", {"type": "message_start", "message": message})
    pinged = False
    for index, block in enumerate(reply.content):
        start: dict[str, Any]
        if isinstance(block, Text):
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": c} for c in _chunks(block.text, chunk_size)]
        else:
            start = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
            pieces = ["", *_chunks(_compact(dict(block.input)), json_chunk_size)]
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
        yield _Frame(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )
        if not pinged:
            pinged = True
            yield _Frame("ping", {"type": "ping"})
        for delta in deltas:
            yield _Frame(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
                is_delta=True,
            )
        if reply.sse_error is not None and index == len(reply.content) - 1:
            break  # the error cuts the last block off before its content_block_stop
        yield _Frame("content_block_stop", {"type": "content_block_stop", "index": index})
    if reply.sse_error is not None:
        error = reply.sse_error
        yield _Frame(
            "error", {"type": "error", "error": {"type": error.type, "message": error.message}}
        )
        return
    if not pinged:
        yield _Frame("ping", {"type": "ping"})
    yield _Frame(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": reply.resolved_stop_reason,
                "stop_sequence": reply.stop_sequence,
            },
            "usage": {"output_tokens": _output_tokens(reply)},
        },
    )
    yield _Frame("message_stop", {"type": "message_stop"})


# --------------------------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------------------------


class _Stopping(Exception):
    """Raised inside a handler's sleep so a stopping fake does not wait out scripted latency."""


class _Server(TrackedHTTPServer["FakeAnthropicAPI"]):
    request_queue_size = 256  # benchmarks open ~50 connections at once; 5 would drop SYNs
    # Clients that hang up mid-stream are normal (a test may stop reading early).
    ignored_errors = (ConnectionError, _Stopping)


class _Handler(TrackedHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, like the real API
    disable_nagle_algorithm = True  # small SSE frames must leave at once for latency tests
    thread_name = HANDLER_THREAD_NAME
    server: _Server
    _headers_sent = False

    def end_headers(self) -> None:
        self._headers_sent = True
        super().end_headers()

    # -- entry point (`do_GET` and `do_POST` call it) ----------------------------------------

    def _serve(self) -> None:
        try:
            self._serve_request()
        except (_Stopping, ConnectionError):
            self.close_connection = True
        except Exception as exc:
            # A bug in the fake or a bad Reply: say so in the response, not as a dropped socket.
            self.server.fake._note_error(exc)
            self.close_connection = True
            if not self._headers_sent:
                with contextlib.suppress(OSError):
                    self._send_error(
                        ApiError(
                            500,
                            "api_error",
                            f"FakeAnthropicAPI failed: {exc!r}",
                            # The socket closes after this answer: say so, or a client may
                            # send its next request on it and find it gone (seen under load).
                            headers={"x-should-retry": "false", "connection": "close"},
                        )
                    )

    def _serve_request(self) -> None:
        self._headers_sent = False
        fake = self.server.fake
        raw = self._read_body()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=parsed if isinstance(parsed, dict) else {},
            raw_body=raw,
            timestamp=time.time(),
        )
        fake._record(request)
        path = self.path.split("?", 1)[0]
        if self.command == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
            self._models(path, fake, request)
            return
        try:
            if path not in ("/v1/messages", "/v1/messages/count_tokens"):
                raise _Invalid(ApiError(404, "not_found_error", f"Not found: {path}"))
            if self.command != "POST":
                raise _Invalid(ApiError(405, "invalid_request_error", "Method not allowed"))
            fake._authenticate(request.headers)
            if not request.headers.get("anthropic-version"):
                raise _invalid("anthropic-version: header is required")
            body = _validate_body(parsed, needs_max_tokens=path == "/v1/messages")
            if path == "/v1/messages/count_tokens":
                self._send_json(200, {"input_tokens": _count_input_tokens(body)})
                return
            reply = fake._next_reply(request)
        except _Invalid as invalid:
            self._send_error(invalid.error)
            return
        self._answer(reply, body, fake, request)

    def _models(self, path: str, fake: FakeAnthropicAPI, request: RecordedRequest) -> None:
        try:
            fake._authenticate(request.headers)
            if not request.headers.get("anthropic-version"):
                raise _invalid("anthropic-version: header is required")
        except _Invalid as invalid:
            self._send_error(invalid.error)
            return
        models = [_model_json(m) for m in fake.models]
        if path != "/v1/models":
            wanted = path.removeprefix("/v1/models/")
            found = next((m for m in models if m["id"] == wanted), None)
            if found is None:
                self._send_error(ApiError(404, "not_found_error", f"model: {wanted}"))
            else:
                self._send_json(200, found)
            return
        query = parse_qs(self.path.split("?", 1)[1] if "?" in self.path else "")
        try:
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            self._send_error(_invalid("limit: must be between 1 and 1000").error)
            return
        ids = [m["id"] for m in models]
        start, end = 0, len(models)
        if "after_id" in query and query["after_id"][0] in ids:
            start = ids.index(query["after_id"][0]) + 1
        if "before_id" in query and query["before_id"][0] in ids:
            end = ids.index(query["before_id"][0])
            start = max(start, end - limit)
        page = models[start : min(end, start + limit)]
        self._send_json(
            200,
            {
                "data": page,
                "has_more": start + len(page) < end,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            },
        )

    # -- answering -----------------------------------------------------------------------------

    def _answer(
        self,
        reply: Reply,
        body: dict[str, Any],
        fake: FakeAnthropicAPI,
        request: RecordedRequest,
    ) -> None:
        fake._sleep(
            reply.first_byte_delay if reply.first_byte_delay is not None else fake.first_byte_delay
        )
        streaming = body.get("stream") is True
        if reply.http_error is not None:
            self._send_error(reply.http_error)
            return
        if reply.sse_error is not None and not streaming:
            self._send_error(reply.sse_error)
            return
        content = tuple(
            dataclasses.replace(b, id=_new_id("toolu_"))
            if isinstance(b, ToolUse) and b.id is None
            else b
            for b in reply.content
        )
        reply = dataclasses.replace(reply, content=content)
        usage = fake._cache.usage(body, record=True)
        if reply.input_tokens is not None:
            usage = dataclasses.replace(usage, input_tokens=reply.input_tokens)
        message_id = _new_id("msg_")
        model = str(body["model"])
        if not streaming:
            self._send_json(
                200,
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": _content_json(reply.content),
                    "stop_reason": reply.resolved_stop_reason,
                    "stop_sequence": reply.stop_sequence,
                    "usage": _usage_json(usage, _output_tokens(reply)),
                },
            )
            return
        delta_delay = reply.delta_delay if reply.delta_delay is not None else fake.delta_delay
        frames = _stream_frames(
            reply,
            message_id=message_id,
            model=model,
            usage=usage,
            chunk_size=reply.chunk_size or fake.chunk_size,
            json_chunk_size=reply.json_chunk_size or fake.json_chunk_size,
        )
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", _new_id("req_"))
        self.end_headers()
        first_delta = True
        try:
            for frame in frames:
                if frame.is_delta:
                    if not first_delta:
                        fake._sleep(delta_delay)
                    first_delta = False
                self._write_chunk(frame.encode())
            self._write_chunk(b"")
        except ConnectionError:
            fake._hung_up(request)
            raise

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _read_body(self) -> bytes:
        length = self.headers.get("content-length")
        if length is not None:
            return self.rfile.read(int(length))
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return b""

    def _send_json(
        self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        has_request_id = any(k.lower() == "request-id" for k in headers or {})
        if not has_request_id:
            self.send_header("request-id", _new_id("req_"))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, error: ApiError) -> None:
        request_id = _new_id("req_")
        headers = {"request-id": request_id}
        if error.retry_after is not None:
            headers["retry-after"] = f"{error.retry_after:g}"
        if error.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{error.retry_after_ms:g}"
        headers.update(error.headers)
        self._send_json(error.status, error.body(request_id), headers)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


class FakeAnthropicAPI(
    ServedFake, server=_Server, handler=_Handler, thread_name="fake-anthropic-api"
):
    """A scripted Messages API on 127.0.0.1:<ephemeral>, served from a background thread.

    Everything a handler thread touches is guarded, so one instance can serve many
    concurrent turns (benchmarks) while the test thread pushes replies and reads requests.
    """

    def __init__(
        self,
        *,
        chunk_size: int = 8,
        json_chunk_size: int = 12,
        first_byte_delay: float = 0.0,
        delta_delay: float = 0.0,
        min_cacheable_tokens: int = 0,
        api_key: str | None = None,
        models: Sequence[str] = DEFAULT_MODELS,
    ) -> None:
        self.models = tuple(models)
        self.chunk_size = chunk_size
        self.json_chunk_size = json_chunk_size
        self.first_byte_delay = first_byte_delay
        self.delta_delay = delta_delay
        self.api_key = api_key
        self._cache = _PromptCache(min_cacheable_tokens)
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._responder: Responder | None = None
        self._requests: list[RecordedRequest] = []
        self._hang_ups: list[RecordedRequest] = []
        self._request_arrived = threading.Condition(self._lock)
        self._errors: list[BaseException] = []
        self._stopping = threading.Event()

    # -- lifecycle: start(), stop(), `with` and `port` come from ServedFake ------------------------

    @property
    def base_url(self) -> str:
        """Pass as `base_url=` to anthropic.Anthropic / AsyncAnthropic (no /v1 suffix)."""
        return f"http://127.0.0.1:{self.port}"

    # -- scripting -------------------------------------------------------------------------------

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def respond_with(self, responder: Responder | None) -> None:
        """Answer once the pushed replies are used up; it runs on a server thread."""
        with self._lock:
            self._responder = responder

    @property
    def pending(self) -> int:
        """Pushed replies not served yet; assert 0 to prove the script was fully used."""
        with self._lock:
            return len(self._queue)

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by a responder or inside the fake; each also became a 500."""
        with self._lock:
            return list(self._errors)

    def reset(self) -> None:
        """Forget script, responder, recorded requests and cached prefixes."""
        with self._lock:
            self._queue.clear()
            self._responder = None
            self._requests.clear()
            self._hang_ups.clear()
            self._errors.clear()
        self._cache.clear()

    # -- inspection ------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot, in arrival order, of every request (including rejected ones)."""
        with self._lock:
            return list(self._requests)

    @property
    def message_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.split("?", 1)[0] == "/v1/messages"]

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise AssertionError("FakeAnthropicAPI has not received any request")
            return self._requests[-1]

    @property
    def hung_up(self) -> list[RecordedRequest]:
        """Streamed requests whose client closed the connection before the stream ended
        (a cancelled turn stops its stream this way)."""
        with self._lock:
            return list(self._hang_ups)

    def wait_for_hang_ups(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until `count` clients hung up mid-stream (see `hung_up`)."""
        deadline = time.monotonic() + timeout
        with self._request_arrived:
            while len(self._hang_ups) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {count} streams cut short, {len(self._hang_ups)} were"
                    )
                self._request_arrived.wait(remaining)
            return list(self._hang_ups)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until `count` requests arrived, for tests that drive the client elsewhere."""
        deadline = time.monotonic() + timeout
        with self._request_arrived:
            while len(self._requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {count} requests, FakeAnthropicAPI got {len(self._requests)}"
                    )
                self._request_arrived.wait(remaining)
            return list(self._requests)

    # -- used by the handler threads -----------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._request_arrived:
            self._requests.append(request)
            self._request_arrived.notify_all()

    def _hung_up(self, request: RecordedRequest) -> None:
        with self._request_arrived:
            self._hang_ups.append(request)
            self._request_arrived.notify_all()

    def _note_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        key = headers.get("x-api-key")
        authorization = headers.get("authorization", "")
        if not key and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        if not key:
            raise _Invalid(ApiError(401, "authentication_error", "x-api-key header is required"))
        if self.api_key is not None and key != self.api_key:
            raise _Invalid(ApiError(401, "authentication_error", "invalid x-api-key"))

    def _next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            responder = self._responder
            served = len(self._requests)
        if responder is None:
            raise _Invalid(
                ApiError(
                    500,
                    "api_error",
                    f"FakeAnthropicAPI script ran out: request #{served} to {request.path} "
                    "has no reply. Call fake.push(Reply...) for each expected call or set "
                    "fake.respond_with(callable).",
                    headers={"x-should-retry": "false"},
                )
            )
        try:
            return responder(request)
        except Exception as exc:
            with self._lock:
                self._errors.append(exc)
            raise _Invalid(
                ApiError(
                    500,
                    "api_error",
                    f"FakeAnthropicAPI responder raised {exc!r}",
                    headers={"x-should-retry": "false"},
                )
            ) from exc

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Stopping
