"""Builds runnable skills from their specs.

The composition root makes one `SkillFactory` per process, with the shared
`httpx.AsyncClient`, the `McpPool`, a `secrets` lookup (`os.environ.get`) and the operator's
`SkillPolicy`: secret values are read through the lookup at call time, confined to the names
the policy allows, so nothing else in core reads the environment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import httpx

from core.schemas.skill import BuiltinExecutor, HttpExecutor, McpExecutor, SkillSpec
from core.secret_names import SecretNotAllowed
from core.skills.builtins import BuiltinCatalog, BuiltinSkillExecutor
from core.skills.http_executor import HttpSkillExecutor
from core.skills.mcp_executor import McpPool, McpSkillExecutor
from core.skills.policy import SkillPolicy, UnusableSkill
from core.skills.runtime import (
    Skill,
    SkillConfigInvalid,
    SkillFailed,
    SkillRegistry,
    SkillUnusable,
    UnknownBuiltin,
)

log = logging.getLogger("cosmo.skills")


class SkillFactory:
    """Turns `SkillSpec`s into `Skill`s, and an agent's specs into its `SkillRegistry`."""

    def __init__(
        self,
        builtins: BuiltinCatalog,
        http: httpx.AsyncClient,
        secrets: Callable[[str], str | None],
        mcp: McpPool,
        policy: SkillPolicy | None = None,
    ) -> None:
        self.builtins = builtins
        self.http = http
        self.mcp = mcp
        self.policy = policy or SkillPolicy(builtins=builtins, mcp_servers=mcp.servers)
        confined = self.policy.secrets.confine(secrets)

        def lookup(name: str) -> str | None:
            try:
                return confined(name)
            except SecretNotAllowed as refused:
                raise SkillFailed(refused.detail) from None

        self.secrets = lookup

    def build(self, spec: SkillSpec, version: int = 1) -> Skill:
        """Raises `SkillConfigInvalid` (e.g. `UnknownBuiltin`) for a config that cannot run."""
        skill = self._build(spec)
        skill.version = version
        return skill

    def _build(self, spec: SkillSpec) -> Skill:
        config = spec.executor
        if isinstance(config, BuiltinExecutor):
            function = config.function or spec.name
            builtin = self.builtins.get(function)
            if builtin is None:
                raise UnknownBuiltin(spec.name, function, self.builtins.names())
            return Skill(
                spec,
                BuiltinSkillExecutor(builtin),
                render=builtin.render,
                outside_text=not builtin.own_text,
            )
        problems = self.policy.problems(spec)
        if problems:
            raise SkillUnusable(
                spec.name, "; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems)
            )
        if isinstance(config, HttpExecutor):
            return Skill(spec, HttpSkillExecutor(spec.name, config, self.http, self.secrets))
        if isinstance(config, McpExecutor):
            return Skill(spec, McpSkillExecutor(spec.name, config, self.mcp))
        raise TypeError(f"unsupported executor {type(config).__name__}")  # pragma: no cover

    def registry(
        self,
        specs: Sequence[SkillSpec | UnusableSkill],
        versions: Mapping[str, int] | None = None,
    ) -> SkillRegistry:
        """The registry of one agent: these skills, in this order, minus those that cannot
        run here. Those are listed in `SkillRegistry.unusable` with the reason: one broken
        skill must not stop its agent from answering."""
        versions = versions or {}
        skills: list[Skill] = []
        unusable: dict[str, str] = {}
        for spec in specs:
            if isinstance(spec, UnusableSkill):
                unusable[spec.name] = spec.reason
                continue
            try:
                skills.append(self.build(spec, versions.get(spec.name, 1)))
            except SkillConfigInvalid as exc:
                unusable[spec.name] = exc.detail
        for name, reason in unusable.items():
            log.warning("skill %s is unusable and left out: %s", name, reason)
        return SkillRegistry(skills, unusable=unusable)
