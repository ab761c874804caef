"""`cosmo audit verify` as an auditor runs it, after someone edited the database behind the
app's back: a real process on a real database (SQLite file, PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select, text

from core.approvals.audit import GENESIS, entry_hash
from core.approvals.policy import Actor
from core.config_document import parse_document
from core.db import Database
from core.db.ids import new_id
from core.db.models import AuditRow
from core.errors import NotAllowedToDecide
from core.outputs.port import NewOutput
from core.skills.runtime import SkillResult
from core.wiring import build_container
from tests.conftest import BACKENDS, execution_worker, make_settings
from tests.cosmo_zygote import run_cosmo

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
apiVersion: cosmo/v1
personas: [{name: p, role: r}]
skills:
  - {name: create_task, description: d, kind: action, is_automatable: true}
agents:
  - {name: bot, persona: p, skills: [create_task], approvers: [U0LEAD]}
"""


@dataclass
class History:
    url: str
    env: dict[str, str]
    db: Database
    entries: list[str]  # audit entry ids by seq (index 0 is seq 1)
    receipts: list[str]

    def verify(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`cosmo audit verify ARGS` in a process of its own (tests/cosmo_zygote.py)."""
        return run_cosmo(self.env, ["audit", "verify", *args], cwd=ROOT, timeout=180)

    def sql(self, statement: str, **params: Any) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(text(statement), params)

    def with_connection(self, change: Callable[[Connection], None]) -> None:
        with self.db.engine.begin() as conn:
            change(conn)


@pytest.fixture(params=BACKENDS)
def history(request, migrated_database_url_factory, tmp_path) -> Iterator[History]:
    """Three outputs decided through the approval service: an approval that ran, a
    rejection, a refused attempt and a second approval — 6 audit entries, 5 receipts."""
    url = migrated_database_url_factory(request.param)
    settings = make_settings(tmp_path / "data", DATABASE_URL=url)
    container = build_container(settings)

    async def create_task(arguments: dict[str, Any], ctx: Any) -> SkillResult:
        return SkillResult("done", data={"id": 1})

    container.skill_factory.builtins.register("create_task", create_task)
    container.config.apply("default", parse_document(CONFIG), actor="test")
    agent = container.agents.get_by_name("default", "bot")

    def output() -> str:
        session = container.sessions.start("default", agent.id, user_id="U0REQ")
        new = NewOutput(
            id=new_id("out"), tenant_id="default", agent_id=agent.id, session_id=session.id,
            skill="create_task", is_automatable=True, arguments={"title": "x"}, content="c",
            requested_by="U0REQ",
        )  # fmt: skip
        return container.outputs.create(new, ()).id

    lead = Actor("U0LEAD", "slack", verified=True)

    async def decide() -> None:
        approvals = container.approvals
        await approvals.decide("default", output(), "approve", lead)
        await execution_worker(container).run_until_idle()
        await approvals.decide("default", output(), "reject", lead, "no")
        third = output()
        with pytest.raises(NotAllowedToDecide):
            await approvals.decide("default", third, "approve", Actor("U0X", "api"))
        await approvals.decide("default", third, "approve", lead)
        await execution_worker(container).run_until_idle()

    asyncio.run(decide())
    container.close()
    db = Database.from_url(url)
    with db.engine.connect() as conn:
        entries = list(conn.scalars(text("SELECT id FROM audit_log ORDER BY seq")))
        receipts = list(conn.scalars(text("SELECT id FROM receipts ORDER BY created_at, id")))
    assert len(entries) == 6 and len(receipts) == 5
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMO_", "DATABASE_"))}
    env.update(
        COSMO_DATA_DIR=str(tmp_path / "data"),
        COSMO_SECRET_KEY="test-secret-key",
        COSMO_API_TOKEN="t",
        DATABASE_URL=url,
        NO_COLOR="1",
        COLUMNS="300",
    )
    yield History(url, env, db, entries, receipts)
    db.dispose()


def test_an_untouched_history_verifies(history: History):
    done = history.verify()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tenant default: 6 audit entries, chain intact; 5 receipts" in done.stdout
    assert "all intact" in done.stdout
    assert history.verify("--tenant", "default").returncode == 0


def test_an_edited_detail_is_named(history: History):
    history.sql("UPDATE audit_log SET detail = 'fine' WHERE id = :id", id=history.entries[2])
    done = history.verify()
    assert done.returncode == 1
    assert f"BROKEN at audit entry {history.entries[2]} (seq 3)" in done.stdout
    assert "no longer match its hash" in done.stdout
    # The receipt of that rejection names the entry's old hash, too.
    assert f"BROKEN receipt {history.receipts[2]}" in done.stdout


def test_a_deleted_entry_is_named(history: History):
    history.sql("DELETE FROM audit_log WHERE id = :id", id=history.entries[3])
    done = history.verify()
    assert done.returncode == 1
    assert f"BROKEN at audit entry {history.entries[4]} (seq 5)" in done.stdout
    assert "entry seq 4 before it is missing" in done.stdout


def test_a_deleted_last_entry_is_caught_by_the_head(history: History):
    history.sql("DELETE FROM receipts WHERE audit_id = :id", id=history.entries[5])
    history.sql("DELETE FROM audit_log WHERE id = :id", id=history.entries[5])
    done = history.verify()
    assert done.returncode == 1
    assert "BROKEN at chain head" in done.stdout
    assert "entries at the end are missing" in done.stdout


def test_a_reordered_pair_is_named(history: History):
    first, second = history.entries[1], history.entries[2]

    def swap(conn: Connection) -> None:
        times: dict[str, Any] = dict(
            conn.execute(
                text("SELECT id, created_at FROM audit_log WHERE id IN (:a, :b)"),
                {"a": first, "b": second},
            ).all()
        )
        for row_id, other, tmp in ((first, second, "aud_tmp1"), (second, first, "aud_tmp2")):
            conn.execute(
                text("UPDATE audit_log SET id = :tmp, created_at = :at WHERE id = :id"),
                {"tmp": tmp, "at": times[other], "id": row_id},
            )
        conn.execute(text("UPDATE audit_log SET id = :b WHERE id = 'aud_tmp1'"), {"b": second})
        conn.execute(text("UPDATE audit_log SET id = :a WHERE id = 'aud_tmp2'"), {"a": first})

    history.with_connection(swap)
    done = history.verify()
    assert done.returncode == 1
    assert f"BROKEN at audit entry {second} (seq 2)" in done.stdout


def test_a_forged_receipt_is_named(history: History):
    history.sql("UPDATE receipts SET decided_by = 'U0BOSS' WHERE id = :id", id=history.receipts[3])
    done = history.verify()
    assert done.returncode == 1
    assert f"BROKEN receipt {history.receipts[3]}: its signature does not match" in done.stdout
    assert "BROKEN at audit entry" not in done.stdout  # the chain itself is untouched


def test_a_rewritten_chain_is_still_caught_by_the_signed_receipts(history: History):
    """Whoever knows the hash rules can recompute every hash after an edit; they cannot
    re-sign the receipts that name the old hashes."""

    def rewrite(conn: Connection) -> None:
        conn.execute(
            text("UPDATE audit_log SET actor = 'U0BOSS' WHERE id = :id"),
            {"id": history.entries[0]},
        )
        prev = GENESIS
        table = AuditRow.__table__
        for row in conn.execute(select(table).order_by(table.c.seq)).mappings():
            fields = AuditRow(**dict(row, prev_hash=prev))
            digest = entry_hash(fields)
            conn.execute(
                text("UPDATE audit_log SET prev_hash = :p, entry_hash = :h WHERE id = :id"),
                {"p": prev, "h": digest, "id": row["id"]},
            )
            prev = digest
        conn.execute(text("UPDATE audit_heads SET last_hash = :h"), {"h": prev})

    history.with_connection(rewrite)
    done = history.verify()
    assert done.returncode == 1
    assert "BROKEN at audit entry" not in done.stdout  # the chain itself now fits...
    assert f"BROKEN receipt {history.receipts[0]}" in done.stdout  # ...its receipts do not
    assert "no longer has the hash it signed" in done.stdout
