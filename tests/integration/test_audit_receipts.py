"""The audit chain and signed receipts as a reviewer, an auditor and an outsider meet them:
every decision and execution leaves a chained audit entry and a receipt that verifies with
nothing but the public key the API serves; the chain stays linear under many writers."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import select, text

from core.approvals import lifecycle
from core.approvals.audit import GENESIS, AuditLog, entry_hash
from core.approvals.policy import Actor
from core.approvals.receipts import Receipts, ReceiptSigner
from core.db import Database, upgrade
from core.db.ids import new_id
from core.db.models import AuditHeadRow, AuditRow
from core.outputs.port import NewOutput
from core.skills.runtime import SkillResult
from tests.conftest import BACKENDS

CONFIG = """
apiVersion: cosmo/v1
personas: [{name: p, role: Sales assistant}]
skills:
  - name: create_task
    description: Create a CRM task.
    kind: action
    is_automatable: true
    input_schema: {type: object, properties: {title: {type: string}}, required: [title]}
agents:
  - name: bot
    persona: p
    skills: [create_task]
    approvers: [U0LEAD]
"""


@pytest.fixture
def agent(client, container) -> dict[str, Any]:
    async def create_task(arguments: dict[str, Any], ctx: Any) -> SkillResult:
        return SkillResult(f"task created: {arguments['title']}", data={"task_id": "T-7"})

    container.skill_factory.builtins.register("create_task", create_task)
    r = client.post(
        "/api/v1/agents/import", content=CONFIG, headers={"Content-Type": "application/yaml"}
    )
    assert r.status_code == 200, r.text
    return dict(client.get("/api/v1/agents").json()["items"][0])


def make_output(container, agent, *, expires_at=None):
    session = container.sessions.start("default", agent["id"], user_id="U0REQ")
    new = NewOutput(
        id=new_id("out"),
        tenant_id="default",
        agent_id=agent["id"],
        session_id=session.id,
        skill="create_task",
        is_automatable=True,
        arguments={"title": "Rappeler Zoë ✓"},
        content="Proposed: call Zoë",
        requested_by="U0REQ",
        expires_at=expires_at,
    )
    return container.outputs.create(new, ())


def outsider_verifies(receipt: dict[str, Any], public_key_b64: str) -> dict[str, Any]:
    """What someone outside Cosmo does: only the public key, the `cryptography` package
    and the documented canonical form."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
    key.verify(base64.b64decode(receipt["signature"]), receipt["canonical"].encode("utf-8"))
    body = json.loads(receipt["canonical"])
    assert body == receipt["receipt"]
    rendered = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert rendered == receipt["canonical"]
    return dict(body)


def test_an_approval_leaves_chained_entries_and_receipts_an_outsider_can_verify(
    client, container, agent
):
    output = make_output(container, agent)

    r = client.post(f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0LEAD"})
    assert r.status_code == 200, r.text
    executed = r.json()["output"]

    key = client.get("/api/v1/receipts/public-key", headers={"Authorization": ""})
    assert key.status_code == 200
    public = key.json()
    raw = base64.b64decode(public["public_key"])
    assert public["key_id"] == hashlib.sha256(raw).hexdigest()[:16]
    pem_key = load_pem_public_key(public["pem"].encode())
    assert isinstance(pem_key, Ed25519PublicKey)

    got = client.get(f"/api/v1/outputs/{output.id}/receipt")
    assert got.status_code == 200, got.text
    receipts = got.json()
    assert receipts["public_key_id"] == public["key_id"]
    assert receipts["latest"] == receipts["history"][-1]
    bodies = [outsider_verifies(rc, public["public_key"]) for rc in receipts["history"]]
    assert [b["decision"] for b in bodies] == ["approved", "executed"]
    for body in bodies:
        assert body["output_id"] == output.id
        assert body["revision"] == 1
        assert body["content_sha256"] == output.content_sha256
        assert (body["decided_by"], body["how"], body["identity"]) == ("U0LEAD", "api", "asserted")
    assert bodies[0]["result_sha256"] is None
    result = {"error": None, "result": executed["execution_result"]}
    assert (
        bodies[1]["result_sha256"]
        == hashlib.sha256(
            json.dumps(result, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
        ).hexdigest()
    )

    audit = client.get(f"/api/v1/outputs/{output.id}/audit").json()["items"]
    assert [(a["action"], a["actor"], a["identity"]) for a in audit] == [
        ("approve", "U0LEAD", "asserted"),
        ("execute", "system", "system"),
    ]
    assert [a["revision"] for a in audit] == [1, 1]
    assert {a["content_sha256"] for a in audit} == {output.content_sha256}
    assert audit[1]["prev_hash"] == audit[0]["entry_hash"]
    assert audit[1]["seq"] == audit[0]["seq"] + 1
    assert [b["audit_entry_hash"] for b in bodies] == [a["entry_hash"] for a in audit]


def test_a_tampered_receipt_fails_the_outsiders_check(client, container, agent):
    output = make_output(container, agent)
    client.post(f"/api/v1/outputs/{output.id}/approve", json={"user_id": "U0LEAD"})
    public = client.get("/api/v1/receipts/public-key").json()["public_key"]
    receipt = client.get(f"/api/v1/outputs/{output.id}/receipt").json()["latest"]

    forged = dict(receipt, canonical=receipt["canonical"].replace("U0LEAD", "U0BOSS"))
    with pytest.raises(InvalidSignature):
        outsider_verifies(forged, public)
    other = ReceiptSigner("another-secret")
    with pytest.raises(InvalidSignature):
        outsider_verifies(receipt, base64.b64encode(other.public_raw).decode())


def test_rejections_expiries_and_refusals_are_chained_with_identity_and_key(
    client, container, agent
):
    rejected = make_output(container, agent)
    client.post(
        f"/api/v1/outputs/{rejected.id}/reject", json={"user_id": "U0LEAD", "reason": "Non"}
    )
    refused = client.post(f"/api/v1/outputs/{rejected.id}/approve", json={"user_id": "U0X"})
    assert refused.status_code == 409

    receipts = client.get(f"/api/v1/outputs/{rejected.id}/receipt").json()["history"]
    assert [r["receipt"]["decision"] for r in receipts] == ["rejected"]
    audit = client.get(f"/api/v1/outputs/{rejected.id}/audit").json()["items"]
    assert [(a["action"], a["outcome"]) for a in audit] == [
        ("reject", "applied"),
        ("approve", "lost"),
    ]


async def test_an_expiry_is_signed_by_the_system(client, container, agent):
    output = make_output(container, agent, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert await lifecycle.runner_of(container).expire_or_escalate(output) == "expired"
    (receipt,) = container.receipts.for_output("default", output.id)
    assert (receipt.receipt.decision, receipt.receipt.decided_by) == ("expired", "system")
    assert (receipt.receipt.how, receipt.receipt.identity) == ("system", "system")


def test_a_pending_output_has_no_receipt_yet(client, container, agent):
    output = make_output(container, agent)
    r = client.get(f"/api/v1/outputs/{output.id}/receipt")
    assert r.status_code == 404
    assert output.id in r.json()["detail"]
    assert client.get("/api/v1/outputs/out_nope/receipt").status_code == 404
    assert (
        client.get(f"/api/v1/outputs/{output.id}/receipt", headers={"Authorization": ""})
    ).status_code == 401


def test_an_api_key_is_named_in_the_entry_and_the_receipt(db):
    audit = AuditLog(db)
    actor = Actor("U0LEAD", "api", verified=True, key_id="key_01", key_name="ci bot")
    entry = audit.record(
        "default", "out_1", actor=actor, action="approve", outcome="applied", revision=2
    )
    assert (entry.identity, entry.key_id, entry.key_name, entry.revision) == (
        "verified",
        "key_01",
        "ci bot",
        2,
    )
    assert entry_hash(entry) == entry.entry_hash


def test_text_every_backend_stores_keeps_its_hash_after_the_round_trip(db):
    audit = AuditLog(db)
    detail = "Zoë ✓ 日本語 \U0001f600 nul:\x00 lone:\ud800"
    written = audit.record(
        "default", "out_1", actor=Actor("U0Ü", "slack"), action="reject", outcome="applied",
        detail=detail,
    )  # fmt: skip
    (read,) = audit.for_output("default", "out_1")
    assert read == written
    assert entry_hash(read) == read.entry_hash
    assert read.detail is not None and "\x00" not in read.detail and "日本語" in read.detail


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_fifty_concurrent_writers_keep_one_linear_chain(real_db: Database):
    audit = AuditLog(real_db)
    writers, each = 50, 4
    start = threading.Barrier(writers)
    failures: list[BaseException] = []

    def write(n: int) -> None:
        try:
            start.wait()
            for i in range(each):
                audit.record(
                    "T1",
                    f"out_{n}",
                    actor=Actor(f"U{n}", "api"),
                    action="approve",
                    outcome="lost",
                    detail=f"writer {n} entry {i}",
                )
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    report = audit.verify_chain("T1")
    assert report.intact, report.breaks
    assert report.entries == writers * each
    with real_db.session() as s:
        seqs = list(s.scalars(select(AuditRow.seq).order_by(AuditRow.seq)))
        head = s.get(AuditHeadRow, "T1")
    assert seqs == list(range(1, writers * each + 1))
    assert head is not None and head.seq == writers * each


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_tenants_have_chains_of_their_own(real_db: Database):
    audit = AuditLog(real_db)
    a1 = audit.record("A", None, actor=Actor("U1", "api"), action="approve", outcome="refused")
    b1 = audit.record("B", None, actor=Actor("U1", "api"), action="approve", outcome="refused")
    a2 = audit.record("A", None, actor=Actor("U1", "api"), action="approve", outcome="refused")
    assert (a1.seq, b1.seq, a2.seq) == (1, 1, 2)
    assert a1.prev_hash == b1.prev_hash == GENESIS
    assert a2.prev_hash == a1.entry_hash
    assert audit.tenants() == ["A", "B"]


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_a_rolled_back_transaction_leaves_no_entry_and_no_gap(real_db: Database):
    audit = AuditLog(real_db)
    actor = Actor("U1", "api")
    audit.record("T", None, actor=actor, action="approve", outcome="refused")
    with pytest.raises(RuntimeError), real_db.session() as s:
        audit.record_in(s, "T", None, actor=actor, action="approve", outcome="applied")
        raise RuntimeError("the state change it records failed")
    audit.record("T", None, actor=actor, action="approve", outcome="refused")
    report = audit.verify_chain("T")
    assert report.intact and report.entries == 2


def test_existing_entries_are_chained_by_the_migration(empty_database_url_factory):
    url = empty_database_url_factory("sqlite")
    upgrade(url, "0006")
    db = Database.from_url(url)
    try:
        with db.engine.begin() as conn:
            for i, tenant in enumerate(["T", "T", "U", "T"]):
                conn.execute(
                    text(
                        "INSERT INTO audit_log (id, tenant_id, output_id, actor, action, "
                        "outcome, via, detail, created_at) VALUES (:id, :t, 'out_1', 'U1', "
                        "'approve', 'applied', 'slack', :d, :at)"
                    ),
                    {
                        "id": f"aud_{i}",
                        "t": tenant,
                        "d": f"entrée {i}",
                        "at": datetime(2026, 11, 1, 12, 0, i, 5, tzinfo=UTC),
                    },
                )
        upgrade(url)
        audit = AuditLog(db)
        assert [audit.verify_chain(t).entries for t in ("T", "U")] == [3, 1]
        assert all(audit.verify_chain(t).intact for t in ("T", "U"))
        # ...and the chain goes on from where the migration left it.
        audit.record("T", None, actor=Actor("U1", "api"), action="approve", outcome="refused")
        assert audit.verify_chain("T").entries == 4
        assert audit.verify_chain("T").intact
    finally:
        db.dispose()


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
def test_receipts_verify_in_process_and_a_rotated_key_needs_the_old_public_key(
    real_db: Database,
):
    from core.outputs.port import Output, OutputStatus

    audit = AuditLog(real_db)
    old = Receipts(real_db, ReceiptSigner("old-secret"))
    now = datetime.now(UTC)
    output = Output(
        id="out_1", tenant_id="T", agent_id="agt_1", session_id="ses_1", skill="s",
        is_automatable=True, arguments={}, content_type="text/plain", content_sha256="a" * 64,
        content_size=1, preview="p", status=OutputStatus.APPROVED, created_at=now,
        updated_at=now, decided_at=now,
    )  # fmt: skip
    with real_db.session() as s:
        entry = audit.record_in(
            s, "T", "out_1", actor=Actor("U1", "slack", verified=True), action="approve",
            outcome="applied",
        )  # fmt: skip
        old.issue_in(s, entry, output, "approved", Actor("U1", "slack", verified=True), now)
    assert old.verify("T").intact

    rotated = Receipts(real_db, ReceiptSigner("new-secret"))
    report = rotated.verify("T")
    assert not report.intact and "--public-key" in report.breaks[0].problem
    assert rotated.verify("T", {old.signer.key_id: old.signer.public_raw}).intact
