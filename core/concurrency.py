"""The one way async code calls core's blocking (database, file, CPU) functions.

Core services are synchronous: SQLAlchemy sessions, boto3 and file I/O block. Every async
caller (Slack listeners, REST routes, the agent loop, the job worker) goes through
`run_sync`, so there is one thread pool to size and one place to change it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from anyio import CapacityLimiter, to_thread

P = ParamSpec("P")
T = TypeVar("T")


async def run_sync(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn(*args, **kwargs)` in a worker thread and await its result.

    Cancelling the awaiting task does not stop the thread (Python cannot), but the caller
    stops waiting at once; database work is short and commits or rolls back on its own."""
    if kwargs:
        return await to_thread.run_sync(functools.partial(fn, *args, **kwargs))
    return await to_thread.run_sync(fn, *args)


class Lane:
    """`run_sync` through at most `threads` threads at once: for work that must not run
    wider (a `Database` bound to one connection in tests, a rate a target tolerates)."""

    def __init__(self, threads: int) -> None:
        self._limiter = CapacityLimiter(threads)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        call = functools.partial(fn, *args, **kwargs) if kwargs else functools.partial(fn, *args)
        return await to_thread.run_sync(call, limiter=self._limiter)
