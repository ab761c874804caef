"""Lifecycle timers across processes: two `cosmo worker` processes race for an output's due
escalation and reminder; each fires exactly once.

The workers' clocks cannot be injected across processes, so the timers are made due now:
the output is created already past its `expires_at` (its `output.expire` job enqueued with
it, as the engine does), and its first reminder is enqueued due now under the key the
timers use. (The injected-clock version, with two in-process workers and every step of
remind -> remind -> escalate -> expire, is tests/integration/test_approval_lifecycle.py.)
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.approvals.lifecycle import REMIND
from core.config_document import parse_document
from core.db import Database
from core.db.ids import new_id
from core.db.models import AuditRow, WebhookDeliveryRow
from core.outputs.port import NewOutput
from core.schemas.approval import resolve
from core.wiring import build_container
from tests.conftest import make_settings
from tests.cosmo_process import cosmo, cosmo_worker

#: The first reminder, due now (its regular round-1 job waits for `remind_after`).
DUE_NOW = REMIND + ":{}:due-now"
CONFIG = """
apiVersion: cosmo/v1
personas: [{name: p, role: r}]
skills:
  - {name: draft_email, description: d, kind: action}
agents:
  - name: bot
    persona: p
    skills: [draft_email]
    approvers: [U0LEAD]
    approval: {expires_after: 1h, on_expiry: escalate, escalate_to: [U0BACKUP],
               remind_after: 10m, remind_every: 1h}
    webhook: {url: "https://hooks.example.com/cosmo", secret_env: LIFECYCLE_HOOK_SECRET}
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "COSMO_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cosmo.db'}",
        "COSMO_API_TOKEN": "t",
        "COSMO_SECRET_KEY": "test-secret-key",
        "LIFECYCLE_HOOK_SECRET": "whsec_" + "A" * 32,
    }
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "ANTHROPIC_API_KEY"):
        env.pop(name, None)
    cosmo(env, "db", "upgrade")
    return env


def test_a_due_escalation_and_reminder_fire_once_across_two_worker_processes(env, tmp_path):
    db = Database.from_url(env["DATABASE_URL"])
    try:
        container = build_container(make_settings(tmp_path / "data"), db=db)
        container.config.apply("default", parse_document(CONFIG), actor="t")
        agent = container.agents.get_by_name("default", "bot")
        session = container.sessions.start("default", agent.id, user_id="U0REQ")
        with cosmo_worker(env), cosmo_worker(env):
            new = NewOutput(
                id=new_id("out"),
                tenant_id="default",
                agent_id=agent.id,
                session_id=session.id,
                skill="draft_email",
                is_automatable=False,
                arguments={},
                content="Draft",
                requested_by="U0REQ",
                expires_at=datetime.now(UTC) - timedelta(seconds=1),
                approval_policy=resolve(agent.approval, None).to_json(),
            )
            events = container.events.created(agent.webhook.url if agent.webhook else None, new)
            output = container.outputs.create(new, events, container.lifecycle.schedule)
            container.jobs.submit(
                tenant_id="default",
                kind=REMIND,
                key=DUE_NOW.format(output.id),
                payload={"output_id": output.id, "round": 1},
            )

            deadline = time.monotonic() + 60
            while container.outputs.get("default", output.id).escalated_at is None:
                assert time.monotonic() < deadline, "no worker escalated the output"
                time.sleep(0.2)
            reminded = container.jobs.find(DUE_NOW.format(output.id))
            while reminded is None or reminded.state not in ("succeeded", "dead"):
                assert time.monotonic() < deadline, "no worker ran the reminder"
                time.sleep(0.2)
                reminded = container.jobs.find(DUE_NOW.format(output.id))
            time.sleep(2)  # a second run, if there were one, would land by now
        with db.session() as s:
            kinds = list(
                s.scalars(
                    select(WebhookDeliveryRow.event_type).where(
                        WebhookDeliveryRow.output_id == output.id
                    )
                )
            )
            actions = list(
                s.scalars(select(AuditRow.action).where(AuditRow.output_id == output.id))
            )
        assert reminded.state == "succeeded"
        assert kinds.count("output.escalated") == 1
        assert kinds.count("output.reminded") == 1
        assert actions.count("escalate") == 1 and actions.count("remind") == 1
        final = container.outputs.get("default", output.id)
        assert final.status == "pending"  # the restarted clock runs an hour from now
        assert final.expires_at is not None and final.expires_at > datetime.now(UTC)
    finally:
        db.dispose()
