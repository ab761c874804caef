"""The worker role as processes: `cosmo serve` supervises `COSMO_WORKERS` workers and
restarts one that dies; a worker stops when its supervising serve is gone; `cosmo worker`
runs on its own next to `cosmo serve --workers 0`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from core.db import Database
from core.jobs import JobQueue
from tests.cosmo_process import children, cosmo, cosmo_serve, cosmo_worker


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "COSMO_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cosmo.db'}",
        "COSMO_API_TOKEN": "t",
        "COSMO_WORKERS": "2",
    }
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "ANTHROPIC_API_KEY"):
        env.pop(name, None)
    cosmo(env, "db", "upgrade")
    return env


def wait_for(predicate, what: str, limit: float = 60.0):
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def serve_pid(base: str) -> int:
    port = base.rsplit(":", 1)[1]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmd and port.encode() in cmd:
            return int(pid)
    raise AssertionError("serve process not found")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


def test_serve_supervises_its_workers_and_restarts_one_that_is_killed(env) -> None:
    env = {**env, "COSMO_WORKER_NICE": "10"}
    with cosmo_serve(env) as base:
        parent = serve_pid(base)
        workers = wait_for(lambda: len(children(parent)) == 2 and children(parent), "2 workers")
        os.kill(workers[0], signal.SIGKILL)
        replaced = wait_for(
            lambda: (now := children(parent)) and len(now) == 2 and workers[0] not in now and now,
            "the killed worker to be replaced",
        )
        assert workers[1] in replaced
        # Slack's acks win the CPU over background work (COSMO_WORKER_NICE).
        # (each worker lowers its priority once it has started: wait for that)
        serve_nice = os.getpriority(os.PRIO_PROCESS, parent)
        wait_for(
            lambda: [os.getpriority(os.PRIO_PROCESS, p) for p in replaced] == [serve_nice + 10] * 2,
            "both workers to lower their priority",
        )
        # Work still gets done: a schedule runs in one of the workers.
        db = Database.from_url(env["DATABASE_URL"])
        try:
            wait_for(
                lambda: (
                    (job := JobQueue(db).find("schedule:schedule.purge_jobs")) is not None
                    and job.attempt >= 1
                ),
                "a schedule to run",
            )
        finally:
            db.dispose()
        os.kill(parent, signal.SIGKILL)
        # Orphaned by a SIGKILL, the workers notice and stop on their own.
        wait_for(lambda: not any(alive(p) for p in replaced), "orphaned workers to stop")


def test_serve_with_no_workers_leaves_background_work_to_cosmo_worker(env) -> None:
    env = {**env, "COSMO_WORKERS": "0"}
    with cosmo_serve(env) as base:
        assert children(serve_pid(base)) == []
        db = Database.from_url(env["DATABASE_URL"])
        try:
            assert JobQueue(db).find("schedule:schedule.purge_jobs") is None
            with cosmo_worker({**env, "COSMO_WORKER_NICE": "3"}) as worker:
                assert os.getpriority(os.PRIO_PROCESS, worker.pid) == os.nice(0) + 3
                wait_for(
                    lambda: (
                        (job := JobQueue(db).find("schedule:schedule.purge_jobs")) is not None
                        and job.attempt >= 1
                    ),
                    "the worker to run a schedule",
                )
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(timeout=30) == 0
        finally:
            db.dispose()
