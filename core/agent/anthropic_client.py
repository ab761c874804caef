"""The `ModelClient` adapter over the anthropic SDK (streaming Messages API).

Kept apart from the port so that commands which never talk to Claude (`cosmo apply`,
`cosmo db upgrade`) do not pay for importing the SDK.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic

from core.agent.model import ModelError, ModelReply, ModelRequest, ModelUsage, TextSink
from core.tls import tls_context

# Billing ceilings: retrying cannot help, and each retry delays the user's answer.
SPEND_LIMIT_CODES = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
    }
)


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body).get("error", {})
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict):
        return None
    details = error.get("details")
    code = details.get("error_code") if isinstance(details, dict) else None
    return code if isinstance(code, str) else None


class NoRetryOnSpendLimit(anthropic.Middleware):
    """Marks spend-limit refusals `x-should-retry: false` so the SDK's retry loop stops.

    The SDK retries every 429, and a spend-limit refusal is a 429; everything else keeps
    the SDK's own retry policy (we add no second retry loop).
    """

    async def handle_async(self, request: anthropic.APIRequest, call_next: Any) -> Any:
        response = await call_next(request)
        if response.status_code in (402, 429):
            raw = response.http_response
            body = await raw.aread()
            if _error_code(body) in SPEND_LIMIT_CODES:
                raw.headers["x-should-retry"] = "false"
        return response


def anthropic_client(
    api_key: str, *, base_url: str | None = None, max_retries: int = 2, timeout: float = 120.0
) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key=api_key,
        base_url=base_url,
        max_retries=max_retries,
        timeout=timeout,
        middleware=[NoRetryOnSpendLimit()],
        # The SDK's own client and defaults, with the process's one TLS context.
        http_client=anthropic.DefaultAsyncHttpxClient(verify=tls_context()),
    )


class AnthropicModelClient:
    """Streams through `AsyncAnthropic.messages.stream`; retries are the SDK's own."""

    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self.client = client

    async def complete(self, request: ModelRequest, on_text: TextSink | None = None) -> ModelReply:
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "system": request.system,
            "messages": request.messages,
        }
        if request.tools:
            params["tools"] = request.tools
        try:
            async with self.client.messages.stream(**params) as stream:
                if on_text is not None:
                    async for text in stream.text_stream:
                        await on_text(text)
                message = await stream.get_final_message()
        except anthropic.APIError as exc:
            raise model_error(exc) from exc
        usage = message.usage
        return ModelReply(
            content=[block.model_dump(mode="json", exclude_none=True) for block in message.content],
            stop_reason=message.stop_reason,
            usage=ModelUsage(
                input_tokens=usage.input_tokens or 0,
                output_tokens=usage.output_tokens or 0,
                cache_read_tokens=getattr(usage, "cache_read_input_tokens", None) or 0,
                cache_write_tokens=getattr(usage, "cache_creation_input_tokens", None) or 0,
            ),
            model=message.model,
            request_id=getattr(message, "_request_id", None),
        )


def model_error(exc: anthropic.APIError) -> ModelError:
    """Map SDK errors to what we tell the user; the SDK has already retried what it should."""
    status = getattr(exc, "status_code", None)
    detail = f"{type(exc).__name__}" + (f" ({status})" if status else "")
    code = getattr(exc, "error_code", None)
    message = str(getattr(exc, "message", "") or "").lower()
    if isinstance(exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
        return ModelError(
            detail,
            user_message="I can't reach Claude: the API key was refused. An admin needs to "
            "check ANTHROPIC_API_KEY.",
            retryable=False,
        )
    if (
        code in SPEND_LIMIT_CODES
        or isinstance(exc, anthropic.PaymentRequiredError)
        or "credit balance" in message
    ):
        return ModelError(
            detail,
            user_message="I can't answer right now: the Claude usage limit for this "
            "workspace has been reached. An admin needs to raise it.",
            retryable=False,
        )
    if isinstance(exc, anthropic.RateLimitError):
        return ModelError(
            detail,
            user_message="Claude is busy right now (rate limited). Please try again in a minute.",
            retryable=True,
        )
    if isinstance(exc, anthropic.BadRequestError):
        return ModelError(
            detail,
            user_message="Claude refused this request as invalid. An admin can find the "
            "details in the logs.",
            retryable=False,
        )
    if isinstance(exc, anthropic.APIConnectionError):
        return ModelError(
            detail,
            user_message="I couldn't reach Claude (connection problem). Please try again.",
            retryable=True,
        )
    return ModelError(
        detail,
        user_message="Claude is temporarily unavailable. Please try again in a moment.",
        retryable=True,
    )
