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


def embedded_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment for a process a test starts on the embedded defaults in `data_dir`:
    this one's, without any COSMO_/SLACK_ setting or DATABASE_URL the shell running the
    tests may carry, with `settings` added last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMO_", "SLACK_"))}
    env.pop("DATABASE_URL", None)
    env.update(COSMO_DATA_DIR=str(data_dir), **settings)
    return env


def free_port() -> int:
    """A port nobody listened on a moment ago. Only a moment: the socket is closed, so any
    process may bind the port before whoever it is for does (see `listening_pids`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on `port` (any address, IPv4 or IPv6), from /proc/net."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXADDR:HEXPORT; state 0A is LISTEN; field 9 the inode.
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` itself holds a socket listening on `port` (Linux /proc).

    Asking the port is not enough to know who answers: a port from `free_port()` is free
    for anyone until the server binds it, and under load a server takes seconds to start.
    In a parallel run another test's fake may take it meanwhile (`WebhookReceiver` answers
    200 to any path), and the test would then talk to that fake, not to its server."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed while we looked
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


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


#: How often `cosmo_serve_process` picks another port after losing one to someone else.
PORT_TRIES = 5


@contextmanager
def cosmo_serve_process(
    env: Mapping[str, str],
    port: int | None = None,
    *,
    ready_within: float = 60,
    args: Sequence[str] = (),
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`cosmo_serve`, also yielding the process (for tests that kill it).

    Nothing is sent to the port before this process listens on it (`listens_on`), so a
    test never talks to someone else's server or fake. Without a `port`, one is chosen,
    and chosen again if another process took it before the server could bind it."""
    chosen = port is None
    deadline = time.monotonic() + ready_within
    for _ in range(PORT_TRIES):
        started = _start_serve(env, port or free_port(), args, deadline, retry_taken=chosen)
        if started is not None:
            break
    else:
        raise AssertionError(f"cosmo serve found its port taken {PORT_TRIES} times")
    base, process, output = started
    try:
        yield base, process
    finally:
        stop(process)
        output.unlink(missing_ok=True)


def _start_serve(
    env: Mapping[str, str], port: int, args: Sequence[str], deadline: float, *, retry_taken: bool
) -> tuple[str, subprocess.Popen[bytes], Path] | None:
    """Start `cosmo serve --port PORT` and wait until it listens there and is ready.
    If it could not bind the port (another process has it): None with `retry_taken`,
    else the failure shows what it printed."""
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
    try:
        return wait_serving(process, port, output, deadline), process, output
    except BaseException as exc:
        stop(process)
        output.unlink(missing_ok=True)
        if retry_taken and isinstance(exc, PortTaken):
            return None
        raise


class PortTaken(AssertionError):
    """`cosmo serve` could not bind its port: another process listens there."""


def wait_serving(process: subprocess.Popen[bytes], port: int, output: Path, deadline: float) -> str:
    """Wait until `process` (a `cosmo serve`) listens on `port` and its `/readyz` answers
    200; its base URL. Nothing is sent before the process itself listens there, so a port
    someone else took is never talked to (see `listens_on`). Fails with what the process
    printed (`PortTaken` if it could not bind the port) if it exits first."""
    base = f"http://127.0.0.1:{port}"
    while True:
        if listens_on(process.pid, port):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    return base
            except httpx.TransportError:
                pass
        if process.poll() is not None:
            printed = output.read_text(errors="replace")
            if "address already in use" in printed.lower():
                raise PortTaken(printed)
            raise AssertionError(printed)
        assert time.monotonic() < deadline, output.read_text(errors="replace")[-2000:]
        time.sleep(0.1)


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
