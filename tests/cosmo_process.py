"""Running the real `cosmo` command in tests: one-shot commands and a `cosmo serve` that is
ready (its `/readyz` answers 200) before the test starts, and stopped after it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
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


def cosmo_worker(env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`cosmo worker` in the background, its output in `log`; the caller stops (or kills) it."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [*COSMO, "worker"], env=dict(env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )


@contextmanager
def cosmo_serve(
    env: Mapping[str, str], port: int | None = None, *args: str, ready_within: float = 60
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
