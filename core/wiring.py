"""The composition root: builds every concrete adapter from `Settings`, in one place."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from core.agent.service import AgentService
from core.config_document import ConfigApplier
from core.db import Database
from core.personas.service import PersonaService
from core.settings import Settings
from core.skills.service import SkillService
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
    disabled: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        self.db.dispose()


def build_container(settings: Settings, db: Database | None = None) -> Container:
    db = db or Database.from_url(settings.resolved_database_url)
    allow_insecure = settings.webhook_allow_insecure

    def check_url(url: str) -> None:
        check_webhook_url_syntax(url, allow_insecure=allow_insecure)

    agents = AgentService(db, check_webhook_url=check_url, generate_webhook_secret=generate_secret)
    return Container(
        settings=settings,
        db=db,
        personas=PersonaService(db),
        skills=SkillService(db),
        agents=agents,
        config=ConfigApplier(db, agents),
        disabled=disabled_integrations(settings),
    )


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
    if settings.output_store == "aws" and not (settings.s3_bucket and settings.dynamodb_table):
        off["aws"] = "OUTPUT_STORE=aws needs S3_BUCKET and DYNAMODB_TABLE"
    return off
