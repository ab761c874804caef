"""`/healthz` (the process answers) and `/readyz` (it can do useful work)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from bot.api.deps import ContainerDep
from core.concurrency import run_sync

router = APIRouter(tags=["health"])
log = logging.getLogger("cosmo.health")
MAX_LISTED = 50
#: A due job waiting longer than this means no worker is running or they cannot keep up.
BACKLOG_SECONDS = 60.0
#: Unrouted pending outputs are counted up to this many.
MAX_UNROUTED = 1_000


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(c: ContainerDep) -> JSONResponse:
    try:
        status = await run_sync(c.db.schema_status)
    except SQLAlchemyError as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
    usable = status.is_usable
    unusable = await run_sync(c.skills.unusable) if usable else []
    jobs = await run_sync(c.jobs.stats) if usable else None
    unrouted = await run_sync(c.outputs.count_unrouted, MAX_UNROUTED) if usable else 0
    # A broken skill degrades its agents (they answer without it), and dead-lettered jobs
    # or a backlog need an operator, but the service still does useful work: report them,
    # stay ready, so one bad row cannot take a replica out of the load balancer.
    backlog = jobs is not None and jobs.oldest_due_seconds > BACKLOG_SECONDS
    # Pending outputs that reached nobody in Slack wait for a REST decision: a warning too.
    state = "ok" if not (unusable or backlog or (jobs and jobs.dead) or unrouted) else "degraded"
    body: dict[str, Any] = {
        "status": state if usable else "unavailable",
        "database": c.db.backend,
        "schema": {"current": status.current, "head": status.head},
        "disabled": c.disabled,
        "unusable_skills": [
            {"tenant": tenant, "skill": skill.name, "reason": skill.reason}
            for tenant, skill in unusable[:MAX_LISTED]
        ],
    }
    if len(unusable) > MAX_LISTED:
        body["unusable_skills_total"] = len(unusable)
    if unrouted:
        body["unrouted_outputs"] = unrouted
    if jobs is not None:
        body["jobs"] = {
            "queued": jobs.queued,
            "running": jobs.running,
            "dead": jobs.dead,
            "oldest_due_seconds": round(jobs.oldest_due_seconds, 1),
        }
    if status.is_ahead:
        # A rolling upgrade: a newer release migrated the database. Expand migrations keep
        # this version working; a contract one since this version makes it unready.
        body["schema"]["ahead"] = True
        body["schema"]["compatible_from"] = status.compatible_from
    return JSONResponse(body, 200 if usable else 503)
