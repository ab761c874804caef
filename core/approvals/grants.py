"""Grants: "Approve and allow for this thread".

A reviewer approving an output of a `grantable` skill may also grant: later outputs of that
skill in the same session (thread), with the *same arguments*, made with the same skill
version as far as what runs goes (its input schema and executor), are approved at creation
under the granter's name — through `ApprovalService.decide`, so the granter must still be
allowed to decide, the decision is audited and webhooked like any approval, and it names
the grant. A grant never crosses sessions or tenants; a revoked one approves nothing more.
Same arguments only, deliberately: a grant is the reviewer saying "this exact action again
is fine", not a policy over argument ranges.
"""

from __future__ import annotations

import builtins
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel
from sqlalchemy import select, update

from core.approvals.canonical import sha256_hex
from core.approvals.policy import Actor, Via
from core.concurrency import run_sync
from core.db import Database
from core.db.ids import new_id
from core.db.models import GrantRow
from core.db.repository import storable
from core.errors import Conflict, CosmoError, NotFound
from core.outputs.port import Output, OutputStatus
from core.skills.service import SkillService

if TYPE_CHECKING:
    from core.approvals.service import ApprovalService

log = logging.getLogger("cosmo.approvals.grants")

GRANTED = {
    OutputStatus.APPROVED,
    OutputStatus.EXECUTED,
    OutputStatus.MANUAL,
    OutputStatus.EXECUTION_FAILED,
}


class GrantView(BaseModel):
    id: str
    tenant_id: str
    agent_id: str
    session_id: str
    skill: str
    arguments: dict[str, Any]
    output_id: str
    granted_by: str
    identity: str
    via: str
    created_at: datetime
    revoked_at: datetime | None = None
    revoked_by: str | None = None


def skill_fingerprint(snapshot: dict[str, Any] | None) -> str:
    """What runs: a grant matches only outputs whose skill would run the same way."""
    snap = snapshot or {}
    return sha256_hex({"input_schema": snap.get("input_schema"), "executor": snap.get("executor")})


def _view(row: GrantRow) -> GrantView:
    return GrantView.model_validate(row, from_attributes=True)


class GrantService:
    """Creates, matches, lists and revokes grants."""

    def __init__(self, db: Database, approvals: ApprovalService, skills: SkillService) -> None:
        self.db = db
        self.approvals = approvals
        self.skills = skills

    async def check_grantable(self, tenant_id: str, output_id: str) -> Output:
        """Refuse (409) before anything is decided when the output's skill is not
        grantable, or no longer the version the output was made with."""
        output = await run_sync(self.approvals.outputs.get, tenant_id, output_id)
        try:
            skill = await run_sync(self.skills.get, tenant_id, output.skill)
        except NotFound:
            raise Conflict(f"skill {output.skill} no longer exists") from None
        if not skill.grantable:
            raise Conflict(
                f"skill {output.skill} is not grantable: approve without allowing it for the "
                "thread, or mark the skill `grantable: true`"
            )
        return output

    async def grant(self, tenant_id: str, output_id: str, actor: Actor) -> GrantView:
        """A grant from `actor`'s approval of `output_id` (they must have approved it)."""
        output = await run_sync(self.approvals.outputs.get, tenant_id, output_id)
        approved_by = {a.by for a in output.current_approvals()}
        if output.status not in GRANTED | {OutputStatus.PENDING}:
            raise Conflict(f"output {output_id} is {output.status.value}: nothing to grant")
        if actor.id not in approved_by:
            raise Conflict(f"{actor.id} did not approve output {output_id}, so cannot grant")
        await self.check_grantable(tenant_id, output_id)
        fingerprint = skill_fingerprint(output.skill_snapshot)
        now = self.approvals.clock()
        grant_id = new_id("gnt")
        record = self.approvals._recorder(actor, "grant", "applied", f"grant {grant_id}")

        def write() -> GrantView:
            with self.db.session() as s:
                row = GrantRow(
                    id=grant_id,
                    tenant_id=tenant_id,
                    agent_id=output.agent_id,
                    session_id=output.session_id,
                    skill=output.skill,
                    skill_fingerprint=fingerprint,
                    arguments_sha256=sha256_hex(output.arguments),
                    arguments=output.arguments,
                    output_id=output.id,
                    granted_by=actor.id,
                    identity=actor.identity,
                    via=actor.via,
                    created_at=now,
                )
                s.add(row)
                s.flush()
                record(s, output)
                return _view(row)

        return await run_sync(write)

    async def apply(self, output: Output) -> Output:
        """At creation: approve `output` under a live grant that covers it, if one does."""
        if output.status != OutputStatus.PENDING:
            return output
        grant = await run_sync(self._match, output)
        if grant is None:
            return output
        actor = Actor(
            grant.granted_by,
            cast(Via, grant.via),
            verified=grant.identity == "verified",
        )
        try:
            result = await self.approvals.decide(
                output.tenant_id, output.id, "approve", actor, grant_id=grant.id
            )
        except CosmoError as exc:  # the granter may no longer decide: it waits for a person
            log.info("output %s: grant %s did not approve it: %s", output.id, grant.id, exc)
            return output
        return result.output

    def _match(self, output: Output) -> GrantView | None:
        with self.db.session() as s:
            rows = s.scalars(
                select(GrantRow)
                .where(
                    GrantRow.tenant_id == output.tenant_id,
                    GrantRow.session_id == output.session_id,
                    GrantRow.agent_id == output.agent_id,
                    GrantRow.skill == output.skill,
                    GrantRow.skill_fingerprint == skill_fingerprint(output.skill_snapshot),
                    GrantRow.arguments_sha256 == sha256_hex(output.arguments),
                    GrantRow.revoked_at.is_(None),
                )
                .order_by(GrantRow.created_at)
                .limit(1)
            )
            row = next(iter(rows), None)
            return _view(row) if row is not None else None

    def list(self, tenant_id: str, session_id: str | None = None) -> builtins.list[GrantView]:
        with self.db.session() as s:
            stmt = select(GrantRow).where(GrantRow.tenant_id == tenant_id)
            if session_id is not None:
                if not storable(session_id):
                    return []
                stmt = stmt.where(GrantRow.session_id == session_id)
            return [_view(r) for r in s.scalars(stmt.order_by(GrantRow.created_at.desc()))]

    def active(
        self, tenant_id: str, *, granted_by: str | None = None, limit: int = 20
    ) -> builtins.list[GrantView]:
        """Grants in force, newest first: everyone's, or those `granted_by` made."""
        with self.db.session() as s:
            stmt = select(GrantRow).where(
                GrantRow.tenant_id == tenant_id, GrantRow.revoked_at.is_(None)
            )
            if granted_by is not None:
                stmt = stmt.where(GrantRow.granted_by == granted_by)
            rows = s.scalars(stmt.order_by(GrantRow.created_at.desc()).limit(limit))
            return [_view(r) for r in rows]

    def of_output(self, tenant_id: str, output_id: str) -> GrantView | None:
        """The newest grant made from `output_id`'s approval, if any."""
        with self.db.session() as s:
            row = s.scalars(
                select(GrantRow)
                .where(GrantRow.tenant_id == tenant_id, GrantRow.output_id == output_id)
                .order_by(GrantRow.created_at.desc())
                .limit(1)
            ).first()
            return _view(row) if row is not None else None

    def get(self, tenant_id: str, grant_id: str) -> GrantView:
        with self.db.session() as s:
            row = s.get(GrantRow, grant_id) if storable(grant_id) else None
            if row is None or row.tenant_id != tenant_id:
                raise NotFound("grant", grant_id)
            return _view(row)

    async def revoke(self, tenant_id: str, grant_id: str, actor: Actor) -> GrantView:
        """Revoke (once, audited on the output it came from; revoking a revoked grant
        changes nothing)."""
        grant = await run_sync(self.get, tenant_id, grant_id)
        if grant.revoked_at is not None:
            return grant
        output = await run_sync(self.approvals.outputs.get, tenant_id, grant.output_id)
        record = self.approvals._recorder(actor, "revoke_grant", "applied", f"grant {grant_id}")
        at = self.approvals.clock()

        def write() -> None:
            with self.db.session() as s:
                done = s.execute(
                    update(GrantRow)
                    .where(
                        GrantRow.id == grant_id,
                        GrantRow.tenant_id == tenant_id,
                        GrantRow.revoked_at.is_(None),
                    )
                    .values(revoked_at=at, revoked_by=actor.id)
                )
                if done.rowcount == 1:  # type: ignore[attr-defined]
                    record(s, output)

        await run_sync(write)
        return await run_sync(self.get, tenant_id, grant_id)
