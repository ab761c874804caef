"""The composition root: builds every concrete adapter from `Settings`, in one place.

This is the only module (with the CLI entry point) that reads the environment; skills get
their secrets through the `secrets` lookup built here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from core.agent.bindings import ChannelBindings
from core.agent.engine import AgentDeps
from core.agent.model import ModelClient, ModelOnFirstUse
from core.agent.runner import AgentRunner
from core.agent.service import AgentService
from core.approvals.audit import AuditLog
from core.approvals.events import OutputEvents
from core.approvals.grants import GrantService
from core.approvals.lifecycle import LifecycleTimers
from core.approvals.receipts import Receipts, ReceiptSigner
from core.approvals.service import ApprovalService
from core.approvals.tokens import TokenSigner
from core.config_document import ConfigApplier
from core.db import Database
from core.embeddings import Embedder, build_embedder
from core.errors import ServiceUnavailable
from core.execution.executor import OutputExecutor
from core.execution.jobs import ExecutionJobs
from core.jobs import JobQueue
from core.keys.service import ApiKeys
from core.knowledge.embedded import EmbeddedKnowledgeIndex
from core.knowledge.port import KnowledgeIndex
from core.knowledge.service import KnowledgeService
from core.limits.quotas import Quotas
from core.memory.port import MemoryProvider
from core.outputs.blobs import BlobDirectory
from core.outputs.messages import OutputMessages
from core.outputs.port import OutputStore
from core.outputs.sql_store import SqlOutputStore
from core.personas.service import PersonaService
from core.secret_names import SecretNameRule, parse_patterns
from core.sessions.service import SessionService
from core.settings import Settings
from core.skills.builtins import BuiltinCatalog
from core.skills.egress import SkillEgressGuard, SkillEgressPolicy
from core.skills.factory import SkillFactory
from core.skills.mcp_executor import McpPool
from core.skills.mcp_servers import load_mcp_servers
from core.skills.policy import SkillPolicy
from core.skills.service import SkillService
from core.webhooks.delivery import WebhookDispatcher
from core.webhooks.outbox import Outbox
from core.webhooks.policy import DeliveryPolicy
from core.webhooks.signing import generate_secret
from core.webhooks.url_guard import check_webhook_url_when_saved

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
    bindings: ChannelBindings
    output_messages: OutputMessages
    audit: AuditLog
    receipts: Receipts
    tokens: TokenSigner
    events: OutputEvents
    webhooks: WebhookDispatcher
    http: httpx.AsyncClient
    mcp: McpPool
    knowledge: KnowledgeService
    keys: ApiKeys
    jobs: JobQueue
    lifecycle: LifecycleTimers
    grants: GrantService
    disabled: dict[str, str] = field(default_factory=dict)

    def prepare_for_turns(self) -> None:
        """Build what turns need but HTTP-only processes never use (the Claude client), so
        the first turn does not wait on it. Called where a job worker starts."""
        model = self.runner.model
        if isinstance(model, ModelOnFirstUse):
            model.build()

    async def aclose(self) -> None:
        await self.webhooks.aclose()
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
    embedder: Embedder | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Container:
    """Build the object graph. Tests pass their own database (and may pass a model, a
    memory, the embedder that memory and knowledge bases use, or the clock that decisions,
    lifecycle timers and the job queue read)."""
    db = db or Database.from_url(settings.resolved_database_url)
    allow_insecure = settings.webhook_allow_insecure
    catalog = BuiltinCatalog.default()
    skill_policy = build_skill_policy(settings, catalog)

    def check_url(url: str) -> None:
        check_webhook_url_when_saved(url, allow_insecure=allow_insecure)

    agents = AgentService(
        db,
        check_webhook_url=check_url,
        generate_webhook_secret=generate_secret,
        skill_policy=skill_policy,
    )
    sessions = SessionService(db)
    quotas = Quotas(db)
    outputs = build_output_store(settings, db)
    # One embedder for memory and knowledge bases: the model's weights load once.
    embedder = embedder or build_embedder(settings)
    if memory is None:
        memory = build_memory(settings, db, embedder)
    if model is None:
        model = build_model(settings)
    # Skills may only read the environment variables an admin named in their config, and
    # only those the operator's rule allows (never Cosmo's own).
    secrets = os.environ.get
    webhooks = WebhookDispatcher(
        db,
        policy=DeliveryPolicy(allow_insecure=settings.webhook_allow_insecure),
        secrets=skill_policy.secrets.confine(secrets),
        outputs=outputs,
    )
    # Every skill request goes through the egress guard: public addresses, plus what the
    # operator allowed; never this server or the database.
    egress = SkillEgressGuard(
        SkillEgressPolicy.build(
            allow_insecure=settings.webhook_allow_insecure,
            allow_hosts=settings.skill_allow_hosts,
            server_port=settings.port,
            database_url=settings.resolved_database_url,
            public_url=settings.public_url,
        )
    )
    http = egress.http_client(timeout=30.0)
    # `${NAME}` references in the operator's own server file were checked when it loaded.
    mcp = McpPool(
        servers=skill_policy.mcp_servers, secrets=secrets, http_client=egress.mcp_http_client
    )
    skill_factory = SkillFactory(catalog, http, secrets, mcp, skill_policy)
    disabled = disabled_integrations(settings)
    tokens = TokenSigner(
        settings.secret_key_value(), timedelta(hours=settings.approval_token_ttl_hours)
    )
    events = OutputEvents(settings.resolved_public_url, tokens)
    audit = AuditLog(db)
    receipts = Receipts(db, ReceiptSigner(settings.secret_key_value()))
    executor = OutputExecutor(db, outputs=outputs, skills=skill_factory, events=events)
    jobs = JobQueue(db, clock=clock, lease=timedelta(seconds=settings.job_lease_seconds))
    lifecycle = LifecycleTimers(jobs)
    approvals = ApprovalService(
        outputs=outputs,
        agents=agents,
        sessions=sessions,
        executor=executor,
        executions=ExecutionJobs(jobs),
        events=events,
        audit=audit,
        receipts=receipts,
        clock=clock,
    )
    skills = SkillService(db, skill_policy)
    grants = GrantService(db, approvals, skills)
    knowledge = KnowledgeService(
        db,
        embedder,
        build_knowledge_index(settings, db),
        max_document_bytes=settings.max_upload_bytes,
    )
    ttl = settings.output_ttl_hours
    runner = AgentRunner(
        db,
        model=model,
        skills=skill_factory,
        deps=AgentDeps(
            sessions=sessions,
            outputs=outputs,
            quotas=quotas,
            memory=memory,
            events=events,
            audit=audit,
            lifecycle=lifecycle,
            grants=grants.apply,
            **({"clock": clock} if clock is not None else {}),
        ),
        default_model=settings.model,
        output_ttl=timedelta(hours=ttl) if ttl else None,
        model_missing_reason=CLAUDE_MISSING if "claude" in disabled else "Claude is not configured",
        knowledge=knowledge,
    )
    return Container(
        settings=settings,
        db=db,
        personas=PersonaService(db),
        skills=skills,
        agents=agents,
        config=ConfigApplier(db, agents, skill_policy),
        sessions=sessions,
        quotas=quotas,
        outputs=outputs,
        memory=memory,
        skill_factory=skill_factory,
        runner=runner,
        approvals=approvals,
        bindings=ChannelBindings(db),
        output_messages=OutputMessages(db),
        audit=audit,
        receipts=receipts,
        tokens=tokens,
        events=events,
        webhooks=webhooks,
        http=http,
        mcp=mcp,
        knowledge=knowledge,
        keys=ApiKeys(db),
        jobs=jobs,
        lifecycle=lifecycle,
        grants=grants,
        disabled=disabled,
    )


def build_skill_policy(settings: Settings, builtins: Collection[str] | None = None) -> SkillPolicy:
    """The operator's limits on skills. Raises `McpServersInvalid` (naming file and line)
    when the `COSMO_MCP_SERVERS` file cannot be used: starting without the servers the
    operator meant to offer would mark every skill that uses them unusable."""
    rule = SecretNameRule(allowed=parse_patterns(settings.skill_secrets))
    return SkillPolicy(
        # The catalogue itself, not a copy of its names: functions registered later count.
        builtins=builtins if builtins is not None else BuiltinCatalog.default(),
        mcp_servers=load_mcp_servers(settings.mcp_servers_file, rule=rule),
        secrets=rule,
    )


def build_output_store(settings: Settings, db: Database) -> OutputStore:
    if settings.output_store == "aws":
        missing = _missing_aws_settings(settings)
        if missing:
            raise ServiceUnavailable(
                f"OUTPUT_STORE=aws needs {' and '.join(missing)}; set them (and "
                "AWS_ENDPOINT_URL for LocalStack or MinIO), then run `cosmo aws init`"
            )
        from core.outputs.aws_store import AwsOutputStore

        s3, dynamodb = aws_clients(settings)
        assert settings.s3_bucket and settings.dynamodb_table
        return AwsOutputStore(s3, dynamodb, settings.s3_bucket, settings.dynamodb_table, Outbox(db))
    return SqlOutputStore(db, BlobDirectory(settings.cosmo_data_dir / "blobs"), Outbox(db))


def _missing_aws_settings(settings: Settings) -> list[str]:
    return [
        name
        for name, value in (
            ("S3_BUCKET", settings.s3_bucket),
            ("DYNAMODB_TABLE", settings.dynamodb_table),
        )
        if not value
    ]


def aws_clients(settings: Settings) -> tuple[Any, Any]:
    """boto3 S3 and DynamoDB clients for `AWS_ENDPOINT_URL` (AWS itself when unset).

    Credentials and region come from boto3's usual chain. S3 presigns with SigV4 and, off
    AWS (LocalStack, MinIO), addresses buckets by path. Timeouts and retries are bounded
    so a write can never still land after `aws_store.HELD_GRACE`.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    endpoint = settings.aws_endpoint_url or None
    common = Config(
        connect_timeout=5,
        read_timeout=15,
        retries={"mode": "standard", "max_attempts": 4},
        max_pool_connections=50,
    )
    s3_config = Config(
        signature_version="s3v4", s3={"addressing_style": "path"} if endpoint else None
    )
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, config=common.merge(s3_config))
        dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, config=common)
    except NoRegionError as exc:
        raise ServiceUnavailable(
            "the aws output store needs AWS_REGION or AWS_DEFAULT_REGION"
        ) from exc
    return s3, dynamodb


def build_knowledge_index(settings: Settings, db: Database) -> KnowledgeIndex:
    if settings.knowledge_provider == "pgvector":
        from core.knowledge.pgvector import PgvectorKnowledgeIndex

        return PgvectorKnowledgeIndex(db)
    return EmbeddedKnowledgeIndex(db)


def build_memory(
    settings: Settings, db: Database, embedder: Embedder | None = None
) -> MemoryProvider:
    embedder = embedder or build_embedder(settings)
    if settings.memory_provider == "mem0":
        from core.memory.mem0_provider import build_mem0

        return build_mem0(
            data_dir=settings.ensure_data_dir(),
            api_key=_secret(settings.mem0_api_key),
            embedder=embedder,
            anthropic_api_key=_secret(settings.anthropic_api_key),
            anthropic_base_url=settings.anthropic_base_url,
        )
    from core.memory.local import LocalMemory

    return LocalMemory(db, embedder)


def build_model(settings: Settings) -> ModelClient | None:
    key = _secret(settings.anthropic_api_key)
    if not key:
        return None

    def claude() -> ModelClient:
        from core.agent.anthropic_client import AnthropicModelClient, anthropic_client

        return AnthropicModelClient(anthropic_client(key, base_url=settings.anthropic_base_url))

    # Built where turns run (`Container.prepare_for_turns`), never in an HTTP-only process.
    return ModelOnFirstUse(claude)


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter else None


# The cause alone: the runner says "agents cannot answer: <cause>" itself.
CLAUDE_MISSING = "ANTHROPIC_API_KEY not set"


def disabled_integrations(settings: Settings) -> dict[str, str]:
    """Integration -> why it is off, so startup can say so plainly."""
    off: dict[str, str] = {}
    slack_auth = settings.slack_bot_token is not None or settings.slack_oauth_enabled
    if settings.slack_signing_secret is None or not slack_auth:
        missing = []
        if settings.slack_signing_secret is None:
            missing.append("SLACK_SIGNING_SECRET")
        if not slack_auth:
            missing.append("SLACK_BOT_TOKEN (or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET)")
        off["slack"] = f"{' and '.join(missing)} not set; /slack/events answers 503"
    if settings.anthropic_api_key is None:
        off["claude"] = f"{CLAUDE_MISSING}; agents cannot answer"
    if settings.output_store == "aws" and _missing_aws_settings(settings):
        unset = " and ".join(_missing_aws_settings(settings))
        off["aws"] = f"OUTPUT_STORE=aws but {unset} not set; the service cannot start"
    return off
