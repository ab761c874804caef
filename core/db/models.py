"""Tables. Every row carries `tenant_id` (a Slack workspace, or the default tenant)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.db.types import JSONDocument, UTCDateTime, utcnow

# Named constraints so Alembic migrations are deterministic on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class TimestampedMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class PersonaRow(TimestampedMixin, Base):
    __tablename__ = "personas"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_personas_tenant_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(63))
    role: Mapped[str] = mapped_column(String(500))
    tone: Mapped[str] = mapped_column(String(500), default="")
    instructions: Mapped[str] = mapped_column(Text, default="")
    variables: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)


class SkillRow(TimestampedMixin, Base):
    __tablename__ = "skills"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_skills_tenant_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text)
    input_schema: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    kind: Mapped[str] = mapped_column(String(16))
    is_automatable: Mapped[bool] = mapped_column(Boolean, default=False)
    # Executions may be repeated after a crash mid-call (the target dedupes).
    idempotent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    executor: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    # The skill's `approval:` block as written (core.schemas.approval); NULL: inherit.
    approval: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, nullable=True)
    grantable: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Grows with every change, so an output's snapshot says which version it was made with.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class AgentSkillRow(Base):
    """Which skills an agent has enabled, in the order the admin listed them."""

    __tablename__ = "agent_skills"

    agent_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    skill_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("skills.id", ondelete="RESTRICT"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer)
    skill: Mapped[SkillRow] = relationship(lazy="joined")


class AgentRow(TimestampedMixin, Base):
    __tablename__ = "agents"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_agents_tenant_name"),
        Index("ix_agents_tenant_active", "tenant_id", "is_active"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(String(500), default="")
    persona_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("personas.id", ondelete="RESTRICT"), index=True
    )
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    knowledge_bases: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    memory_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    daily_output_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    daily_token_budget: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    approvers: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    allow_self_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    require_distinct_editor_approver: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    accept_asserted_decisions: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true()
    )
    approval_channel: Mapped[str | None] = mapped_column(String(32), nullable=True)
    approval: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(200), nullable=True)
    webhook_secret_env: Mapped[str | None] = mapped_column(String(128), nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)

    persona: Mapped[PersonaRow] = relationship(lazy="joined")
    skill_links: Mapped[list[AgentSkillRow]] = relationship(
        order_by=AgentSkillRow.position,
        cascade="all, delete-orphan",
        lazy="selectin",
    )


class AgentVersionRow(Base):
    """An immutable snapshot of an agent's full configuration after each change."""

    __tablename__ = "agent_versions"
    __table_args__ = (UniqueConstraint("agent_id", "version", name="uq_agent_versions_agent"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    agent_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("agents.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    change: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SessionRow(TimestampedMixin, Base):
    """A conversation with one agent: a Slack thread, or a session opened over the API."""

    __tablename__ = "sessions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_key", name="uq_sessions_tenant_external_key"),
        Index("ix_sessions_tenant_agent_created", "tenant_id", "agent_id", "created_at"),
        Index("ix_sessions_tenant_user", "tenant_id", "user_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[str] = mapped_column(String(40), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    user_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    channel_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    channel_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    thread_ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # Where it came from and how to find it again (`slack:C123:1700000000.000100`).
    source: Mapped[str] = mapped_column(String(16), default="api")
    external_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    context: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)


class SessionMessageRow(Base):
    """One message of a session's history, in the Messages API's content-block form."""

    __tablename__ = "session_messages"
    __table_args__ = (UniqueConstraint("session_id", "seq", name="uq_session_messages_seq"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    turn_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TurnRow(Base):
    """One user message and everything the agent did about it, with usage and cost."""

    __tablename__ = "turns"
    __table_args__ = (
        Index("ix_turns_tenant_agent_day", "tenant_id", "agent_id", "day"),
        UniqueConstraint("tenant_id", "dedupe_key", name="uq_turns_tenant_dedupe_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    agent_id: Mapped[str] = mapped_column(String(40))
    # Slack's event_id (or a client's idempotency key): one turn per delivery.
    dedupe_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    user_id: Mapped[str] = mapped_column(String(64))
    user_message: Mapped[str] = mapped_column(Text)
    reply: Mapped[str | None] = mapped_column(Text, nullable=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The knowledge passages the reply cites (`core.knowledge.citations.Citation` dicts);
    # NULL for turns finished before migration 0006.
    citations: Mapped[list[dict[str, Any]] | None] = mapped_column(
        JSONDocument, nullable=True, default=list
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    day: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class UsageCounterRow(Base):
    """Per-agent, per-UTC-day counters; quotas are taken with one conditional upsert."""

    __tablename__ = "usage_counters"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    metric: Mapped[str] = mapped_column(String(16), primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0)


class OutputRow(Base):
    """Metadata of an output (the `sql` store); the content lives in the blob directory."""

    __tablename__ = "outputs"
    __table_args__ = (
        Index("ix_outputs_tenant_status_created", "tenant_id", "status", "created_at"),
        Index("ix_outputs_tenant_agent_created", "tenant_id", "agent_id", "created_at"),
        Index("ix_outputs_session", "session_id"),
        Index("ix_outputs_slack_status", "slack_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[str] = mapped_column(String(40))
    session_id: Mapped[str] = mapped_column(String(40))
    turn_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    skill: Mapped[str] = mapped_column(String(63))
    is_automatable: Mapped[bool] = mapped_column(Boolean, default=False)
    arguments: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    content_type: Mapped[str] = mapped_column(String(100))
    content_key: Mapped[str] = mapped_column(String(300))
    content_sha256: Mapped[str] = mapped_column(String(64))
    content_size: Mapped[int] = mapped_column(BigInteger)
    preview: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(24), default="pending")
    # What will run when approved (see core.outputs.snapshot); NULL only for old outputs.
    skill_snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, nullable=True)
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    edits: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDocument, nullable=True)
    decision_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    decision_identity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    requested_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    decision_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    decision_via: Mapped[str | None] = mapped_column(String(16), nullable=True)
    execution_result: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, nullable=True)
    execution_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    executed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    notification_status: Mapped[str] = mapped_column(String(24), default="pending")
    # Where the approval went in Slack (`SlackStatus`); separate from the webhook's status.
    slack_status: Mapped[str] = mapped_column(
        String(16), default="pending", server_default="pending"
    )
    # Never written: approval messages live in `output_messages`. Mapped until a contract
    # migration drops the columns (dropping them now would break the previous release
    # during a rolling upgrade, docs/operations.md).
    slack_channel: Mapped[str | None] = mapped_column(String(64), nullable=True)
    slack_ts: Mapped[str | None] = mapped_column(String(32), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The merged approval lifecycle it was proposed under (core.schemas.approval.Lifecycle).
    approval_policy: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, nullable=True)
    # Every approval recorded, all revisions; `approval_count` counts those of the current
    # revision and is the condition of the next approval's write (see ApprovalService).
    approvals: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDocument, nullable=True)
    approval_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # The W3C trace context of the proposal (core.tracing); NULL when not tracing.
    traceparent: Mapped[str | None] = mapped_column(String(64), nullable=True)


class MemoryRow(Base):
    """A long-term memory of the `local` provider, with its embedding (float32 bytes)."""

    __tablename__ = "memories"
    # created_at last: the freshness check (count, max(created_at)) is answered from the index.
    __table_args__ = (Index("ix_memories_scope", "tenant_id", "agent_id", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    embedding_model: Mapped[str | None] = mapped_column(String(100), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookDeliveryRow(Base):
    """The outbox: one event for one webhook, written with the change it announces.

    `id` doubles as the Standard Webhooks `webhook-id`, so every attempt of one event
    carries the same id and receivers can deduplicate. Workers lease a row (`lease_owner`,
    `lease_until`) with a conditional update before sending, so two workers never send
    the same attempt.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_tenant_output", "tenant_id", "output_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[str] = mapped_column(String(40))
    output_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    event_type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    url: Mapped[str] = mapped_column(String(2000))
    # held -> pending -> delivered | failed; `held` = written before a state change in
    # another store (DynamoDB) and released once that change is known to have happened.
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    # The trace context of the change it announces (core.tracing); NULL when not tracing.
    traceparent: Mapped[str | None] = mapped_column(String(64), nullable=True)


class WebhookAttemptRow(Base):
    """One HTTP attempt of a delivery, for operators asking 'what happened?'."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (
        UniqueConstraint("delivery_id", "attempt", name="uq_webhook_attempts_attempt"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditRow(Base):
    """Every decision and every refused attempt to decide, append-only.

    Entries of a tenant form a hash chain: `seq` counts from 1, `prev_hash` is the
    `entry_hash` of entry `seq - 1` (64 zeros for the first), and `entry_hash` covers the
    canonical rendering of every column (core/approvals/audit.py).
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_tenant_output", "tenant_id", "output_id", "created_at"),
        Index("ux_audit_log_tenant_seq", "tenant_id", "seq", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    output_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    via: Mapped[str | None] = mapped_column(String(16), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    identity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    key_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    content_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    """The last entry of a tenant's audit chain. Appends lock this row, so entries of a
    tenant get consecutive `seq` values even with many writers in many processes."""

    __tablename__ = "audit_heads"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReceiptRow(Base):
    """A signed statement of one decision or execution, linked to its audit entry."""

    __tablename__ = "receipts"
    __table_args__ = (
        Index("ix_receipts_tenant_output", "tenant_id", "output_id", "id"),
        Index("ix_receipts_audit", "audit_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    output_id: Mapped[str] = mapped_column(String(40))
    audit_id: Mapped[str] = mapped_column(String(40))
    audit_hash: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer)
    content_sha256: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(24))
    decided_by: Mapped[str] = mapped_column(String(200))
    how: Mapped[str] = mapped_column(String(16))
    identity: Mapped[str] = mapped_column(String(16))
    api_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    result_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ChannelBindingRow(Base):
    """Which agent answers in a chat channel (`/agent use NAME`); `*` is the workspace
    default."""

    __tablename__ = "channel_bindings"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("agents.id", ondelete="CASCADE"), index=True
    )
    bound_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OutputMessageRow(Base):
    """Where an output's approval message was posted (thread, approval channel), so a
    decision made anywhere can update every copy."""

    __tablename__ = "output_messages"

    output_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GrantRow(Base):
    """ "Approve and allow for this thread": later outputs of one skill version in one
    session with the same arguments are approved under the granter's name."""

    __tablename__ = "grants"
    __table_args__ = (Index("ix_grants_session_skill", "tenant_id", "session_id", "skill"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[str] = mapped_column(String(40))
    session_id: Mapped[str] = mapped_column(String(40))
    skill: Mapped[str] = mapped_column(String(63))
    # What runs (input_schema + executor of the snapshot): a changed skill matches nothing.
    skill_fingerprint: Mapped[str] = mapped_column(String(64))
    arguments_sha256: Mapped[str] = mapped_column(String(64))
    arguments: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    output_id: Mapped[str] = mapped_column(String(40))
    granted_by: Mapped[str] = mapped_column(String(64))
    identity: Mapped[str] = mapped_column(String(16))
    via: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


class KnowledgeBaseRow(TimestampedMixin, Base):
    """A named set of documents agents search (`AgentSpec.knowledge_bases` lists names).

    `embedding_model` and `embedding_dimension` say which embedder produced its vectors:
    vectors of different models cannot be compared, so a mismatch asks for a re-index.
    `revision` goes up in the same transaction as every change to the knowledge base's
    content, so an in-process index tells its own writes from other processes' cheaply.
    """

    __tablename__ = "knowledge_bases"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_knowledge_bases_tenant_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(String(500), default="")
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunk_overlap: Mapped[int] = mapped_column(Integer)
    top_k: Mapped[int] = mapped_column(Integer)
    score_threshold: Mapped[float] = mapped_column(Float)
    embedding_model: Mapped[str] = mapped_column(String(100))
    embedding_dimension: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


class KnowledgeDocumentRow(TimestampedMixin, Base):
    """One ingested document; `sha256` of its bytes lets an unchanged file be skipped."""

    __tablename__ = "knowledge_documents"
    __table_args__ = (
        UniqueConstraint("knowledge_base_id", "name", name="uq_knowledge_documents_kb_name"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    knowledge_base_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("knowledge_bases.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(500))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    chunk_count: Mapped[int] = mapped_column(Integer)
    pages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    title: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # queued -> ingesting -> ready | failed; written by the `knowledge.ingest` job named in
    # `job_id`, which checks it on every write so a superseded ingestion cannot write late.
    status: Mapped[str] = mapped_column(String(16), default="ready", server_default="ready")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class KnowledgeUploadRow(Base):
    """The bytes of a document waiting to be ingested: in the database, which every API
    replica and worker shares, until its ingestion ends (uploads are bounded by
    `COSMO_MAX_UPLOAD_BYTES`)."""

    __tablename__ = "knowledge_uploads"

    document_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("knowledge_documents.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str | None] = mapped_column(String(100), nullable=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class KnowledgeChunkRow(Base):
    """A passage of a document and its embedding (float32 bytes): the embedded provider's
    store of record, loaded into an exact in-process index per knowledge base."""

    __tablename__ = "knowledge_chunks"
    # Serves loading a knowledge base, deleting a document's chunks and the per-document
    # (first id, count) summary that tells a cache which documents another process changed.
    __table_args__ = (
        Index("ix_knowledge_chunks_kb_document", "knowledge_base_id", "document_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    knowledge_base_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("knowledge_bases.id", ondelete="CASCADE")
    )
    document_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("knowledge_documents.id", ondelete="CASCADE")
    )
    ordinal: Mapped[int] = mapped_column(Integer)
    section: Mapped[str | None] = mapped_column(String(500), nullable=True)
    page: Mapped[int | None] = mapped_column(Integer, nullable=True)
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)


class ApiKeyRow(Base):
    """A tenant's REST API key. Only a hash of its secret is stored; revoking sets
    `revoked_at` and keeps the row, so audit entries naming the key still resolve."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class JobRow(Base):
    """One unit of background work (`core.jobs`): a turn, an execution, an ingestion, a
    delivery sweep. Claimed with a lease that its worker renews; `attempt` grows with every
    claim and fences writes, so a worker that lost its lease cannot write late."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_due", "state", "run_after"),
        Index("ix_jobs_tenant_kind", "tenant_id", "kind"),
        UniqueConstraint("key", name="uq_jobs_key"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    # Deduplicates enqueues (`turn:<id>`, `slack:T:C:ts`, `schedule:<name>`); NULL = none.
    key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    # queued -> running -> succeeded | dead | cancelled (a retry goes back to queued)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    # Jobs sharing it (an agent) are limited together, so one busy agent cannot starve others.
    concurrency_key: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    progress: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SchemaCompatRow(Base):
    """One row: the oldest code revision that still works against the schema as migrated
    (the newest `contract` migration applied). Code that finds the schema *ahead* of itself
    reads it to decide whether it may keep serving during a rolling upgrade."""

    __tablename__ = "schema_compat"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    compatible_from: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
