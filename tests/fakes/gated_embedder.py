"""An embedder a test holds back: each `embed` call (one batch) waits until the test lets
it through, so work that embeds can be watched while it runs, or outlive a request.

    embedder = GatedEmbedder()
    ...upload...                      # answers while no batch may be embedded yet
    embedder.allow(1)                 # one batch goes through
    embedder.open()                   # every batch from now on

A real `Embedder` (the hashing one, held back), not a stand-in for our own code. A batch
never let through fails after `timeout` seconds instead of hanging the test.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from core.embeddings import HashingEmbedder, Vectors


class GatedEmbedder(HashingEmbedder):
    def __init__(self, *, timeout: float = 30.0) -> None:
        super().__init__()
        self.timeout = timeout
        self._permits = threading.Semaphore(0)
        self._open = threading.Event()
        self._lock = threading.Lock()
        self.batches = 0

    def allow(self, batches: int = 1) -> None:
        self._permits.release(batches)

    def open(self) -> None:
        self._open.set()
        self._permits.release(1_000)

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not self._open.is_set() and not self._permits.acquire(timeout=self.timeout):
            raise TimeoutError("the test never let this batch be embedded")
        with self._lock:
            self.batches += 1
        return super().embed(texts)
