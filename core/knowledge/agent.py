"""An agent's knowledge bases as the agent engine and the `search_knowledge` skill use them."""

from __future__ import annotations

from collections.abc import Sequence

from core.concurrency import run_sync
from core.knowledge.schemas import KnowledgeMatch
from core.knowledge.service import KnowledgeService
from core.personas.prompt import KnowledgeSnippet
from core.skills.runtime import KnowledgeHit


class AgentKnowledge:
    """Searches the knowledge bases one agent has attached, for one tenant.

    `search` is the `KnowledgeSearcher` skills call (synchronous, from a worker thread);
    `snippets` is the engine's `KnowledgeLookup`: the passages for a user's message that
    go into the system prompt. Built per turn by the runner, so it holds no state.
    """

    def __init__(
        self, service: KnowledgeService, tenant_id: str, knowledge_bases: Sequence[str]
    ) -> None:
        self.service = service
        self.tenant_id = tenant_id
        self.knowledge_bases = list(knowledge_bases)

    def matches(self, query: str, limit: int | None = None) -> list[KnowledgeMatch]:
        return self.service.search_many(self.tenant_id, self.knowledge_bases, query, limit=limit)

    def search(self, query: str, limit: int) -> list[KnowledgeHit]:
        return [
            KnowledgeHit(m.text, m.document, m.section, m.score, m.page, m.chunk_id)
            for m in self.matches(query, limit)
        ]

    async def snippets(self, message: str) -> Sequence[KnowledgeSnippet]:
        found = await run_sync(self.matches, message)
        return [KnowledgeSnippet(m.text, m.document, m.section, m.page, m.chunk_id) for m in found]
