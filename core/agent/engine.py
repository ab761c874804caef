"""`ConfigurableAgent`: the Claude tool loop for one configured agent.

One call to `chat` is one turn: build the prompt (persona, context, memories, knowledge),
stream Claude's answer, run *read* skills at once, turn *action* skills into outputs that
wait for a human, loop until Claude ends its turn or the step limit, then persist the turn
and remember the exchange.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from core import metrics, tracing
from core.agent import spans
from core.agent.model import (
    ModelClient,
    ModelError,
    ModelReply,
    ModelRequest,
    ModelUsage,
    TextSink,
)
from core.approvals.audit import AuditLog
from core.approvals.events import OutputEvents
from core.approvals.lifecycle import LifecycleTimers
from core.approvals.policy import Actor
from core.concurrency import run_sync
from core.db.ids import new_id
from core.errors import CosmoError, RateLimitExceeded
from core.knowledge.citations import Citation, PassageNumbers
from core.limits.quotas import OUTPUTS, TOKENS, Quotas
from core.log_context import log_context
from core.memory.port import MemoryMessage, MemoryProvider
from core.outputs.port import (
    NewOutput,
    Output,
    OutputFilter,
    OutputStatus,
    OutputStore,
    Recorder,
)
from core.outputs.snapshot import arguments_too_large, skill_snapshot
from core.personas.prompt import (
    CACHE,
    KnowledgeSnippet,
    PromptContext,
    Speaker,
    build_system,
    fence,
    speaker_block,
)
from core.schemas.approval import resolve
from core.schemas.persona import PersonaSpec
from core.schemas.views import AgentView
from core.sessions.models import SessionView, TurnRecord, TurnView
from core.sessions.pricing import cost_micros
from core.sessions.service import Fence, SessionService
from core.skills.runtime import (
    KnowledgeHit,
    KnowledgeSearcher,
    Skill,
    SkillArgumentsInvalid,
    SkillContext,
    SkillRegistry,
    SkillResult,
)

log = logging.getLogger("cosmo.agent")

_T = TypeVar("_T")
MAX_TOOL_RESULT_CHARS = 20_000
MEMORY_HITS = 5


@dataclass(frozen=True)
class AgentConfig:
    """Everything about one agent that a turn needs, loaded once per turn."""

    agent: AgentView
    persona: PersonaSpec
    model: str
    max_steps: int = 8
    max_tokens: int = 4096
    output_ttl: timedelta | None = None
    skill_versions: dict[str, int] = field(default_factory=dict)


@dataclass
class Step:
    """One thing the agent did in a turn: a model call or a tool call."""

    kind: str  # "model" | "tool"
    name: str
    duration_ms: float
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "duration_ms": round(self.duration_ms, 2),
            **self.detail,
        }


@dataclass
class TurnResult:
    """What a turn produced, for the adapter that shows it (Slack, REST)."""

    turn: TurnView
    reply: str
    failed: bool
    steps: list[Step]
    outputs: list[Output]
    usage: ModelUsage
    cost_micros: int
    error: str | None = None
    citations: list[Citation] = field(default_factory=list)
    """The knowledge passages the reply cites with [n] markers, in first-cited order."""


KnowledgeLookup = Callable[[str], Awaitable[Sequence[KnowledgeSnippet]]]

SUMMARY_CHARS = 120


@dataclass(frozen=True)
class ToolStep:
    """A tool call as the person waiting may watch it. A read skill reports `in_progress`,
    then `complete` (or `error`) with a one-line summary of what it returned; an action
    skill reports `awaiting_approval` once its output is stored (or `error`)."""

    id: str
    """The model's tool_use id: the same call's updates share it."""
    skill: str
    kind: str  # "read" | "action"
    status: str  # "in_progress" | "complete" | "error" | "awaiting_approval"
    summary: str = ""


ToolSink = Callable[[ToolStep], Awaitable[None]]


@dataclass(frozen=True)
class AgentDeps:
    """What every agent of a process shares, built once in `core.wiring`: the engine and
    the runner take this one object instead of each listing the collaborators."""

    sessions: SessionService
    outputs: OutputStore
    quotas: Quotas
    memory: MemoryProvider | None = None
    events: OutputEvents | None = None
    audit: AuditLog | None = None
    lifecycle: LifecycleTimers | None = None
    grants: Callable[[Output], Awaitable[Output]] | None = None
    """Approves a new output that a live grant covers (`core.approvals.grants`)."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


class ConfigurableAgent:
    """Runs turns for one agent. Collaborators are ports, so tests swap them at this seam."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        model: ModelClient,
        skills: SkillRegistry,
        deps: AgentDeps,
        knowledge: KnowledgeLookup | None = None,
        knowledge_search: KnowledgeSearcher | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.skills = skills
        self.events = deps.events
        self.audit = deps.audit
        self.lifecycle = deps.lifecycle
        self.grants = deps.grants
        self.sessions = deps.sessions
        self.outputs = deps.outputs
        self.quotas = deps.quotas
        self.memory = deps.memory if config.agent.memory_enabled else None
        self.knowledge = knowledge
        self.knowledge_search = knowledge_search  # for the search_knowledge skill
        self.clock = deps.clock

    @property
    def agent(self) -> AgentView:
        return self.config.agent

    async def chat(
        self,
        session: SessionView,
        user_message: str,
        *,
        on_text: TextSink | None = None,
        on_tool: ToolSink | None = None,
        turn: TurnView | None = None,
        dedupe_key: str | None = None,
        user_name: str | None = None,
        fence: Fence | None = None,
    ) -> TurnResult:
        """Run one turn. Never raises for model or tool trouble: a failed turn is recorded
        and its `reply` is a short message fit for the user.

        The speaker is the turn's user (several people can talk in one Slack thread);
        `user_name` is their display name when the caller knows it. `fence` is the job
        claim's check, run where the turn is finished (see `SessionService.finish_turn`).
        `on_tool` hears of each tool call as it starts and ends (see `ToolStep`)."""
        if turn is None:
            turn, _created = await run_sync(
                lambda: self.sessions.begin_turn(
                    session.tenant_id,
                    session.id,
                    user_id=session.user_id,
                    user_message=user_message,
                    dedupe_key=dedupe_key,
                )
            )
        assert turn is not None
        if turn.user_id != session.user_id or user_name:
            name = user_name or (session.user_name if turn.user_id == session.user_id else None)
            session = session.model_copy(update={"user_id": turn.user_id, "user_name": name})
        run = _TurnRun(self, session, turn, _safe_sink(on_text), fence, _safe_sink(on_tool))
        return await run.execute(user_message)


class _TurnRun:
    """State of one turn in progress."""

    def __init__(
        self,
        agent: ConfigurableAgent,
        session: SessionView,
        turn: TurnView,
        on_text: TextSink | None,
        fence: Fence | None = None,
        on_tool: ToolSink | None = None,
    ) -> None:
        self.a = agent
        self.fence = fence
        self.on_tool = on_tool
        self.session = session
        self.turn = turn
        self.on_text = on_text
        self.steps: list[Step] = []
        self.outputs: list[Output] = []
        self._proposals = 0
        self._earlier: list[Output] | None = None
        self.usage = ModelUsage()
        self.texts: list[str] = []
        self.new_messages: list[dict[str, Any]] = []
        # One numbering for every knowledge passage the model sees in this turn.
        self.passages = PassageNumbers()
        searcher = agent.knowledge_search
        self.skill_ctx = SkillContext(
            tenant_id=session.tenant_id,
            agent_id=agent.agent.id,
            agent_name=agent.agent.name,
            session_id=session.id,
            user_id=session.user_id,
            user_name=session.user_name,
            memory=agent.memory,
            knowledge=_NumberedSearcher(searcher, self.passages) if searcher else None,
        )

    @property
    def tenant(self) -> str:
        return self.session.tenant_id

    async def execute(self, user_message: str) -> TurnResult:
        agent = self.a.agent
        started = time.perf_counter()
        outcome = "error"
        try:
            with (
                log_context(tenant=self.tenant, turn_id=self.turn.id),
                spans.turn_span(
                    agent_name=agent.name,
                    agent_id=agent.id,
                    session_id=self.session.id,
                    model=self.a.config.model,
                    tenant=self.tenant,
                    turn_id=self.turn.id,
                ) as span,
            ):
                result = await self._execute(user_message)
                span.set(
                    {
                        **spans.usage_attributes(result.usage),
                        "cosmo.turn.status": result.turn.status,
                        "cosmo.turn.outputs": len(result.outputs),
                        "cosmo.turn.cost_micros": result.cost_micros,
                    }
                )
                if result.failed:
                    span.fail(result.error or "failed")
            outcome = "failed" if result.failed else "completed"
            return result
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            metrics.turn_finished(agent.name, outcome, time.perf_counter() - started)

    async def _execute(self, user_message: str) -> TurnResult:
        a = self.a
        try:
            budget = a.agent.limits.daily_token_budget
            if budget is not None:
                await run_sync(a.quotas.require_headroom, self.tenant, a.agent.id, TOKENS, budget)
            system = await self._system_prompt(user_message)
            history = await run_sync(a.sessions.history, self.tenant, self.session.id)
            who = self.session
            speaker = speaker_block(Speaker(who.user_id, who.user_name, who.channel_name))
            text = {"type": "text", "text": user_message}
            user = {"role": "user", "content": [speaker, text]}
            self.new_messages.append(user)
            await self._loop(system, _merge_roles([*history, user]))
        except ModelError as exc:
            log.warning("turn %s: model error %s", self.turn.id, exc.detail)
            return await self._finish(failed=True, reply=exc.user_message, error=exc.detail)
        except RateLimitExceeded as exc:
            return await self._finish(failed=True, reply=exc.detail, error="token budget")
        return await self._finish(failed=False, reply="\n\n".join(self.texts).strip())

    async def _system_prompt(self, user_message: str) -> list[dict[str, Any]]:
        a = self.a
        memories: list[str] = []
        if a.memory is not None:
            started = time.perf_counter()
            try:
                found = await run_sync(
                    lambda: a.memory.search(  # type: ignore[union-attr]
                        self.tenant,
                        user_message,
                        user_id=self.session.user_id,
                        agent_id=a.agent.id,
                        limit=MEMORY_HITS,
                    )
                )
                memories = [m.text for m in found]
            except Exception:  # memory is a help, not a dependency of the answer
                log.exception("turn %s: memory search failed", self.turn.id)
            self.steps.append(Step("memory", "search", _ms(started), {"hits": len(memories)}))
        knowledge: Sequence[KnowledgeSnippet] = ()
        if a.knowledge is not None and a.agent.knowledge_bases:
            try:
                found = await a.knowledge(user_message)
                knowledge = [replace(k, number=self.passages.number(k)) for k in found]
            except Exception:
                log.exception("turn %s: knowledge search failed", self.turn.id)
        ctx = PromptContext(agent_name=a.agent.name, today=a.clock().date())
        context_block = self.session.context.get("prompt_context")
        return build_system(
            a.config.persona,
            ctx,
            context_block=context_block if isinstance(context_block, str) else None,
            memories=memories,
            knowledge=knowledge,
            cites_knowledge=bool(a.agent.knowledge_bases),
        )

    async def _loop(self, system: list[dict[str, Any]], messages: list[dict[str, Any]]) -> None:
        a = self.a
        tools = a.skills.tools()
        for step in range(a.config.max_steps):
            request = ModelRequest(
                model=a.config.model,
                system=system,
                messages=_with_cache_breakpoint(messages),
                tools=tools,
                max_tokens=a.config.max_tokens,
            )
            started = time.perf_counter()
            reply = await self._complete(request)
            self._count(reply)
            self.steps.append(
                Step(
                    "model",
                    reply.model,
                    _ms(started),
                    {
                        "stop_reason": reply.stop_reason,
                        "input_tokens": reply.usage.input_tokens,
                        "output_tokens": reply.usage.output_tokens,
                        "cache_read_tokens": reply.usage.cache_read_tokens,
                        "cache_write_tokens": reply.usage.cache_write_tokens,
                    },
                )
            )
            assistant = {"role": "assistant", "content": reply.content}
            messages.append(assistant)
            self.new_messages.append(assistant)
            if reply.text.strip():
                self.texts.append(reply.text.strip())
            if reply.stop_reason != "tool_use" or not reply.tool_uses:
                if reply.stop_reason == "max_tokens":
                    self.texts.append("_(answer cut short: it reached the length limit)_")
                return
            results = [await self._run_tool(block) for block in reply.tool_uses]
            tool_message = {"role": "user", "content": results}
            messages.append(tool_message)
            self.new_messages.append(tool_message)
            if self.on_text is not None and step + 1 < a.config.max_steps:
                await self.on_text("\n\n")
        self.texts.append(
            f"_(I stopped after {a.config.max_steps} steps; ask me to continue if needed.)_"
        )

    async def _complete(self, request: ModelRequest) -> ModelReply:
        """One model call, as a GenAI client span (names and counts, never the prompt)."""
        with spans.model_span(request) as span:
            try:
                reply = await self.a.model.complete(request, self.on_text)
            except ModelError as exc:
                span.fail(exc.detail.split(" ", 1)[0])
                raise
            spans.replied(span, reply)
            return reply

    def _count(self, reply: ModelReply) -> None:
        u, r = self.usage, reply.usage
        self.usage = ModelUsage(
            u.input_tokens + r.input_tokens,
            u.output_tokens + r.output_tokens,
            u.cache_read_tokens + r.cache_read_tokens,
            u.cache_write_tokens + r.cache_write_tokens,
        )

    async def _tell(self, block: dict[str, Any], kind: str, status: str, summary: str) -> None:
        if self.on_tool is not None:
            name = str(block.get("name", ""))
            await self.on_tool(ToolStep(str(block.get("id") or name), name, kind, status, summary))

    async def _run_tool(self, block: dict[str, Any]) -> dict[str, Any]:
        with spans.tool_span(block) as span:
            result = await self._run_tool_traced(block, span)
            if result.get("is_error"):
                span.fail("tool_error")
            return result

    async def _run_tool_traced(self, block: dict[str, Any], span: tracing.Span) -> dict[str, Any]:
        name = str(block.get("name", ""))
        started = time.perf_counter()
        skill = self.a.skills.get(name)
        if skill is None:
            result = SkillResult(f"There is no tool named {name!r} for this agent.", is_error=True)
            self.steps.append(Step("tool", name, _ms(started), {"error": "unknown tool"}))
            await self._tell(block, "read", "error", "unknown tool")
            return _tool_result(block, result)
        kind = "action" if skill.is_action else "read"
        span.set({"cosmo.skill.kind": kind})
        try:
            arguments = skill.validate(block.get("input", {}))
        except SkillArgumentsInvalid as exc:
            self.steps.append(Step("tool", name, _ms(started), {"error": exc.detail}))
            await self._tell(block, kind, "error", "invalid arguments")
            return _tool_result(block, SkillResult(exc.detail, is_error=True))
        source = None
        if kind == "action":
            with tracing.span(
                "output.propose",
                attributes={
                    "cosmo.skill.name": skill.spec.name,
                    "cosmo.output.automatable": skill.spec.is_automatable,
                },
            ) as proposing:
                result, detail = await self._propose(skill, arguments, proposing.traceparent)
                proposing.set({"cosmo.output.id": detail.get("output_id")})
                if result.is_error:
                    proposing.fail(str(detail.get("error") or "not stored"))
            status = "error" if result.is_error else "awaiting_approval"
            await self._tell(block, kind, status, _one_line(result.content))
        else:
            await self._tell(block, kind, "in_progress", "")
            result = await self._read(skill, arguments)
            detail = {"is_error": result.is_error}
            source = skill.data_source
            status = "error" if result.is_error else "complete"
            await self._tell(block, kind, status, _one_line(result.content))
        self.steps.append(Step("tool", name, _ms(started), {"input": arguments, **detail}))
        return _tool_result(block, result, fenced_as=source)

    async def _read(self, skill: Skill, arguments: dict[str, Any]) -> SkillResult:
        try:
            return await skill.execute(arguments, self.skill_ctx)
        except CosmoError as exc:
            return SkillResult(f"The tool failed: {exc.detail}", is_error=True)
        except Exception:
            log.exception("turn %s: skill %s raised", self.turn.id, skill.spec.name)
            return SkillResult("The tool failed unexpectedly; try another way.", is_error=True)

    async def _propose(
        self, skill: Skill, arguments: dict[str, Any], traceparent: str | None = None
    ) -> tuple[SkillResult, dict[str, Any]]:
        """An action never runs here: it becomes a pending output for a human to decide."""
        a = self.a
        too_large = arguments_too_large(arguments)
        if too_large:
            return SkillResult(f"Not submitted: {too_large}.", is_error=True), {"error": too_large}
        limit = a.agent.limits.daily_output_limit
        content, content_type = skill.render_proposal(arguments)
        lifecycle = resolve(a.agent.approval, skill.spec.approval, a.config.output_ttl)
        ttl = lifecycle.expires_after
        snapshot = skill_snapshot(skill.spec, skill.version)
        new = NewOutput(
            id=new_id("out"),
            tenant_id=self.tenant,
            agent_id=a.agent.id,
            session_id=self.session.id,
            turn_id=self.turn.id,
            skill=skill.spec.name,
            is_automatable=skill.spec.is_automatable,
            arguments=arguments,
            content=content,
            content_type=content_type,
            requested_by=self.session.user_id,
            expires_at=a.clock() + ttl if ttl else None,
            skill_snapshot=snapshot,
            approval_policy=lifecycle.to_json(),
            traceparent=traceparent,
        )
        webhook = a.agent.webhook.url if a.agent.webhook else None
        events = a.events.created(webhook, new) if a.events is not None else []
        record = self._proposal_recorder()

        index = self._proposals
        self._proposals += 1

        def take_and_store() -> Output:
            # A turn run again after its worker died proposes again what the first attempt
            # may already have stored: the k-th proposal of a turn is its k-th output, so
            # the rerun reuses it instead of asking reviewers twice.
            earlier = self._earlier_outputs()
            if index < len(earlier):
                return earlier[index]
            # One thread call, so a cancelled turn cannot stop between the quota take and
            # the output it pays for: the unit is kept by an output or given back.
            if limit is not None:
                a.quotas.take(self.tenant, a.agent.id, OUTPUTS, 1, limit)
            try:
                return a.outputs.create(new, events, record)
            except Exception:
                if limit is not None:
                    a.quotas.release(self.tenant, a.agent.id, OUTPUTS, 1)
                raise

        try:
            output = await run_sync(take_and_store)
        except RateLimitExceeded as exc:
            message = f"Not submitted: {exc.detail}. Tell the user; do not retry today."
            return SkillResult(message, is_error=True), {"error": "output limit"}
        except Exception:
            log.exception("turn %s: storing output failed", self.turn.id)
            return SkillResult(
                "The proposal could not be stored; tell the user to try again.", is_error=True
            ), {"error": "store failed"}
        if a.grants is not None:
            output = await a.grants(output)
        self.outputs.append(output)
        message = (
            f"Submitted for approval as output {output.id}. A reviewer will approve or reject "
            "it; it has NOT been carried out yet."
        )
        if output.status != OutputStatus.PENDING:
            message = (
                f"Output {output.id} was approved at once under a reviewer's grant for this "
                f"thread (status {output.status.value})."
            )
        return SkillResult(message, data={"output_id": output.id}), {"output_id": output.id}

    def _earlier_outputs(self) -> list[Output]:
        """Outputs an earlier attempt of this turn stored, in the order it proposed them."""
        if self._earlier is None:
            found: list[Output] = []
            cursor: str | None = None
            filters = OutputFilter(session_id=self.session.id)
            while True:
                page = self.a.outputs.list(self.tenant, filters, cursor=cursor, limit=200)
                found += [o for o in page.items if o.turn_id == self.turn.id]
                cursor = page.next_cursor
                if not cursor:
                    break
            self._earlier = sorted(found, key=lambda o: (o.created_at, o.id))
        return self._earlier

    def _proposal_recorder(self) -> Recorder | None:
        """The `proposed` audit entry, written with the output itself: the chain starts with
        what the reviewer will be shown (revision 1 and its fingerprint)."""
        audit = self.a.audit
        timers = self.a.lifecycle
        if audit is None:
            return timers.schedule if timers is not None else None
        agent = self.a.agent
        proposer = Actor(f"agent:{agent.name}", "system")
        requester = self.session.user_id

        def record(session: Any | None, output: Output) -> None:
            if timers is not None:
                # Its expiry and reminders commit with it (or right after, on stores
                # whose write is not in our database).
                timers.schedule(session, output)
            with audit.transaction(session) as s:
                audit.record_in(
                    s,
                    output.tenant_id,
                    output.id,
                    actor=proposer,
                    action="propose",
                    outcome="applied",
                    detail=f"{output.skill} for {requester}" if requester else output.skill,
                    revision=output.revision,
                    content_sha256=output.content_sha256,
                )

        return record

    async def _finish(self, *, failed: bool, reply: str, error: str | None = None) -> TurnResult:
        a = self.a
        model = a.config.model
        cost = cost_micros(
            model,
            input_tokens=self.usage.input_tokens,
            output_tokens=self.usage.output_tokens,
            cache_read=self.usage.cache_read_tokens,
            cache_write=self.usage.cache_write_tokens,
        )
        citations = [] if failed else self.passages.cited(reply)
        total = self.usage.total_tokens
        record = TurnRecord(
            status="failed" if failed else "completed",
            reply=reply,
            model=model,
            steps=[s.as_dict() for s in self.steps],
            # A failed turn leaves no half conversation behind for the next one.
            messages=[] if failed else _history_safe(self.new_messages),
            input_tokens=self.usage.input_tokens,
            output_tokens=self.usage.output_tokens,
            cache_read_tokens=self.usage.cache_read_tokens,
            cache_write_tokens=self.usage.cache_write_tokens,
            cost_micros=cost,
            error=error,
            citations=citations,
        )
        if total:
            await run_sync(a.quotas.add, self.tenant, a.agent.id, TOKENS, total)
        turn = await run_sync(
            lambda: a.sessions.finish_turn(self.tenant, self.turn.id, record, fence=self.fence)
        )
        metrics.model_usage(
            a.agent.name,
            model,
            input_tokens=self.usage.input_tokens,
            output_tokens=self.usage.output_tokens,
            cache_read_tokens=self.usage.cache_read_tokens,
            cache_write_tokens=self.usage.cache_write_tokens,
            cost_micros=cost,
        )
        if not failed and a.memory is not None and reply:
            # Awaited, not fired off: the user already saw the streamed reply, and a
            # finished turn whose memory is not yet written would surprise the next one.
            await self._remember(turn.user_message, reply)
        return TurnResult(
            turn=turn,
            reply=reply,
            failed=failed,
            steps=self.steps,
            outputs=self.outputs,
            usage=self.usage,
            cost_micros=cost,
            error=error,
            citations=citations,
        )

    async def _remember(self, user_message: str, reply: str) -> None:
        memory = self.a.memory
        assert memory is not None
        try:
            await run_sync(
                lambda: memory.add(
                    self.tenant,
                    [MemoryMessage("user", user_message), MemoryMessage("assistant", reply)],
                    user_id=self.session.user_id,
                    agent_id=self.a.agent.id,
                    session_id=self.session.id,
                )
            )
        except Exception:
            log.exception("turn %s: writing memory failed", self.turn.id)


class _NumberedSearcher:
    """The agent's `KnowledgeSearcher` for one turn: hits carry their number in the turn's
    numbering, so `search_knowledge` results continue after the prompt's passages."""

    def __init__(self, searcher: KnowledgeSearcher, passages: PassageNumbers) -> None:
        self.searcher = searcher
        self.passages = passages

    def search(self, query: str, limit: int) -> list[KnowledgeHit]:
        hits = self.searcher.search(query, limit)[:limit]
        return [replace(h, number=self.passages.number(h)) for h in hits]


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _tool_result(
    block: dict[str, Any], result: SkillResult, *, fenced_as: str | None = None
) -> dict[str, Any]:
    """`fenced_as` names the source of a result that carries outside text (an http or mcp
    skill's answer, errors included): it is fenced after the cut, so the fence stays whole."""
    text = result.content
    if len(text) > MAX_TOOL_RESULT_CHARS:
        text = text[:MAX_TOOL_RESULT_CHARS] + "\n…(truncated)"
    text = text or "(no output)"
    out: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": block.get("id"),
        "content": fence(text, source=fenced_as) if fenced_as else text,
    }
    if result.is_error:
        out["is_error"] = True
    return out


def _one_line(text: str) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "…"


def _safe_sink(
    sink: Callable[[_T], Awaitable[None]] | None,
) -> Callable[[_T], Awaitable[None]] | None:
    """A failing display (Slack down) must not fail the turn."""
    if sink is None:
        return None

    async def guarded(item: _T) -> None:
        try:
            await sink(item)
        except Exception:
            log.exception("showing the turn's progress to the user failed")

    return guarded


def _merge_roles(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join consecutive same-role messages (e.g. a reviewer's note then a new question)."""
    merged: list[dict[str, Any]] = []
    for m in messages:
        content = m["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if merged and merged[-1]["role"] == m["role"]:
            merged[-1] = {"role": m["role"], "content": [*merged[-1]["content"], *blocks]}
        else:
            merged.append({"role": m["role"], "content": list(blocks)})
    return merged


def _with_cache_breakpoint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark the last block so the next step of the loop reads the conversation from cache."""
    if not messages:
        return messages
    last = dict(messages[-1])
    blocks = [dict(b) for b in last["content"]]
    blocks[-1]["cache_control"] = CACHE
    last["content"] = blocks
    return [*messages[:-1], last]


def _history_safe(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Strip what the API rejects on replay (empty text blocks) from stored history."""
    out = []
    for m in messages:
        blocks = [b for b in m["content"] if not (b.get("type") == "text" and not b.get("text"))]
        if blocks:
            out.append({"role": m["role"], "content": blocks})
    return out
