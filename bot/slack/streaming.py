"""Shows one agent turn as a native Slack stream: `chat.startStream` → `appendStream` →
`stopStream`.

The stream starts when the turn starts (the user sees the app at work at once); the first
text is appended as soon as the model produces it, later text at most once per interval.
Each tool call is a `task_update` chunk: a read skill `in_progress`, then `complete` with a
one-line result; an action skill `pending` with "Awaiting approval". `stopStream` closes
the message with its sources as `blocks` under the answer.

The approval buttons stay separate messages (`approvals.post_approval`), not `stopStream`
blocks: each output's message is updated when it is decided (from Slack, REST or an
expiry), which a streamed reply cannot be without rewriting the whole answer, and one
output per message keeps "first decision wins" per message.

Where Slack refuses streaming for the workspace (plan or surface), the reply falls back to
`ThreadReply` (placeholder + `chat.update`) and `StreamingPolicy` remembers the workspace,
in memory per process: after a restart the first turn asks Slack again.

A rerun after a crash `adopt`s the message the first attempt started: the old stream is
stopped (if Slack has not ended it) and the rerun shows its answer there with `chat.update`,
so the thread never has a second message or a stream left open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.slack.blocks import sources_context
from bot.slack.reply import ThreadReply
from bot.slack.text import escape
from core.agent.engine import ToolStep
from core.knowledge.citations import Citation

log = logging.getLogger("cosmo.slack.streaming")

STREAM_CHARS = 12_000
"""Slack's limit on `markdown_text` per call."""
REFUSALS = frozenset(
    {
        "not_allowed",
        "not_allowed_token_type",
        "feature_not_enabled",
        "missing_scope",
        "unknown_method",
        "team_not_allowed",
    }
)
"""`startStream` errors that mean the workspace cannot stream at all (plan, surface, scope):
remembered. Any other error falls back for that one turn."""
NOT_STREAMING = "message_not_in_streaming_state"
AWAITING = "Awaiting approval"


class StreamingPolicy:
    """Which workspaces stream. In memory, per process (see the module docstring)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.refused: dict[str, str] = {}
        """team (or tenant) -> the error Slack refused streaming with."""

    def allows(self, team: str) -> bool:
        return self.enabled and team not in self.refused

    def refuse(self, team: str, error: str) -> None:
        if team not in self.refused:
            log.warning("Slack refused streaming in %s (%s): using chat.update there", team, error)
        self.refused[team] = error


class StreamingReply(ThreadReply):
    """`ThreadReply`'s interface over a native stream; `fallback` takes over where Slack
    refuses or where a rerun adopts an earlier attempt's message."""

    def __init__(
        self,
        client: Any,
        channel: str,
        thread_ts: str,
        *,
        team_id: str | None = None,
        user_id: str | None = None,
        policy: StreamingPolicy | None = None,
        make_fallback: Callable[[], ThreadReply] | None = None,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(client, channel, thread_ts, interval=interval, clock=clock)
        self.team_id = team_id
        self.user_id = user_id
        self.policy = policy or StreamingPolicy()
        self._make_fallback = make_fallback or (
            lambda: ThreadReply(client, channel, thread_ts, interval=interval, clock=clock)
        )
        self.fallback: ThreadReply | None = None
        self.stream_ts: str | None = None
        self.live = False
        self._sent = 0

    # -- starting ---------------------------------------------------------------------------

    async def start(self) -> None:
        recipient: dict[str, Any] = {}
        if self.team_id and self.user_id:
            recipient = {"recipient_team_id": self.team_id, "recipient_user_id": self.user_id}
        try:
            response = await self.client.chat_startStream(
                channel=self.channel,
                thread_ts=self.thread_ts,
                task_display_mode="timeline",
                **recipient,
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            if error in REFUSALS:
                self.policy.refuse(self.team_id or "-", error)
            else:
                log.warning(
                    "could not start a stream in %s (%s); editing instead", self.channel, error
                )
            await self._fall_back().start()
            return
        self.stream_ts = str(response["ts"])
        self.live = True
        await self._posted(self.stream_ts, "", None)

    def _fall_back(self) -> ThreadReply:
        fallback = self._make_fallback()
        fallback.on_first_message = self.on_first_message
        fallback.text = self.text
        self.fallback = fallback
        return fallback

    async def adopt(self, ts: str) -> None:
        """An earlier attempt's message: end its stream (it may still be open, its worker
        gone) and show this attempt's answer in it with `chat.update`."""
        try:
            await self.client.chat_stopStream(channel=self.channel, ts=ts)
        except SlackApiError as exc:
            if exc.response.get("error") != NOT_STREAMING:
                log.warning(
                    "could not stop an earlier attempt's stream: %s", exc.response.get("error")
                )
        self.message_ts = [ts]
        await self._fall_back().adopt(ts)

    # -- while the turn runs -----------------------------------------------------------------

    flush_method = "chat.appendStream"

    async def write(self, delta: str) -> None:
        if self.fallback is not None:
            await self.fallback.write(delta)
            return
        await super().write(delta)

    async def tool(self, step: ToolStep) -> None:
        """A tool call as a task in the stream (the text before it goes first)."""
        if self.fallback is not None:
            await self.fallback.tool(step)
            return
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        task: dict[str, Any] = {"type": "task_update", "id": step.id, "title": step.skill}
        if step.status == "awaiting_approval":
            task.update(status="pending", details=AWAITING)
        else:
            task["status"] = step.status
            if step.summary:
                task["output"] = escape(step.summary)
        await self._append(chunks=[task])

    async def _flush(self, *, final: bool = False) -> None:
        await self._append()

    async def _append(self, *, chunks: Sequence[dict[str, Any]] = ()) -> None:
        async with self._lock:
            if not self.live or self.stream_ts is None:
                return
            upto = len(self.text)  # writes may add text while this call is on its way
            text = escape(self.text[self._sent : upto])
            if not text.strip() and not chunks:
                return
            pieces = [text[i : i + STREAM_CHARS] for i in range(0, len(text), STREAM_CHARS)]
            try:
                for index, piece in enumerate(pieces or [""]):
                    extra: dict[str, Any] = (
                        {"chunks": list(chunks)} if chunks and index == 0 else {}
                    )
                    if piece:
                        extra["markdown_text"] = piece
                    if extra:
                        await self.client.chat_appendStream(
                            channel=self.channel, ts=self.stream_ts, **extra
                        )
            except SlackApiError as exc:
                if exc.response.get("error") != NOT_STREAMING:
                    raise
                self.live = False  # Slack ended it (a Stop click, or its lifetime)
                return
            self._sent = upto
            self._last_flush = self.clock()

    # -- ending ------------------------------------------------------------------------------

    async def finish(self, text: str | None = None, *, citations: Sequence[Citation] = ()) -> None:
        """The final text is the authoritative reply: what was streamed already stays, the
        rest is sent with `stopStream`; a final text that does not continue the streamed
        one (a failure notice) follows it after a blank line."""
        if self.fallback is not None:
            await self.fallback.finish(text, citations=citations)
            return
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self.citations = list(citations)
        async with self._lock:
            shown = self.text[: self._sent]
            final = self.text if text is None else text
            rest = _remainder(shown, final)
            if rest is None:
                rest = ("\n\n" if shown.strip() else "") + final
            if not (shown + rest).strip():
                rest = "(no reply)"
            if self.live and self.stream_ts is not None:
                extra: dict[str, Any] = {}
                if rest.strip():
                    extra["markdown_text"] = escape(rest)[:STREAM_CHARS]
                if self.citations:
                    extra["blocks"] = [sources_context(self.citations)]
                try:
                    await self.client.chat_stopStream(
                        channel=self.channel, ts=self.stream_ts, **extra
                    )
                    self.live = False
                    self.text = shown + rest
                    self._sent = len(self.text)
                    return
                except SlackApiError as exc:
                    if exc.response.get("error") != NOT_STREAMING:
                        raise
                    self.live = False
        # The stream is gone: Slack ended it, or a later attempt of this turn took the
        # message over. The answer goes into that same message with `chat.update`, never
        # into a second one (two attempts would otherwise both leave a full answer).
        fallback = ThreadReply(self.client, self.channel, self.thread_ts)
        if self.stream_ts is not None:
            fallback.resume(self.stream_ts, shown)
        await fallback.finish(final, citations=self.citations)

    async def stopped(self) -> None:
        """A cancel someone asked for: end the stream with a note. A Stop click already
        ended it on Slack's side, and the thread says who stopped it."""
        if self.fallback is not None:
            await self.fallback.stopped()
            return
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        async with self._lock:
            if not self.live or self.stream_ts is None:
                return
            try:
                await self.client.chat_stopStream(
                    channel=self.channel, ts=self.stream_ts, markdown_text="\n\n_Stopped._"
                )
            except SlackApiError as exc:
                if exc.response.get("error") != NOT_STREAMING:
                    raise
            self.live = False


def _remainder(shown: str, final: str) -> str | None:
    """What `final` adds to the `shown` text, if it continues it. Whitespace does not count:
    the stream carries the blank lines between tool steps, the recorded reply joins its parts
    with one."""
    at = 0
    for char in shown:
        if char.isspace():
            continue
        while at < len(final) and final[at].isspace():
            at += 1
        if at >= len(final) or final[at] != char:
            return None
        at += 1
    if shown[-1:].isspace():  # the break is on the screen already
        while at < len(final) and final[at].isspace():
            at += 1
    return final[at:]
