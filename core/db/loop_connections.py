"""PostgreSQL connections an event loop awaits: the Slack ack path's insert, without a thread.

Measured under the ack bench's load (`bench/slack_ack.py` on PostgreSQL), the insert run in
a thread spent 0.45 ms p50 in the two hops (loop to thread and back) and 0.5 ms in
SQLAlchemy's handling of one statement, beside PostgreSQL's own round trip. A psycopg
`AsyncConnection` awaited on the loop costs neither.

An asyncio connection belongs to the loop that awaits it, and tests run several loops in
one process: each loop keeps its own few idle connections, closed when the loop goes away
or when the database is disposed. A connection runs one statement at a time; one that
failed, or whose statement was cancelled, is closed rather than reused, since nothing says
what state it was left in.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy import exc as sa_exc

#: Idle connections a loop keeps: the intake writes one group commit at a time.
KEEP_PER_LOOP = 2


class LoopConnections:
    """Autocommit connections for the event loops of one process, keyed by loop."""

    def __init__(self, conninfo: str, *, keep: int = KEEP_PER_LOOP) -> None:
        self._conninfo = conninfo
        self._keep = keep
        self._idle: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[psycopg.AsyncConnection[Any]]
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._closed = False

    async def run(
        self, sql: str, params: Sequence[Any], *, idempotent: bool
    ) -> list[tuple[Any, ...]]:
        """Run one statement that commits by itself and return its rows. A connection found
        dead (PostgreSQL restarted, or the connection was terminated) is replaced and the
        statement run again once, when running it twice is harmless (`idempotent`); errors
        come as SQLAlchemy's exception types, so callers handle one family."""
        reconnected = False
        while True:
            connection = await self._take()
            try:
                cursor = await connection.execute(sql, params)
                rows = await cursor.fetchall()
            except psycopg.Error as exc:
                dead = connection.broken
                _finish(connection)
                if dead and idempotent and not reconnected:
                    reconnected = True
                    continue
                raise sa_exc.DBAPIError.instance(
                    sql,
                    params,
                    exc,
                    psycopg.Error,
                    hide_parameters=True,  # the payload is a user's message
                    connection_invalidated=dead,
                ) from exc
            except BaseException:
                _finish(connection)
                raise
            self._give(connection)
            return rows

    async def _take(self) -> psycopg.AsyncConnection[Any]:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise sa_exc.InterfaceError("", None, RuntimeError("the database was disposed"))
            idle = self._idle.get(loop)
            if idle:
                return idle.pop()
        try:
            return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise sa_exc.DBAPIError.instance(
                "connect", None, exc, psycopg.Error, connection_invalidated=True
            ) from exc

    def _give(self, connection: psycopg.AsyncConnection[Any]) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if not self._closed:
                idle = self._idle.get(loop)
                if idle is None:
                    idle = self._idle[loop] = []
                    # The list, not the loop, goes to the finalizer: a loop that is
                    # garbage-collected closes the connections it left idle.
                    weakref.finalize(loop, _finish_all, idle)
                if len(idle) < self._keep:
                    idle.append(connection)
                    return
        _finish(connection)

    def close(self) -> None:
        """Close every idle connection, from any thread; later statements are refused and
        connections in use are closed when their statement ends."""
        with self._lock:
            self._closed = True
            lists = list(self._idle.values())
            self._idle.clear()
        for idle in lists:
            _finish_all(idle)


def _finish_all(connections: list[psycopg.AsyncConnection[Any]]) -> None:
    while connections:
        _finish(connections.pop())


def _finish(connection: psycopg.AsyncConnection[Any]) -> None:
    # `AsyncConnection.close` is a coroutine, but closing libpq's connection needs no loop:
    # this works from any thread, and leaves the connection `closed` like `close` does.
    connection.pgconn.finish()
