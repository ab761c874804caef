"""Sentence embeddings for long-term memory and knowledge bases; offline, no torch, by default.

Callers depend on `Embedder`; `build_embedder(settings)` decides which implementation they
get (`COSMO_EMBEDDER`), so the choice lives in one place. A missing model is an error naming
the fix, never a quiet switch to another embedder: word overlap instead of meaning is only
used when asked for (`COSMO_EMBEDDER=hashing`). The optional embedders import their heavy
packages (torch, onnxruntime) only when first used.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.embeddings import fastembed as _fastembed
from core.embeddings import sentence_transformers as _sentence_transformers
from core.embeddings import voyage as _voyage
from core.embeddings.fastembed import FastEmbedEmbedder
from core.embeddings.hashing import HashingEmbedder
from core.embeddings.minilm import INSTALL_HINT, MiniLMEmbedder, is_available
from core.embeddings.port import Embedder, EmbeddingModelUnavailable, Vectors
from core.embeddings.sentence_transformers import SentenceTransformersEmbedder
from core.embeddings.voyage import EmbeddingFailed, VoyageEmbedder
from core.errors import ServiceUnavailable

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = [
    "Embedder",
    "EmbeddingFailed",
    "EmbeddingModelUnavailable",
    "FastEmbedEmbedder",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "SentenceTransformersEmbedder",
    "Vectors",
    "VoyageEmbedder",
    "build_embedder",
    "default_embedder",
    "is_available",
]

_log = logging.getLogger(__name__)


def default_embedder() -> Embedder:
    """all-MiniLM-L6-v2, or `EmbeddingModelUnavailable` naming the fix when its files are
    not installed.

    It used to fall back to the hashing embedder with a log line: an install without the
    model then searched by word overlap, and stored vectors under another model name, with
    nothing in `/readyz` or `cosmo doctor` to say so.
    """
    if is_available():
        return MiniLMEmbedder()
    raise EmbeddingModelUnavailable(f"the all-MiniLM-L6-v2 model is not installed; {INSTALL_HINT}")


def build_embedder(settings: Settings) -> Embedder:
    """The embedder `COSMO_EMBEDDER` names, with `COSMO_EMBEDDING_MODEL` or its default.

    Fails at once, rather than on the first embed, when the choice cannot work here: an
    optional package or the MiniLM model missing (`EmbeddingModelUnavailable`, naming the
    fix) or `voyage` without `VOYAGE_API_KEY` (`ServiceUnavailable`).
    """
    model = settings.embedding_model
    if settings.embedder == "hashing":
        return HashingEmbedder()
    if settings.embedder == "sentence-transformers":
        return SentenceTransformersEmbedder(model or _sentence_transformers.DEFAULT_MODEL)
    if settings.embedder == "fastembed":
        return FastEmbedEmbedder(model or _fastembed.DEFAULT_MODEL)
    if settings.embedder == "voyage":
        key = settings.voyage_api_key.get_secret_value() if settings.voyage_api_key else ""
        if not key:
            raise ServiceUnavailable(
                "COSMO_EMBEDDER=voyage needs VOYAGE_API_KEY; set it, or choose another "
                "COSMO_EMBEDDER (minilm runs offline)"
            )
        return VoyageEmbedder(key, model or _voyage.DEFAULT_MODEL, base_url=settings.voyage_api_url)
    if model:
        _log.warning(
            "COSMO_EMBEDDING_MODEL=%s is ignored: the minilm embedder runs all-MiniLM-L6-v2 "
            "only; set COSMO_EMBEDDER=sentence-transformers or fastembed for other models",
            model,
        )
    return default_embedder()
