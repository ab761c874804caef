"""`/healthz` (the process answers) and `/readyz` (it can do useful work)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from bot.api.deps import ContainerDep

router = APIRouter(tags=["health"])
log = logging.getLogger("cosmo.health")


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
    body = {
        "status": "ok" if status.is_current else "unavailable",
        "database": c.db.backend,
        "schema": {"current": status.current, "head": status.head},
        "disabled": c.disabled,
    }
    return JSONResponse(body, 200 if status.is_current else 503)
