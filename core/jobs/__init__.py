"""The one job layer: every piece of background work (turns, executions, ingestion,
deliveries, schedules) is a row here, enqueued in the transaction that causes it and run by
a worker holding a renewed lease. See docs/architecture.md, "Background work"."""

from core.jobs.model import (
    FINISHED,
    LEASE,
    Claim,
    JobFailed,
    JobState,
    JobView,
    LostClaim,
    RetryPolicy,
)
from core.jobs.queue import JobQueue, QueueStats, Renewal
from core.jobs.wakeup import Wakeup
from core.jobs.worker import SYSTEM_TENANT, JobContext, JobKind, JobWorker

__all__ = [
    "FINISHED",
    "LEASE",
    "SYSTEM_TENANT",
    "Claim",
    "JobContext",
    "JobFailed",
    "JobKind",
    "JobQueue",
    "JobState",
    "JobView",
    "JobWorker",
    "LostClaim",
    "QueueStats",
    "Renewal",
    "RetryPolicy",
    "Wakeup",
]
