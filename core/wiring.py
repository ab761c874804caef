"""The composition root: builds every concrete adapter from `Settings`, in one place.

This is the only module (with the CLI entry point) that reads the environment; skills get
their secrets through the `secrets` lookup built here.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from core.agent.model import ModelClient
from core.agent.runner import AgentRunner
from core.agent.service import AgentService
from core.approvals.audit import AuditLog
from core.approvals.events import OutputEvents
from core.approvals.service import ApprovalService
from core.approvals.tokens import TokenSigner
from core.config_document import ConfigApplier
from core.db import Database
from core.embeddings import default_embedder
from core.execution.executor import OutputExecutor
from core.limits.quotas import Quotas
from core.memory.port import MemoryProvider
from core.outputs.blobs import BlobDirectory
from core.outputs.port import OutputStore
from core.outputs.sql_store import SqlOutputStore
from core.personas.service import PersonaService
from core.sessions.service import SessionService
from core.settings import Settings
from core.skills.builtins import BuiltinCatalog
from core.skills.factory import SkillFactory
from core.skills.mcp_executor import McpPool
from core.skills.service import SkillService
from core.webhooks.outbox import Outbox
from core.webhooks.signing import generate_secret
from core.webhooks.url_guard import check_webhook_url_syntax

log = logging.getLogger("cosmo")


@dataclass
class Container:
    """Everything the adapters need, built once per process."""

    settings: Settings
    db: Database
    personas: PersonaService
    skills: SkillService
    agents: AgentService
    config: ConfigApplier
    sessions: SessionService
    quotas: Quotas
    outputs: OutputStore
    memory: MemoryProvider | None
    skill_factory: SkillFactory
    runner: AgentRunner
    approvals: ApprovalService
    audit: AuditLog
    tokens: TokenSigner
    events: OutputEvents
    http: httpx.AsyncClient
    mcp: McpPool
    disabled: dict[str, str] = field(default_factory=dict)

    async def aclose(self) -> None:
        await self.mcp.aclose()
        await self.http.aclose()

    def close(self) -> None:
        self.db.dispose()


def build_container(
    settings: Settings,
    db: Database | None = None,
    *,
    model: ModelClient | None = None,
    memory: MemoryProvider | None = None,
) -> Container:
    """Build the object graph. Tests pass their own database (and may pass a model/memory)."""
    db = db or Database.from_url(settings.resolved_database_url)
    allow_insecure = settings.webhook_allow_insecure

    def check_url(url: str) -> None:
        check_webhook_url_syntax(url, allow_insecure=allow_insecure)

    agents = AgentService(db, check_webhook_url=check_url, generate_webhook_secret=generate_secret)
    sessions = SessionService(db)
    quotas = Quotas(db)
    outputs = build_output_store(settings, db)
    if memory is None:
        memory = build_memory(settings, db)
    if model is None:
        model = build_model(settings)
    # Skills may only read the environment variables an admin named in their config.
    secrets = os.environ.get
    http = httpx.AsyncClient(follow_redirects=False, timeout=30.0)
    mcp = McpPool(secrets=secrets)
    skill_factory = SkillFactory(BuiltinCatalog.default(), http, secrets, mcp)
    disabled = disabled_integrations(settings)
    tokens = TokenSigner(
        settings.secret_key_value(), timedelta(hours=settings.approval_token_ttl_hours)
    )
    events = OutputEvents(settings.resolved_public_url, tokens)
    audit = AuditLog(db)
    executor = OutputExecutor(db, outputs=outputs, skills=skill_factory, events=events)
    approvals = ApprovalService(
        outputs=outputs,
        agents=agents,
        sessions=sessions,
        executor=executor,
        events=events,
        audit=audit,
    )
    ttl = settings.output_ttl_hours
    runner = AgentRunner(
        db,
        model=model,
        skills=skill_factory,
        sessions=sessions,
        outputs=outputs,
        quotas=quotas,
        memory=memory,
        default_model=settings.model,
        events=events,
        output_ttl=timedelta(hours=ttl) if ttl else None,
        model_missing_reason=disabled.get("claude", "Claude is not configured"),
    )
    return Container(
        settings=settings,
        db=db,
        personas=PersonaService(db),
        skills=SkillService(db),
        agents=agents,
        config=ConfigApplier(db, agents),
        sessions=sessions,
        quotas=quotas,
        outputs=outputs,
        memory=memory,
        skill_factory=skill_factory,
        runner=runner,
        approvals=approvals,
        audit=audit,
        tokens=tokens,
        events=events,
        http=http,
        mcp=mcp,
        disabled=disabled,
    )


def build_output_store(settings: Settings, db: Database) -> OutputStore:
    if settings.output_store == "aws":
        log.warning("OUTPUT_STORE=aws is not available in this version; using the sql store")
    return SqlOutputStore(db, BlobDirectory(settings.cosmo_data_dir / "blobs"), Outbox(db))


def build_memory(settings: Settings, db: Database) -> MemoryProvider:
    if settings.memory_provider == "mem0":
        from core.memory.mem0_provider import build_mem0

        return build_mem0(
            data_dir=settings.ensure_data_dir(),
            api_key=_secret(settings.mem0_api_key),
            embedder=default_embedder(),
            anthropic_api_key=_secret(settings.anthropic_api_key),
            anthropic_base_url=settings.anthropic_base_url,
        )
    from core.memory.local import LocalMemory

    return LocalMemory(db, default_embedder())


def build_model(settings: Settings) -> ModelClient | None:
    key = _secret(settings.anthropic_api_key)
    if not key:
        return None
    from core.agent.anthropic_client import AnthropicModelClient, anthropic_client

    return AnthropicModelClient(anthropic_client(key, base_url=settings.anthropic_base_url))


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter else None


def disabled_integrations(settings: Settings) -> dict[str, str]:
    """Integration -> why it is off, so startup can say so plainly."""
    off: dict[str, str] = {}
    if settings.slack_bot_token is None or settings.slack_signing_secret is None:
        missing = [
            name
            for name, value in (
                ("SLACK_BOT_TOKEN", settings.slack_bot_token),
                ("SLACK_SIGNING_SECRET", settings.slack_signing_secret),
            )
            if value is None
        ]
        off["slack"] = f"{' and '.join(missing)} not set; /slack/events answers 503"
    if settings.anthropic_api_key is None:
        off["claude"] = "ANTHROPIC_API_KEY not set; agents cannot answer"
    if settings.output_store == "aws":
        off["aws"] = "the aws output store is not available yet; outputs use the sql store"
    return off
