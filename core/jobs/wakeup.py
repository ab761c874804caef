"""Waking idle workers when work arrives, so pickup takes milliseconds, not a poll interval.

In one process (SQLite's embedded default, tests) an enqueue's commit rings the workers'
events directly. Across processes PostgreSQL's NOTIFY, sent in the enqueuing transaction
and so delivered only if it commits, reaches each worker's LISTEN connection; on SQLite
other processes poll briefly instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from core.db.database import libpq_dsn

log = logging.getLogger("cosmo.jobs")

CHANNEL = "cosmo_jobs"


class Wakeup:
    """Idle workers in this process, each an asyncio.Event on its own loop. Thread-safe:
    enqueues commit in worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    def register(self, event: asyncio.Event) -> Callable[[], None]:
        entry = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.add(entry)

        def unregister() -> None:
            with self._lock:
                self._waiters.discard(entry)

        return unregister

    def ring(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(event.set)


class PostgresListener:
    """LISTENs on `cosmo_jobs` and sets `event` on every notification; reconnects when the
    connection drops (a database restart must not leave workers deaf)."""

    def __init__(self, database_url: str, event: asyncio.Event) -> None:
        self.dsn = libpq_dsn(database_url)
        self.event = event
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="jobs-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.event.set()  # whatever was enqueued while we were not listening
                    async for _ in conn.notifies():
                        self.event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("job notifications lost (%s); reconnecting in 1s", type(exc).__name__)
                await asyncio.sleep(1)
