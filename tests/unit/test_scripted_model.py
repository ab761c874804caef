"""The scripted model keeps the engine tests honest: it answers only what was scripted, says
so when a test left answers unused, and records what each call was really sent."""

from __future__ import annotations

import pytest

from core.agent.model import ModelError, ModelRequest
from tests.fakes.scripted_model import Answer, ScriptedModel, UnexpectedModelCall


def request(*texts: str) -> ModelRequest:
    return ModelRequest(
        model="claude-test",
        system=[{"type": "text", "text": "You help."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": t}]} for t in texts],
    )


async def test_a_call_beyond_the_script_raises_and_is_reported_later():
    model = ScriptedModel(Answer.text("one"))
    await model.complete(request("a"))

    with pytest.raises(UnexpectedModelCall, match="call #2 has no scripted answer"):
        await model.complete(request("b"))
    with pytest.raises(AssertionError, match="UnexpectedModelCall: call #2"):
        model.assert_done()  # also when whoever called swallowed the error


async def test_an_unused_answer_is_reported():
    model = ScriptedModel(Answer.text("one"), Answer.text("never asked"))
    await model.complete(request("a"))

    with pytest.raises(AssertionError, match="1 scripted answer"):
        model.assert_done()


async def test_a_responder_answers_after_the_pushed_answers():
    model = ScriptedModel(Answer.text("first"))
    model.responder = lambda call: Answer.text(f"echo {call.messages[-1]['content'][0]}")

    first = await model.complete(request("a"))
    second = await model.complete(request("b"))

    model.assert_done()
    assert (first.text, second.text) == ("first", "echo {'type': 'text', 'text': 'b'}")


async def test_each_call_records_what_it_was_sent_then():
    sent = request("a")
    model = ScriptedModel(Answer.text("ok"))
    await model.complete(sent)

    sent.messages.append({"role": "assistant", "content": [{"type": "text", "text": "later"}]})
    (call,) = model.calls
    assert [m["role"] for m in call.messages] == ["user"]
    assert (
        call.request.model == "claude-test"
        and call.system_text == "You help."
        and not call.streamed
    )


async def test_text_streams_in_pieces_and_tool_calls_get_fresh_ids():
    pieces: list[str] = []

    async def on_text(text: str) -> None:
        pieces.append(text)

    call_twice = Answer.tool_use("clock", {"tz": "UTC"}, text="Checking the time")
    model = ScriptedModel(call_twice, call_twice, chunk_size=4)

    first = await model.complete(request("a"), on_text)
    second = await model.complete(request("b"))

    assert pieces == ["Chec", "king", " the", " tim", "e"]
    assert first.stop_reason == "tool_use" and first.model == "claude-test"
    assert first.tool_uses[0]["input"] == {"tz": "UTC"}
    assert first.tool_uses[0]["id"] != second.tool_uses[0]["id"]


async def test_a_scripted_failure_streams_its_partial_text_then_raises():
    pieces: list[str] = []

    async def on_text(text: str) -> None:
        pieces.append(text)

    error = ModelError("Overloaded", user_message="Busy.", retryable=True)
    model = ScriptedModel(Answer.failure(error, partial_text="Hal"), chunk_size=2)

    with pytest.raises(ModelError) as raised:
        await model.complete(request("a"), on_text)
    assert raised.value is error
    assert pieces == ["Ha", "l"]
