"""Any sentence-transformers model, for those who want one MiniLM in NumPy does not cover.

Optional: sentence-transformers needs torch (1.4 GB, seconds to import), so it lives in the
`sentence-transformers` extra and is imported only when this embedder first embeds. An
unpinned `pip install torch` pulls a multi-GB CUDA build; pinning `torch==2.13.0` in the
same install got the CPU wheel on our machines (see FIELD-NOTES).
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

PACKAGE = "sentence_transformers"
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
INSTALL_HINT = (
    "install the extra with `pip install 'cosmo-agents[sentence-transformers]' "
    "torch==2.13.0` (pinning torch gets the CPU wheel instead of a multi-GB CUDA build)"
)
_PREFIX = "sentence-transformers/"


def is_installed() -> bool:
    """Whether the package can be imported, without paying for importing it (and torch)."""
    return package_installed(PACKAGE)


class SentenceTransformersEmbedder:
    """A `sentence_transformers.SentenceTransformer`, with float32 unit-norm rows.

    Construction only checks that the package is installed (so a misconfigured deployment
    fails at startup); the model loads, and may download from the Hugging Face hub, on
    first use. `encode` is not documented as thread-safe, so calls take a lock.

    `model_name` is the hub id under `sentence-transformers/`: the default model's name is
    the same as `MiniLMEmbedder`'s, on purpose, because the NumPy port reproduces this very
    model's vectors (to 1e-7), so switching between the two needs no re-index.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str | None = None,
        batch_size: int = 32,
    ) -> None:
        if not model:
            raise ValueError("a model name is required")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if not is_installed():
            raise EmbeddingModelUnavailable(
                f"COSMO_EMBEDDER=sentence-transformers needs the sentence-transformers "
                f"package, which is not installed; {INSTALL_HINT}"
            )
        self._model_id = model
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None
        self._dimension: int | None = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        model = self._model_id
        return model if model.startswith(_PREFIX) else _PREFIX + model

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            with self._lock:
                self._load_locked()
        assert self._dimension is not None
        return self._dimension

    def load(self) -> None:
        """Load now rather than on the first `embed`, e.g. at startup to fail fast."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> Any:
        if self._model is not None:
            return self._model
        try:
            package = importlib.import_module(PACKAGE)
        except ImportError as exc:
            raise EmbeddingModelUnavailable(
                f"sentence-transformers could not be imported ({exc}); {INSTALL_HINT}"
            ) from exc
        try:
            model = package.SentenceTransformer(self._model_id, device=self._device)
        except Exception as exc:  # hub, network, disk and format errors all mean "no model"
            raise EmbeddingModelUnavailable(
                f"could not load the sentence-transformers model {self._model_id!r}: {exc}. "
                "Models download from the Hugging Face hub at first use; offline, download "
                "it beforehand or set COSMO_EMBEDDING_MODEL to a local folder"
            ) from exc
        # sentence-transformers 6 renamed the method (the old name warns); 3.x-5.x have only it.
        probe: Any = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension", None
        )
        size = probe() if callable(probe) else None
        if not size:  # some models cannot tell without running
            size = self._encode(model, ["dimension probe"]).shape[1]
        self._dimension = int(size)
        self._model = model
        return model

    def _encode(self, model: Any, texts: list[str]) -> Vectors:
        raw = model.encode(
            texts,
            batch_size=self._batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        # Normalised again: not every model honours the flag the same way, and the port
        # promises unit rows whatever the model did.
        return unit_rows(raw)

    def embed(self, texts: Sequence[str]) -> Vectors:
        items = check_texts(texts)
        if not items:
            return empty_vectors(self.dimension)
        with self._lock:
            return self._encode(self._load_locked(), items)
