"""Loads an agent's configuration and runs turns for it; the entry point adapters call."""

from __future__ import annotations

from datetime import timedelta

from core.agent.engine import AgentConfig, AgentDeps, ConfigurableAgent, TurnResult
from core.agent.model import ModelClient, TextSink
from core.agent.service import agent_view, load_agent
from core.concurrency import run_sync
from core.db import Database
from core.errors import Conflict, ServiceUnavailable
from core.knowledge.agent import AgentKnowledge
from core.knowledge.service import KnowledgeService
from core.personas.service import persona_spec
from core.schemas.skill import SkillSpec
from core.sessions.models import SessionView
from core.skills.factory import SkillFactory
from core.skills.policy import UnusableSkill
from core.skills.service import stored_fields


class ClaudeNotConfigured(ServiceUnavailable):
    title = "Claude not configured"


class AgentRunner:
    """Builds a `ConfigurableAgent` from the stored configuration for each turn.

    Loading per turn (a few indexed reads) means an admin's edit applies from the next
    message on, with no cache to invalidate across replicas.
    """

    def __init__(
        self,
        db: Database,
        *,
        model: ModelClient | None,
        skills: SkillFactory,
        deps: AgentDeps,
        default_model: str,
        max_steps: int = 8,
        output_ttl: timedelta | None = None,
        model_missing_reason: str = "ANTHROPIC_API_KEY is not set",
        knowledge: KnowledgeService | None = None,
    ) -> None:
        self.deps = deps
        self.db = db
        self.model = model
        self.skill_factory = skills
        self.default_model = default_model
        self.max_steps = max_steps
        self.output_ttl = output_ttl
        self.model_missing_reason = model_missing_reason
        self.knowledge = knowledge

    def load(
        self, tenant_id: str, agent_id: str
    ) -> tuple[AgentConfig, list[SkillSpec | UnusableSkill]]:
        with self.db.read_session() as s:
            row = load_agent(s, tenant_id, agent_id)
            view = agent_view(row)
            persona = persona_spec(row.persona)
            # A skill that cannot run here is left out, with its reason, not fatal: the
            # agent still answers without it.
            policy = self.skill_factory.policy
            specs = [
                policy.stored(link.skill.name, stored_fields(link.skill))
                for link in row.skill_links
            ]
            versions = {link.skill.name: link.skill.version for link in row.skill_links}
        config = AgentConfig(
            agent=view,
            persona=persona,
            model=view.model or self.default_model,
            max_steps=self.max_steps,
            output_ttl=self.output_ttl,
            skill_versions=versions,
        )
        return config, specs

    async def agent(self, tenant_id: str, agent_id: str) -> ConfigurableAgent:
        if self.model is None:
            raise ClaudeNotConfigured(f"agents cannot answer: {self.model_missing_reason}")
        config, specs = await run_sync(self.load, tenant_id, agent_id)
        if not config.agent.is_active:
            raise Conflict(f"agent {config.agent.name!r} is inactive")
        knowledge = None
        if self.knowledge is not None and config.agent.knowledge_bases:
            knowledge = AgentKnowledge(self.knowledge, tenant_id, config.agent.knowledge_bases)
        return ConfigurableAgent(
            config,
            model=self.model,
            skills=self.skill_factory.registry(specs, config.skill_versions),
            deps=self.deps,
            knowledge=knowledge.snippets if knowledge else None,
            knowledge_search=knowledge,
        )

    async def chat(
        self,
        session: SessionView,
        message: str,
        *,
        on_text: TextSink | None = None,
        dedupe_key: str | None = None,
    ) -> TurnResult:
        agent = await self.agent(session.tenant_id, session.agent_id)
        return await agent.chat(session, message, on_text=on_text, dedupe_key=dedupe_key)
