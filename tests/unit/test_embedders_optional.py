"""Choosing the embedder from settings, and the optional sentence-transformers and fastembed
embedders.

Neither optional package is installed here, and nothing may require them, so two kinds of
test: with the package absent (forced absent via `sys.modules`, so the tests mean the same
wherever they run) the error must name the extra to install; with a stand-in module in
`sys.modules` that has the few documented entry points we call
(`SentenceTransformer(...).encode`, `get_sentence_embedding_dimension`;
`TextEmbedding(...).embed`, `TextEmbedding.list_supported_models`), our side — laziness,
float32 unit rows, locking, error mapping — must hold. The stand-ins deliberately return
float64 vectors that are not unit length. Voyage over HTTP is in
tests/integration/test_voyage_embedder.py.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import logging
import sys
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.embeddings import (
    Embedder,
    EmbeddingModelUnavailable,
    FastEmbedEmbedder,
    MiniLMEmbedder,
    SentenceTransformersEmbedder,
    VoyageEmbedder,
    build_embedder,
)
from core.errors import ServiceUnavailable
from tests.conftest import make_settings

TEXTS = ["first note", "second, longer note about refunds", "", "ABC-123"]


def _raw(text: str, dimension: int) -> np.ndarray:
    """A deterministic, non-unit float64 vector per text (index 0 never zero)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(text.encode()).digest()[:8]))
    vec = rng.normal(size=dimension) * 5.0
    vec[0] = 3.0 + len(text)
    return vec


def _unit(vec: np.ndarray) -> np.ndarray:
    unit: np.ndarray = (vec / np.linalg.norm(vec)).astype(np.float32)
    return unit


def _module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def _assert_unit_float32(vectors: np.ndarray, rows: int, dimension: int) -> None:
    assert vectors.shape == (rows, dimension)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# --- stand-ins for the optional packages ------------------------------------------------------


class _StubSentenceTransformer:
    """Mimics `sentence_transformers.SentenceTransformer`, and notices overlapping encodes."""

    instances: list[_StubSentenceTransformer] = []
    fail_with: Exception | None = None
    dimension = 8

    def __init__(self, model_name_or_path: str, device: str | None = None) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.model = model_name_or_path
        self.device = device
        self.active = 0
        self.overlapped = False
        self.instances.append(self)

    def get_sentence_embedding_dimension(self) -> int:
        return self.dimension

    def encode(
        self,
        sentences: list[str],
        *,
        batch_size: int,
        convert_to_numpy: bool,
        normalize_embeddings: bool,
        show_progress_bar: bool,
    ) -> np.ndarray:
        assert convert_to_numpy and not show_progress_bar
        self.active += 1
        self.overlapped |= self.active > 1
        time.sleep(0.002)
        self.active -= 1
        return np.stack([_raw(s, self.dimension) for s in sentences])  # ignores normalize


class _StubTextEmbedding:
    """Mimics `fastembed.TextEmbedding`: downloads (here: maybe fails) in its constructor."""

    instances: list[_StubTextEmbedding] = []
    fail_with: Exception | None = None
    listed = {"BAAI/bge-small-en-v1.5": 6}
    actual_dimension = {"BAAI/bge-small-en-v1.5": 6, "intfloat/unlisted-model": 10}

    def __init__(
        self, model_name: str, cache_dir: str | None = None, threads: int | None = None
    ) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.model = model_name
        self.instances.append(self)

    @classmethod
    def list_supported_models(cls) -> list[dict[str, Any]]:
        return [{"model": m, "dim": d, "description": "stub"} for m, d in cls.listed.items()]

    def embed(self, documents: list[str], batch_size: int = 256) -> Iterator[np.ndarray]:
        dimension = self.actual_dimension[self.model]
        for text in documents:  # a generator of 1-d arrays, as fastembed yields
            yield _raw(text, dimension)


@pytest.fixture
def sentence_transformers_stub(monkeypatch: pytest.MonkeyPatch) -> type[_StubSentenceTransformer]:
    monkeypatch.setattr(_StubSentenceTransformer, "instances", [])
    monkeypatch.setattr(_StubSentenceTransformer, "fail_with", None)
    stub = _module("sentence_transformers", SentenceTransformer=_StubSentenceTransformer)
    monkeypatch.setitem(sys.modules, "sentence_transformers", stub)
    return _StubSentenceTransformer


@pytest.fixture
def fastembed_stub(monkeypatch: pytest.MonkeyPatch) -> type[_StubTextEmbedding]:
    monkeypatch.setattr(_StubTextEmbedding, "instances", [])
    monkeypatch.setattr(_StubTextEmbedding, "fail_with", None)
    monkeypatch.setitem(
        sys.modules, "fastembed", _module("fastembed", TextEmbedding=_StubTextEmbedding)
    )
    return _StubTextEmbedding


@pytest.fixture
def without_optional_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """`None` in sys.modules makes both `find_spec` and `import` report the package absent."""
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setitem(sys.modules, "fastembed", None)


@pytest.fixture
def no_voyage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VOYAGE_API_KEY", "VOYAGE_API_URL", "COSMO_EMBEDDER", "COSMO_EMBEDDING_MODEL"):
        monkeypatch.delenv(name, raising=False)


# --- build_embedder -------------------------------------------------------------------------


def test_minilm_is_the_default_and_the_numpy_model(tmp_path: Path, no_voyage_env: None) -> None:
    embedder = build_embedder(make_settings(tmp_path))

    assert isinstance(embedder, MiniLMEmbedder)
    assert embedder.model_name == "sentence-transformers/all-MiniLM-L6-v2"


def test_minilm_warns_that_a_model_name_is_ignored(
    tmp_path: Path, no_voyage_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, COSMO_EMBEDDER="minilm", COSMO_EMBEDDING_MODEL="bge-m3")

    with caplog.at_level(logging.WARNING, logger="core.embeddings"):
        embedder = build_embedder(settings)

    assert isinstance(embedder, MiniLMEmbedder)
    assert "COSMO_EMBEDDING_MODEL=bge-m3 is ignored" in caplog.text


@pytest.mark.parametrize(
    ("choice", "extra"),
    [("sentence-transformers", "sentence-transformers"), ("fastembed", "fastembed")],
)
def test_an_optional_embedder_without_its_package_names_the_extra(
    tmp_path: Path, no_voyage_env: None, without_optional_packages: None, choice: str, extra: str
) -> None:
    settings = make_settings(tmp_path, COSMO_EMBEDDER=choice)

    with pytest.raises(EmbeddingModelUnavailable) as caught:
        build_embedder(settings)

    assert f"pip install 'cosmo-agents[{extra}]'" in caught.value.detail
    assert f"COSMO_EMBEDDER={choice}" in caught.value.detail


def test_the_sentence_transformers_hint_pins_cpu_torch(
    without_optional_packages: None,
) -> None:
    with pytest.raises(EmbeddingModelUnavailable, match=r"torch==2\.13\.0"):
        SentenceTransformersEmbedder()


def test_voyage_without_a_key_is_a_configuration_error(tmp_path: Path, no_voyage_env: None) -> None:
    settings = make_settings(tmp_path, COSMO_EMBEDDER="voyage", VOYAGE_API_KEY="")

    with pytest.raises(ServiceUnavailable, match="COSMO_EMBEDDER=voyage needs VOYAGE_API_KEY"):
        build_embedder(settings)


@pytest.mark.parametrize(
    ("model", "name"),
    [(None, "voyage/voyage-3.5"), ("voyage-code-3", "voyage/voyage-code-3")],
)
def test_voyage_takes_its_model_and_url_from_settings(
    tmp_path: Path, no_voyage_env: None, model: str | None, name: str
) -> None:
    settings = make_settings(
        tmp_path,
        COSMO_EMBEDDER="voyage",
        VOYAGE_API_KEY="pa-test",
        VOYAGE_API_URL="http://voyage.invalid/v1/",
        **({"COSMO_EMBEDDING_MODEL": model} if model else {}),
    )

    embedder = build_embedder(settings)

    assert isinstance(embedder, VoyageEmbedder)
    assert (embedder.model_name, embedder.dimension) == (name, 1024)  # known: no request
    assert "http://voyage.invalid/v1/embeddings" in repr(embedder)
    embedder.close()


def test_sentence_transformers_is_built_with_the_configured_model(
    tmp_path: Path, no_voyage_env: None, sentence_transformers_stub: type[_StubSentenceTransformer]
) -> None:
    settings = make_settings(
        tmp_path, COSMO_EMBEDDER="sentence-transformers", COSMO_EMBEDDING_MODEL="BAAI/bge-m3"
    )

    embedder = build_embedder(settings)

    assert isinstance(embedder, SentenceTransformersEmbedder)
    assert embedder.model_name == "sentence-transformers/BAAI/bge-m3"
    embedder.embed(["x"])
    assert [m.model for m in sentence_transformers_stub.instances] == ["BAAI/bge-m3"]


def test_fastembed_is_built_with_its_default_model(
    tmp_path: Path, no_voyage_env: None, fastembed_stub: type[_StubTextEmbedding]
) -> None:
    embedder = build_embedder(make_settings(tmp_path, COSMO_EMBEDDER="fastembed"))

    assert isinstance(embedder, FastEmbedEmbedder)
    assert embedder.model_name == "fastembed/BAAI/bge-small-en-v1.5"


def test_every_embedder_satisfies_the_port(
    sentence_transformers_stub: type[_StubSentenceTransformer],
    fastembed_stub: type[_StubTextEmbedding],
) -> None:
    voyage = VoyageEmbedder("pa-test")
    for embedder in (SentenceTransformersEmbedder(), FastEmbedEmbedder(), voyage):
        assert isinstance(embedder, Embedder)
    voyage.close()


# --- sentence-transformers ------------------------------------------------------------------


def test_sentence_transformers_loads_lazily_and_returns_unit_float32_rows(
    sentence_transformers_stub: type[_StubSentenceTransformer],
) -> None:
    embedder = SentenceTransformersEmbedder()
    assert sentence_transformers_stub.instances == []  # construction loads nothing

    vectors = embedder.embed(TEXTS)

    _assert_unit_float32(vectors, len(TEXTS), 8)
    for row, text in zip(vectors, TEXTS, strict=True):
        np.testing.assert_allclose(row, _unit(_raw(text, 8)), atol=1e-6)
    assert embedder.dimension == 8
    assert embedder.embed([]).shape == (0, 8)
    assert len(sentence_transformers_stub.instances) == 1


def test_sentence_transformers_default_shares_minilms_name(
    sentence_transformers_stub: type[_StubSentenceTransformer],
) -> None:
    # Same model, same vectors (the NumPy port is pinned to sentence-transformers' output),
    # so switching between the two must not ask for a re-index.
    assert SentenceTransformersEmbedder().model_name == MiniLMEmbedder.model_name
    assert SentenceTransformersEmbedder("all-MiniLM-L6-v2").model_name == MiniLMEmbedder.model_name


def test_sentence_transformers_serialises_encode_and_loads_once(
    sentence_transformers_stub: type[_StubSentenceTransformer],
) -> None:
    embedder = SentenceTransformersEmbedder()
    batches = [[f"thread {t} text {i}" for i in range(3)] for t in range(8)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(embedder.embed, batches))

    (model,) = sentence_transformers_stub.instances
    assert not model.overlapped
    for texts, vectors in zip(batches, results, strict=True):
        np.testing.assert_allclose(vectors, np.stack([_unit(_raw(t, 8)) for t in texts]), atol=1e-6)


def test_sentence_transformers_load_failure_is_model_unavailable(
    sentence_transformers_stub: type[_StubSentenceTransformer],
) -> None:
    sentence_transformers_stub.fail_with = OSError("couldn't connect to 'https://huggingface.co'")
    embedder = SentenceTransformersEmbedder("BAAI/bge-m3")

    with pytest.raises(EmbeddingModelUnavailable, match=r"'BAAI/bge-m3'.*huggingface\.co.*hub"):
        embedder.embed(["hello"])


# --- fastembed ------------------------------------------------------------------------------


def test_fastembed_dimension_comes_from_its_table_without_downloading(
    fastembed_stub: type[_StubTextEmbedding],
) -> None:
    embedder = FastEmbedEmbedder()

    assert embedder.dimension == 6
    assert embedder.embed([]).shape == (0, 6)
    assert fastembed_stub.instances == []  # the constructor is what downloads


def test_fastembed_returns_unit_float32_rows_in_order(
    fastembed_stub: type[_StubTextEmbedding],
) -> None:
    vectors = FastEmbedEmbedder().embed(TEXTS)

    _assert_unit_float32(vectors, len(TEXTS), 6)
    for row, text in zip(vectors, TEXTS, strict=True):
        np.testing.assert_allclose(row, _unit(_raw(text, 6)), atol=1e-6)


def test_fastembed_probes_the_dimension_of_an_unlisted_model(
    fastembed_stub: type[_StubTextEmbedding],
) -> None:
    embedder = FastEmbedEmbedder("intfloat/unlisted-model")

    assert embedder.dimension == 10
    _assert_unit_float32(embedder.embed(["a", "b"]), 2, 10)
    assert len(fastembed_stub.instances) == 1


def test_fastembed_offline_download_failure_is_model_unavailable(
    fastembed_stub: type[_StubTextEmbedding],
) -> None:
    fastembed_stub.fail_with = ValueError(
        "Could not load model BAAI/bge-small-en-v1.5 from any source."
    )
    embedder = FastEmbedEmbedder()

    with pytest.raises(EmbeddingModelUnavailable) as caught:
        embedder.embed(["hello"])

    assert "Could not load model" in caught.value.detail
    assert "needs internet" in caught.value.detail


def test_fastembed_serialises_calls(fastembed_stub: type[_StubTextEmbedding]) -> None:
    embedder = FastEmbedEmbedder()
    inside = threading.Semaphore(1)
    overlapped: list[bool] = []
    original = _StubTextEmbedding.embed

    def guarded(self: _StubTextEmbedding, documents: list[str], batch_size: int = 256) -> Any:
        if not inside.acquire(blocking=False):
            overlapped.append(True)
            return original(self, documents, batch_size)
        try:
            time.sleep(0.002)
            return list(original(self, documents, batch_size))
        finally:
            inside.release()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_StubTextEmbedding, "embed", guarded)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(embedder.embed, [[f"t{i}"] for i in range(16)]))

    assert overlapped == []
    assert len(fastembed_stub.instances) == 1
