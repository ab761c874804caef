"""The thread's agent session status in Slack (`agents.sessions.setStatus`).

`processing` while a turn runs (Slack shows a Stop button), `suspended` while outputs of
the thread await a decision, `active` otherwise, `closed` when the session ends. The
status is a courtesy: a failure is logged at WARNING and never fails the turn or the
decision that asked for it.
"""

from __future__ import annotations

import logging
from typing import Any

from core.concurrency import run_sync
from core.outputs.port import OutputFilter, OutputStatus
from core.sessions.models import SessionView
from core.wiring import Container

log = logging.getLogger("cosmo.slack.session_status")

PROCESSING = "processing"
SUSPENDED = "suspended"
ACTIVE = "active"
CLOSED = "closed"


async def set_status(
    client: Any,
    channel: str | None,
    thread_ts: str | None,
    status: str,
    *,
    initiator: str | None = None,
) -> None:
    if not channel or not thread_ts:
        return
    extra = {"initiator_user_id": initiator} if initiator else {}
    try:
        await client.agents_sessions_setStatus(
            channel_id=channel, thread_ts=thread_ts, status=status, **extra
        )
    except Exception as exc:
        log.warning("could not set the agent session status %s in %s: %s", status, channel, exc)


def awaiting_decision(c: Container, session: SessionView) -> bool:
    """Whether any output of the session still waits for a human."""
    page = c.outputs.list(
        session.tenant_id,
        OutputFilter(session_id=session.id, status=OutputStatus.PENDING),
        cursor=None,
        limit=1,
    )
    return bool(page.items)


async def settle(c: Container, client: Any, session: SessionView) -> None:
    """After a turn or a decision: `suspended` while something awaits a decision, else
    `active`."""
    if session.source != "slack" or session.status == "ended":
        return
    waiting = await run_sync(awaiting_decision, c, session)
    await set_status(
        client, session.channel_id, session.thread_ts, SUSPENDED if waiting else ACTIVE
    )
