"""An agent cites its knowledge: numbered passages in, `[n]` markers out, sources shown.

REST in, Claude scripted at the `ModelClient` port (tests/fakes/scripted_model.py), a real
knowledge base in between (embedded provider, the container's default embedder). The Slack
tests run the whole Slack app (signed events, Bolt, the fake Slack Web API, the real
anthropic SDK against the fake Messages API) over the same pieces.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from core.config_document import parse_document
from core.db import Database
from core.embeddings.hashing import HashingEmbedder
from core.knowledge.jobs import KIND
from core.memory.local import LocalMemory
from core.settings import Settings
from core.wiring import Container, build_container
from tests.conftest import AUTH
from tests.fakes.anthropic_api import Reply
from tests.fakes.scripted_model import Answer, ScriptedModel
from tests.fakes.slack_api import BOT_USER_ID, CHANNEL_ID
from tests.job_support import run_due_jobs
from tests.slack_support import SlackApp, slack_app
from tests.unit.test_extractors import make_pdf

BASE = "/api/v1/knowledge-bases"
PERSONA = """
apiVersion: cosmo/v1
personas:
  - name: helper
    role: Support assistant
skills:
  - name: search_knowledge
    description: Search the handbook.
    kind: read
    input_schema: {type: object, properties: {query: {type: string}, limit: {type: integer}},
                   required: [query]}
"""
AGENT = """
agents:
  - name: support-bot
    persona: helper
    skills: [search_knowledge]
    knowledge_bases: [handbook]
    memory_enabled: false
"""
REFUNDS = b"""# Refunds

## EU
Customers in the EU get their refund within 14 days of the return.
"""
PRICING = make_pdf(
    [["Price list 2026"], ["The Pro plan costs 30 dollars per seat and month."]],
    outline=[("Price list", 1), ("Pro plan", 2)],
)
QUESTION = "How long do EU refunds take, and what does the Pro plan cost per seat?"
_PASSAGE = re.compile(
    r'<data source="knowledge" id="(\d+)" document="([^"]+)"(?: section="([^"]*)")?'
)


def add_handbook(client: Any, *, top_k: int, headers: dict[str, str] | None = None) -> None:
    """The `handbook` knowledge base: refunds.md (one section) and pricing.pdf (two pages)."""
    kb = client.post(BASE, json={"name": "handbook", "top_k": top_k}, headers=headers)
    assert kb.status_code == 201, kb.text
    for name, data in (("refunds.md", REFUNDS), ("pricing.pdf", PRICING)):
        r = client.post(
            f"{BASE}/{kb.json()['id']}/documents", files={"file": (name, data)}, headers=headers
        )
        assert r.status_code == 202, r.text
    run_due_jobs(client.app.state.container, KIND)  # ingested, as a worker would


def passages(text: str) -> dict[int, tuple[str, str | None]]:
    """The numbered passages in a system prompt or a tool result: number -> (document, section)."""
    return {int(n): (doc, section) for n, doc, section in _PASSAGE.findall(text)}


def cited(body: dict[str, Any]) -> list[tuple[int, str]]:
    return [(c["number"], c["document"]) for c in body["citations"]]


# --- the turn and its REST views -------------------------------------------------------------


@pytest.fixture
def claude_container(db: Database, settings: Settings, model: ScriptedModel) -> Container:
    """Claude is the scripted `model` here (conftest's `claude_client` runs on this)."""
    return build_container(settings, db=db, model=model, memory=LocalMemory(db, HashingEmbedder()))


@pytest.fixture
def support_bot(claude_client) -> str:
    return agent_with_handbook(claude_client, top_k=5)


def agent_with_handbook(client: Any, *, top_k: int) -> str:
    add_handbook(client, top_k=top_k)
    r = client.post(
        "/api/v1/agents/import",
        content=PERSONA + AGENT,
        headers={"Content-Type": "application/yaml"},
    )
    assert r.status_code == 200, r.text
    (agent,) = client.get("/api/v1/agents").json()["items"]
    return str(agent["id"])


def start(client: Any, agent_id: str) -> str:
    r = client.post(f"/api/v1/agents/{agent_id}/sessions", json={"user_id": "U1"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def chat(client: Any, session_id: str, message: str, **headers: str) -> dict[str, Any]:
    r = client.post(
        f"/api/v1/sessions/{session_id}/chat", json={"message": message}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed", r.json()
    return dict(r.json())


def test_the_reply_cites_numbered_passages_and_the_turn_lists_them(
    claude_client, model, support_bot
):
    model.push(Answer.text("The Pro plan is 30 dollars [2]. EU refunds take 14 days [1][2]."))
    session = start(claude_client, support_bot)

    body = chat(claude_client, session, QUESTION, **{"Idempotency-Key": "q1"})

    system = model.calls[0].system_text
    seen = passages(system)
    assert {seen[1][0], seen[2][0]} == {"refunds.md", "pricing.pdf"}, seen
    assert "cite it with its number in square brackets" in system
    assert cited(body) == [(2, seen[2][0]), (1, seen[1][0])]  # first-cited order, no repeats
    pricing = next(c for c in body["citations"] if c["document"] == "pricing.pdf")
    assert pricing["page"] == 2 and pricing["section"] == "Pro plan"
    refunds = next(c for c in body["citations"] if c["document"] == "refunds.md")
    assert refunds["page"] is None and refunds["section"] == "Refunds > EU"

    # Stored with the turn: the session view and a replayed request show the same.
    detail = claude_client.get(f"/api/v1/sessions/{session}").json()
    assert detail["turns"][0]["citations"] == body["citations"]
    again = chat(claude_client, session, QUESTION, **{"Idempotency-Key": "q1"})
    assert again["replayed"] and again["citations"] == body["citations"]


def test_markers_that_name_no_passage_are_ignored(claude_client, model, support_bot):
    model.push(Answer.text("See [9] and items[1]; refunds take 14 days [1]."))

    body = chat(claude_client, start(claude_client, support_bot), QUESTION)

    seen = passages(model.calls[0].system_text)
    assert 9 not in seen
    assert cited(body) == [(1, seen[1][0])]


def test_a_reply_that_cites_nothing_has_no_citations(claude_client, model, support_bot):
    model.push(Answer.text("The handbook does not say."))
    session = start(claude_client, support_bot)

    body = chat(claude_client, session, "Who founded the company?")

    assert body["citations"] == []
    assert claude_client.get(f"/api/v1/sessions/{session}").json()["turns"][0]["citations"] == []


def test_search_knowledge_results_continue_the_numbering_of_the_prompts_passages(
    claude_client, model
):
    # top_k 1: the prompt gets one passage; the search (limit 5) finds it again and more.
    agent = agent_with_handbook(claude_client, top_k=1)
    model.push(
        Answer.tool_use("search_knowledge", {"query": QUESTION, "limit": 5}),
        Answer.text("Refunds: 14 days [1]. Pro: 30 dollars [2]."),
    )

    body = chat(claude_client, start(claude_client, agent), QUESTION)

    in_prompt = passages(model.calls[0].system_text)
    assert list(in_prompt) == [1]
    result = model.calls[1].tool_results()[0]
    found = passages(str(result["content"]))
    assert found[1] == in_prompt[1]  # seen twice, same number
    assert sorted(found) == list(range(1, len(found) + 1)) and len(found) >= 2
    assert {doc for doc, _ in found.values()} == {"refunds.md", "pricing.pdf"}
    assert cited(body) == [(1, found[1][0]), (2, found[2][0])]


# --- Slack --------------------------------------------------------------------------------------


@pytest.fixture
def app(real_db, tmp_path) -> Iterator[SlackApp]:
    with slack_app(real_db, tmp_path, PERSONA) as running:
        add_handbook(running.client, top_k=5, headers=AUTH)
        document = parse_document(PERSONA + AGENT)
        running.container.config.apply("default", document, actor="test")
        yield running


def ask(app: SlackApp, text: str) -> Any:
    """Mention the bot; the one reply in the thread once the turn is done."""
    request = app.requests.app_mention(f"<@{BOT_USER_ID}> {text}")
    assert app.send(request).status_code == 200
    app.run_jobs()
    ts = request.payload["event"]["ts"]
    (reply,) = [m for m in app.slack.messages_in(CHANNEL_ID, thread_ts=ts) if m.ts != ts]
    return reply


def test_the_slack_reply_lists_the_sources_it_cites(app):
    app.claude.push(Reply.text("Pro is 30 dollars [2]; EU refunds take 14 days [1]."))

    reply = ask(app, QUESTION)

    seen = passages(app.claude.message_requests[0].system_text)
    where = {
        "refunds.md": "refunds.md \u203a Refunds &gt; EU",
        "pricing.pdf": "pricing.pdf \u203a Pro plan (p. 2)",
    }
    text = "Pro is 30 dollars [2]; EU refunds take 14 days [1]."
    assert reply.text == text  # the notification / fallback text is the reply as before
    assert reply.blocks == [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Sources: [2] {where[seen[2][0]]} · [1] {where[seen[1][0]]}",
                }
            ],
        },
    ]
    # The placeholder was replaced by the streamed text, and the final update added the block.
    updates = [c.params for c in app.slack.calls("chat.update") if c.params["ts"] == reply.ts]
    assert updates and "blocks" in updates[-1]
    assert all("blocks" not in u for u in updates[:-1])


def test_a_slack_reply_that_cites_nothing_is_plain_text(app):
    app.claude.push(Reply.text("The handbook does not cover that [9]."))

    reply = ask(app, "Who founded the company?")

    assert reply.text == "The handbook does not cover that [9]."
    assert reply.blocks == []
    assert all("blocks" not in c.params for c in app.slack.calls("chat.update"))
