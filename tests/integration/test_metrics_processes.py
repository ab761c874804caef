"""What worker processes count reaches the scrape of the process that supervises them:
a real child process with `PROMETHEUS_MULTIPROC_DIR` (as `cosmo serve` starts its workers)
records into the directory, and `core.metrics.merged` adds it to this process's values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.exposition import generate_latest

from core import metrics
from tests.metrics_support import parse, value

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
from core import metrics
assert metrics.MULTIPROCESS
metrics.turn_finished("merge-bot", "completed", 2.0)
metrics.model_usage("merge-bot", "claude-sonnet-4-6", input_tokens=7, output_tokens=5,
                    cache_read_tokens=0, cache_write_tokens=0, cost_micros=500)
"""


class _Merged:
    def __init__(self, worker_dir: Path) -> None:
        self.worker_dir = worker_dir

    def collect(self):
        return metrics.merged((), self.worker_dir)


def test_two_workers_and_this_process_add_up_in_one_scrape(tmp_path: Path) -> None:
    workers = metrics.prepare_worker_dir(tmp_path / "metrics")
    env = {**os.environ, metrics.MULTIPROC_ENV: str(workers)}
    for _ in range(2):  # two processes, as two supervised workers (or one restarted)
        subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT, check=True, timeout=120)
    own = parse(generate_latest(metrics.REGISTRY).decode())
    before = value(own, "cosmo_turns_total", agent="merge-bot")
    metrics.turn_finished("merge-bot", "completed", 1.0)  # this process's own

    got = parse(generate_latest(_Merged(workers)).decode())

    assert value(got, "cosmo_turns_total", agent="merge-bot") == before + 3
    assert value(got, "cosmo_turn_duration_seconds_count", agent="merge-bot") >= 3
    assert value(got, "cosmo_model_tokens_total", agent="merge-bot", kind="input") == 14
    assert value(got, "cosmo_model_cost_usd_total", agent="merge-bot") == 0.001
    # One family per name: the exposition would be refused with a name twice.
    text = generate_latest(_Merged(workers)).decode()
    assert text.count("# TYPE cosmo_turns_total counter") == 1


def test_a_stale_directory_is_emptied_before_workers_start(tmp_path: Path) -> None:
    stale = tmp_path / "metrics"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"old")
    assert list(metrics.prepare_worker_dir(stale).iterdir()) == []
