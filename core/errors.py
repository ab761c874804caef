"""The typed errors core raises.

Adapters map them to replies in exactly one place each (problem+json for REST, an
ephemeral or thread message for Slack, an exit code for the CLI), so core never
needs to know how an error is shown.

Every exception class in core, under its base. Those defined here have no module after
their name; the others live beside the code that raises them. Outside `CosmoError` are
three signals core raises and catches itself (`ApprovalsMoved`, `_DryRun`, `_EmptyRange`)
and `OutsideRoot`, which `cosmo kb ingest` reports. `tests/unit/test_error_tree.py` keeps
this tree true.

    Exception
        CosmoError
            NotFound
            Conflict
                AgentBusy
                NameTaken
                StaleRevision
                AlreadyApproved
                LostClaim                   core.jobs.model
                KnowledgeBaseInUse          core.knowledge.schemas
                ReindexRequired             core.knowledge.schemas
            PreconditionFailed
                StaleRevisionPrecondition
            ValidationFailed
                DocumentInvalid             core.config_document
                DocumentRejected            core.knowledge.schemas
                InvalidMemoryArgument       core.memory.port (also a ValueError)
            UnsafeWebhookUrl
            SchemaOutOfDate
            OutputAlreadyDecided
            NotAllowedToDecide
            Forbidden
            RateLimitExceeded
            ServiceUnavailable
                ClaudeNotConfigured         core.agent.runner
                EmbeddingFailed             core.embeddings.voyage
            EmbeddingModelUnavailable       core.embeddings.port
            InvalidToken                    core.approvals.tokens
            JobFailed                       core.jobs.model
                _Unreadable                 core.knowledge.jobs
            McpServersInvalid               core.skills.mcp_servers
            ModelError                      core.agent.model
            SecretNotAllowed                core.secret_names
            SignatureInvalid                core.webhooks.signing
            SkillArgumentsInvalid           core.skills.runtime
            SkillConfigInvalid              core.skills.runtime
                SkillUnusable               core.skills.runtime
                UnknownBuiltin              core.skills.runtime
            SkillFailed                     core.skills.runtime
                McpUnavailable              core.skills.mcp_executor
                SkillDestinationRefused     core.skills.egress
            Superseded                      core.knowledge.ingestion
        ApprovalsMoved                      core.outputs.port
        _DryRun                             core.config_document
        _EmptyRange                         core.outputs.aws_store
    ValueError
        OutsideRoot                         core.knowledge.files
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class CosmoError(Exception):
    """Base of every error core raises on purpose."""

    title = "Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(CosmoError):
    title = "Not found"

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} does not exist")
        self.kind = kind
        self.key = key


class Conflict(CosmoError):
    """The request is valid but clashes with what is stored (duplicate name, in use...)."""

    title = "Conflict"


class AgentBusy(Conflict):
    """An agent cannot be deleted while people are talking to it (unless forced)."""

    def __init__(self, name: str, running: int) -> None:
        super().__init__(
            f"agent {name!r} has {running} turn{'s' if running != 1 else ''} pending or "
            "running; wait for them to finish, or delete with force"
        )
        self.name = name
        self.running = running


class NameTaken(Conflict):
    """Another record of this `kind` (agent, persona, skill...) already has `name`: forms
    put the message on the field that names that kind of record."""

    def __init__(self, kind: str, name: str) -> None:
        article = "an" if kind[:1] in "aeiou" else "a"
        super().__init__(f"{article} {kind} named {name!r} already exists")
        self.kind = kind
        self.name = name


class PreconditionFailed(CosmoError):
    """An optimistic-concurrency check failed: the caller saw an older version."""

    title = "Precondition failed"

    def __init__(self, expected: int, actual: int) -> None:
        # A number above the current one was never issued (a typo, another agent's ETag):
        # calling it "stale" would send the caller looking for changes that never happened.
        seen = (
            f"version {expected} does not exist (the current version is {actual})"
            if expected > actual
            else f"version {expected} is out of date: it has changed since, the current "
            f"version is {actual}"
        )
        super().__init__(
            f"{seen}; read it again (GET, whose ETag is the version), check the changes, "
            f'and retry with If-Match: "{actual}"'
        )
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class FieldError:
    """One invalid field: `loc` is the path to it, as pydantic reports paths."""

    loc: tuple[str | int, ...]
    msg: str

    @property
    def path(self) -> str:
        return ".".join(str(p) for p in self.loc) or "(root)"


class ValidationFailed(CosmoError):
    """Input that parsed but breaks a rule; each problem names its field."""

    title = "Validation failed"

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{e.path}: {e.msg}" for e in self.errors))


class UnsafeWebhookUrl(CosmoError):
    """A webhook URL that could reach something other than a public host."""

    title = "Unsafe webhook URL"


class SchemaOutOfDate(CosmoError):
    """The database schema is behind the code; the message names the fix."""

    title = "Database schema out of date"

    def __init__(self, current: str | None, head: str, *, ahead: bool = False) -> None:
        if ahead:
            detail = (
                f"the database schema is at revision {current}, newer than this version of "
                f"Cosmo ({head}), and a migration since then removed what this version "
                "needs; run the newer release"
            )
        else:
            detail = (
                f"the database schema is at revision {current or '(empty)'} but this version "
                f"of Cosmo needs {head}; run `cosmo db upgrade` (or `make run`, which does it)"
            )
        super().__init__(detail)
        self.current = current
        self.head = head


class OutputAlreadyDecided(CosmoError):
    """Someone else decided first; the loser learns who and when."""

    title = "Output already decided"

    def __init__(
        self, output_id: str, status: str, decided_by: str | None, decided_at: datetime | None
    ) -> None:
        super().__init__(
            f"output {output_id} was already decided ({status}) by {decided_by or 'unknown'}"
            + (f" at {decided_at.isoformat()}" if decided_at else "")
        )
        self.output_id = output_id
        self.status = status
        self.decided_by = decided_by
        self.decided_at = decided_at


class StaleRevision(Conflict):
    """A decision or edit named a revision of an output that is no longer current."""

    title = "Output changed"

    def __init__(self, output_id: str, seen: int, current: int) -> None:
        super().__init__(
            f"output changed since you saw it (revision {current} is current, "
            f"you saw revision {seen}); review the latest revision and decide again"
        )
        self.output_id = output_id
        self.seen = seen
        self.current = current


class AlreadyApproved(Conflict):
    """An approver approved this revision already: N-of-M counts distinct people."""

    title = "Already approved"

    def __init__(self, output: Any, approver: str) -> None:
        left = output.required_approvals - output.approval_count
        super().__init__(
            f"{approver} already approved revision {output.revision} of output {output.id}; "
            f"it needs {left} more approval{'s' if left != 1 else ''} from someone else"
        )
        self.output_id = output.id
        self.approver = approver


class StaleRevisionPrecondition(PreconditionFailed):
    """`StaleRevision` found through an `If-Match` header: HTTP says 412 for that."""

    def __init__(self, stale: StaleRevision) -> None:
        CosmoError.__init__(self, stale.detail)
        self.expected = stale.seen
        self.actual = stale.current


class NotAllowedToDecide(CosmoError):
    title = "Not allowed to decide"

    def __init__(
        self, detail: str, *, agent_name: str | None = None, approvers: Sequence[str] = ()
    ) -> None:
        super().__init__(detail)
        self.agent_name = agent_name
        self.approvers = tuple(approvers)
        """Set when the refusal is that only these users/groups may decide: adapters name
        them their own way (Slack mentions them)."""


class Forbidden(CosmoError):
    """The caller is known but its key does not reach this: another tenant, a role too low,
    or a Slack user other than the one the key is bound to."""

    title = "Forbidden"


class RateLimitExceeded(CosmoError):
    """A per-agent daily quota is used up."""

    title = "Limit reached"

    def __init__(self, detail: str, *, limit: int, resets_at: datetime) -> None:
        super().__init__(detail)
        self.limit = limit
        self.resets_at = resets_at


class ServiceUnavailable(CosmoError):
    """An integration this request needs is not configured or not reachable."""

    title = "Service unavailable"
