"""The spans of a turn in OpenTelemetry's GenAI vocabulary (`invoke_agent`, `chat`,
`execute_tool`): names, ids, models and token counts, never the prompt, the tools'
arguments or the reply. See `core.tracing`."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from core import tracing
from core.agent.model import ModelReply, ModelRequest, ModelUsage

#: `gen_ai.provider.name` of every model call (the Messages API).
PROVIDER = "anthropic"


def turn_span(
    *, agent_name: str, agent_id: str, session_id: str, model: str, tenant: str, turn_id: str
) -> AbstractContextManager[tracing.Span]:
    return tracing.span(
        f"invoke_agent {agent_name}",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.agent.name": agent_name,
            "gen_ai.agent.id": agent_id,
            "gen_ai.conversation.id": session_id,
            "gen_ai.request.model": model,
            "cosmo.tenant": tenant,
            "cosmo.turn.id": turn_id,
        },
    )


def model_span(request: ModelRequest) -> AbstractContextManager[tracing.Span]:
    return tracing.span(
        f"chat {request.model}",
        kind="client",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.system": PROVIDER,
            "gen_ai.request.model": request.model,
            "gen_ai.request.max_tokens": request.max_tokens,
        },
    )


def replied(span: tracing.Span, reply: ModelReply) -> None:
    span.set(
        {
            **usage_attributes(reply.usage),
            "gen_ai.response.model": reply.model,
            "gen_ai.response.finish_reasons": [reply.stop_reason or "unknown"],
            "anthropic.request_id": reply.request_id,
        }
    )


def tool_span(block: dict[str, Any]) -> AbstractContextManager[tracing.Span]:
    name = str(block.get("name", ""))
    return tracing.span(
        f"execute_tool {name}",
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": str(block.get("id") or ""),
            "gen_ai.tool.type": "function",
        },
    )


def usage_attributes(usage: ModelUsage) -> dict[str, int]:
    """Token counts as the GenAI conventions count them: their input tokens include the
    cached ones, which Anthropic reports apart."""
    return {
        "gen_ai.usage.input_tokens": usage.input_tokens
        + usage.cache_read_tokens
        + usage.cache_write_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.cache_read_tokens,
        "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
    }
