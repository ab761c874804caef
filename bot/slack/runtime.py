"""What every Slack listener needs: the container, clients per workspace, tenants,
directory lookups, and a place to run work after Slack has been answered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from bot.slack.directory import SlackDirectory
from bot.slack.reply import ThreadReply
from bot.slack.streaming import StreamingPolicy, StreamingReply
from core.jobs.intake import JobIntake
from core.wiring import Container

log = logging.getLogger("cosmo.slack")


class SlackClients:
    """The Web API client for a tenant. Single-workspace installs have one bot token;
    multi-workspace installs look the workspace's token up in the installation store."""

    def __init__(self, default_client: Any, *, installation_lookup: Any = None) -> None:
        self.default_client = default_client
        self.installation_lookup = installation_lookup

    async def for_tenant(self, tenant_id: str) -> Any:
        if self.installation_lookup is None:
            return self.default_client
        client = await self.installation_lookup(tenant_id)
        return client or self.default_client


@dataclass
class SlackRuntime:
    container: Container
    clients: SlackClients
    directory: SlackDirectory
    single_workspace: bool
    reply_factory: Callable[[Any, str, str], ThreadReply] = ThreadReply
    """Shows a turn in its thread: `(client, channel, thread_ts) -> ThreadReply`. A listener
    module may swap it (the assistant surface shows Slack's "is thinking…" status in DMs)."""
    streaming: StreamingPolicy = field(default_factory=StreamingPolicy)
    """Whether turns stream natively, and the workspaces where Slack refused it."""
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    intake: JobIntake = field(init=False)
    """The ack path's inserts, their commits shared under bursts."""
    message_locks: dict[str, tuple[asyncio.Lock, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.intake = JobIntake(self.container.jobs)

    @asynccontextmanager
    async def message_lock(self, key: str) -> AsyncIterator[None]:
        """One writer at a time for the Slack copies of one output in this process, so a
        late refresh after an edit cannot overwrite the decided message. Unused locks go."""
        lock, users = self.message_locks.get(key, (asyncio.Lock(), 0))
        self.message_locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self.message_locks[key]
            if users <= 1:
                del self.message_locks[key]
            else:
                self.message_locks[key] = (lock, users - 1)

    def reply_for(
        self, client: Any, channel: str, thread_ts: str, *, team_id: str | None, user_id: str
    ) -> ThreadReply:
        """How a turn shows: a native stream, or `reply_factory`'s reply where the workspace
        does not stream (that reply is also the stream's fallback)."""

        def edited() -> ThreadReply:
            return self.reply_factory(client, channel, thread_ts)

        if not self.streaming.allows(team_id or "-"):
            return edited()
        return StreamingReply(
            client,
            channel,
            thread_ts,
            team_id=team_id,
            user_id=user_id,
            policy=self.streaming,
            make_fallback=edited,
        )

    def tenant_for(self, team_id: str | None) -> str:
        """The tenant of a workspace: the default tenant for single-workspace installs."""
        if self.single_workspace or not team_id:
            return self.container.settings.default_tenant
        return team_id

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run after the ack; failures are logged, never lost silently."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for background work, including work it starts (tests, shutdown)."""
        while self.tasks:
            await asyncio.wait(set(self.tasks))

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
