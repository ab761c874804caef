"""The wheel and sdist as an operator gets them: `uv build` (the sdist, then the wheel built
from that sdist), installed into a fresh virtual environment and run from a directory that is
not this checkout, so nothing can come from the source tree: `cosmo --help`,
`cosmo db upgrade`, `cosmo doctor`, `cosmo serve` until `/readyz` answers, with the real
all-MiniLM-L6-v2 embedder read from inside the installed package.

Built once per module. Dependencies come from uv's cache (`--offline`, pinned to uv.lock),
which `make install-dev` filled, so the test needs no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.cosmo_process import ROOT, free_port, stop, wait_serving

pytestmark = pytest.mark.package

UV = ROOT / ".venv" / "bin" / "uv"
MODEL_IN_PACKAGE = "core/embeddings/all-MiniLM-L6-v2"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOKEN = "package-smoke-root-token"


@dataclass(frozen=True)
class Installed:
    dist: Path
    venv: Path
    workdir: Path

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("COSMO_", "SLACK_", "ANTHROPIC_", "PYTHON", "VIRTUAL_ENV"))
        }
        env.pop("DATABASE_URL", None)
        env.update(COSMO_DATA_DIR=str(self.workdir / "data"), COSMO_API_TOKEN=TOKEN)
        return env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            env=self.env(),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )


def _uv(*args: str, env: dict[str, str] | None = None) -> str:
    uv = str(UV) if UV.exists() else shutil.which("uv")
    assert uv, "uv is not installed: run `make install-dev`"
    done = subprocess.run(
        [uv, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("package")
    dist = base / "dist"
    _uv("build", "--offline", "--out-dir", str(dist))
    # The dependencies uv.lock pins (from uv's cache), then the wheel itself; `pip check`
    # then proves the wheel's declared requirements are all met by them.
    venv = base / "venv"
    _uv("venv", "--offline", "--python", sys.executable, str(venv))
    _uv(
        "sync", "--frozen", "--offline", "--no-install-project", "--no-dev",
        env={"UV_PROJECT_ENVIRONMENT": str(venv)},
    )  # fmt: skip
    (wheel,) = dist.glob("cosmo_agents-*.whl")
    python = str(venv / "bin" / "python")
    _uv("pip", "install", "--offline", "--no-deps", "--python", python, str(wheel))
    _uv("pip", "check", "--python", python)
    workdir = base / "elsewhere"
    workdir.mkdir()
    return Installed(dist, venv, workdir)


def test_the_sdist_and_the_wheel_carry_the_model_and_the_migrations(installed: Installed) -> None:
    (wheel,) = installed.dist.glob("cosmo_agents-*.whl")
    (sdist,) = installed.dist.glob("cosmo_agents-*.tar.gz")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        f"{MODEL_IN_PACKAGE}/model.safetensors",
        f"{MODEL_IN_PACKAGE}/tokenizer.json",
        f"{MODEL_IN_PACKAGE}/config.json",
        f"{MODEL_IN_PACKAGE}/1_Pooling/config.json",
        f"{MODEL_IN_PACKAGE}/sentence_bert_config.json",
        "migrations/env.py",
        "migrations/script.py.mako",
    ):
        assert needed in names, needed
    migrations = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("0*.py"))
    assert migrations and all(f"migrations/versions/{m}" in names for m in migrations)
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert f"{MODEL_IN_PACKAGE}/model.safetensors" in in_sdist
    assert {"hatch_build.py", "pyproject.toml", "README.md"} <= in_sdist


def test_the_installed_command_migrates_checks_and_embeds_by_meaning(
    installed: Installed,
) -> None:
    helped = installed.run("cosmo", "--help")
    assert helped.returncode == 0 and "serve" in helped.stdout and "worker" in helped.stdout

    upgraded = installed.run("cosmo", "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "database schema at revision" in upgraded.stdout

    doctor = installed.run("cosmo", "doctor")
    line = next(x for x in doctor.stdout.splitlines() if x.startswith("embedder"))
    site = installed.venv / "lib"
    assert line.startswith(f"embedder (minilm): ok, {MINILM} from {site}"), line
    assert line.endswith(MODEL_IN_PACKAGE.rsplit("/", 1)[1]), line

    # The code and its model both come from the venv, never from this checkout.
    script = (
        "import json, core; from core.embeddings import MiniLMEmbedder; "
        "v = MiniLMEmbedder().embed(['a car', 'an automobile', 'a ripe banana']); "
        "print(json.dumps([core.__file__, float(v[0] @ v[1]), float(v[0] @ v[2])]))"
    )
    probe = installed.run("python", "-c", script)
    assert probe.returncode == 0, probe.stderr
    where, near, far = json.loads(probe.stdout)
    assert Path(where).is_relative_to(installed.venv) and near > far + 0.2


@pytest.fixture
def served(installed: Installed) -> Iterator[str]:
    assert installed.run("cosmo", "db", "upgrade").returncode == 0
    port = free_port()
    log = installed.workdir / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(installed.venv / "bin" / "cosmo"), "serve", "--port", str(port), "--workers", "0"],
            env=installed.env(),
            cwd=installed.workdir,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield wait_serving(process, port, log, time.monotonic() + 60)
    finally:
        stop(process)
    assert f"embedder: minilm ({MINILM})" in log.read_text(errors="replace")


def test_the_installed_server_is_healthy_ready_and_indexes_with_minilm(served: str) -> None:
    assert httpx.get(f"{served}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{served}/readyz").json()["schema"]["current"]
    created = httpx.post(
        f"{served}/api/v1/knowledge-bases",
        json={"name": "handbook"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["embedding_model"] == MINILM
