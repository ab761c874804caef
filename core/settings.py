"""All configuration, read once from the environment (and `.env`).

Only the composition root (`core.wiring`) and the CLI entry point construct `Settings`;
everything else receives the values it needs.
"""

from __future__ import annotations

import re
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "claude-sonnet-4-6"
DEFAULT_TENANT = "default"
# The bot scopes in manifest.yml (tests/unit/test_manifest.py keeps the two equal).
DEFAULT_SLACK_SCOPES = (
    "app_mentions:read,assistant:write,channels:history,channels:read,chat:write,commands,"
    "files:read,groups:history,groups:read,im:history,im:write,mpim:history,mpim:read,"
    "usergroups:read,users:read"
)


class Settings(BaseSettings):
    """Every setting Cosmo reads. Names match DESIGN.md and `.env.example`."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # Storage
    cosmo_data_dir: Path = Field(default=Path(".cosmo"), alias="COSMO_DATA_DIR")
    database_url: str | None = Field(default=None, alias="DATABASE_URL")

    # HTTP
    port: int = Field(default=3000, alias="PORT", ge=1, le=65535)
    host: str = Field(default="127.0.0.1", alias="COSMO_HOST")
    max_body_bytes: int = Field(default=1_048_576, alias="COSMO_MAX_BODY_BYTES", ge=1024)
    # uvicorn closes an idle keep-alive connection after 5 s by default; a load balancer
    # that keeps upstream connections idle longer (60 s is common) then reuses one the
    # server is closing and answers 502. Must exceed the proxy's upstream idle timeout.
    keep_alive_seconds: int = Field(default=75, alias="COSMO_KEEP_ALIVE_SECONDS", ge=1, le=3600)
    log_level: str = Field(default="INFO", alias="COSMO_LOG_LEVEL")
    log_format: Literal["text", "json"] = Field(default="text", alias="COSMO_LOG_FORMAT")
    # Prometheus `/metrics`: on the service's port behind the root key (COSMO_API_TOKEN),
    # or, with a port set, unauthenticated on that port only (keep it off the public network).
    metrics: bool = Field(
        default=True, alias="COSMO_METRICS", description="Serve Prometheus metrics (off: none)."
    )
    metrics_port: int | None = Field(
        default=None,
        alias="COSMO_METRICS_PORT",
        ge=1,
        le=65535,
        description="Serve /metrics on this port, without a bearer token, instead of the "
        "service's port; a standalone `cosmo worker` serves its own there.",
    )
    # OpenTelemetry traces (the `otel` extra, docs/operations.md): on when an OTLP/HTTP
    # endpoint is set. Standard names; the SDK reads the other OTEL_* variables itself.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    otel_service_name: str = Field(default="cosmo-agents", alias="OTEL_SERVICE_NAME")

    # Background work (core/jobs): worker processes `cosmo serve` supervises (0 = none;
    # run `cosmo worker` yourself), jobs one worker runs at once, and turns one agent may
    # have running at once across all workers.
    workers: int = Field(default=1, alias="COSMO_WORKERS", ge=0, le=64)
    worker_concurrency: int = Field(default=16, alias="COSMO_WORKER_CONCURRENCY", ge=1, le=1024)
    agent_concurrency: int = Field(default=4, alias="COSMO_AGENT_CONCURRENCY", ge=1, le=1024)
    # How long a job's claim holds without its worker's heartbeat (renewed every third of
    # it): a dead worker's job is taken over about this long after it died.
    job_lease_seconds: float = Field(default=15.0, alias="COSMO_JOB_LEASE_SECONDS", ge=3, le=600)
    # Seconds a stopping worker gives running jobs before it hands them to other workers.
    worker_grace_seconds: float = Field(
        default=20.0, alias="COSMO_WORKER_GRACE_SECONDS", ge=0, le=3600
    )
    # Scheduling priority a `cosmo worker` process lowers itself by (os.nice; 0 = none):
    # where workers share cores with `cosmo serve`, Slack's 3-second ack deadline wins
    # the CPU over background work, which has no such deadline.
    worker_nice: int = Field(default=10, alias="COSMO_WORKER_NICE", ge=0, le=19)
    # How long `POST /sessions/{id}/chat` waits for a worker to finish the turn before it
    # answers 202 with the turn to poll (0: answer 202 at once).
    chat_wait_seconds: float = Field(default=120, alias="COSMO_CHAT_WAIT_SECONDS", ge=0, le=3600)

    # Tenancy: single-workspace installs put everything under this tenant.
    default_tenant: str = Field(default=DEFAULT_TENANT, alias="COSMO_DEFAULT_TENANT")

    # Secrets of our own
    api_token: SecretStr | None = Field(default=None, alias="COSMO_API_TOKEN")
    secret_key: SecretStr | None = Field(default=None, alias="COSMO_SECRET_KEY")

    # Slack
    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(default="https://slack.com/api/", alias="SLACK_API_URL")
    # Multi-workspace installs (OAuth): with both set, workspaces install the app through
    # /slack/install and each workspace is its own tenant; SLACK_BOT_TOKEN is then unused.
    slack_client_id: str | None = Field(default=None, alias="SLACK_CLIENT_ID")
    slack_client_secret: SecretStr | None = Field(default=None, alias="SLACK_CLIENT_SECRET")
    slack_scopes: str = Field(
        default=DEFAULT_SLACK_SCOPES,
        alias="SLACK_SCOPES",
        description="Bot scopes requested at install, comma-separated (manifest.yml's).",
    )
    # Replies stream natively (chat.startStream); off, or where Slack refuses streaming for a
    # workspace, they are a message edited with chat.update.
    slack_streaming: bool = Field(
        default=True,
        alias="COSMO_SLACK_STREAMING",
        description="Stream replies with Slack's chat.startStream/appendStream/stopStream.",
    )
    # Who may change agents from Slack (`/agent create|edit|skills|persona|use`), besides
    # workspace admins and owners: Slack user ids (U…/W…) and user-group ids (S…).
    slack_admins: str = Field(
        default="",
        alias="COSMO_SLACK_ADMINS",
        description="Comma-separated Slack user or user-group ids allowed to configure agents.",
    )

    # Claude
    anthropic_api_key: SecretStr | None = Field(default=None, alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(default=None, alias="ANTHROPIC_BASE_URL")
    model: str = Field(default=DEFAULT_MODEL, alias="COSMO_MODEL")

    # Outputs
    output_store: Literal["sql", "aws"] = Field(default="sql", alias="OUTPUT_STORE")
    s3_bucket: str | None = Field(default=None, alias="S3_BUCKET")
    dynamodb_table: str | None = Field(default=None, alias="DYNAMODB_TABLE")
    aws_endpoint_url: str | None = Field(default=None, alias="AWS_ENDPOINT_URL")

    # Memory
    memory_provider: Literal["local", "mem0"] = Field(default="local", alias="MEMORY_PROVIDER")
    mem0_api_key: SecretStr | None = Field(default=None, alias="MEM0_API_KEY")

    # Embeddings (memory and knowledge bases) and knowledge-base search
    embedder: Literal["minilm", "sentence-transformers", "fastembed", "voyage", "hashing"] = Field(
        default="minilm",
        alias="COSMO_EMBEDDER",
        description="Which embedder turns text into vectors for memory and knowledge bases.",
    )
    embedding_model: str | None = Field(
        default=None,
        alias="COSMO_EMBEDDING_MODEL",
        description="Model name for the sentence-transformers, fastembed or voyage embedder.",
    )
    voyage_api_key: SecretStr | None = Field(default=None, alias="VOYAGE_API_KEY")
    voyage_api_url: str = Field(default="https://api.voyageai.com/v1", alias="VOYAGE_API_URL")
    knowledge_provider: Literal["embedded", "pgvector"] = Field(
        default="embedded",
        alias="KNOWLEDGE_PROVIDER",
        description="embedded: exact search in process; pgvector: HNSW in PostgreSQL.",
    )
    max_upload_bytes: int = Field(
        default=50 * 1024 * 1024,
        alias="COSMO_MAX_UPLOAD_BYTES",
        ge=1024,
        description="Largest document accepted by the knowledge-base upload endpoint.",
    )

    # Webhooks and approvals
    webhook_allow_insecure: bool = Field(default=False, alias="COSMO_WEBHOOK_ALLOW_INSECURE")
    # What skills may reach beyond public addresses: the operator's call, never a REST
    # caller's, so this is read from the environment only.
    skill_allow_hosts: str = Field(
        default="",
        alias="COSMO_SKILL_ALLOW_HOSTS",
        description="Internal hosts (crm.corp, *.corp.example) and networks (10.20.0.0/16) "
        "http and MCP skills may reach, comma-separated.",
    )
    public_url: str | None = Field(
        default=None,
        alias="COSMO_PUBLIC_URL",
        description="Base URL others reach this service at (links in webhooks and Slack).",
    )
    approval_token_ttl_hours: int = Field(
        default=72, alias="COSMO_APPROVAL_TOKEN_TTL_HOURS", ge=1, le=24 * 90
    )
    output_ttl_hours: int | None = Field(
        default=None,
        alias="COSMO_OUTPUT_TTL_HOURS",
        ge=1,
        description="Pending outputs expire after this many hours; unset: never.",
    )

    # Skills: what they may reach is the operator's call, made here and nowhere else.
    mcp_servers_file: Path | None = Field(
        default=None,
        alias="COSMO_MCP_SERVERS",
        description="YAML/JSON file naming the stdio MCP servers skills may use "
        "(name -> command, env, cwd).",
    )
    skill_secrets: str = Field(
        default="",
        alias="COSMO_SKILL_SECRETS",
        description="Comma-separated glob patterns: the only environment variables skill "
        "secret_headers and webhook secret_env may name (Cosmo's own never).",
    )

    @field_validator(
        "mcp_servers_file",
        "metrics_port",
        "database_url",
        "slack_bot_token",
        "slack_signing_secret",
        "slack_app_token",
        "slack_client_id",
        "slack_client_secret",
        "embedding_model",
        "voyage_api_key",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `.env.example` copied as is leaves these empty: that means "not configured".
        return None if value == "" else value

    @field_validator("skill_allow_hosts")
    @classmethod
    def _allow_hosts(cls, value: str) -> str:
        from core.skills.egress import parse_allow_hosts

        parse_allow_hosts(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("slack_scopes", mode="before")
    @classmethod
    def _default_scopes_when_blank(cls, value: object) -> object:
        return DEFAULT_SLACK_SCOPES if value == "" else value

    @property
    def slack_oauth_enabled(self) -> bool:
        """Multi-workspace mode: the OAuth client id and secret are both configured."""
        return self.slack_client_id is not None and self.slack_client_secret is not None

    @field_validator("slack_admins")
    @classmethod
    def _slack_ids(cls, value: str) -> str:
        bad = [v for v in _split(value) if not _SLACK_PRINCIPAL.match(v)]
        if bad:
            raise ValueError(
                f"{', '.join(bad)}: COSMO_SLACK_ADMINS takes Slack user ids (U…/W…) or "
                "user-group ids (S…), comma-separated"
            )
        return value

    @property
    def slack_admin_ids(self) -> frozenset[str]:
        """`COSMO_SLACK_ADMINS` as a set of user and user-group ids."""
        return frozenset(_split(self.slack_admins))

    @property
    def slack_scope_list(self) -> list[str]:
        return [scope.strip() for scope in self.slack_scopes.split(",") if scope.strip()]

    def otel_traces_endpoint(self) -> str | None:
        """Where spans go (None: tracing off). As OpenTelemetry's own rule has it, the
        traces variable is the full URL and the general one a base that `/v1/traces`
        is appended to."""
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint.strip()
        if self.otel_exporter_otlp_endpoint:
            return self.otel_exporter_otlp_endpoint.strip().rstrip("/") + "/v1/traces"
        return None

    @cached_property
    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file under the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.cosmo_data_dir / 'cosmo.db').resolve()}"

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://localhost:{self.port}").rstrip("/")

    def sqlite_file(self) -> Path | None:
        """The SQLite file the database lives in (absolute), or None for a server database."""
        from sqlalchemy.engine import make_url

        url = make_url(self.resolved_database_url)
        if not url.drivername.startswith("sqlite") or url.database in (None, "", ":memory:"):
            return None
        return Path(url.database).resolve()

    def describe_database(self) -> str:
        """Which database this process uses, for operators: the SQLite file, or the URL
        without its password."""
        from sqlalchemy.engine import make_url

        file = self.sqlite_file()
        if file is not None:
            return f"SQLite file {file}"
        return make_url(self.resolved_database_url).render_as_string(hide_password=True)

    def ensure_data_dir(self) -> Path:
        self.cosmo_data_dir.mkdir(parents=True, exist_ok=True)
        return self.cosmo_data_dir

    def api_token_value(self) -> tuple[str, bool]:
        """The REST bearer token, and whether it was generated (and stored) for this install.

        A fresh `make run` has no token configured; rather than serving an open API we mint
        one, keep it in the data dir (mode 0600) and tell the operator where it is.
        """
        if self.api_token is not None and self.api_token.get_secret_value():
            return self.api_token.get_secret_value(), False
        return self._persisted_secret("api-token", prefix="cosmo_"), True

    def secret_key_value(self) -> str:
        """Key that signs approval tokens; generated and persisted when not configured."""
        if self.secret_key is not None and self.secret_key.get_secret_value():
            return self.secret_key.get_secret_value()
        return self._persisted_secret("secret-key", prefix="")

    def _persisted_secret(self, filename: str, *, prefix: str) -> str:
        path = self.ensure_data_dir() / filename
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        value = prefix + secrets.token_urlsafe(32)
        # O_EXCL: two processes starting at once must agree on one value.
        try:
            fd = _open_exclusive(path)
        except FileExistsError:
            return path.read_text(encoding="utf-8").strip()
        with open(fd, "w", encoding="utf-8") as fh:
            fh.write(value + "\n")
        return value


_SLACK_PRINCIPAL = re.compile(r"^[UWS][A-Z0-9]{2,20}$")


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _open_exclusive(path: Path) -> int:
    import os

    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
