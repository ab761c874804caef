"""Append-only audit log of decisions, executions and refused attempts to decide.

Each tenant's entries form a hash chain: entry `seq` n carries the hash of entry n-1 and
its own hash over the canonical rendering of all its fields, so an entry edited, deleted,
inserted or moved behind the app's back no longer fits (`verify_chain` says where).
Appends lock the tenant's head row (`audit_heads`) until their transaction commits, so
the chain stays linear with any number of writers and processes. Write the entry last in
a transaction that also changes other rows: the head stays locked until commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, insert, select, union, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.approvals.canonical import sha256_hex, storable_text, timestamp
from core.approvals.policy import Actor
from core.db import Database
from core.db.ids import new_id
from core.db.models import AuditHeadRow, AuditRow

#: `outcome_unknown`: an execution whose worker died while the target was answering.
Outcome = Literal["applied", "recorded", "lost", "refused", "repeated", "outcome_unknown"]
Identity = Literal["verified", "asserted", "system"]

GENESIS = "0" * 64
"""`prev_hash` of a tenant's first entry."""

HASH_VERSION = 1
HASHED_FIELDS = (
    "id",
    "tenant_id",
    "seq",
    "prev_hash",
    "output_id",
    "actor",
    "identity",
    "via",
    "key_id",
    "key_name",
    "action",
    "outcome",
    "revision",
    "content_sha256",
    "detail",
    "created_at",
)


class AuditEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant_id: str
    seq: int
    output_id: str | None
    actor: str
    identity: str | None
    """`verified`, `asserted` or `system`; null on entries written before identities were
    recorded."""
    via: str | None
    key_id: str | None
    key_name: str | None
    action: str
    outcome: str
    revision: int | None
    content_sha256: str | None
    detail: str | None
    created_at: datetime
    prev_hash: str
    entry_hash: str


def entry_hash(entry: Any) -> str:
    """The hash of an entry (a row or an `AuditEntry`): sha256 of the canonical JSON of
    `HASHED_FIELDS` plus `"v": 1`, `created_at` as a canonical timestamp."""
    fields: dict[str, Any] = {name: getattr(entry, name) for name in HASHED_FIELDS}
    fields["created_at"] = timestamp(fields["created_at"])
    fields["v"] = HASH_VERSION
    return sha256_hex(fields)


def identity_of(actor: Actor) -> Identity:
    return "system" if actor.via == "system" else actor.identity


@dataclass(frozen=True)
class ChainBreak:
    tenant_id: str
    entry_id: str | None
    seq: int | None
    problem: str


@dataclass
class ChainReport:
    tenant_id: str
    entries: int = 0
    breaks: list[ChainBreak] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.breaks


class AuditLog:
    def __init__(self, db: Database, clock: Any = None) -> None:
        self.db = db
        self.clock = clock or (lambda: datetime.now(UTC))

    def record(
        self,
        tenant_id: str,
        output_id: str | None,
        *,
        actor: Actor,
        action: str,
        outcome: Outcome,
        detail: str | None = None,
        revision: int | None = None,
        content_sha256: str | None = None,
    ) -> AuditEntry:
        """Append an entry in a transaction of its own."""
        with self.db.session() as s:
            return self.record_in(
                s,
                tenant_id,
                output_id,
                actor=actor,
                action=action,
                outcome=outcome,
                detail=detail,
                revision=revision,
                content_sha256=content_sha256,
            )

    @contextmanager
    def transaction(self, session: Session | None) -> Iterator[Session]:
        """The caller's transaction when it has one (the sql output store's), else a new
        one: recorders write with the change when they can, right after it otherwise."""
        if session is not None:
            yield session
            return
        with self.db.session() as own:
            yield own

    def record_in(
        self,
        s: Session,
        tenant_id: str,
        output_id: str | None,
        *,
        actor: Actor,
        action: str,
        outcome: Outcome,
        detail: str | None = None,
        revision: int | None = None,
        content_sha256: str | None = None,
    ) -> AuditEntry:
        """Append an entry inside the caller's transaction (commits or rolls back with it)."""
        seq, prev = _lock_head(s, tenant_id)
        entry = AuditEntry(
            id=new_id("aud"),
            tenant_id=tenant_id,
            seq=seq + 1,
            output_id=output_id,
            actor=storable_text(actor.id)[:200],
            identity=identity_of(actor),
            via=actor.via,
            key_id=actor.key_id,
            key_name=actor.key_name and storable_text(actor.key_name)[:200],
            action=action,
            outcome=outcome,
            revision=revision,
            content_sha256=content_sha256,
            detail=(detail or None) and storable_text(detail)[:2000],
            created_at=self.clock().astimezone(UTC),
            prev_hash=prev,
            entry_hash="",
        )
        entry.entry_hash = entry_hash(entry)
        # Core statements, not the ORM unit of work: appends are on every decision's path.
        s.execute(insert(AuditRow).values(**entry.model_dump()))
        s.execute(
            update(AuditHeadRow)
            .where(AuditHeadRow.tenant_id == tenant_id)
            .values(seq=entry.seq, last_hash=entry.entry_hash, updated_at=entry.created_at)
            .execution_options(synchronize_session=False)
        )
        return entry

    def for_output(self, tenant_id: str, output_id: str) -> list[AuditEntry]:
        with self.db.session() as s:
            rows = s.scalars(
                select(AuditRow)
                .where(AuditRow.tenant_id == tenant_id, AuditRow.output_id == output_id)
                .order_by(AuditRow.seq)
            )
            return [AuditEntry.model_validate(r) for r in rows]

    def get(self, tenant_id: str, entry_id: str) -> AuditEntry | None:
        with self.db.session() as s:
            row = s.get(AuditRow, entry_id)
            if row is None or row.tenant_id != tenant_id:
                return None
            return AuditEntry.model_validate(row)

    def tenants(self) -> list[str]:
        """Every tenant with an audit entry or a chain head."""
        with self.db.read_connection() as conn:
            q = union(select(AuditRow.tenant_id), select(AuditHeadRow.tenant_id))
            return sorted(conn.scalars(q))

    def verify_chain(self, tenant_id: str) -> ChainReport:
        """Walk a tenant's chain from the first entry; stop at the first broken link."""
        report = ChainReport(tenant_id)
        with snapshot(self.db) as conn:
            outside = conn.execute(
                select(AuditRow.id)
                .where(AuditRow.tenant_id == tenant_id, AuditRow.seq.is_(None))
                .limit(1)
            ).scalar()
            if outside is not None:
                report.breaks.append(
                    ChainBreak(tenant_id, outside, None, "entry has no place in the chain (no seq)")
                )
                return report
            head = conn.execute(
                select(AuditHeadRow.seq, AuditHeadRow.last_hash).where(
                    AuditHeadRow.tenant_id == tenant_id
                )
            ).one_or_none()
            last_seq, last_hash = 0, GENESIS
            for row in _chain(conn, tenant_id):
                problem = _link_problem(row, last_seq, last_hash)
                if problem is not None:
                    report.breaks.append(ChainBreak(tenant_id, row.id, row.seq, problem))
                    return report
                report.entries += 1
                last_seq, last_hash = row.seq, row.entry_hash
            head_seq, head_hash = head if head is not None else (0, GENESIS)
            if (head_seq, head_hash) != (last_seq, last_hash):
                what = (
                    f"the chain ends at seq {last_seq} but its head says {head_seq}: "
                    "entries at the end are missing"
                    if head_seq != last_seq
                    else "the last entry's hash differs from the one its head recorded"
                )
                report.breaks.append(ChainBreak(tenant_id, None, head_seq, what))
        return report


@contextmanager
def snapshot(db: Database) -> Iterator[Connection]:
    """A read transaction that sees one moment: entries appended while we walk must not
    look like entries missing from the head (SQLite's read transaction is one already)."""
    with db.read_connection() as conn:
        if db.backend == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def _chain(conn: Any, tenant_id: str) -> Iterator[Any]:
    stmt = (
        select(AuditRow)
        .where(AuditRow.tenant_id == tenant_id)
        .order_by(AuditRow.seq, AuditRow.id)
        .execution_options(yield_per=1000)
    )
    yield from Session(bind=conn).scalars(stmt)


def _link_problem(row: AuditRow, last_seq: int, last_hash: str) -> str | None:
    if row.seq == last_seq:
        return f"seq {row.seq} appears twice"
    if row.seq != last_seq + 1:
        missing = f"{last_seq + 1}" if row.seq == last_seq + 2 else f"{last_seq + 1}..{row.seq - 1}"
        return f"entry seq {missing} before it is missing (deleted)"
    if row.prev_hash != last_hash:
        return f"it does not follow entry seq {last_seq}: prev_hash differs from that entry's hash"
    if entry_hash(row) != row.entry_hash:
        return "its fields no longer match its hash (edited, or moved in time or id)"
    return None


def _lock_head(s: Session, tenant_id: str) -> tuple[int, str]:
    """Lock the tenant's head row (creating it on first use) and return (seq, last_hash).

    PostgreSQL: `SELECT … FOR UPDATE` holds the row until commit, so a second writer waits
    and then reads the head the first one left. SQLite: writers hold the database lock
    from BEGIN IMMEDIATE (core/db/database.py), so appends are serialized already.
    """
    stmt = (
        select(AuditHeadRow.seq, AuditHeadRow.last_hash)
        .where(AuditHeadRow.tenant_id == tenant_id)
        .with_for_update()
    )
    head = s.execute(stmt).one_or_none()
    if head is None:
        dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
        s.execute(
            dialect.insert(AuditHeadRow)
            .values(tenant_id=tenant_id, seq=0, last_hash=GENESIS, updated_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=["tenant_id"])
        )
        head = s.execute(stmt).one()
    return int(head.seq), str(head.last_hash)
