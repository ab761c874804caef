"""Runs an approved output exactly once and records how it ended.

What runs is the output's own skill snapshot (`core.outputs.snapshot`) with the arguments
of the approved revision: never the skill as it is stored today, which an admin may have
changed or deleted since the reviewer looked. Only outputs made before snapshots existed
fall back to the stored skill, by name.

The `output.execute` job (`core.execution.jobs`) calls it for automatable outputs; the
decision itself closes manual ones. The closing write is conditional on `approved`, so two
runs of one approval cannot both record an outcome. Approved outputs of skills that are
not automatable end as `manual`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy import select

from core import metrics
from core.approvals.events import OutputEvents
from core.concurrency import run_sync
from core.db import Database
from core.db.models import SkillRow
from core.errors import CosmoError
from core.outputs.port import Output, OutputStatus, OutputStore, Recorder, Transition
from core.outputs.snapshot import spec_of
from core.schemas.skill import SkillSpec
from core.schemas.views import AgentView
from core.skills.factory import SkillFactory
from core.skills.policy import UnusableSkill
from core.skills.runtime import SkillContext
from core.skills.service import stored_fields

log = logging.getLogger("cosmo.execution")
MAX_RESULT_CHARS = 10_000
OUTCOME_UNKNOWN = "outcome unknown — check the target, then retry"
"""The error of an execution whose worker died while the target was answering."""

Hook = Callable[[], Awaitable[None]]


@dataclass
class Execution:
    """How a run ended: the output as closed, and whether the target was called at all
    (False: the skill could not be built, so no retry can help)."""

    output: Output
    called: bool


class OutputExecutor:
    def __init__(
        self,
        db: Database,
        *,
        outputs: OutputStore,
        skills: SkillFactory,
        events: OutputEvents,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.outputs = outputs
        self.skills = skills
        self.events = events
        self.clock = clock or (lambda: datetime.now(UTC))

    async def run(self, output: Output, agent: AgentView, record: Recorder | None = None) -> Output:
        """Finish an `approved` output: execute it, or mark it for manual follow-up.

        `record` writes the audit entry and receipt of the outcome with the closing write.
        """
        return (await self.execute(output, agent, record)).output

    async def execute(
        self,
        output: Output,
        agent: AgentView,
        record: Recorder | None = None,
        *,
        calling: Hook | None = None,
        closing: Hook | None = None,
    ) -> Execution:
        """`run`, saying whether the target was called. `calling` runs just before the
        call (to record that it may have happened), `closing` before the closing write
        (raise there to leave the output as it is)."""
        webhook = agent.webhook.url if agent.webhook else None
        called = False

        async def close(
            status: OutputStatus,
            *,
            result: dict[str, object] | None = None,
            error: str | None = None,
        ) -> Execution:
            if closing is not None:
                await closing()
            closed = await self._close(
                output, webhook, status, result=result, error=error, record=record
            )
            metrics.executed(status.value)
            return Execution(closed, called)

        if not output.is_automatable:
            return await close(OutputStatus.MANUAL)
        if output.skill_snapshot is not None:
            try:
                spec: SkillSpec | UnusableSkill | None = spec_of(output.skill_snapshot)
            except ValidationError:
                return await close(
                    OutputStatus.EXECUTION_FAILED,
                    error="the output's skill snapshot is not a valid skill",
                )
        else:
            spec = await run_sync(self._skill_spec, output.tenant_id, output.skill)
        if spec is None:
            return await close(
                OutputStatus.EXECUTION_FAILED,
                error=f"the skill {output.skill!r} no longer exists",
            )
        if isinstance(spec, UnusableSkill):
            return await close(OutputStatus.EXECUTION_FAILED, error=spec.reason)
        try:
            skill = self.skills.build(spec)
        except CosmoError as exc:
            return await close(OutputStatus.EXECUTION_FAILED, error=exc.detail)
        ctx = SkillContext(
            tenant_id=output.tenant_id,
            agent_id=output.agent_id,
            agent_name=agent.name,
            session_id=output.session_id,
            user_id=output.requested_by or "",
            user_name=None,
            # The same on every attempt, so an idempotent target recognises a repeat.
            idempotency_key=output.id if spec.idempotent else None,
        )
        if calling is not None:
            await calling()
        called = True
        try:
            result = await skill.execute(output.arguments, ctx)
        except CosmoError as exc:
            return await close(OutputStatus.EXECUTION_FAILED, error=exc.detail)
        except Exception:
            log.exception("output %s: executing %s raised", output.id, output.skill)
            return await close(
                OutputStatus.EXECUTION_FAILED,
                error="the skill failed unexpectedly",
            )
        text = result.content[:MAX_RESULT_CHARS]
        if result.is_error:
            return await close(OutputStatus.EXECUTION_FAILED, error=text)
        return await close(OutputStatus.EXECUTED, result={"summary": text, "data": result.data})

    def _skill_spec(self, tenant_id: str, name: str) -> SkillSpec | UnusableSkill | None:
        with self.db.session() as s:
            row = s.scalar(
                select(SkillRow).where(SkillRow.tenant_id == tenant_id, SkillRow.name == name)
            )
            if row is None:
                return None
            return self.skills.policy.stored(row.name, stored_fields(row))

    async def close_unknown(
        self, output: Output, agent: AgentView, record: Recorder | None = None
    ) -> Output:
        """An earlier attempt was calling the target when its worker died: whether the
        effect happened is unknown, so a person must check before retrying."""
        webhook = agent.webhook.url if agent.webhook else None
        change = Transition(
            expected=OutputStatus.APPROVED,
            to=OutputStatus.EXECUTION_FAILED,
            at=self.clock(),
            execution_error=OUTCOME_UNKNOWN,
        )
        events = self.events.execution_failed(
            webhook,
            output,
            status=OutputStatus.EXECUTION_FAILED.value,
            outcome="outcome_unknown",
            error=OUTCOME_UNKNOWN,
        )
        return await run_sync(
            self.outputs.transition, output.tenant_id, output.id, change, events, record
        )

    async def _close(
        self,
        output: Output,
        webhook: str | None,
        status: OutputStatus,
        *,
        result: dict[str, object] | None = None,
        error: str | None = None,
        record: Recorder | None = None,
    ) -> Output:
        extra: dict[str, object] = {"status": status.value}
        if result is not None:
            extra["result"] = result
        if error is not None:
            extra["error"] = error
        change = Transition(
            expected=OutputStatus.APPROVED,
            to=status,
            at=self.clock(),
            execution_result=result,
            execution_error=error,
            executed=status == OutputStatus.EXECUTED,
        )
        events = self.events.executed(webhook, output, **extra)
        return await run_sync(
            self.outputs.transition, output.tenant_id, output.id, change, events, record
        )
