"""What the job layer hands out and takes back: views, claims, retry policies, errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from core.errors import Conflict, CosmoError

JobState = Literal["queued", "running", "succeeded", "dead", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "dead", "cancelled"})

#: How long a claim holds without a heartbeat. Workers renew every third of it, so a dead
#: worker's job is free again within LEASE and taken over at the next pickup: well under 30 s.
LEASE = timedelta(seconds=15)


class JobView(BaseModel):
    """A job as REST and the CLI show it (`GET /api/v1/jobs/{id}`)."""

    id: str
    tenant_id: str
    kind: str
    state: JobState
    attempt: int = Field(description="Claims so far (a takeover after a crash adds one).")
    failures: int = Field(description="Attempts that failed and were retried or dead-lettered.")
    max_attempts: int
    cancel_requested: bool
    progress: dict[str, Any] = Field(
        description="What the job reports while it runs, e.g. {done, total} chunks."
    )
    result: dict[str, Any] | None
    error: str | None
    run_after: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Claim:
    """A job a worker holds. `attempt` fences: a write naming an older attempt is refused."""

    id: str
    tenant_id: str
    kind: str
    payload: dict[str, Any]
    attempt: int
    failures: int
    owner: str
    progress: dict[str, Any] = field(default_factory=dict)
    """What an earlier attempt recorded (e.g. a Slack placeholder's ts), for a takeover."""

    @property
    def resumed(self) -> bool:
        """True when an earlier attempt was claimed: it died, lost its lease or was released."""
        return self.attempt > 1


@dataclass(frozen=True)
class RetryPolicy:
    """Per kind: how many attempts, and how long to wait between them (doubling, capped)."""

    max_attempts: int = 5
    backoff: timedelta = timedelta(seconds=2)
    cap: timedelta = timedelta(minutes=5)

    def delay(self, failures: int) -> timedelta:
        delay: timedelta = self.backoff * (2 ** max(0, failures - 1))
        return min(self.cap, delay)


class LostClaim(Conflict):
    """The worker no longer holds the job (its lease lapsed and another took it over, or
    it was cancelled): whatever it was about to write is refused."""

    title = "Job claim lost"


class JobFailed(CosmoError):
    """Raised by a handler for a failure no retry can fix (a payload that does not parse,
    a deleted agent): the job goes to the dead letter at once, with this reason."""

    title = "Job failed"
