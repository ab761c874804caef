"""The one seam between Cosmo and whatever turns text into vectors.

Long-term memory and the knowledge bases depend on this Protocol only, so the real model,
the lexical fallback and a test fake are interchangeable, and nothing above this package
ever imports numpy-heavy model code or learns where the weights live.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from core.errors import CosmoError

Vectors = npt.NDArray[np.float32]
"""Shape (n, dimension), float32, every row of unit L2 norm.

Unit rows make cosine similarity a plain dot product, which is what stores index on;
float32 halves the memory of float64 and is all the precision the models have anyway.
"""


@runtime_checkable
class Embedder(Protocol):
    """Text-to-vector encoder.

    Vectors from different models live in unrelated spaces, so whoever persists vectors must
    also persist `model_name` (and `dimension`) and re-embed when either changes, rather than
    compare across models. The members are read-only properties so that implementations may
    use plain class attributes or computed values alike.
    """

    @property
    def model_name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Rows in input order; an empty input yields shape (0, dimension).

        Must be safe to call from several threads at once: agents embed concurrently.
        """
        ...


class EmbeddingModelUnavailable(CosmoError):
    """The model's files are not installed, so callers can choose to fall back or fail loudly.

    Kept separate from generic I/O errors because the fix is an install step, not a retry.
    """

    title = "Embedding model unavailable"


def check_texts(texts: Sequence[str]) -> list[str]:
    """Reject a bare string, which is a `Sequence[str]` too and would embed char by char."""
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of strings, not a single string; wrap it")
    items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    return items


def empty_vectors(dimension: int) -> Vectors:
    return np.zeros((0, dimension), dtype=np.float32)


def unit_rows(raw: object) -> Vectors:
    """A model's output as the port promises it: float32 rows of unit length (a zero row
    stays zero rather than turning into NaNs)."""
    out = np.array(raw, dtype=np.float32, ndmin=2)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out /= np.maximum(norms, np.float32(1e-12))
    return out


def package_installed(name: str) -> bool:
    """Whether `name` can be imported, without paying for importing it (torch, onnxruntime)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False
    except ValueError:  # in sys.modules without a spec: imported some unusual way, but there
        return True
