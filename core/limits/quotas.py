"""Daily quotas counted in the database with one conditional upsert per take.

Two replicas taking the last unit at once cannot both succeed: the increment and the
limit check are the same statement (`INSERT … ON CONFLICT DO UPDATE … WHERE used + n <=
limit RETURNING used`), so the database serialises them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from core.db import Database
from core.db.models import UsageCounterRow
from core.errors import RateLimitExceeded

OUTPUTS = "outputs"
TOKENS = "tokens"
Clock = Callable[[], datetime]
_TABLE = cast(Table, UsageCounterRow.__table__)


def utc_day(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def next_midnight(now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


class Quotas:
    """`take` grants atomically or raises `RateLimitExceeded`; `add` records usage."""

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or (lambda: datetime.now(UTC))

    def _insert(self) -> Any:
        return postgresql.insert if self.db.backend == "postgresql" else sqlite.insert

    def take(self, tenant_id: str, agent_id: str, metric: str, amount: int, limit: int) -> int:
        """Add `amount` if the total stays within `limit`; returns the new total."""
        now = self.clock()
        if amount > limit:
            raise self._exceeded(metric, limit, now)
        table = _TABLE
        stmt = self._insert()(table).values(
            tenant_id=tenant_id, agent_id=agent_id, day=utc_day(now), metric=metric, used=amount
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "agent_id", "day", "metric"],
            set_={"used": table.c.used + amount},
            where=(table.c.used + amount) <= limit,
        ).returning(table.c.used)
        with self.db.session() as s:
            used = s.execute(stmt).scalar()
        if used is None:
            raise self._exceeded(metric, limit, now)
        return int(used)

    def require_headroom(self, tenant_id: str, agent_id: str, metric: str, limit: int) -> None:
        """Refuse when the budget is already used up (a budget spent *after* the fact)."""
        if self.used(tenant_id, agent_id, metric) >= limit:
            raise self._exceeded(metric, limit, self.clock())

    def add(self, tenant_id: str, agent_id: str, metric: str, amount: int) -> None:
        if amount <= 0:
            return
        now = self.clock()
        table = _TABLE
        stmt = self._insert()(table).values(
            tenant_id=tenant_id, agent_id=agent_id, day=utc_day(now), metric=metric, used=amount
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["tenant_id", "agent_id", "day", "metric"],
            set_={"used": table.c.used + amount},
        )
        with self.db.session() as s:
            s.execute(stmt)

    def release(self, tenant_id: str, agent_id: str, metric: str, amount: int) -> None:
        """Give back a take whose work then failed, so our failure does not eat the quota."""
        table = _TABLE
        day = utc_day(self.clock())
        with self.db.session() as s:
            s.execute(
                update(table)
                .where(
                    table.c.tenant_id == tenant_id,
                    table.c.agent_id == agent_id,
                    table.c.day == day,
                    table.c.metric == metric,
                    table.c.used >= amount,
                )
                .values(used=table.c.used - amount)
            )

    def used(self, tenant_id: str, agent_id: str, metric: str, day: str | None = None) -> int:
        with self.db.session() as s:
            value = s.scalar(
                select(UsageCounterRow.used).where(
                    UsageCounterRow.tenant_id == tenant_id,
                    UsageCounterRow.agent_id == agent_id,
                    UsageCounterRow.day == (day or utc_day(self.clock())),
                    UsageCounterRow.metric == metric,
                )
            )
        return int(value or 0)

    def _exceeded(self, metric: str, limit: int, now: datetime) -> RateLimitExceeded:
        what = "outputs" if metric == OUTPUTS else "tokens"
        resets = next_midnight(now)
        return RateLimitExceeded(
            f"this agent's daily limit of {limit} {what} is reached; it resets at "
            f"{resets:%H:%M} UTC",
            limit=limit,
            resets_at=resets,
        )
