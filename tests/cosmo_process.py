"""Running the real `cosmo` command in tests: one-shot commands and a `cosmo serve` that is
ready (its `/readyz` answers 200) before the test starts, and stopped after it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.cosmo_zygote import run_cosmo

ROOT = Path(__file__).resolve().parents[1]
COSMO = [sys.executable, "-m", "bot.cli"]


#: Settings every process test starts with unless it sets its own: a stopping worker hands
#: running jobs on after 2 s instead of 20 (tests stop servers and workers all the time),
#: and a killed worker's job is taken over after 6 s instead of 15 (crash tests kill them).
# Workers here compete with the other test process for the CPU, not with a loaded serve:
# at a lower priority they would only make the tests that wait for them slower.
PROCESS_DEFAULTS = {
    "COSMO_WORKER_GRACE_SECONDS": "2",
    "COSMO_JOB_LEASE_SECONDS": "6",
    "COSMO_WORKER_NICE": "0",
}


def process_env(env: Mapping[str, str]) -> dict[str, str]:
    return {**PROCESS_DEFAULTS, **env}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cosmo(
    env: Mapping[str, str], *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `cosmo ARGS` to completion (text output captured), in a process of its own
    forked from one that has the imports done (see tests/cosmo_zygote.py)."""
    done = run_cosmo(process_env(env), list(args), timeout=timeout)
    if check:
        done.check_returncode()
    return done


def start_worker(env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`cosmo worker` in the background, its output in `log`; the caller stops (or kills) it."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [*COSMO, "worker"], env=process_env(env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )


@contextmanager
def cosmo_serve(
    env: Mapping[str, str],
    port: int | None = None,
    *,
    ready_within: float = 60,
    args: Sequence[str] = (),
) -> Iterator[str]:
    """`cosmo serve --port PORT [ARGS]` in the background; yields its base URL once ready.

    If the process exits before it is ready, the failure shows what it printed."""
    with cosmo_serve_process(env, port, ready_within=ready_within, args=args) as (base, _):
        yield base


@contextmanager
def cosmo_serve_process(
    env: Mapping[str, str],
    port: int | None = None,
    *,
    ready_within: float = 60,
    args: Sequence[str] = (),
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`cosmo_serve`, also yielding the process (for tests that kill it)."""
    port = port or free_port()
    # A file, not a pipe: nobody reads a pipe while the test runs, and once full it would
    # stall the server and the workers it supervises (they inherit its output).
    handle, name = tempfile.mkstemp(prefix="cosmo-serve-", suffix=".log")
    output = Path(name)
    with os.fdopen(handle, "wb") as sink:
        process = subprocess.Popen(
            [*COSMO, "serve", "--port", str(port), *args],
            env=process_env(env),
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, output.read_text(errors="replace")
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        yield base, process
    finally:
        stop(process)
        output.unlink(missing_ok=True)


@contextmanager
def cosmo_background(
    env: Mapping[str, str], *args: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`cosmo ARGS` (e.g. `worker`) in the background, its output in `log`; stopped (or
    reaped, if a test killed it) at the end."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*COSMO, *args], env=process_env(env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def cosmo_worker(
    env: Mapping[str, str], log: Path | None = None, *, ready_within: float = 120
) -> Iterator[subprocess.Popen[bytes]]:
    """`cosmo worker` in the background, its output in `log` (a temporary file if none:
    never a pipe nobody reads, which would stall the worker once full), yielded once it
    runs jobs; the test may kill it, else it is stopped after."""
    if log is None:
        handle, name = tempfile.mkstemp(prefix="cosmo-worker-", suffix=".log")
        os.close(handle)
        log = Path(name)
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*COSMO, "worker"], env=process_env(env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + ready_within
        while b"kinds of job" not in log.read_bytes()[start:]:
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found
