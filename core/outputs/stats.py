"""Per-skill review figures: how reviewers treated a skill's outputs over a window.

The evidence an admin needs before marking a skill automatable or grantable: how often its
outputs were approved as proposed, approved after an edit, rejected, or left to expire,
and how long a decision took (the median). Read through the `OutputStore` port, so both
stores give the same answer.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from core.outputs.port import Output, OutputFilter, OutputStatus, OutputStore

#: The window figures cover by default.
DEFAULT_WINDOW = timedelta(days=30)
PAGE = 200
#: Outputs read at most for one skill's figures; past it `truncated` says so.
MAX_OUTPUTS = 10_000

_APPROVED = frozenset(
    {
        OutputStatus.APPROVED,
        OutputStatus.EXECUTED,
        OutputStatus.MANUAL,
        OutputStatus.EXECUTION_FAILED,
    }
)


class SkillStats(BaseModel):
    # A view as the REST API shows it (`SkillStatsOut` there is this, under its own name).
    model_config = ConfigDict(frozen=True)

    skill: str
    window_days: int = Field(description="The figures cover outputs proposed in this window.")
    since: datetime
    until: datetime
    proposed: int
    pending: int
    approved_unchanged: int
    approved_with_edits: int
    rejected: int
    expired: int
    median_seconds_to_decision: float | None = Field(
        description="Median time from proposal to decision (approve or reject; expiry is "
        "not a decision) over the window; null when nothing was decided."
    )
    truncated: bool = Field(description="True when more outputs than could be read matched.")


def skill_stats(
    outputs: OutputStore,
    tenant_id: str,
    skill: str,
    now: datetime,
    window: timedelta = DEFAULT_WINDOW,
) -> SkillStats:
    """Figures for the skill's outputs proposed in the `window` before `now`."""
    since = now - window
    filters = OutputFilter(skill=skill, created_after=since, created_before=now)
    found: list[Output] = []
    cursor = None
    while len(found) < MAX_OUTPUTS:
        page = outputs.list(tenant_id, filters, cursor=cursor, limit=PAGE)
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    counts = {"pending": 0, "unchanged": 0, "edited": 0, "rejected": 0, "expired": 0}
    waits: list[float] = []
    for output in found[:MAX_OUTPUTS]:
        if output.status == OutputStatus.PENDING:
            counts["pending"] += 1
            continue
        if output.status == OutputStatus.EXPIRED:
            counts["expired"] += 1
            continue
        if output.status == OutputStatus.REJECTED:
            counts["rejected"] += 1
        elif output.status in _APPROVED:
            counts["edited" if output.edits else "unchanged"] += 1
        if output.decided_at is not None:
            waits.append(max(0.0, (output.decided_at - output.created_at).total_seconds()))
    return SkillStats(
        skill=skill,
        window_days=window.days,
        since=since,
        until=now,
        proposed=min(len(found), MAX_OUTPUTS),
        pending=counts["pending"],
        approved_unchanged=counts["unchanged"],
        approved_with_edits=counts["edited"],
        rejected=counts["rejected"],
        expired=counts["expired"],
        median_seconds_to_decision=statistics.median(waits) if waits else None,
        truncated=len(found) > MAX_OUTPUTS or cursor is not None,
    )
