"""The agent engine's own logic: REST in (a worker runs the turn), Claude scripted at the
`ModelClient` port (tests/fakes/scripted_model.py). What the SDK adapter does at the wire
(errors, retries, streaming, prompt caching) is tested against the fake Messages API in
tests/integration/test_anthropic_client.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.agent.engine import AgentConfig, ConfigurableAgent
from core.agent.model import ModelError, ModelUsage
from core.config_document import parse_document
from core.db import Database
from core.embeddings.hashing import HashingEmbedder
from core.limits.quotas import TOKENS
from core.memory.local import LocalMemory
from core.schemas.skill import SkillSpec
from core.sessions.pricing import cost_micros
from core.settings import Settings
from core.skills.builtins import BuiltinCatalog
from core.skills.factory import SkillFactory
from core.skills.runtime import SkillResult
from core.wiring import Container, build_container
from tests.conftest import BACKENDS
from tests.fakes.scripted_model import Answer, ModelCall, ScriptedModel

CONFIG = """
apiVersion: cosmo/v1
personas:
  - name: seller
    role: Sales assistant at {{company}}
    tone: crisp
    variables:
      company: {default: Acme Analytics}
    instructions: |
      Help {{user_name}} in {{channel}}. Today is {{date}}. You are {{agent_name}}.
skills:
  - name: current_time
    description: Current time in UTC.
    kind: read
  - name: recall_memory
    description: Search earlier conversations.
    kind: read
    input_schema: {type: object, properties: {query: {type: string}}, required: [query]}
  - name: draft_email
    description: Draft an email for review.
    kind: action
    input_schema:
      type: object
      properties:
        to: {type: string, format: email}
        subject: {type: string}
        body: {type: string}
      required: [to, subject, body]
  - name: search_crm
    description: Not enabled for the agent below.
    kind: read
    executor: {type: builtin, function: current_time}
agents:
  - name: sales-bot
    persona: seller
    model: claude-sonnet-4-6
    skills: [current_time, recall_memory, draft_email]
    limits: {daily_output_limit: 3}
"""

EMAIL = {"to": "ana@example.com", "subject": "Pricing", "body": "Hi Ana, here is our pricing."}


@pytest.fixture
def claude_container(db: Database, settings: Settings, model: ScriptedModel) -> Container:
    """Claude is the scripted `model` here (conftest's `claude_client` runs on this)."""
    return build_container(settings, db=db, model=model, memory=LocalMemory(db, HashingEmbedder()))


@pytest.fixture
def agent_id(claude_container) -> str:
    """Applied to the container: the tests that run the engine directly need no app."""
    claude_container.config.apply("default", parse_document(CONFIG), actor="test")
    return str(claude_container.agents.get_by_name("default", "sales-bot").id)


@pytest.fixture
def session_id(claude_client, agent_id) -> str:
    r = claude_client.post(
        f"/api/v1/agents/{agent_id}/sessions",
        json={"user_id": "U123", "user_name": "Ana", "channel": "#deals"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def cache_markers(call: ModelCall) -> list[tuple[int, int]]:
    """(message, block) of each `cache_control` in the call's messages."""
    return [
        (m, b)
        for m, message in enumerate(call.messages)
        for b, block in enumerate(message["content"])
        if "cache_control" in block
    ]


def chat(client, session_id: str, message: str, **headers: str) -> dict[str, Any]:
    r = client.post(
        f"/api/v1/sessions/{session_id}/chat", json={"message": message}, headers=headers
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_persona_is_rendered_into_a_cached_system_prompt(claude_client, model, session_id):
    model.push(Answer.text("Hello Ana, how can I help with your deals?"))

    body = chat(claude_client, session_id, "hi")

    assert body["status"] == "completed"
    assert body["reply"] == "Hello Ana, how can I help with your deals?"
    request = model.calls[0]
    persona = request.system[0]
    assert persona["cache_control"] == {"type": "ephemeral"}
    assert "Sales assistant at Acme Analytics" in persona["text"]
    assert "Help the current speaker in the current channel" in persona["text"]
    assert "Ana " not in persona["text"] and "#deals" not in persona["text"]
    assert (
        (request.messages[-1]["content"][0]["text"])
        == '<data source="speaker">\nname: Ana\nuser_id: U123\nchannel: #deals\n</data>'
    )
    assert "You are sales-bot" in persona["text"]
    assert "{{" not in persona["text"]


def test_the_model_only_sees_the_agents_enabled_skills(claude_client, model, session_id):
    model.push(Answer.text("ok"))
    chat(claude_client, session_id, "what can you do?")
    assert model.calls[0].tool_names == [
        "current_time",
        "recall_memory",
        "draft_email",
    ]


def test_a_read_skill_runs_at_once_and_its_result_goes_back(claude_client, model, session_id):
    model.push(
        Answer.tool_use("current_time", {}, text="Let me check."),
        Answer.text("It is late in the day."),
    )

    body = chat(claude_client, session_id, "what time is it?")

    results = model.calls[1].tool_results()
    assert len(results) == 1
    assert "UTC" in str(results[0]["content"])
    assert not results[0].get("is_error")
    assert body["reply"] == "Let me check.\n\nIt is late in the day."
    assert [s["kind"] for s in body["steps"]] == ["memory", "model", "tool", "model"]
    assert body["outputs"] == []


def test_an_action_becomes_a_pending_output_and_is_not_carried_out(
    claude_client, model, session_id
):
    model.push(
        Answer.tool_use("draft_email", EMAIL),
        Answer.text("I drafted it; it is waiting for review."),
    )

    body = chat(claude_client, session_id, "email Ana our pricing")

    assert len(body["outputs"]) == 1
    output = body["outputs"][0]
    assert output["status"] == "pending"
    assert output["skill"] == "draft_email"
    assert output["arguments"] == EMAIL
    assert output["requested_by"] == "U123"
    told = model.calls[1].tool_results()[0]["content"]
    assert f"Submitted for approval as output {output['id']}" in str(told)
    content = claude_client.get(f"/api/v1/outputs/{output['id']}/content")
    assert content.status_code == 200
    assert "Pricing" in content.text and "ana@example.com" in content.text
    detail = claude_client.get(f"/api/v1/sessions/{session_id}").json()
    assert [o["id"] for o in detail["outputs"]] == [output["id"]]


def test_invalid_arguments_go_back_to_the_model_and_nothing_is_created(
    claude_client, model, session_id
):
    model.push(
        Answer.tool_use("draft_email", {**EMAIL, "to": "not-an-address"}),
        Answer.text("Sorry, I need a valid address."),
    )

    body = chat(claude_client, session_id, "email someone")

    result = model.calls[1].tool_results()[0]
    assert result["is_error"] is True
    assert "to" in str(result["content"]) and "email" in str(result["content"])
    assert body["outputs"] == []
    assert claude_client.get("/api/v1/outputs").json()["items"] == []


def test_an_unknown_tool_is_an_error_result_not_a_crash(claude_client, model, session_id):
    model.push(Answer.tool_use("search_crm", {}), Answer.text("I can't search the CRM."))

    body = chat(claude_client, session_id, "search the crm")

    result = model.calls[1].tool_results()[0]
    assert result["is_error"] is True
    assert "no tool named 'search_crm'" in str(result["content"])
    assert body["status"] == "completed"


def test_memories_of_earlier_conversations_are_in_the_prompt_as_data(
    claude_client, claude_container, model, session_id, agent_id
):
    model.push(Answer.text("Noted: Tuesdays."))
    chat(claude_client, session_id, "I prefer meetings on Tuesday mornings")

    model.push(Answer.text("Tuesday morning works."))
    chat(claude_client, session_id, "when should we schedule the meeting?")

    system = model.calls[1].system
    assert len(system) == 2, "persona block + per-turn data block"
    data = system[1]["text"]
    assert "## Relevant Context from Previous Conversations" in data
    assert '<data source="memory">' in data
    assert "Tuesday" in data
    assert "cache_control" not in system[1]
    stored = claude_client.get(f"/api/v1/agents/{agent_id}/memory", params={"user_id": "U123"})
    assert stored.status_code == 200
    assert any("Tuesday" in m["text"] for m in stored.json()["items"])


def test_history_is_replayed_with_a_cache_breakpoint_on_the_newest_block(
    claude_client, model, session_id
):
    model.push(
        Answer.tool_use("current_time", {}), Answer.text("First answer."), Answer.text("Second.")
    )
    chat(claude_client, session_id, "question one")
    chat(claude_client, session_id, "question two")

    tool_step, replay = model.calls[1].messages, model.calls[2].messages
    assert [m["role"] for m in tool_step] == ["user", "assistant", "user"]
    assert tool_step[-1]["content"][0]["type"] == "tool_result"
    assert [m["role"] for m in replay] == ["user", "assistant", "user", "assistant", "user"]
    assert replay[-1]["content"][-1]["text"] == "question two"
    # One marker, on the newest block: each step reads what the step before it wrote.
    for call in model.calls:
        last = len(call.messages) - 1
        assert cache_markers(call) == [(last, len(call.messages[last]["content"]) - 1)]
        assert call.messages[last]["content"][-1]["cache_control"] == {"type": "ephemeral"}


def test_usage_and_cost_are_recorded_per_turn_and_totalled(
    claude_client, model, session_id, agent_id
):
    model.push(Answer.text("One.").using(ModelUsage(1000, 200, cache_write_tokens=800)))
    model.push(Answer.text("Two.").using(ModelUsage(3000, 500, 800, cache_write_tokens=40)))
    chat(claude_client, session_id, "a")
    chat(claude_client, session_id, "b")

    totals = claude_client.get("/api/v1/usage", params={"agent_id": agent_id}).json()
    assert totals["turns"] == 2
    assert totals["output_tokens"] == 700
    expected = sum(
        cost_micros(
            "claude-sonnet-4-6",
            input_tokens=t["usage"]["input_tokens"],
            output_tokens=t["usage"]["output_tokens"],
            cache_read=t["usage"]["cache_read_tokens"],
            cache_write=t["usage"]["cache_write_tokens"],
        )
        for t in claude_client.get(f"/api/v1/sessions/{session_id}").json()["turns"]
    )
    assert expected > 0
    assert (totals["input_tokens"], totals["cache_read_tokens"], totals["cache_write_tokens"]) == (
        4000,
        800,
        840,
    )
    assert totals["cost_usd"] == pytest.approx(expected / 1_000_000)
    session = claude_client.get(f"/api/v1/sessions/{session_id}").json()["session"]
    assert session["usage"]["output_tokens"] == 700
    today = claude_client.get(f"/api/v1/agents/{agent_id}/usage").json()
    assert (
        today["tokens_today"]
        == totals["input_tokens"]
        + totals["output_tokens"]
        + totals["cache_read_tokens"]
        + totals["cache_write_tokens"]
    )


def test_the_daily_output_limit_refuses_further_actions(claude_client, model, session_id):
    for _ in range(4):
        model.push(Answer.tool_use("draft_email", EMAIL), Answer.text("done"))
    results = [chat(claude_client, session_id, f"email {i}") for i in range(4)]

    assert [len(r["outputs"]) for r in results] == [1, 1, 1, 0]
    refused = model.calls[-1].tool_results()[0]
    assert refused["is_error"] is True
    assert "daily limit of 3 outputs" in str(refused["content"])
    assert len(claude_client.get("/api/v1/outputs").json()["items"]) == 3


def test_a_spent_token_budget_stops_the_turn_before_calling_claude(
    claude_client, claude_container, model, session_id, agent_id
):
    claude_client.patch(f"/api/v1/agents/{agent_id}", json={"limits": {"daily_token_budget": 50}})
    claude_container.quotas.add("default", agent_id, TOKENS, 50)

    body = chat(claude_client, session_id, "hello?")

    assert body["status"] == "failed"
    assert "daily limit of 50 tokens" in body["reply"]
    assert model.calls == []


def test_a_model_error_fails_the_turn_with_its_message_and_keeps_no_history(
    claude_client, model, session_id
):
    error = ModelError("APIConnectionError", user_message="Claude is away.", retryable=True)
    model.push(Answer.failure(error, partial_text="I was about to"))

    body = chat(claude_client, session_id, "hi")

    assert body["status"] == "failed"
    assert body["reply"] == "Claude is away."
    assert len(model.calls) == 1
    detail = claude_client.get(f"/api/v1/sessions/{session_id}").json()
    assert [t["status"] for t in detail["turns"]] == ["failed"]
    assert detail["messages"] == []


def test_the_idempotency_key_replays_the_same_turn(claude_client, model, session_id):
    model.push(Answer.text("Only once."))
    first = chat(claude_client, session_id, "hi", **{"Idempotency-Key": "k-1"})
    again = chat(claude_client, session_id, "hi", **{"Idempotency-Key": "k-1"})

    assert again["turn_id"] == first["turn_id"]
    assert again["reply"] == "Only once."
    assert again["replayed"] is True
    assert len(model.calls) == 1


def test_an_ended_session_refuses_new_messages(claude_client, session_id):
    assert claude_client.post(f"/api/v1/sessions/{session_id}/end").json()["status"] == "ended"
    r = claude_client.post(f"/api/v1/sessions/{session_id}/chat", json={"message": "hi"})
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"


def test_chat_without_claude_configured_is_a_503(client, container):
    client.post(
        "/api/v1/agents/import", content=CONFIG, headers={"Content-Type": "application/yaml"}
    )
    agent = client.get("/api/v1/agents").json()["items"][0]
    session = client.post(f"/api/v1/agents/{agent['id']}/sessions", json={}).json()
    r = client.post(f"/api/v1/sessions/{session['id']}/chat", json={"message": "hi"})
    assert r.status_code == 503
    assert r.json()["detail"] == "agents cannot answer: ANTHROPIC_API_KEY not set"


async def test_a_tool_that_raises_returns_is_error_and_the_loop_goes_on(
    claude_container, model, agent_id
):
    catalog = BuiltinCatalog.default()

    async def explode(arguments: dict[str, Any], ctx: Any) -> SkillResult:
        raise RuntimeError("secret internal detail")

    catalog.register("explode", explode)
    factory = SkillFactory(catalog, claude_container.http, lambda _: None, claude_container.mcp)
    spec = SkillSpec(name="explode", description="Always fails.", kind="read")
    agent = await _agent(claude_container, agent_id, factory.registry([spec]))
    session = claude_container.sessions.start("default", agent_id, user_id="U1")
    model.push(Answer.tool_use("explode", {}), Answer.text("That tool is broken."))

    result = await agent.chat(session, "try it")

    tool_result = model.calls[1].tool_results()[0]
    assert tool_result["is_error"] is True
    assert "secret internal detail" not in str(tool_result["content"])
    assert result.reply == "That tool is broken."
    assert not result.failed


async def test_the_step_limit_ends_a_runaway_tool_loop(claude_container, model, agent_id):
    config, specs = claude_container.runner.load("default", agent_id)
    agent = ConfigurableAgent(
        AgentConfig(agent=config.agent, persona=config.persona, model=config.model, max_steps=3),
        model=model,
        skills=claude_container.skill_factory.registry(specs),
        deps=claude_container.runner.deps,
    )
    session = claude_container.sessions.start("default", agent_id, user_id="U1")
    model.responder = lambda call: Answer.tool_use("current_time", {})

    result = await agent.chat(session, "loop forever")

    assert len(model.calls) == 3
    assert "stopped after 3 steps" in result.reply
    model.responder = None
    model.push(Answer.text("Continuing."))
    follow_up = await agent.chat(session, "continue")
    roles = [m["role"] for m in model.calls[-1].messages]
    assert roles[-1] == "user" and roles.count("user") == roles.count("assistant") + 1
    assert follow_up.reply == "Continuing."


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
async def test_concurrent_turns_on_one_agent_all_complete(real_db, settings, model):
    container = build_container(settings, db=real_db, model=model)
    container.config.apply("default", parse_document(CONFIG), actor="test")
    agent_id = container.agents.get_by_name("default", "sales-bot").id
    model.responder = lambda call: Answer.text(f"re: {call.messages[-1]['content'][-1]['text']}")
    agent = await container.runner.agent("default", agent_id)
    sessions = [container.sessions.start("default", agent_id, user_id=f"U{i}") for i in range(8)]

    results = await asyncio.gather(*(agent.chat(s, f"msg {i}") for i, s in enumerate(sessions)))

    assert sorted(r.reply for r in results) == sorted(f"re: msg {i}" for i in range(8))
    assert container.sessions.usage("default", agent_id=agent_id).turns == 8
    await container.aclose()


async def _agent(container, agent_id, registry) -> ConfigurableAgent:
    config, _ = container.runner.load("default", agent_id)
    return ConfigurableAgent(
        config,
        model=container.runner.model,
        skills=registry,
        deps=container.runner.deps,
    )


def test_a_turn_run_again_reuses_the_output_its_first_attempt_stored(
    claude_client, model, session_id
):
    """A worker that died after storing a proposal but before finishing the turn: the
    rerun proposes again, and must not ask reviewers twice (the chaos test caught it)."""
    import asyncio

    from sqlalchemy import update

    from core.db.models import TurnRow

    container = claude_client.app.state.container
    model.push(Answer.tool_use("draft_email", EMAIL), Answer.text("Waiting for review."))
    first = chat(claude_client, session_id, "email Ana our pricing")["outputs"][0]
    with container.db.session() as s:  # as the crash left it: proposed, never finished
        s.execute(update(TurnRow).where(TurnRow.id == first["turn_id"]).values(status="running"))
    turn = container.sessions.get_turn("default", first["turn_id"])
    session = container.sessions.get("default", session_id)

    model.push(Answer.tool_use("draft_email", EMAIL), Answer.text("Waiting for review."))
    agent = asyncio.run(container.runner.agent("default", session.agent_id))
    again = asyncio.run(agent.chat(session, turn.user_message, turn=turn))

    assert not again.failed, again.reply
    assert [o.id for o in again.outputs] == [first["id"]]
    detail = claude_client.get(f"/api/v1/sessions/{session_id}").json()
    assert [o["id"] for o in detail["outputs"]] == [first["id"]]
