"""The effect an approval will have, shown to the reviewer before they decide.

For an automatable http skill that is the request itself: method, URL after templating,
headers (a secret header's value shown as `\u2039from CRM_AUTH_HEADER\u203a`, never
read) and body.
For an MCP skill, the tool, where it lives and the arguments it gets. Built from the
output's snapshot and arguments (exactly what the executor will use), so what the
reviewer approves is the real effect, not a summary of it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from core.errors import CosmoError
from core.outputs.port import Output
from core.outputs.snapshot import spec_of
from core.skills.factory import SkillFactory
from core.skills.http_executor import MISSING_BODY, HttpSkillExecutor
from core.skills.mcp_executor import McpSkillExecutor


class PlannedEffect(BaseModel):
    """What executing an approved output does. `kind` is `http` or `mcp`."""

    kind: str
    method: str | None = None
    url: str | None = None
    headers: dict[str, str] | None = None
    body: Any = None
    tool: str | None = None
    server: str | None = None
    arguments: dict[str, Any] | None = None
    problem: str | None = None
    """Set when the request cannot be built from these arguments (execution would fail)."""


def secret_placeholder(env_name: str) -> str:
    # Guillemets, not <>, so the placeholder can never be mistaken for markup or a value.
    return f"\u2039from {env_name}\u203a"


def planned_effect(skills: SkillFactory, output: Output) -> PlannedEffect | None:
    """None for outputs that run nothing by themselves (manual, builtin, no snapshot)."""
    if not output.is_automatable or output.skill_snapshot is None:
        return None
    try:
        skill = skills.build(spec_of(output.skill_snapshot))
    except (ValidationError, CosmoError):
        return None
    executor = skill.executor
    if isinstance(executor, HttpSkillExecutor):
        config = executor.config
        headers = dict(config.headers)
        headers.update({h: secret_placeholder(env) for h, env in config.secret_headers.items()})
        effect = PlannedEffect(kind="http", method=config.method, headers=headers)
        try:
            effect.url = executor.render_url(output.arguments)
            body = executor.render_json_body(output.arguments)
            effect.body = None if body is MISSING_BODY else body
        except CosmoError as exc:
            effect.problem = exc.detail
        return effect
    if isinstance(executor, McpSkillExecutor):
        config_data = executor.config.model_dump(exclude_none=True)
        return PlannedEffect(
            kind="mcp",
            tool=executor.config.tool or skill.name,
            server=config_data.get("server") or config_data.get("url"),
            arguments=output.arguments,
        )
    return None
