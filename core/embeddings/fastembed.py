"""Qdrant's fastembed: ONNX models (BGE, E5, Nomic, ...) on CPU, without torch.

Optional (the `fastembed` extra). fastembed **downloads its model from a hub at first use**
— the Hugging Face hub or Qdrant's storage — into its cache folder, so the first embed
needs internet, and offline it fails unless the model was downloaded beforehand (run one
embed while online, or copy the cache folder, `FASTEMBED_CACHE_PATH` or `cache_dir`). That
failure is reported as `EmbeddingModelUnavailable`, like a missing package.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from typing import Any

from core.embeddings.port import (
    EmbeddingModelUnavailable,
    Vectors,
    check_texts,
    empty_vectors,
    package_installed,
    unit_rows,
)

PACKAGE = "fastembed"
DEFAULT_MODEL = "BAAI/bge-small-en-v1.5"
INSTALL_HINT = "install the extra with `pip install 'cosmo-agents[fastembed]'`"


def is_installed() -> bool:
    """Whether the package can be imported, without importing it (and onnxruntime)."""
    return package_installed(PACKAGE)


class FastEmbedEmbedder:
    """A `fastembed.TextEmbedding`, with float32 unit-norm rows.

    Construction only checks that the package is installed; the model is fetched and
    loaded on first use. Its dimension comes from fastembed's model table when the model
    is listed there, so asking for it does not trigger the download. Calls into the ONNX
    session take a lock: fastembed does not document its models as thread-safe.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        cache_dir: str | None = None,
        threads: int | None = None,
        batch_size: int = 64,
    ) -> None:
        if not model:
            raise ValueError("a model name is required")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not is_installed():
            raise EmbeddingModelUnavailable(
                f"COSMO_EMBEDDER=fastembed needs the fastembed package, which is not "
                f"installed; {INSTALL_HINT}"
            )
        self._model_id = model
        self._cache_dir = cache_dir
        self._threads = threads
        self._batch_size = batch_size
        self._model: Any = None
        self._dimension: int | None = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return f"fastembed/{self._model_id}"

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            with self._lock:
                if self._dimension is None:
                    self._dimension = self._listed_dimension() or self._probe_locked()
        return self._dimension

    def load(self) -> None:
        """Fetch and load now rather than on the first `embed`, e.g. to fail fast."""
        with self._lock:
            self._load_locked()

    def _package(self) -> Any:
        try:
            return importlib.import_module(PACKAGE)
        except ImportError as exc:
            raise EmbeddingModelUnavailable(
                f"fastembed could not be imported ({exc}); {INSTALL_HINT}"
            ) from exc

    def _listed_dimension(self) -> int | None:
        try:
            listed = self._package().TextEmbedding.list_supported_models()
        except EmbeddingModelUnavailable:
            raise
        except Exception:  # an API change must not stop us: probing still works
            return None
        for entry in listed:
            if isinstance(entry, dict) and entry.get("model") == self._model_id:
                dim = entry.get("dim")
                return int(dim) if dim else None
        return None

    def _load_locked(self) -> Any:
        if self._model is not None:
            return self._model
        package = self._package()
        try:
            self._model = package.TextEmbedding(
                model_name=self._model_id, cache_dir=self._cache_dir, threads=self._threads
            )
        except Exception as exc:  # unknown model, no network, hub errors, corrupt cache
            raise EmbeddingModelUnavailable(
                f"fastembed could not load {self._model_id!r}: {exc}. fastembed downloads "
                "its model at first use, which needs internet; offline, download it "
                "beforehand into its cache folder (FASTEMBED_CACHE_PATH)"
            ) from exc
        return self._model

    def _encode_locked(self, texts: list[str]) -> Vectors:
        model = self._load_locked()
        rows = list(model.embed(texts, batch_size=self._batch_size))
        return unit_rows(rows)

    def _probe_locked(self) -> int:
        return int(self._encode_locked(["dimension probe"]).shape[1])

    def embed(self, texts: Sequence[str]) -> Vectors:
        items = check_texts(texts)
        if not items:
            return empty_vectors(self.dimension)
        with self._lock:
            out = self._encode_locked(items)
        if self._dimension is None:
            self._dimension = int(out.shape[1])
        return out
