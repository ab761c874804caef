"""Webhook events announcing an output's life: created, decided, executed.

`output.approval_recorded` announces each approval of an output (N of M: the ones before
the deciding one too); `output.reminded` and `output.escalated` its lifecycle timers.

Payload (Standard Webhooks shape): `{"type", "timestamp", "data": {...}}` where data
carries outputId, agentId, sessionId, skill, status, contentUrl and, on creation, an
`approvalToken` the receiver can send back to `POST /api/v1/webhooks/approval`.
`output.edited` announces a reviewer's edit (revision, editor, per-field changes).
`output.execution_failed` announces an execution whose outcome is unknown (its worker died
while the target was answering): `outcome: outcome_unknown`; someone must check the target.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from core.approvals.tokens import TokenSigner
from core.outputs.port import NewEvent, NewOutput, Output, OutputEdit

CREATED = "output.created"
DECIDED = "output.decided"
EDITED = "output.edited"
EXECUTED = "output.executed"
EXECUTION_FAILED = "output.execution_failed"
APPROVAL_RECORDED = "output.approval_recorded"
REMINDED = "output.reminded"
ESCALATED = "output.escalated"


class OutputEvents:
    """Builds the events for an agent's webhook; none when the agent has no webhook."""

    def __init__(self, public_url: str, tokens: TokenSigner) -> None:
        self.public_url = public_url.rstrip("/")
        self.tokens = tokens

    def content_url(self, tenant_id: str, output_id: str) -> str:
        """A link that works without our API token, until the token expires."""
        token = self.tokens.issue("content", tenant_id, output_id)
        return f"{self.public_url}/api/v1/shared/outputs/{output_id}/content?token={quote(token)}"

    def created(self, webhook_url: str | None, new: NewOutput) -> list[NewEvent]:
        if not webhook_url:
            return []
        data = {
            "outputId": new.id,
            "agentId": new.agent_id,
            "sessionId": new.session_id,
            "skill": new.skill,
            "status": "pending",
            "revision": 1,
            "isAutomatable": new.is_automatable,
            "requestedBy": new.requested_by,
            "contentUrl": self.content_url(new.tenant_id, new.id),
            "approvalToken": self.tokens.issue("approve", new.tenant_id, new.id),
            "expiresAt": new.expires_at.isoformat() if new.expires_at else None,
        }
        return [NewEvent(CREATED, new.agent_id, webhook_url, _envelope(CREATED, data))]

    def edited(
        self, webhook_url: str | None, output: Output, edit: OutputEdit, content_sha256: str
    ) -> list[NewEvent]:
        """A reviewer changed the arguments: revision, who, and the diff per field."""
        return self._about(
            EDITED,
            webhook_url,
            output,
            {
                "revision": edit.revision,
                "contentSha256": content_sha256,
                "editedBy": edit.edited_by,
                "identity": edit.identity,
                "editedAt": edit.edited_at.isoformat(),
                "changes": edit.changes,
            },
        )

    def decided(self, webhook_url: str | None, output: Output, **extra: Any) -> list[NewEvent]:
        return self._about(DECIDED, webhook_url, output, extra)

    def executed(self, webhook_url: str | None, output: Output, **extra: Any) -> list[NewEvent]:
        return self._about(EXECUTED, webhook_url, output, extra)

    def execution_failed(
        self, webhook_url: str | None, output: Output, **extra: Any
    ) -> list[NewEvent]:
        return self._about(EXECUTION_FAILED, webhook_url, output, extra)

    def approval_recorded(
        self, webhook_url: str | None, output: Output, approval: dict[str, Any]
    ) -> list[NewEvent]:
        """One approval of an output that needs several (the deciding one included)."""
        extra = {
            "approvedBy": approval["by"],
            "identity": approval["identity"],
            "approvedAt": approval["at"],
            "approvals": output.approval_count + 1,
            "requiredApprovals": output.required_approvals,
        }
        if approval.get("grant_id"):
            extra["grantId"] = approval["grant_id"]
        return self._about(APPROVAL_RECORDED, webhook_url, output, extra)

    def reminded(self, webhook_url: str | None, output: Output, **extra: Any) -> list[NewEvent]:
        return self._about(REMINDED, webhook_url, output, extra)

    def escalated(self, webhook_url: str | None, output: Output, **extra: Any) -> list[NewEvent]:
        return self._about(ESCALATED, webhook_url, output, extra)

    def _about(
        self, kind: str, webhook_url: str | None, output: Output, extra: dict[str, Any]
    ) -> list[NewEvent]:
        if not webhook_url:
            return []
        data = {
            "outputId": output.id,
            "agentId": output.agent_id,
            "sessionId": output.session_id,
            "skill": output.skill,
            "status": extra.pop("status", output.status.value),
            "revision": output.revision,
            "contentSha256": output.content_sha256,
            "contentUrl": self.content_url(output.tenant_id, output.id),
            **extra,
        }
        return [NewEvent(kind, output.agent_id, webhook_url, _envelope(kind, data))]


def _envelope(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "timestamp": datetime.now(UTC).isoformat(), "data": data}
