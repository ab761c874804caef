"""The stdio MCP servers the operator allows, by name (`COSMO_MCP_SERVERS`).

Starting a process is the operator's decision, never a REST caller's: skills name a server
(`{"type": "mcp", "server": "apollo", "tool": "search_people"}`) and this file says what
runs. It is YAML or JSON:

    servers:
      apollo:
        command: [npx, -y, "@apollo/mcp-server"]   # argv: no shell
        env:                                       # the server's variables
          APOLLO_API_KEY: ${APOLLO_API_KEY}        # copied from ours at start
          LOG_LEVEL: warn                          # a literal
        cwd: /srv/apollo                           # optional; relative to this file

A server sees only these variables (plus the SDK's minimal defaults: HOME, PATH, ...). A
`${NAME}` reference may not name Cosmo's own or its SDKs' variables, like a skill's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, StringConstraints, ValidationError, field_validator

from core.errors import CosmoError
from core.schemas.common import Slug, StrictModel
from core.schemas.skill import EnvName
from core.schemas.validation import field_errors
from core.secret_names import SecretLookup, SecretNameRule
from core.yaml_lines import LineLoader, line_of, strip_lines

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]{0,127})\}")


class McpServersInvalid(CosmoError):
    """The operator's `COSMO_MCP_SERVERS` file cannot be used; the message names file and line."""

    title = "Invalid MCP server configuration"


class McpServerConfig(StrictModel):
    """One stdio MCP server: what to run, with which environment, where."""

    command: list[Annotated[str, StringConstraints(min_length=1, max_length=1_000)]] = Field(
        min_length=1, description="argv; the first item is the program (looked up on PATH)."
    )
    env: dict[EnvName, Annotated[str, StringConstraints(max_length=4_000)]] = Field(
        default_factory=dict,
        description="The server's variables: a literal, or `${OUR_VAR}` copied from ours.",
    )
    cwd: str | None = None

    @field_validator("env")
    @classmethod
    def _references_are_wellformed(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if "${" in _REFERENCE.sub("", text):
                raise ValueError(
                    f"{name}: a reference is written ${{NAME}} with NAME an environment "
                    "variable name"
                )
        return value

    def references(self) -> list[str]:
        """The names of our variables this server's environment copies."""
        return [m for text in self.env.values() for m in _REFERENCE.findall(text)]

    def resolved_env(self, lookup: SecretLookup) -> dict[str, str]:
        """The server's environment with every `${NAME}` filled in.

        Raises `LookupError` naming the first variable that is not set.
        """

        def fill(match: re.Match[str]) -> str:
            value = lookup(match.group(1))
            if not value:
                raise LookupError(match.group(1))
            return value

        return {name: _REFERENCE.sub(fill, text) for name, text in self.env.items()}


class McpServersFile(StrictModel):
    servers: dict[Slug, McpServerConfig] = Field(default_factory=dict)


McpServers = Mapping[str, McpServerConfig]


def parse_mcp_servers(
    text: str, source: str, *, rule: SecretNameRule | None = None, base_dir: Path | None = None
) -> dict[str, McpServerConfig]:
    """Parse and check the file's text; `source` names it in errors."""
    try:
        raw = yaml.load(text, Loader=LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise McpServersInvalid(f"COSMO_MCP_SERVERS: {where}: not valid YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise McpServersInvalid(
            f"COSMO_MCP_SERVERS: {source}:1: the file must be a mapping with `servers:`"
        )
    try:
        parsed = McpServersFile.model_validate(strip_lines(raw))
    except ValidationError as exc:
        problems = []
        for e in field_errors(exc):
            line = line_of(raw, e.loc)
            problems.append(f"{source}:{line}: {e.path}: {e.msg}" if line else f"{e.path}: {e.msg}")
        raise McpServersInvalid("COSMO_MCP_SERVERS: " + "; ".join(problems)) from None
    rule = rule or SecretNameRule()
    problems = []
    for name, server in parsed.servers.items():
        for ref in server.references():
            reason = rule.refusal(ref, by_operator=True)
            if reason is not None:
                line = line_of(raw, ("servers", name, "env"))
                problems.append(f"{source}:{line}: servers.{name}.env: {reason}")
        if server.cwd is not None and base_dir is not None:
            server.cwd = str((base_dir / server.cwd).resolve())
    if problems:
        raise McpServersInvalid("COSMO_MCP_SERVERS: " + "; ".join(problems))
    return dict(parsed.servers)


def load_mcp_servers(
    path: Path | None, *, rule: SecretNameRule | None = None
) -> dict[str, McpServerConfig]:
    """The servers of `COSMO_MCP_SERVERS` (none when it is unset)."""
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise McpServersInvalid(f"COSMO_MCP_SERVERS: cannot read {path}: {reason}") from None
    return parse_mcp_servers(text, str(path), rule=rule, base_dir=path.parent)


def describe_servers(servers: McpServers) -> str:
    """`apollo, github` or a hint at the setting, for refusals that list what exists."""
    if not servers:
        return "none (the operator configures them in the COSMO_MCP_SERVERS file)"
    return ", ".join(sorted(servers))


__all__ = [
    "McpServerConfig",
    "McpServers",
    "McpServersInvalid",
    "describe_servers",
    "load_mcp_servers",
    "parse_mcp_servers",
]
