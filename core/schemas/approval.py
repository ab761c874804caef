"""The approval lifecycle of an action skill: how many approvals it needs, when it
expires and what happens then, who is reminded and when.

Written as an `approval:` block on an agent (the defaults of its skills) and on a skill
(overrides, field by field). Every field is optional so that a skill can override one
thing and inherit the rest; `resolve` merges the two into the `Lifecycle` an output keeps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from core.schemas.common import SLACK_PRINCIPAL, StrictModel

_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: A lifecycle timer further out than this is a typo, not a policy.
MAX_DURATION = timedelta(days=90)
MIN_DURATION = timedelta(minutes=1)
MAX_REQUIRED_APPROVALS = 10

Duration = Annotated[str, StringConstraints(strip_whitespace=True, max_length=16)]


def parse_duration(value: str) -> timedelta:
    """`30m`, `24h`, `2d`, `90s` -> timedelta; ValueError says what is accepted."""
    match = _DURATION.match(value.strip())
    if match is None:
        raise ValueError(
            f"{value!r} is not a duration: write a number and a unit, such as 30m, 24h or 2d "
            "(s, m, h, d)"
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    span = timedelta(seconds=seconds)
    if span < MIN_DURATION or span > MAX_DURATION:
        raise ValueError(f"{value!r} must be between 1m and 90d")
    return span


class ApprovalPolicy(StrictModel):
    """`approval:` on an agent or a skill. Left-out fields inherit (skill <- agent <- the
    defaults: one approval, no expiry beyond the operator's `COSMO_OUTPUT_TTL`, no reminders)."""

    required_approvals: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REQUIRED_APPROVALS,
        description="Distinct approvers needed (N of the agent's approvers); any reject ends it.",
    )
    expires_after: Duration | None = Field(
        default=None, description="Time to a decision (`24h`, `30m`, `2d`); then `on_expiry`."
    )
    on_expiry: Literal["reject", "escalate"] | None = Field(
        default=None,
        description="`reject` (default): status `expired`. `escalate`: add `escalate_to` as "
        "approvers, notify them and restart the clock once; the next expiry rejects.",
    )
    remind_after: Duration | None = Field(
        default=None, description="DM approvers who have not approved yet after this long."
    )
    remind_every: Duration | None = Field(
        default=None, description="Then again this often until the output is decided."
    )
    escalate_to: list[str] | None = Field(
        default=None, description="Slack user (U…/W…) or user-group (S…) ids."
    )

    @field_validator("expires_after", "remind_after", "remind_every")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("escalate_to")
    @classmethod
    def _principals(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        bad = [v for v in value if not SLACK_PRINCIPAL.match(v)]
        if bad:
            raise ValueError(
                f"{', '.join(bad)}: escalation targets are Slack user ids (U…/W…) or "
                "user-group ids (S…)"
            )
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _escalation_has_targets(self) -> ApprovalPolicy:
        if self.on_expiry == "escalate" and self.escalate_to == []:
            raise ValueError("on_expiry: escalate needs at least one escalate_to target")
        return self


@dataclass(frozen=True)
class Lifecycle:
    """The merged policy an output keeps (JSON in `Output.approval_policy`)."""

    required_approvals: int = 1
    expires_after: timedelta | None = None
    on_expiry: Literal["reject", "escalate"] = "reject"
    remind_after: timedelta | None = None
    remind_every: timedelta | None = None
    escalate_to: tuple[str, ...] = ()

    @property
    def escalates(self) -> bool:
        return self.on_expiry == "escalate" and bool(self.escalate_to)

    def to_json(self) -> dict[str, Any]:
        def secs(span: timedelta | None) -> int | None:
            return None if span is None else int(span.total_seconds())

        return {
            "required_approvals": self.required_approvals,
            "expires_after_seconds": secs(self.expires_after),
            "on_expiry": self.on_expiry,
            "remind_after_seconds": secs(self.remind_after),
            "remind_every_seconds": secs(self.remind_every),
            "escalate_to": list(self.escalate_to),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Lifecycle:
        """An output's stored policy; None (outputs from before lifecycles) is the default."""
        if not data:
            return cls()

        def span(name: str) -> timedelta | None:
            value = data.get(name)
            return None if value is None else timedelta(seconds=int(value))

        on_expiry = data.get("on_expiry")
        return cls(
            required_approvals=int(data.get("required_approvals") or 1),
            expires_after=span("expires_after_seconds"),
            on_expiry="escalate" if on_expiry == "escalate" else "reject",
            remind_after=span("remind_after_seconds"),
            remind_every=span("remind_every_seconds"),
            escalate_to=tuple(data.get("escalate_to") or ()),
        )


def resolve(
    agent: ApprovalPolicy | None,
    skill: ApprovalPolicy | None,
    default_ttl: timedelta | None = None,
) -> Lifecycle:
    """Skill overrides agent, field by field; `default_ttl` (the operator's output TTL)
    applies when neither sets `expires_after`."""

    def pick(name: str) -> Any:
        for policy in (skill, agent):
            if policy is not None and getattr(policy, name) is not None:
                return getattr(policy, name)
        return None

    def span(name: str) -> timedelta | None:
        value = pick(name)
        return None if value is None else parse_duration(value)

    remind_after = span("remind_after")
    return Lifecycle(
        required_approvals=pick("required_approvals") or 1,
        expires_after=span("expires_after") or default_ttl,
        on_expiry=pick("on_expiry") or "reject",
        remind_after=remind_after,
        remind_every=span("remind_every") if remind_after is not None else None,
        escalate_to=tuple(pick("escalate_to") or ()),
    )
