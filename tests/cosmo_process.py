"""Running the real `cosmo` command in tests: one-shot commands and a `cosmo serve` that is
ready (its `/readyz` answers 200) before the test starts, and stopped after it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
COSMO = [sys.executable, "-m", "bot.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cosmo(
    env: Mapping[str, str], *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `cosmo ARGS` to completion (text output captured)."""
    return subprocess.run(
        [*COSMO, *args],
        env=dict(env),
        cwd=ROOT,
        check=check,
        capture_output=True,
        text=True,
        timeout=timeout,
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
    port = port or free_port()
    process = subprocess.Popen(
        [*COSMO, "serve", "--port", str(port), *args],
        env=dict(env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
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
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def cosmo_worker(
    env: Mapping[str, str], log: Path, *, ready_within: float = 120
) -> Iterator[subprocess.Popen[bytes]]:
    """`cosmo worker` in the background, its output in `log`, yielded once it runs jobs;
    the test may kill it (the point of most tests that use it), else it is stopped after."""
    start = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*COSMO, "worker"], env=dict(env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
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
