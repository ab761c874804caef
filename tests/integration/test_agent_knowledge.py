"""An agent with knowledge bases: passages in its system prompt, and `search_knowledge`.

REST in, Claude scripted at the `ModelClient` port (tests/fakes/scripted_model.py), a real
knowledge base in between (embedded provider, the container's default embedder).
"""

from __future__ import annotations

from typing import Any

import pytest

from core.db import Database
from core.embeddings.hashing import HashingEmbedder
from core.knowledge.jobs import KIND
from core.memory.local import LocalMemory
from core.settings import Settings
from core.wiring import Container, build_container
from tests.fakes.scripted_model import Answer, ScriptedModel
from tests.job_support import run_due_jobs

CONFIG = """
apiVersion: cosmo/v1
personas:
  - name: helper
    role: Support assistant
skills:
  - name: search_knowledge
    description: Search the handbook.
    kind: read
    input_schema: {type: object, properties: {query: {type: string}}, required: [query]}
agents:
  - name: support-bot
    persona: helper
    skills: [search_knowledge]
    knowledge_bases: [handbook]
    memory_enabled: false
  - name: plain-bot
    persona: helper
    skills: [search_knowledge]
    memory_enabled: false
"""

HANDBOOK = b"""# Handbook

## Refunds
Refunds are paid within 30 days of purchase, no questions asked.

## Security
API keys rotate every 90 days; ticket SEC-4411 tracks the vault migration.
"""


@pytest.fixture
def claude_container(db: Database, settings: Settings, model: ScriptedModel) -> Container:
    """Claude is the scripted `model` here (conftest's `claude_client` runs on this)."""
    return build_container(settings, db=db, model=model, memory=LocalMemory(db, HashingEmbedder()))


@pytest.fixture
def agents(claude_client) -> dict[str, str]:
    kb = claude_client.post("/api/v1/knowledge-bases", json={"name": "handbook"}).json()
    r = claude_client.post(
        f"/api/v1/knowledge-bases/{kb['id']}/documents",
        files={"file": ("handbook.md", HANDBOOK)},
    )
    assert r.status_code == 202, r.text
    run_due_jobs(claude_client.app.state.container, KIND)  # ingested, as a worker would
    r = claude_client.post(
        "/api/v1/agents/import", content=CONFIG, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    return {a["name"]: a["id"] for a in claude_client.get("/api/v1/agents").json()["items"]}


def chat(client, agent_id: str, message: str) -> dict[str, Any]:
    session = client.post(f"/api/v1/agents/{agent_id}/sessions", json={"user_id": "U1"}).json()
    r = client.post(f"/api/v1/sessions/{session['id']}/chat", json={"message": message})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_knowledge_hits_are_in_the_system_prompt_as_cited_data(claude_client, model, agents):
    model.push(Answer.text("Refunds take up to 30 days [1]."))

    body = chat(claude_client, agents["support-bot"], "How long do refunds take?")

    assert body["status"] == "completed"
    system = model.calls[0].system
    assert len(system) == 2 and "cache_control" not in system[1]
    data = system[1]["text"]
    assert "## Knowledge" in data
    assert (
        '<data source="knowledge" id="1" document="handbook.md" section="Handbook > Refunds">'
        in (data)
    )
    assert "Refunds are paid within 30 days" in data


def test_an_agent_without_knowledge_bases_gets_no_knowledge_block(claude_client, model, agents):
    model.push(Answer.text("I cannot look that up."))
    chat(claude_client, agents["plain-bot"], "How long do refunds take?")
    system = model.calls[0].system
    assert all('source="knowledge"' not in block["text"] for block in system)


def test_search_knowledge_returns_passages_with_their_sources(claude_client, model, agents):
    model.push(
        Answer.tool_use("search_knowledge", {"query": "SEC-4411"}),
        Answer.text("SEC-4411 tracks the vault migration."),
    )

    chat(claude_client, agents["support-bot"], "what is SEC-4411 about?")

    result = model.calls[1].tool_results()[0]
    assert not result.get("is_error")
    content = str(result["content"])
    assert content.startswith("Knowledge matching 'SEC-4411'")
    assert '<data source="knowledge" id="' in content
    assert 'document="handbook.md" section="Handbook > Security"' in content
    assert "ticket SEC-4411 tracks the vault migration" in content


def test_search_knowledge_says_so_when_the_agent_has_no_knowledge(claude_client, model, agents):
    model.push(Answer.tool_use("search_knowledge", {"query": "refunds"}), Answer.text("Nothing."))
    chat(claude_client, agents["plain-bot"], "refunds?")
    result = model.calls[1].tool_results()[0]
    assert "This agent has no knowledge base to search." in str(result["content"])
