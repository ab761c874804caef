"""Builds runnable skills from their specs.

The composition root makes one `SkillFactory` per process, with the shared
`httpx.AsyncClient`, the `McpPool` and a `secrets` lookup (`os.environ.get`): secret
values are read through it at call time, so nothing else in core reads the environment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import httpx

from core.schemas.skill import BuiltinExecutor, HttpExecutor, McpExecutor, SkillSpec
from core.skills.builtins import BuiltinCatalog, BuiltinSkillExecutor
from core.skills.http_executor import HttpSkillExecutor
from core.skills.mcp_executor import McpPool, McpSkillExecutor
from core.skills.runtime import Skill, SkillRegistry, UnknownBuiltin


class SkillFactory:
    """Turns `SkillSpec`s into `Skill`s, and an agent's specs into its `SkillRegistry`."""

    def __init__(
        self,
        builtins: BuiltinCatalog,
        http: httpx.AsyncClient,
        secrets: Callable[[str], str | None],
        mcp: McpPool,
    ) -> None:
        self.builtins = builtins
        self.http = http
        self.secrets = secrets
        self.mcp = mcp

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
        if isinstance(config, HttpExecutor):
            return Skill(spec, HttpSkillExecutor(spec.name, config, self.http, self.secrets))
        if isinstance(config, McpExecutor):
            return Skill(spec, McpSkillExecutor(spec.name, config, self.mcp))
        raise TypeError(f"unsupported executor {type(config).__name__}")  # pragma: no cover

    def registry(
        self, specs: Sequence[SkillSpec], versions: Mapping[str, int] | None = None
    ) -> SkillRegistry:
        """The registry of one agent: exactly these skills, in this order."""
        versions = versions or {}
        return SkillRegistry([self.build(spec, versions.get(spec.name, 1)) for spec in specs])
