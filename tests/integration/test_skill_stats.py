"""`GET /api/v1/skills/{name}/stats` and the same figures in `/agent show`: how reviewers
treated a skill's outputs over a stated window."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot.slack import admin_blocks as ui
from core.outputs.stats import skill_stats
from tests.integration.test_bulk_decisions import CONFIG, propose


def test_the_figures_count_outcomes_over_the_stated_window(client, container):
    r = client.post(
        "/api/v1/agents/import", content=CONFIG, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    approved, rejected, _pending = propose(container, n=3)
    client.post(f"/api/v1/outputs/{approved}/approve", json={"user_id": "U0LEAD"})
    client.post(f"/api/v1/outputs/{rejected}/reject", json={"user_id": "U0LEAD", "reason": "no"})

    r = client.get("/api/v1/skills/draft_email/stats")

    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["window_days"] == 30 and body["skill"] == "draft_email"
    assert {k: body[k] for k in ("proposed", "pending", "approved_unchanged", "rejected")} == {
        "proposed": 3,
        "pending": 1,
        "approved_unchanged": 1,
        "rejected": 1,
    }
    assert body["approved_with_edits"] == body["expired"] == 0
    assert body["median_seconds_to_decision"] >= 0
    week = client.get("/api/v1/skills/draft_email/stats", params={"days": 7}).json()
    assert week["window_days"] == 7
    assert client.get("/api/v1/skills/nope/stats").status_code == 404
    assert client.get("/api/v1/skills/draft_email/stats", params={"days": 0}).status_code == 422

    # `/agent show` says the same, under the agent's configuration.
    agent = container.agents.get_by_name("default", "bot")
    figures = skill_stats(container.outputs, "default", "draft_email", container.quotas.clock())
    _, blocks = ui.agent_details(
        agent,
        persona=None,
        skills=[container.skills.get("default", "draft_email")],
        model="m",
        stats=[figures],
    )
    shown = blocks[-1]["text"]["text"]
    assert shown.startswith("*How reviewers treated its actions* (last 30 days)")
    assert "`draft_email`: 3 proposed · 1 approved unchanged · 0 approved with edits" in shown
    assert "1 rejected · 0 expired · 1 pending · median" in shown
    assert timedelta(seconds=body["median_seconds_to_decision"]) < timedelta(minutes=5)
