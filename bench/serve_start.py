"""How long a `cosmo serve --workers 0` replica takes to start: spawn to its first `/healthz`
answer, the CPU it spent getting there, and its resident memory then.

A replica that serves HTTP only never calls Claude, so since the model client is built on
first use (`core.agent.model.ModelOnFirstUse`) it no longer imports the anthropic SDK. The
baseline, in the same run and alternating with it, is the same command with the SDK imported
first: what every replica paid before. Both run on one migrated SQLite database with the
default settings otherwise, so the figures are a fresh replica's as an operator starts it.

    .venv/bin/python bench/serve_start.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._support import pct  # noqa: E402
from tests.cosmo_process import free_port  # noqa: E402

OURS = [sys.executable, "-m", "bot.cli"]
# The same entry point with the SDK imported before anything else: the old start.
BASELINE = [
    sys.executable,
    "-c",
    "import sys, anthropic, runpy; sys.argv[0] = 'cosmo'; "
    "runpy.run_module('bot.cli', run_name='__main__')",
]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system time of `pid` so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of `pid`, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def start_once(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Seconds from spawn to the first 200 from /healthz, the CPU seconds spent, and the
    resident MB then."""
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*command, "serve", "--workers", "0", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(timeout=1) as client:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"serve exited with {proc.returncode}")
                try:
                    if client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.005)
        wall = time.perf_counter() - started
        return wall, cpu_seconds(proc.pid), rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "COSMO_DATA_DIR": tmp,
            "ANTHROPIC_API_KEY": "bench",
            "COSMO_API_TOKEN": "bench",
            "COSMO_LOG_LEVEL": "WARNING",
        }
        env.pop("DATABASE_URL", None)
        subprocess.run([*OURS, "db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True)
        start_once(OURS, env)  # warm the page cache for both arms
        figures: dict[str, tuple[list[float], list[float], list[float]]] = {
            "ours": ([], [], []),
            "baseline (SDK imported)": ([], [], []),
        }
        for _ in range(args.rounds):
            for name, command in (("ours", OURS), ("baseline (SDK imported)", BASELINE)):
                for figure, value in zip(figures[name], start_once(command, env), strict=True):
                    figure.append(value)

    print(f"cosmo serve --workers 0, spawn to first /healthz 200, {args.rounds} rounds each")
    print(f"{'':26} {'wall p50':>9} {'wall max':>9} {'CPU p50':>9} {'RSS p50':>9}")
    for name, (walls, cpus, rss) in figures.items():
        print(
            f"{name:26} {statistics.median(walls):8.2f}s {pct(walls, 1.0):8.2f}s "
            f"{statistics.median(cpus):8.2f}s {statistics.median(rss):6.0f} MB"
        )
    ours, base = ([statistics.median(f) for f in arm] for arm in figures.values())
    print(
        f"ours / baseline: wall {ours[0] / base[0]:.2f}x, CPU {ours[1] / base[1]:.2f}x, "
        f"RSS {ours[2] / base[2]:.2f}x"
    )


if __name__ == "__main__":
    main()
