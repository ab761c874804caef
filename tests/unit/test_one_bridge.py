"""One way from async code into blocking code: `core.concurrency` (run_sync, Lane). A
second idiom (anyio's to_thread, asyncio.to_thread, starlette's run_in_threadpool, an
executor of one's own) would be a second thread pool to size and to reason about."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OTHER_BRIDGES = re.compile(
    r"\bto_thread\b|\brun_in_threadpool\b|\brun_in_executor\b|ThreadPoolExecutor"
)


def test_only_core_concurrency_hands_work_to_threads() -> None:
    offenders = []
    for folder in ("core", "bot"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "core" / "concurrency.py":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if OTHER_BRIDGES.search(line) and not line.lstrip().startswith("#"):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
