"""Who may decide an output: the agent's approvers (users or user groups), never the
requester approving their own output unless the agent allows it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from core.errors import NotAllowedToDecide
from core.outputs.port import Output
from core.schemas.views import AgentView

Via = Literal["slack", "api", "webhook", "system"]


@dataclass(frozen=True)
class Actor:
    """Who is deciding, and how sure we are of it.

    `verified`: something we trust vouched for the identity (Slack signed who clicked, or
    an API key bound to that Slack user). Otherwise the id is only *asserted* (a
    callback's `userId`, a REST `user_id`) and is recorded as such. `trusted` marks an
    admin or root key acting for itself (no approver rules). `key_id`/`key_name` name the
    API key used, never the key itself.
    """

    id: str
    via: Via
    trusted: bool = False
    verified: bool = False
    key_id: str | None = None
    key_name: str | None = None

    @property
    def identity(self) -> Literal["verified", "asserted"]:
        return "verified" if self.verified or self.via == "system" else "asserted"


class GroupDirectory(Protocol):
    """Resolves Slack user groups to members (the Slack adapter implements it)."""

    async def members(self, tenant_id: str, group_id: str) -> set[str]: ...


async def check_may_decide(
    agent: AgentView,
    output: Output,
    actor: Actor,
    decision: Literal["approve", "reject", "edit"],
    directory: GroupDirectory | None,
) -> None:
    """Raise `NotAllowedToDecide` unless `actor` may take `decision` on `output`.

    Editing follows the approve rules: whoever may approve may fix the draft first, and a
    requester who may not approve their own output may not rewrite it either.
    """
    if actor.trusted:
        return
    verb = "edit" if decision == "edit" else "decide"
    if actor.identity == "asserted" and not agent.accept_asserted_decisions:
        raise NotAllowedToDecide(
            f"agent {agent.name} accepts only verified decisions: {actor.id} was asserted "
            f"(via {actor.via}), so {verb} from Slack or with a key bound to that Slack user"
        )
    if decision != "reject" and output.requested_by == actor.id and not agent.allow_self_approval:
        raise NotAllowedToDecide(
            f"you asked for this output, so someone else has to {decision} it "
            f"(agent {agent.name} does not allow self-approval)"
        )
    if (
        decision == "approve"
        and agent.require_distinct_editor_approver
        and actor.id in editors_of(output)
    ):
        raise NotAllowedToDecide(
            f"you edited this output, and agent {agent.name} requires someone other than its "
            "editors to approve it"
        )
    approvers = approvers_of(agent, output)
    if not approvers or actor.id in approvers:
        return
    for group in (a for a in approvers if a.startswith("S")):
        if directory is not None and actor.id in await directory.members(agent.tenant_id, group):
            return
    raise NotAllowedToDecide(
        f"only {agent.name}'s approvers may {verb} its outputs: {', '.join(approvers)}",
        agent_name=agent.name,
        approvers=list(approvers),
    )


def approvers_of(agent: AgentView, output: Output) -> list[str]:
    """The agent's approvers, and once the output was escalated its `escalate_to` too
    (empty: anyone may decide)."""
    extra: list[str] = []
    if output.escalated_at is not None:
        extra = list((output.approval_policy or {}).get("escalate_to") or ())
    if not agent.approvers:
        return []
    return list(dict.fromkeys([*agent.approvers, *extra]))


def editors_of(output: Output) -> set[str]:
    return {edit.edited_by for edit in output.edits or ()}
