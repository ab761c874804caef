"""Drop a file in, over a real `cosmo serve` (with its supervised worker): an admin creates a
knowledge base with `/agent kb new`, shares a PDF in a DM, picks the knowledge base, the
worker downloads and ingests it and says so in the thread, and the agent cites it. Slack and
Claude are the local fakes; the deadlines are functional bounds, not timings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.slack import kb_blocks
from tests.cosmo_process import cosmo_serve
from tests.fakes.anthropic_api import FakeAnthropicAPI, Reply
from tests.fakes.slack_api import BOT_TOKEN, BOT_USER_ID, FakeSlackAPI
from tests.fakes.slack_requests import SIGNING_SECRET, SignedRequest, SlackRequests
from tests.server_support import process_env
from tests.slack_support import eventually
from tests.unit.test_extractors import make_pdf

TOKEN = "kb-process-token"
ADA = "U0ADA00001"
ADA_DM = "D" + ADA[1:]
CONFIG = """
apiVersion: cosmo/v1
personas: [{name: helper, role: Support assistant}]
agents:
  - {name: support-bot, persona: helper, knowledge_bases: [handbook], memory_enabled: false}
"""
PRICING = make_pdf(
    [["Price list 2026"], ["The Pro plan costs 30 dollars per seat and month."]],
    outline=[("Price list", 1), ("Pro plan", 2)],
)
DEADLINE = 60.0


@pytest.fixture
def fakes() -> Iterator[tuple[FakeSlackAPI, FakeAnthropicAPI]]:
    with FakeSlackAPI() as slack, FakeAnthropicAPI() as claude:
        slack.add_user(ADA, "ada", is_admin=True)
        yield slack, claude


def environment(tmp_path: Path, slack: FakeSlackAPI, claude: FakeAnthropicAPI) -> dict[str, str]:
    return process_env(
        tmp_path / "data",
        slack,
        claude,
        COSMO_API_TOKEN=TOKEN,
        COSMO_SLACK_STREAMING="false",
        COSMO_EMBEDDER="hashing",  # MiniLM's start is not what this test is about
    )


def send(base: str, request: SignedRequest) -> None:
    r = httpx.post(f"{base}/slack/events", content=request.body, headers=request.headers)
    assert r.status_code == 200, r.text


def bot_replies(slack: FakeSlackAPI, ts: str) -> list[Any]:
    return [m for m in slack.messages_in(ADA_DM, thread_ts=ts) if m.user == BOT_USER_ID]


def test_a_pdf_dropped_in_a_dm_is_ingested_by_the_worker_and_cited(tmp_path, fakes):
    slack, claude = fakes
    requests = SlackRequests(SIGNING_SECRET)
    env = environment(tmp_path, slack, claude)
    with cosmo_serve(env, ready_within=180) as base:
        send(
            base,
            requests.slash_command(
                "/agent",
                "kb new handbook Company handbook",
                user=ADA,
                response_url=slack.response_url(user=ADA),
            ),
        )
        eventually(lambda: slack.calls("response_url"), timeout=DEADLINE)
        assert "Created the knowledge base" in slack.last("response_url").params["text"]
        r = httpx.post(
            f"{base}/api/v1/agents/import",
            content=CONFIG,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/yaml"},
            timeout=30,
        )
        assert r.status_code == 200, r.text

        file = slack.upload_file(
            "pricing.pdf", PRICING, mimetype="application/pdf", filetype="pdf", user=ADA
        )
        shared = requests.file_share([file], user=ADA)
        send(base, shared)
        ts = shared.payload["event"]["ts"]
        (prompt,) = eventually(lambda: bot_replies(slack, ts), timeout=DEADLINE)
        (actions,) = [b for b in prompt.blocks if b["type"] == "actions"]
        option = actions["elements"][0]["initial_option"]  # the only knowledge base

        send(
            base,
            requests.block_action(
                kb_blocks.ADD,
                kb_blocks.add_value(file["id"], ADA),
                user=ADA,
                channel=ADA_DM,
                message_ts=prompt.ts,
                thread_ts=ts,
                response_url=slack.response_url(user=ADA),
                state={
                    "values": {
                        actions["block_id"]: {
                            kb_blocks.PICK: {"type": "static_select", "selected_option": option}
                        }
                    }
                },
            ),
        )
        ready = eventually(
            lambda: slack.message(ADA_DM, prompt.ts).text.startswith("✅"), timeout=DEADLINE
        )
        assert ready
        final = slack.message(ADA_DM, prompt.ts).text
        assert final.startswith("✅ *pricing.pdf* is ready in *handbook*: "), final
        (download,) = slack.downloads()
        assert download.token == BOT_TOKEN
        updates = slack.calls("chat.update")
        edits = [c.params["text"] for c in updates if c.params["ts"] == prompt.ts]
        assert any("chunks…" in e for e in edits), edits

        claude.push(Reply.text("Pro costs 30 dollars per seat [1]."))
        question = requests.dm("What does the Pro plan cost?", user=ADA)
        send(base, question)
        q_ts = question.payload["event"]["ts"]
        (answer,) = eventually(
            lambda: [m for m in bot_replies(slack, q_ts) if m.text.startswith("Pro costs")],
            timeout=DEADLINE,
        )
        assert "pricing.pdf" in str(answer.blocks)
