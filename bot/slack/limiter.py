"""One limiter per process for Slack Web API calls, per workspace and method.

Slack limits each method per app per workspace (Tier 3 `chat.update` 50+/min, Tier 4
`chat.appendStream` 100+/min, posting ~1 message/s per channel). Many turns of one
workspace in one worker share those budgets, so a limit kept per call (or per turn) still
floods Slack with 429s. Here every call waits for a slot in its (workspace, method[,
channel]) window before it is sent (`LimitedWebClient.api_call`), and a 429 that still
happens (another process, Slack's own accounting) pauses that window for its
`Retry-After` before the call is retried (`LimiterRetryHandler`). Both work at the client,
so every caller (turns, approvals, commands) benefits.

The windows mirror Slack's published tiers and are slightly stricter (`MARGIN`); posting
methods, where Slack tolerates short bursts, are paced only for a minute after a 429;
methods with no published tier are only paused by their 429s. Workspaces are told apart by their
bot token (a digest of it: no token is kept or logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from core import metrics

log = logging.getLogger("cosmo.slack.limiter")


@dataclass(frozen=True)
class Tier:
    calls: int
    per: float
    per_channel: bool = False
    bursts: bool = False
    """Slack tolerates short bursts (posting): paced only for a while after a 429."""


TIERS: dict[str, Tier] = {
    "chat.postMessage": Tier(1, 1.0, per_channel=True, bursts=True),
    "chat.postEphemeral": Tier(1, 1.0, per_channel=True, bursts=True),
    "chat.startStream": Tier(1, 1.0, per_channel=True, bursts=True),
    "chat.update": Tier(50, 60.0),
    "chat.appendStream": Tier(100, 60.0),
    "chat.stopStream": Tier(100, 60.0),
}
MARGIN = 1.05
SKEW = 0.25
"""Windows run `MARGIN` times longer than Slack's, plus `SKEW` seconds: Slack counts a call
when it arrives, which is later than when we let it go, and not equally later for all."""
MAX_RETRIES = 5
PACED_FOR = 60.0
"""How long a bursting method stays paced after its 429."""


class _Slot:
    """One call in a window: when it was let go, then when its answer came (Slack counted
    it at some moment in between; the later one is the safe one to count from)."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at


@dataclass
class _Window:
    tier: Tier | None
    sent: list[_Slot] = field(default_factory=list)
    paused_until: float = 0.0
    paced_until: float = 0.0

    def _unpaced(self, now: float) -> bool:
        """No window to keep: a method without a tier, or a bursting one no 429 has paced."""
        return self.tier is None or (self.tier.bursts and now >= self.paced_until)

    def wait(self, now: float) -> float:
        """Seconds until a call may go (0: now), taking nothing."""
        if now < self.paused_until:
            return self.paused_until - now
        tier = self.tier
        if tier is None or self._unpaced(now):
            return 0.0
        span = tier.per * MARGIN + SKEW
        self.sent = [slot for slot in self.sent if slot.at > now - span]
        if len(self.sent) >= tier.calls:
            return min(slot.at for slot in self.sent) + span - now
        return 0.0

    def take(self, now: float) -> tuple[float, _Slot | None]:
        """(seconds to wait, None), or (0, the call's slot) when it may go now."""
        wait = self.wait(now)
        if wait > 0 or self._unpaced(now):
            return wait, None
        slot = _Slot(now)
        self.sent.append(slot)
        return 0.0, slot


@dataclass
class _Call:
    """The call `LimitedWebClient.api_call` is making: its retry handler runs inside it and
    cannot read a JSON body's channel from the request it is given."""

    workspace: str
    method: str
    channel: str | None
    slots: list[_Slot] = field(default_factory=list)


_CURRENT: ContextVar[_Call | None] = ContextVar("slack_call", default=None)


class SlackLimiter:
    """The process's windows. Thread-safe: Bolt and the worker may share it."""

    def __init__(
        self,
        tiers: dict[str, Tier] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tiers = TIERS if tiers is None else tiers
        self.clock = clock
        self._windows: dict[tuple[str, str, str], _Window] = {}
        self._lock = threading.Lock()
        self.rate_limited = 0
        """429s seen (each was retried after its Retry-After)."""

    def _window(self, workspace: str, method: str, channel: str | None) -> _Window:
        tier = self.tiers.get(method)
        key = (workspace, method, (channel or "") if tier and tier.per_channel else "")
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(tier)
        return window

    async def acquire(self, workspace: str, method: str, channel: str | None = None) -> None:
        """Wait for a slot; inside `LimitedWebClient.api_call` the slot is counted from the
        moment the answer arrives."""
        while True:
            with self._lock:
                wait, slot = self._window(workspace, method, channel).take(self.clock())
            if wait <= 0:
                call = _CURRENT.get()
                if slot is not None and call is not None:
                    call.slots.append(slot)
                return
            await asyncio.sleep(wait)

    def wait(self, workspace: str, method: str, channel: str | None = None) -> float:
        """Seconds a call would wait for its slot now (0: it would go at once)."""
        with self._lock:
            return self._window(workspace, method, channel).wait(self.clock())

    def answered(self, slots: list[_Slot]) -> None:
        with self._lock:
            now = self.clock()
            for slot in slots:
                slot.at = max(slot.at, now)

    def pause(self, workspace: str, method: str, channel: str | None, seconds: float) -> None:
        """Slack answered 429: nothing more of this method goes for `seconds`."""
        with self._lock:
            self.rate_limited += 1
            window = self._window(workspace, method, channel)
            now = self.clock()
            window.paused_until = max(window.paused_until, now + seconds)
            window.paced_until = now + seconds + PACED_FOR
        log.info("Slack rate-limited %s; pausing it for %.0f s", method, seconds)


def workspace_of(token: str | None) -> str:
    if not token:
        return "-"
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _channel(*sources: Any) -> str | None:
    for source in sources:
        if isinstance(source, dict):
            found = source.get("channel") or source.get("channel_id")
            if found:
                return str(found)
    return None


class LimiterRetryHandler(AsyncRetryHandler):
    """On 429: pause the call's window for `Retry-After`, then wait for a slot and retry."""

    def __init__(self, limiter: SlackLimiter, max_retry_count: int = MAX_RETRIES) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.limiter = limiter

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code == 429

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        assert response is not None
        retry_after = 1.0
        for name, values in response.headers.items():
            if name.lower() == "retry-after" and values:
                with contextlib.suppress(ValueError):
                    retry_after = float(values[0])
        call = _CURRENT.get()
        if call is None:  # a client that is not a LimitedWebClient
            method = request.url.rstrip("/").rsplit("/", 1)[-1]
            auth = next(
                (v[0] for k, v in request.headers.items() if k.lower() == "authorization"), ""
            )
            call = _Call(
                workspace_of(auth.removeprefix("Bearer ").strip() or None),
                method,
                _channel(request.body_params, request.data),
            )
        metrics.slack_api_rate_limited(call.method)
        self.limiter.pause(call.workspace, call.method, call.channel, retry_after)
        await self.limiter.acquire(call.workspace, call.method, call.channel)
        state.next_attempt_requested = True
        state.increment_current_attempt()


class LimitedWebClient(AsyncWebClient):
    """An `AsyncWebClient` whose calls first take a slot from the process's limiter."""

    def __init__(self, *args: Any, limiter: SlackLimiter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limiter = limiter
        self.retry_handlers = [
            *[h for h in self.retry_handlers if not _handles_429(h)],
            LimiterRetryHandler(limiter),
        ]

    def slot_wait(self, method: str, channel: str | None = None) -> float:
        """Seconds a call of `method` with this client's token would wait now; a caller with
        something better to do than queue (a reply whose final call can carry the text)
        asks first."""
        return self.limiter.wait(workspace_of(self.token), method, channel)

    async def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: Any = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> AsyncSlackResponse:
        token = (params or {}).get("token") or self.token
        call = _Call(workspace_of(token), api_method, _channel(json, data, params))
        reset = _CURRENT.set(call)
        metrics.slack_api_call(api_method)
        try:
            await self.limiter.acquire(call.workspace, call.method, call.channel)
            return await super().api_call(
                api_method,
                http_verb=http_verb,
                files=files,
                data=data,
                params=params,
                json=json,
                headers=headers,
                auth=auth,
            )
        finally:
            self.limiter.answered(call.slots)
            _CURRENT.reset(reset)


def _handles_429(handler: Any) -> bool:
    return isinstance(handler, (AsyncRateLimitErrorRetryHandler, LimiterRetryHandler))
