"""docs/architecture.md's module map stays true: every module of `core/` and `bot/` is in it
(by its own path, or its package's), and everything it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "docs" / "architecture.md"


def _named() -> set[str]:
    """Paths the map's first column names. `a/b/x.py`, `y.py` means a/b/x.py and a/b/y.py."""
    section = MAP.read_text().split("## Module map", 1)[1]
    named: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        folder = None
        for name in re.findall(r"`([^`]+)`", line.split("|")[1]):
            if "/" in name:
                named.add(name.rstrip("/"))
                folder = name.rstrip("/") if name.endswith("/") else name.rsplit("/", 1)[0]
            elif folder is not None:
                named.add(f"{folder}/{name}")
    return named


def _modules() -> list[str]:
    found = [*ROOT.glob("core/**/*.py"), *ROOT.glob("bot/**/*.py")]
    return sorted(
        str(p.relative_to(ROOT)) for p in found if p.name not in {"__init__.py", "__main__.py"}
    )


def test_every_module_is_on_the_map() -> None:
    named = _named()

    def covered(module: str) -> bool:
        parts = module.split("/")
        return any("/".join(parts[:i]) in named for i in range(1, len(parts) + 1))

    assert [m for m in _modules() if not covered(m)] == []


def test_everything_the_map_names_exists() -> None:
    assert sorted(n for n in _named() if not (ROOT / n).exists()) == []


def test_every_job_kind_is_in_the_table_of_which_process_runs_what(tmp_path: Path) -> None:
    from bot.slack import conversations, file_drop, stop
    from bot.worker.runtime import job_kinds
    from core.wiring import build_container
    from tests.conftest import make_settings

    container = build_container(make_settings(tmp_path))
    try:
        core_kinds = [k.name for k in job_kinds(container, None)]
    finally:
        container.close()
    slack_kinds = [
        conversations.EVENT_JOB,
        conversations.TURN_JOB,
        stop.STOP_JOB,
        stop.STATUS_JOB,
        file_drop.DROP_JOB,
    ]
    section = MAP.read_text().split("### Which process runs what", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"`([a-z_]+\.[a-z_*]+)`", section))
    missing = [
        kind
        for kind in [*core_kinds, *slack_kinds]
        if kind not in listed and not (kind.startswith("schedule.") and "schedule.*" in listed)
    ]
    assert core_kinds and missing == []
