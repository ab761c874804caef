"""`/healthz` (the process answers) and `/readyz` (it can do useful work)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from bot.api.deps import ContainerDep

router = APIRouter(tags=["health"])
log = logging.getLogger("cosmo.health")
MAX_LISTED = 50


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(c: ContainerDep) -> JSONResponse:
    try:
        status = await run_in_threadpool(c.db.schema_status)
    except SQLAlchemyError as exc:
        log.warning("readiness: database unreachable: %s", type(exc).__name__)
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
    unusable = await run_in_threadpool(c.skills.unusable) if status.is_current else []
    # A broken skill degrades its agents (they answer without it) but the service still
    # does useful work: report it, stay ready, so one bad row cannot take a replica out.
    state = "ok" if not unusable else "degraded"
    body: dict[str, Any] = {
        "status": state if status.is_current else "unavailable",
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
    return JSONResponse(body, 200 if status.is_current else 503)
