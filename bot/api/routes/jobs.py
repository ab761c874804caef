"""`/jobs` — background work as REST sees it: one job's state and progress, and lists of a
tenant's jobs (`?state=dead` is the dead letter)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from bot.api.auth import BearerRoute, ReaderDep
from bot.api.deps import ContainerDep
from bot.api.params import Cursor, Limit
from bot.api.problems import problem_responses
from bot.api.routes import API_PREFIX
from bot.api.schemas import PageOut
from core.db.pagination import DEFAULT_LIMIT
from core.jobs import JobState, JobView

PREFIX = API_PREFIX + "/jobs"

router = APIRouter(
    prefix=PREFIX, tags=["jobs"], responses=problem_responses(401), route_class=BearerRoute
)


def job_location(job_id: str) -> str:
    """Where a client follows a job (the `Location` of a 202)."""
    return f"{PREFIX}/{job_id}"


@router.get("", response_model=PageOut[JobView], responses=problem_responses(422))
def list_jobs(
    caller: ReaderDep,
    c: ContainerDep,
    state: Annotated[
        JobState | None, Query(description="Only jobs in this state; `dead`: the dead letter.")
    ] = None,
    kind: Annotated[str | None, Query(max_length=64, description="Only jobs of this kind.")] = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> PageOut[JobView]:
    """The tenant's jobs, oldest first, e.g. `?state=dead&kind=knowledge.ingest`."""
    page = c.jobs.list_jobs(caller.tenant_id, state=state, kind=kind, cursor=cursor, limit=limit)
    return PageOut.of(page)


@router.get("/{job_id}", responses=problem_responses(404))
def get_job(job_id: str, caller: ReaderDep, c: ContainerDep) -> JobView:
    """A job's state, attempt, progress (a knowledge ingestion reports `{done, total}`
    chunks), result and error; 404 for jobs of other tenants."""
    return c.jobs.get(caller.tenant_id, job_id)
