"""Core's typed errors as what a person reads in Slack — the one place that decides it,
as `bot/api/problems.py` does for REST.

Every listener that catches a `CosmoError` answers with `slack_message(exc)`: the error's
typed fields become mentions, dates and links where Slack can show them (who decided
first, the approvers to ask, the latest revision), and everything else is the error's
detail escaped for mrkdwn — a detail can quote names people chose (`agent '<!channel>'
does not exist`), and Slack must show that text, not act on it.
"""

from __future__ import annotations

from bot.slack import blocks
from bot.slack.text import escape
from core.errors import CosmoError, NotAllowedToDecide, OutputAlreadyDecided, StaleRevision


def slack_message(exc: CosmoError, *, latest: str | None = None, prefix: str = "") -> str:
    """The mrkdwn answer to `exc`. `latest`: a permalink to the output's current message,
    for a stale revision; `prefix` says what did not happen ("Nothing was saved: ")."""
    if isinstance(exc, OutputAlreadyDecided):
        text = blocks.ephemeral_already_decided(exc.status, exc.decided_by, exc.decided_at)
    elif isinstance(exc, StaleRevision):
        text = blocks.ephemeral_stale(exc.current, latest)
    elif isinstance(exc, NotAllowedToDecide) and exc.approvers:
        text = blocks.ephemeral_not_an_approver(exc.agent_name or "the agent", exc.approvers)
    else:
        return f"⚠️ {prefix}{escape(exc.detail)}"
    return f"{prefix}{text}" if prefix else text


def form_error(exc: CosmoError, *, prefix: str = "") -> str:
    """`exc` as a modal field's error, which Slack shows as plain text (no mentions, no
    escaping): the detail, except where a typed error has something better to say."""
    if isinstance(exc, StaleRevision):
        return (
            f"{prefix}This output was edited since you opened this (revision {exc.current} "
            "is current): review the latest first."
        )
    return f"{prefix}{exc.detail}"
