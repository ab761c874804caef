"""Which agent answers where: a channel's own binding, else the workspace default, else
the only active agent (so a one-agent install needs no setup)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from core.db import Database
from core.db.models import AgentRow, ChannelBindingRow

WORKSPACE_DEFAULT = "*"


@dataclass(frozen=True)
class Resolution:
    agent_id: str | None
    why: str  # "channel" | "default" | "only" | "none" | "ambiguous"


class ChannelBindings:
    def __init__(self, db: Database) -> None:
        self.db = db

    def bind(self, tenant_id: str, channel_id: str, agent_id: str, *, by: str) -> None:
        insert = postgresql.insert if self.db.backend == "postgresql" else sqlite.insert
        stmt = insert(ChannelBindingRow).values(
            tenant_id=tenant_id, channel_id=channel_id, agent_id=agent_id, bound_by=by
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "channel_id"],
            set_={"agent_id": agent_id, "bound_by": by},
        )
        with self.db.session() as s:
            s.execute(stmt)

    def resolve(self, tenant_id: str, channel_id: str | None) -> Resolution:
        with self.db.read_session() as s:
            for key, why in ((channel_id, "channel"), (WORKSPACE_DEFAULT, "default")):
                if key is None:
                    continue
                agent_id = s.scalar(
                    select(ChannelBindingRow.agent_id)
                    .join(AgentRow, AgentRow.id == ChannelBindingRow.agent_id)
                    .where(
                        ChannelBindingRow.tenant_id == tenant_id,
                        ChannelBindingRow.channel_id == key,
                        AgentRow.is_active.is_(True),
                    )
                )
                if agent_id:
                    return Resolution(agent_id, why)
            active = s.execute(
                select(func.count(AgentRow.id), func.min(AgentRow.id)).where(
                    AgentRow.tenant_id == tenant_id, AgentRow.is_active.is_(True)
                )
            ).one()
            if active[0] == 1:
                return Resolution(str(active[1]), "only")
            return Resolution(None, "ambiguous" if active[0] else "none")
