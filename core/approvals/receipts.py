"""Signed receipts: what was decided or executed, on which revision, by whom, and how.

Each applied decision (approved, rejected, expired) and each execution outcome (executed,
execution_failed, manual) gets a receipt signed with Ed25519. The signing key is derived
from `COSMO_SECRET_KEY` (HKDF-SHA256 with a fixed label), so every replica signs with the
same key and nothing new has to be stored or backed up; the public key is served at
`GET /api/v1/receipts/public-key` for anyone to verify with.

A receipt names the audit entry it belongs to and that entry's hash, and the entry's hash
covers every entry before it: rewriting the audit history behind a signed receipt breaks
a signature no one without the secret can redo.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from core.approvals.audit import AuditEntry, entry_hash, identity_of, snapshot
from core.approvals.canonical import canonical_bytes, sha256_hex, timestamp
from core.approvals.policy import Actor
from core.db import Database
from core.db.ids import new_id
from core.db.models import AuditRow, ReceiptRow
from core.outputs.port import Output

ReceiptDecision = Literal[
    "approved",
    "rejected",
    "expired",
    "executed",
    "execution_failed",
    "manual",
    "outcome_unknown",
]
EXECUTION_OUTCOMES = frozenset({"executed", "execution_failed", "outcome_unknown"})

HKDF_INFO = b"cosmo-agents receipts ed25519 v1"
RECEIPT_VERSION = 1


def public_key_id(raw_public_key: bytes) -> str:
    """Short, stable name of a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


class ReceiptSigner:
    """The Ed25519 key pair derived from `COSMO_SECRET_KEY`. Rotating that secret changes
    this key: receipts signed before stay valid only against the old public key."""

    def __init__(self, secret: str) -> None:
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(
            secret.encode("utf-8")
        )
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._private.public_key()
        self.public_raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = public_key_id(self.public_raw)

    @property
    def public_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def sign(self, payload: bytes) -> bytes:
        return self._private.sign(payload)


def load_public_key(text: str) -> bytes:
    """A raw Ed25519 public key from PEM or base64 of the 32 raw bytes (what the
    public-key route serves); ValueError when it is neither."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode("ascii"))
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("neither PEM nor base64") from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return raw


class ReceiptBody(BaseModel):
    """The signed statement. Its canonical JSON (sorted keys, no whitespace, UTF-8) is
    exactly the `canonical` string of a `SignedReceipt`."""

    v: int = RECEIPT_VERSION
    receipt_id: str
    tenant_id: str
    output_id: str
    revision: int
    content_sha256: str
    decision: str
    decided_by: str
    how: str
    """`slack`, `api`, `webhook` or `system`."""
    identity: str
    """`verified`, `asserted` or `system`."""
    api_key_id: str | None
    at: str
    """When it was decided or executed (UTC, microseconds)."""
    result_sha256: str | None
    """Executions: sha256 of the canonical `{"error": …, "result": …}` they stored."""
    audit_entry_id: str
    audit_entry_hash: str


class SignedReceipt(BaseModel):
    receipt: ReceiptBody
    canonical: str
    """The exact text signed (UTF-8)."""
    signature: str
    """Base64 Ed25519 signature over `canonical`."""
    key_id: str
    alg: Literal["Ed25519"] = "Ed25519"


def result_digest(output: Output) -> str:
    return sha256_hex({"result": output.execution_result, "error": output.execution_error})


def verify_receipt(signed: SignedReceipt, public_raw: bytes) -> bool:
    """True when `signed` is intact and signed by that key (an outsider's check)."""
    payload = canonical_bytes(signed.receipt.model_dump(mode="json"))
    if payload.decode("utf-8") != signed.canonical:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(
            base64.b64decode(signed.signature), payload
        )
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


@dataclass(frozen=True)
class ReceiptBreak:
    tenant_id: str
    receipt_id: str
    problem: str


@dataclass
class ReceiptReport:
    tenant_id: str
    receipts: int = 0
    breaks: list[ReceiptBreak] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.breaks


class Receipts:
    def __init__(self, db: Database, signer: ReceiptSigner) -> None:
        self.db = db
        self.signer = signer

    def issue_in(
        self,
        s: Session,
        entry: AuditEntry,
        output: Output,
        decision: ReceiptDecision,
        by: Actor,
        at: datetime,
    ) -> SignedReceipt:
        """Sign and store a receipt for `entry`, in the caller's transaction."""
        row = ReceiptRow(
            id=new_id("rcp"),
            tenant_id=output.tenant_id,
            output_id=output.id,
            audit_id=entry.id,
            audit_hash=entry.entry_hash,
            revision=output.revision,
            content_sha256=output.content_sha256,
            decision=decision,
            decided_by=by.id,
            how=by.via,
            identity=identity_of(by),
            api_key_id=by.key_id,
            at=at,
            result_sha256=result_digest(output) if decision in EXECUTION_OUTCOMES else None,
            key_id=self.signer.key_id,
            signature="",
            created_at=entry.created_at,
        )
        body = _body(row)
        row.signature = base64.b64encode(self.signer.sign(canonical_bytes(body))).decode()
        s.add(row)
        s.flush()
        return _signed(row)

    def for_output(self, tenant_id: str, output_id: str) -> list[SignedReceipt]:
        """Oldest first."""
        with self.db.session() as s:
            rows = s.scalars(
                select(ReceiptRow)
                .where(ReceiptRow.tenant_id == tenant_id, ReceiptRow.output_id == output_id)
                .order_by(ReceiptRow.created_at, ReceiptRow.id)
            )
            return [_signed(r) for r in rows]

    def tenants(self) -> list[str]:
        with self.db.read_connection() as conn:
            return sorted(conn.scalars(select(ReceiptRow.tenant_id).distinct()))

    def verify(self, tenant_id: str, keys: Mapping[str, bytes] | None = None) -> ReceiptReport:
        """Check every receipt of a tenant: its signature (by the current key, or one of
        `keys`, key id -> raw public key, for receipts signed before a rotation) and that
        the audit entry it names exists, belongs to it and still has the hash it signed.
        Stops at the first broken receipt."""
        trusted = {self.signer.key_id: self.signer.public_raw, **(keys or {})}
        report = ReceiptReport(tenant_id)
        with snapshot(self.db) as conn:
            for row, entry in _receipts_with_entries(conn, tenant_id):
                problem = _receipt_problem(row, entry, trusted)
                if problem is not None:
                    report.breaks.append(ReceiptBreak(tenant_id, row.id, problem))
                    return report
                report.receipts += 1
        return report


def _receipts_with_entries(conn: Connection, tenant_id: str) -> Iterator[tuple[Any, Any]]:
    stmt = (
        select(ReceiptRow, AuditRow)
        .outerjoin(AuditRow, AuditRow.id == ReceiptRow.audit_id)
        .where(ReceiptRow.tenant_id == tenant_id)
        .order_by(ReceiptRow.created_at, ReceiptRow.id)
        .execution_options(yield_per=1000)
    )
    yield from ((row[0], row[1]) for row in Session(bind=conn).execute(stmt))


def _receipt_problem(
    row: ReceiptRow, entry: AuditRow | None, trusted: Mapping[str, bytes]
) -> str | None:
    public = trusted.get(row.key_id)
    if public is None:
        return (
            f"signed by key {row.key_id}, which is not the current key; if COSMO_SECRET_KEY "
            "was rotated, pass the old public key with --public-key"
        )
    if not verify_receipt(_signed(row), public):
        return "its signature does not match its fields (edited or forged)"
    if entry is None:
        return f"the audit entry it names ({row.audit_id}) is missing"
    if entry.tenant_id != row.tenant_id or entry.output_id != row.output_id:
        return f"the audit entry it names ({row.audit_id}) is about another output"
    # Recomputed, not read: the entry's stored hash may have been rewritten along with it.
    if entry.entry_hash != row.audit_hash or entry_hash(entry) != row.audit_hash:
        return f"the audit entry it names ({row.audit_id}) no longer has the hash it signed"
    return None


def _body(row: ReceiptRow) -> dict[str, Any]:
    return ReceiptBody(
        receipt_id=row.id,
        tenant_id=row.tenant_id,
        output_id=row.output_id,
        revision=row.revision,
        content_sha256=row.content_sha256,
        decision=row.decision,
        decided_by=row.decided_by,
        how=row.how,
        identity=row.identity,
        api_key_id=row.api_key_id,
        at=timestamp(row.at),
        result_sha256=row.result_sha256,
        audit_entry_id=row.audit_id,
        audit_entry_hash=row.audit_hash,
    ).model_dump(mode="json")


def _signed(row: ReceiptRow) -> SignedReceipt:
    body = _body(row)
    return SignedReceipt(
        receipt=ReceiptBody.model_validate(body),
        canonical=canonical_bytes(body).decode("utf-8"),
        signature=row.signature,
        key_id=row.key_id,
    )
