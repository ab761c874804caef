"""Background loops the one process runs next to its HTTP surfaces."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("cosmo.workers")


class Workers:
    """Periodic jobs (expiring outputs, recovering Slack turns, delivering webhooks).

    Each job runs in its own task; a failing run is logged and retried at the next tick,
    never taking the process or the other jobs down."""

    def __init__(self) -> None:
        self._jobs: list[tuple[str, Callable[[], Awaitable[object]], float]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def every(self, seconds: float, name: str, job: Callable[[], Awaitable[object]]) -> None:
        self._jobs.append((name, job, seconds))

    def start(self) -> None:
        self._stop.clear()
        for name, job, seconds in self._jobs:
            self._tasks.append(asyncio.create_task(self._loop(name, job, seconds), name=name))

    async def _loop(self, name: str, job: Callable[[], Awaitable[object]], seconds: float) -> None:
        while not self._stop.is_set():
            try:
                await job()
            except Exception:
                log.exception("background job %s failed; retrying in %.0fs", name, seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
