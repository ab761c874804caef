"""The skill runtime: what one configured skill is while an agent runs.

A `Skill` joins a `SkillSpec` (what admins wrote) with a `SkillExecutor` (how it runs).
The engine offers the model `SkillRegistry.tools()`, checks every call with
`Skill.validate`, runs *read* skills with `Skill.execute` and turns *action* skills into
outputs with `Skill.render_proposal`; the approval executor later calls `Skill.execute`
with the stored arguments. Executors live next door (`builtins`, `http_executor`,
`mcp_executor`); `factory.SkillFactory` builds skills from specs.

Two errors leave this module, both safe to show the model or a person as they are:
`SkillArgumentsInvalid` (the call does not match the schema; the message says where and
why, so the model can fix its call) and `SkillFailed` (the skill could not run; no
secrets, no stack trace).
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import jsonschema

from core.errors import CosmoError
from core.memory.port import MemoryProvider
from core.schemas.skill import SkillKind, SkillSpec

log = logging.getLogger("cosmo.skills")

#: At most this many schema problems are listed; the model fixes a few and calls again.
MAX_REPORTED_PROBLEMS = 10
_MAX_PROBLEM_CHARS = 300


# --- ports the skills use -------------------------------------------------------------


@dataclass(frozen=True)
class KnowledgeHit:
    """One passage found in an agent's knowledge bases.

    `section` is the heading path and `page` the page, each None when the document has
    none; `chunk_id` tells passages apart; `number` is the passage's number in the turn's
    citation numbering, set by the engine (None outside a turn).
    """

    text: str
    source: str
    section: str | None = None
    score: float = 0.0
    page: int | None = None
    chunk_id: str | None = None
    number: int | None = None


class KnowledgeSearcher(Protocol):
    """Searches the knowledge bases of one agent (the knowledge issue implements it).

    Synchronous, like the embedder under it; skills call it from a worker thread.
    """

    def search(self, query: str, limit: int) -> list[KnowledgeHit]: ...


# --- what a skill call sees and returns -------------------------------------------------


@dataclass(frozen=True)
class SkillContext:
    """Who is calling, for which agent, and the per-agent services skills may use."""

    tenant_id: str
    agent_id: str
    agent_name: str
    session_id: str | None
    user_id: str
    user_name: str | None
    memory: MemoryProvider | None = None
    knowledge: KnowledgeSearcher | None = None
    idempotency_key: str | None = None
    """Set when executing an approved output of an idempotent skill (its output id): the
    same for every attempt, so the target can recognise a repeat."""


@dataclass(frozen=True)
class SkillResult:
    """The outcome of one call.

    `content` is what the model reads (the tool_result text); `data` is the JSON-able
    structured result stored with executions; `is_error` marks a result the model should
    treat as a failure (an HTTP 404, an MCP tool error) without the call having crashed.
    """

    content: str
    data: Any = None
    is_error: bool = False


class SkillExecutor(Protocol):
    """Runs a skill with arguments that already passed its schema."""

    async def execute(self, arguments: dict[str, Any], ctx: SkillContext) -> SkillResult: ...


ProposalRenderer = Callable[[dict[str, Any]], tuple[str, str]]
"""Arguments -> (content, content_type) of the output a human reviews."""


class SkillArgumentsInvalid(CosmoError):
    """The model's arguments do not match the skill's schema.

    The message names every problem by its JSON path (`$.to`, `$.items[2].qty`) and is
    written for the model to correct its call.
    """

    title = "Invalid skill arguments"

    def __init__(self, skill: str, problems: Sequence[str]) -> None:
        self.skill = skill
        self.problems = list(problems)
        listed = self.problems[:MAX_REPORTED_PROBLEMS]
        more = len(self.problems) - len(listed)
        lines = [f"- {p}" for p in listed] + ([f"- ...and {more} more"] if more > 0 else [])
        super().__init__(
            f"The arguments for {skill} are invalid:\n"
            + "\n".join(lines)
            + "\nFix these and call the tool again."
        )


class SkillFailed(CosmoError):
    """A skill could not run. The message is safe for the model and users: no secret values,
    no stack trace, no upstream error text that could carry either."""

    title = "Skill failed"


class SkillConfigInvalid(CosmoError):
    """A skill's executor configuration cannot work; found when the skill is built."""

    title = "Invalid skill configuration"


class UnknownBuiltin(SkillConfigInvalid):
    """A builtin executor names a function the catalogue does not have."""

    title = "Unknown built-in skill"

    def __init__(self, skill: str, function: str, available: Sequence[str]) -> None:
        super().__init__(
            f"skill {skill!r} uses the built-in function {function!r}, which does not exist; "
            f"available: {', '.join(sorted(available)) or '(none)'}"
        )
        self.skill = skill
        self.function = function


class SkillUnusable(SkillConfigInvalid):
    """A skill breaks one of the operator's rules (an MCP server not configured, a secret
    it may not read): it is left out of its agents until an admin fixes it."""

    title = "Skill unusable"

    def __init__(self, skill: str, reason: str) -> None:
        super().__init__(f"skill {skill!r} cannot run: {reason}")
        self.skill = skill
        self.reason = reason


# --- one skill ---------------------------------------------------------------------------


def json_path(path: Sequence[str | int]) -> str:
    """`["items", 2, "qty"]` -> `$.items[2].qty`."""
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


_FORMATS = jsonschema.FormatChecker(jsonschema.Draft202012Validator.FORMAT_CHECKER.checkers)
_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$"
)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$")

# jsonschema checks `date-time` and `uri` only when optional packages are installed; these
# fallbacks keep the formats CRM schemas use most from passing unchecked.
if "date-time" not in _FORMATS.checkers:

    @_FORMATS.checks("date-time")
    def _is_date_time(instance: object) -> bool:
        if not isinstance(instance, str):
            return True
        if not _DATE_TIME.match(instance):
            return False
        try:
            datetime.fromisoformat(instance.upper().replace("Z", "+00:00"))
        except ValueError:
            return False
        return True


if "uri" not in _FORMATS.checkers:

    @_FORMATS.checks("uri")
    def _is_uri(instance: object) -> bool:
        return not isinstance(instance, str) or bool(_URI.match(instance))


def _problem(error: jsonschema.ValidationError) -> str:
    message = error.message
    if len(message) > _MAX_PROBLEM_CHARS:
        message = message[: _MAX_PROBLEM_CHARS - 1] + "…"
    return f"{json_path(list(error.absolute_path))}: {message}"


class Skill:
    """One configured skill, ready to offer to the model and to run."""

    def __init__(
        self,
        spec: SkillSpec,
        executor: SkillExecutor,
        *,
        render: ProposalRenderer | None = None,
        outside_text: bool = True,
    ) -> None:
        self.spec = spec
        self.executor = executor
        self.version = 1
        """The stored skill's version (set by the factory); outputs snapshot it."""
        self._render = render
        self._outside_text = outside_text
        self._validator = jsonschema.Draft202012Validator(
            spec.input_schema, format_checker=_FORMATS
        )

    def __repr__(self) -> str:
        return f"Skill({self.name!r}, kind={self.kind.value}, executor={self.spec.executor.type})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> SkillKind:
        return self.spec.kind

    @property
    def data_source(self) -> str | None:
        """How the model is told where this skill's results come from (`tool:<name>`), or
        None when they are our own words and carry no outside text.

        Only the audited builtins (`Builtin.own_text`) are ours; http and mcp skills and
        any function added to the catalogue answer with text from outside, which reaches
        the model fenced as data."""
        return f"tool:{self.name}" if self._outside_text else None

    @property
    def is_action(self) -> bool:
        """Action skills never run during the chat: their calls become outputs."""
        return self.spec.kind is SkillKind.ACTION

    def tool_definition(self) -> dict[str, Any]:
        """The tool as the Messages API takes it."""
        return {
            "name": self.spec.name,
            "description": self.spec.description,
            "input_schema": copy.deepcopy(self.spec.input_schema),
        }

    def schema_errors(self, arguments: object) -> list[tuple[tuple[str | int, ...], str]]:
        """Every schema problem as (path, message), for forms that show errors per field."""
        errors = sorted(
            self._validator.iter_errors(arguments),
            key=lambda e: (list(map(str, e.absolute_path)), e.message),
        )
        return [(tuple(e.absolute_path), e.message[:_MAX_PROBLEM_CHARS]) for e in errors]

    def validate(self, arguments: object) -> dict[str, Any]:
        """Check a call against the schema (Draft 2020-12, formats checked).

        Returns a copy of the arguments with the `default` of every missing top-level
        property filled in, so templates and renderings see what the schema promises.
        """
        errors = sorted(
            self._validator.iter_errors(arguments),
            key=lambda e: (list(map(str, e.absolute_path)), e.message),
        )
        if errors:
            raise SkillArgumentsInvalid(self.name, [_problem(e) for e in errors])
        if not isinstance(arguments, dict):
            raise SkillArgumentsInvalid(self.name, ["$: the arguments must be a JSON object"])
        checked: dict[str, Any] = copy.deepcopy(arguments)
        properties = self.spec.input_schema.get("properties")
        if isinstance(properties, dict):
            for key, prop in properties.items():
                if key not in checked and isinstance(prop, dict) and "default" in prop:
                    checked[key] = copy.deepcopy(prop["default"])
        return checked

    def render_proposal(self, arguments: dict[str, Any]) -> tuple[str, str]:
        """The (content, content_type) a human reviews before an action runs."""
        if self._render is not None:
            return self._render(arguments)
        return render_generic_proposal(self.spec, arguments), "text/markdown"

    async def execute(self, arguments: dict[str, Any], ctx: SkillContext) -> SkillResult:
        """Run the skill. Arguments are checked again first: stored arguments may predate a
        schema change. Anything unexpected becomes a `SkillFailed` with a safe message."""
        checked = self.validate(arguments)
        try:
            return await self.executor.execute(checked, ctx)
        except (SkillFailed, SkillArgumentsInvalid):
            raise
        except TimeoutError:
            raise SkillFailed(f"{self.name} timed out") from None
        except Exception as exc:
            log.exception("skill %s failed (agent %s)", self.name, ctx.agent_name)
            raise SkillFailed(
                f"{self.name} failed unexpectedly ({type(exc).__name__}); try again later "
                "or tell an administrator"
            ) from None


def render_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def render_generic_proposal(spec: SkillSpec, arguments: dict[str, Any]) -> str:
    """Markdown: the skill's description as a title, then each argument.

    Fields come in schema order (then any others); a field's schema `title`, when set,
    replaces its key. Multi-line text is indented under its label so it reads as a block.
    """
    properties = spec.input_schema.get("properties")
    props: dict[str, Any] = properties if isinstance(properties, dict) else {}
    ordered = [k for k in props if k in arguments] + [k for k in arguments if k not in props]
    lines = [f"**{spec.name}**: {spec.description.strip().splitlines()[0]}", ""]
    for key in ordered:
        prop = props.get(key)
        label = prop.get("title") if isinstance(prop, dict) else None
        text = render_value(arguments[key])
        name = label if isinstance(label, str) and label else key
        if "\n" in text:
            lines.append(f"**{name}**:")
            lines.extend(f"> {line}" if line else ">" for line in text.splitlines())
        else:
            lines.append(f"**{name}**: {text}")
    if not ordered:
        lines.append("_(no arguments)_")
    return "\n".join(lines)


# --- the skills of one agent -------------------------------------------------------------


class SkillRegistry:
    """The skills one agent may use, in the agent's order. The model sees only these."""

    def __init__(self, skills: Sequence[Skill], *, unusable: dict[str, str] | None = None) -> None:
        self.unusable: dict[str, str] = dict(unusable or {})
        """Skills the agent has but cannot use here: name -> why."""
        self._skills: dict[str, Skill] = {}
        for skill in skills:
            if skill.name in self._skills:
                raise ValueError(f"skill {skill.name!r} appears twice in one registry")
            self._skills[skill.name] = skill

    def tools(self) -> list[dict[str, Any]]:
        return [s.tool_definition() for s in self._skills.values()]

    def get(self, name: str) -> Skill | None:
        return self._skills.get(name)

    def names(self) -> list[str]:
        return list(self._skills)

    def __contains__(self, name: object) -> bool:
        return name in self._skills

    def __iter__(self) -> Iterator[Skill]:
        return iter(self._skills.values())

    def __len__(self) -> int:
        return len(self._skills)

    def __repr__(self) -> str:
        return f"SkillRegistry({self.names()!r})"
