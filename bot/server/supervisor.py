"""`cosmo serve` keeps `COSMO_WORKERS` worker processes alive next to the HTTP surfaces,
so one command still runs everything; production runs `cosmo serve --workers 0` and
`cosmo worker` replicas instead, each managed by the platform."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from bot.worker.runtime import PARENT_ENV

log = logging.getLogger("cosmo.supervisor")

#: A worker that exits sooner than this after starting counts as crashing: back off.
STEADY_AFTER = 30.0
MAX_BACKOFF = 30.0


class WorkerSupervisor:
    """Starts N `cosmo worker` processes, restarts any that exits, and on stop sends them
    SIGTERM (they finish or hand back their jobs) and waits for them."""

    def __init__(
        self, count: int, *, grace: float = 25.0, env: dict[str, str] | None = None
    ) -> None:
        # `grace`: how long a worker may take to stop (its own grace for running jobs, plus
        # a few seconds to hand the rest back) before it is killed.
        self.count = count
        self.env = env or {}
        self.grace = grace
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for slot in range(self.count):
            self._tasks.append(loop.create_task(self._keep(slot), name=f"worker-{slot}"))

    async def _keep(self, slot: int) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            started = asyncio.get_running_loop().time()
            env = {**os.environ, **self.env, PARENT_ENV: str(os.getpid())}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "worker", env=env
            )
            self.processes[slot] = proc
            log.info("worker %d started (pid %d)", slot, proc.pid)
            code = await proc.wait()
            if self._stopping.is_set():
                return
            ran = asyncio.get_running_loop().time() - started
            backoff = 1.0 if ran >= STEADY_AFTER else min(MAX_BACKOFF, backoff * 2)
            log.error(
                "worker %d (pid %d) exited with %s; restarting in %.0fs",
                slot,
                proc.pid,
                code,
                backoff,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)

    async def stop(self) -> None:
        self._stopping.set()
        for proc in self.processes.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                await asyncio.wait_for(proc.wait(), self.grace)
            except TimeoutError:
                log.error("worker pid %d did not stop in %.0fs; killing it", proc.pid, self.grace)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
