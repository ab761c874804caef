"""Claude at the `ModelClient` port: scripted answers, for tests of the engine's own logic.

The HTTP fake (`tests/fakes/anthropic_api.py`) is for what lives at the wire: the SDK
adapter (`core/agent/anthropic_client.py`), its error mapping, retries, streaming and
prompt caching, and the e2e tests. A test of what the engine does with an answer (tools,
proposals, quotas, the step limit, citations, what goes into the prompt) needs none of
that, so it swaps this in at the seam the engine already has (`build_container(model=...)`,
`ConfigurableAgent(model=...)`):

    model = ScriptedModel()
    model.push(Answer.tool_use("current_time", {}), Answer.text("It is noon."))
    ...  # run a turn
    assert "UTC" in model.calls[1].tool_results()[0]["content"]
    model.assert_done()  # the script was used up, and nothing called beyond it

The `model` fixture (tests/conftest.py) calls `assert_done` after every test that uses it.

Choices worth knowing:

* Each `complete` takes the next pushed `Answer`, else asks the `responder` function.
  With neither it raises `UnexpectedModelCall`. It keeps that error (and any a responder
  raised), so `assert_done` reports it even where a job runner only logged the exception.
* A call records a deep copy of its `ModelRequest`: later steps of the loop append to the
  same conversation, and a test must see what *this* call was sent.
* Text reaches `on_text` in `chunk_size` pieces, block after block, as the adapter passes
  the SDK's text deltas on; tool input is not streamed (the adapter does not either).
* Usage is what the answer says (zero unless set): no token estimate to reason about.
* An `Answer.failure` raises its `ModelError` after streaming its partial text, as the
  adapter does when the stream breaks.
* Every call yields to the event loop once, as a network call would, so concurrent turns
  interleave instead of running one after another.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from core.agent.model import ModelError, ModelReply, ModelRequest, ModelUsage, TextSink

if TYPE_CHECKING:
    from core.agent.model import ModelClient

__all__ = ["Answer", "ModelCall", "ScriptedModel", "UnexpectedModelCall"]


class UnexpectedModelCall(AssertionError):
    """The engine called the model more often than the test scripted."""


@dataclass(frozen=True)
class Answer:
    """One scripted assistant message. A tool_use block without an id gets a fresh one
    (`toolu_scripted_<n>`) each time it is served, as the API makes one per message."""

    content: tuple[Mapping[str, Any], ...] = ()
    stop_reason: str | None = None
    """None: `tool_use` if the answer calls a tool, else `end_turn` (as the API decides)."""
    usage: ModelUsage = field(default_factory=ModelUsage)
    error: ModelError | None = None

    @classmethod
    def text(cls, text: str, *, stop_reason: str = "end_turn") -> Answer:
        return cls(content=({"type": "text", "text": text},), stop_reason=stop_reason)

    @classmethod
    def tool_use(
        cls, name: str, input: Mapping[str, Any], *, text: str | None = None, id: str | None = None
    ) -> Answer:
        return cls.tool_uses([(name, input)], text=text, ids=[id])

    @classmethod
    def tool_uses(
        cls,
        calls: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        text: str | None = None,
        ids: Iterable[str | None] = (),
    ) -> Answer:
        """Parallel tool calls in one assistant message, after an optional text block."""
        blocks: list[Mapping[str, Any]] = [{"type": "text", "text": text}] if text else []
        given = list(ids)
        for i, (name, arguments) in enumerate(calls):
            block: dict[str, Any] = {"type": "tool_use", "name": name, "input": dict(arguments)}
            if i < len(given) and given[i] is not None:
                block["id"] = given[i]
            blocks.append(block)
        return cls(content=tuple(blocks))

    @classmethod
    def failure(cls, error: ModelError, *, partial_text: str = "") -> Answer:
        """The call raises `error`, after streaming `partial_text` if any."""
        text = ({"type": "text", "text": partial_text},) if partial_text else ()
        return cls(content=text, error=error)

    def using(self, usage: ModelUsage) -> Answer:
        """The same answer, reporting this usage."""
        return replace(self, usage=usage)


@dataclass(frozen=True)
class ModelCall:
    """One `complete` call as the engine made it."""

    request: ModelRequest
    streamed: bool
    """Whether the engine passed an `on_text` sink."""

    @property
    def system(self) -> list[dict[str, Any]]:
        return self.request.system

    @property
    def system_text(self) -> str:
        return "\n".join(str(block["text"]) for block in self.request.system)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.request.messages

    @property
    def tool_names(self) -> list[str]:
        return [str(tool["name"]) for tool in self.request.tools]

    def tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks of the last message: what the loop just sent back."""
        last = self.request.messages[-1]["content"]
        return [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"]


Responder = Callable[[ModelCall], Answer]


class ScriptedModel:
    """A `ModelClient` whose answers a test scripts. Thread-safe: a REST test pushes and
    reads on its own thread while the job worker's loop calls `complete`."""

    def __init__(self, *answers: Answer, chunk_size: int = 8) -> None:
        self.chunk_size = chunk_size
        self._lock = threading.Lock()
        self._script: deque[Answer] = deque(answers)
        self.responder: Responder | None = None
        """Answers with `responder(call)` once the pushed answers are used up."""
        self._calls: list[ModelCall] = []
        self._errors: list[BaseException] = []
        self._tool_ids = 0

    # -- scripting -------------------------------------------------------------------------

    def push(self, *answers: Answer) -> None:
        with self._lock:
            self._script.extend(answers)

    # -- inspection ------------------------------------------------------------------------

    @property
    def calls(self) -> list[ModelCall]:
        """Every call so far, in order (unexpected ones included)."""
        with self._lock:
            return list(self._calls)

    def assert_done(self) -> None:
        """Fail if an answer was left unused, a call came beyond the script or the
        responder raised."""
        with self._lock:
            errors, left = list(self._errors), list(self._script)
        problems = [f"{type(e).__name__}: {e}" for e in errors]
        if left:
            problems.append(f"{len(left)} scripted answer(s) never asked for: {left!r}")
        if problems:
            raise AssertionError("ScriptedModel: " + "; ".join(problems))

    # -- the port ----------------------------------------------------------------------------

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None) -> ModelReply:
        call = ModelCall(copy.deepcopy(request), streamed=on_text is not None)
        answer = self._next(call)
        await asyncio.sleep(0)
        if on_text is not None:
            for block in answer.content:
                if block.get("type") == "text":
                    text = str(block["text"])
                    for i in range(0, len(text), self.chunk_size):
                        await on_text(text[i : i + self.chunk_size])
        if answer.error is not None:
            raise answer.error
        content = [self._served(block) for block in answer.content]
        calls_tool = any(b["type"] == "tool_use" for b in content)
        return ModelReply(
            content=content,
            stop_reason=answer.stop_reason or ("tool_use" if calls_tool else "end_turn"),
            usage=answer.usage,
            model=request.model,
            request_id=f"req_scripted_{len(self.calls)}",
        )

    def _next(self, call: ModelCall) -> Answer:
        with self._lock:
            self._calls.append(call)
            if self._script:
                return self._script.popleft()
            responder = self.responder
            if responder is None:
                error = UnexpectedModelCall(
                    f"call #{len(self._calls)} has no scripted answer (push one per expected "
                    f"call, or set a responder); its last message: "
                    f"{call.messages[-1] if call.messages else None!r}"
                )
                self._errors.append(error)
                raise error
        try:
            return responder(call)
        except Exception as exc:  # kept: a job runner would only log it
            with self._lock:
                self._errors.append(exc)
            raise

    def _served(self, block: Mapping[str, Any]) -> dict[str, Any]:
        served = copy.deepcopy(dict(block))
        if served["type"] == "tool_use" and "id" not in served:
            with self._lock:
                self._tool_ids += 1
                served["id"] = f"toolu_scripted_{self._tool_ids}"
        return served


if TYPE_CHECKING:
    _implements_the_port: ModelClient = ScriptedModel()
