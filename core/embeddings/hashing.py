"""A lexical stand-in for the real model: feature hashing of words and character n-grams.

It exists so memory and knowledge-base search can work (by word overlap, not meaning)
without the model when an operator asks for it (`COSMO_EMBEDDER=hashing`), and so tests that
only need
"some embedder" do not pay for loading 90 MB of weights. It is deterministic across
processes and platforms — vectors may be stored and compared later — which is why it hashes
with BLAKE2 rather than Python's per-process salted `hash()`.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise

import numpy as np

from core.embeddings.port import Vectors, check_texts, empty_vectors

_WORD = re.compile(r"\w+")
_EMPTY_FEATURE = "e:"  # gives texts with no words a fixed unit vector instead of a zero one

# Relative weight of each feature family after each is normalised on its own, so a long
# text's many character n-grams cannot drown its words, nor the reverse.
_GROUP_WEIGHTS = {"w": 1.0, "b": 0.5, "c": 1.0}


def _normalise(text: str) -> str:
    """Fold case and accents so "Café" and "cafe" share features, as the model does."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


@lru_cache(maxsize=1 << 16)
def _slot(feature: str, dimension: int) -> tuple[int, float]:
    """Bucket and sign of one feature; the sign makes collisions cancel out on average."""
    digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    return digest % dimension, (1.0 if digest >> 63 else -1.0)


def _features(text: str, ngram_range: tuple[int, int]) -> dict[str, Counter[str]]:
    words = _WORD.findall(_normalise(text))
    groups: dict[str, Counter[str]] = {g: Counter() for g in _GROUP_WEIGHTS}
    groups["w"].update(f"w:{w}" for w in words)
    groups["b"].update(f"b:{a} {b}" for a, b in pairwise(words))
    low, high = ngram_range
    for word in words:
        padded = f"<{word}>"
        for n in range(low, high + 1):
            groups["c"].update(f"c:{padded[i : i + n]}" for i in range(len(padded) - n + 1))
    if not words:
        groups["w"][_EMPTY_FEATURE] = 1
    return groups


class HashingEmbedder:
    """Signed feature hashing of words, word bigrams and in-word char n-grams, L2-normalised.

    Cheap (no model, no I/O) and stateless, hence safe from any number of threads. The
    parameters are part of `model_name` because changing them changes every vector.
    """

    def __init__(self, dimension: int = 384, *, ngram_range: tuple[int, int] = (3, 5)) -> None:
        if dimension < 2:
            raise ValueError("dimension must be at least 2")
        low, high = ngram_range
        if not 1 <= low <= high:
            raise ValueError("ngram_range must satisfy 1 <= low <= high")
        self._dimension = dimension
        self._ngram_range = (low, high)

    @property
    def model_name(self) -> str:
        low, high = self._ngram_range
        return f"cosmo-hashing-v1-d{self._dimension}-c{low}{high}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def _vector(self, text: str) -> Vectors:
        out = np.zeros(self._dimension, dtype=np.float64)
        for group, counts in _features(text, self._ngram_range).items():
            if not counts:
                continue
            vec = np.zeros(self._dimension, dtype=np.float64)
            for feature, count in counts.items():
                index, sign = _slot(feature, self._dimension)
                vec[index] += sign * (1.0 + math.log(count))  # sublinear: repeats count less
            norm = float(np.linalg.norm(vec))
            if norm > 0.0:
                out += _GROUP_WEIGHTS[group] * vec / norm
        norm = float(np.linalg.norm(out))
        if norm == 0.0:  # every feature cancelled out; astronomically rare, still unit norm
            index, _ = _slot(_EMPTY_FEATURE, self._dimension)
            out[index], norm = 1.0, 1.0
        return (out / norm).astype(np.float32)

    def embed(self, texts: Sequence[str]) -> Vectors:
        items = check_texts(texts)
        if not items:
            return empty_vectors(self._dimension)
        return np.stack([self._vector(text) for text in items])
