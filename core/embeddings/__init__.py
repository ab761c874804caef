"""Sentence embeddings for long-term memory and knowledge bases, offline and without torch.

Callers depend on `Embedder`; `default_embedder()` decides which implementation they get,
so the choice (and the fallback when the model package is missing) lives in one place.
"""

from __future__ import annotations

import logging

from core.embeddings.hashing import HashingEmbedder
from core.embeddings.minilm import INSTALL_HINT, MiniLMEmbedder, is_available
from core.embeddings.port import Embedder, EmbeddingModelUnavailable, Vectors

__all__ = [
    "Embedder",
    "EmbeddingModelUnavailable",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "Vectors",
    "default_embedder",
    "is_available",
]

_log = logging.getLogger(__name__)


def default_embedder(*, allow_fallback: bool = True) -> Embedder:
    """MiniLM when its files are installed, else the lexical fallback (or an error).

    The fallback is logged as a warning rather than silent: search quality drops from
    semantic to word overlap, and stored vectors carry a different `model_name`.
    """
    if is_available():
        return MiniLMEmbedder()
    if not allow_fallback:
        raise EmbeddingModelUnavailable(
            f"the all-MiniLM-L6-v2 model is not installed; {INSTALL_HINT}"
        )
    _log.warning(
        "all-MiniLM-L6-v2 is not installed; using the lexical hashing embedder instead (%s)",
        INSTALL_HINT,
    )
    return HashingEmbedder()
