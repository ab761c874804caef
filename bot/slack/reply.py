"""Shows one agent turn in a Slack thread as it happens.

A placeholder goes up at once; the first text replaces it as soon as the model produces
any (no large first buffer); later text is batched into at most one `chat.update` per
interval per message, which keeps us well under Slack's rate limits; text past
`MESSAGE_CHARS` continues in a new message. Everything is escaped mrkdwn (the model's
Markdown restyled by `mrkdwn.from_markdown`) with unfurling off, so model text cannot ping
`@channel` or forge links. When the reply cites knowledge,
the final update puts its sources in a context block under the last message.

A turn run again after its worker died `adopt`s the message the first attempt posted
(its ts is kept in the job's progress, reported through `on_first_message`) and edits it,
so the thread never shows a second placeholder.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bot.slack.blocks import Blocks, reply_with_sources, thinking
from bot.slack.limiter import LimitedWebClient
from bot.slack.mrkdwn import from_markdown
from bot.slack.text import split_message
from core.agent.engine import ToolStep
from core.knowledge.citations import Citation

log = logging.getLogger("cosmo.slack.reply")

STOPPED = "_Stopped._"


class ThreadReply:
    def __init__(
        self,
        client: Any,
        channel: str,
        thread_ts: str,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.interval = interval
        self.clock = clock
        self.text = ""
        self.citations: list[Citation] = []
        self.message_ts: list[str] = []
        # What each message shows now: its text and its blocks (None: a plain text message).
        self._shown: list[tuple[str, Blocks | None]] = []
        self._last_flush = float("-inf")
        self._lock = asyncio.Lock()
        self._pending: asyncio.Task[None] | None = None
        self.on_first_message: Callable[[str], Awaitable[None]] | None = None
        """Called with the ts of the first message this reply posts (the placeholder, or the
        first text where no placeholder is posted), so a rerun can adopt it."""

    async def start(self) -> None:
        """Post the placeholder so the user sees we are on it."""
        response = await self.client.chat_postMessage(
            channel=self.channel,
            thread_ts=self.thread_ts,
            text=thinking(),
            unfurl_links=False,
            unfurl_media=False,
        )
        await self._posted(response["ts"], thinking(), None)

    async def adopt(self, ts: str) -> None:
        """Continue in a message an earlier attempt posted: it shows the placeholder again
        (whatever that attempt had streamed into it) and later text edits it."""
        self.message_ts = [ts]
        self._shown = [("", None)]
        await self.client.chat_update(channel=self.channel, ts=ts, text=thinking())
        self._shown[0] = (thinking(), None)

    def resume(self, ts: str, shown: str) -> None:
        """Continue in message `ts`, which shows `shown` already (no placeholder flash)."""
        self.message_ts = [ts]
        self._shown = [(shown, None)]

    async def _posted(self, ts: str, text: str, blocks: Blocks | None) -> None:
        self.message_ts.append(ts)
        self._shown.append((text, blocks))
        if len(self.message_ts) == 1 and self.on_first_message is not None:
            await self.on_first_message(ts)

    async def write(self, delta: str) -> None:
        """Add streamed text; shown at once the first time, then at most once per interval.
        Where Slack's window for the call that shows it is full (the limiter would make it
        wait), the text goes when the window opens instead, unless the turn ends first: then
        the final call carries it, and the call that would have queued is never made."""
        first = not self.text.strip()
        self.text += delta
        if self._pending is not None:
            return
        full = self._slack_wait()
        if first and self.text.strip() and full <= 0:
            await self._flush()
            return
        wait = max(full, 0.0 if first else self.interval - (self.clock() - self._last_flush))
        self._pending = asyncio.create_task(self._flush_later(wait))

    #: The Web API method that shows more text (`_flush`'s call for an existing message).
    flush_method = "chat.update"

    def _slack_wait(self) -> float:
        if isinstance(self.client, LimitedWebClient):
            return self.client.slot_wait(self.flush_method, self.channel)
        return 0.0

    async def finish(self, text: str | None = None, *, citations: Sequence[Citation] = ()) -> None:
        """Show the final text (the authoritative reply) in full, with the sources it cites."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if text is not None:
            self.text = text
        self.citations = list(citations)
        await self._flush(final=True)

    async def tool(self, step: ToolStep) -> None:
        """Tool calls are not shown on this path: each would cost a `chat.update` (Tier 3)."""

    async def stopped(self) -> None:
        """A cancel someone asked for: the message says so."""
        await self.finish(STOPPED)

    async def _flush_later(self, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
            self._pending = None
            await self._flush()
        except asyncio.CancelledError:
            pass

    async def _flush(self, *, final: bool = False) -> None:
        async with self._lock:
            parts = split_message(
                from_markdown(self.text.strip()) or ("(no reply)" if final else "")
            )
            for index, part in enumerate(parts):
                if not part:
                    continue
                sourced = final and self.citations and index == len(parts) - 1
                blocks = reply_with_sources(part, self.citations) if sourced else None
                extra: dict[str, Any] = {"blocks": blocks} if blocks is not None else {}
                if index < len(self.message_ts):
                    if self._shown[index] != (part, blocks):
                        await self.client.chat_update(
                            channel=self.channel, ts=self.message_ts[index], text=part, **extra
                        )
                        self._shown[index] = (part, blocks)
                else:
                    response = await self.client.chat_postMessage(
                        channel=self.channel,
                        thread_ts=self.thread_ts,
                        text=part,
                        unfurl_links=False,
                        unfurl_media=False,
                        **extra,
                    )
                    await self._posted(response["ts"], part, blocks)
            self._last_flush = self.clock()
