"""Voyage AI's hosted embeddings, over its REST API with a plain `httpx.Client`.

Wire format (docs.voyageai.com/reference/embeddings-api): `POST {base}/embeddings` with
`Authorization: Bearer <key>` and `{"input": [...], "model", "input_type"?, "truncation"}`;
the answer is `{"data": [{"embedding": [...], "index": i}], "usage": {"total_tokens"}}`.
A request may carry at most 1,000 texts (128 in older revisions of the docs, which is
what we send by default) and at most a per-model number of tokens, and every text must be
non-empty. Errors are 400 (bad request, batch too large), 401 (key), 403 (IP refused),
429 (rate limit) and 5xx; only 429 and 5xx are worth retrying.

No `voyageai` SDK: one endpoint does not justify another dependency, and owning the HTTP
lets tests run the real client against a local fake (tests/fakes/voyage_api.py).
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import numpy as np

from core.embeddings.port import Vectors, check_texts, empty_vectors
from core.errors import ServiceUnavailable
from core.tls import tls_context

DEFAULT_MODEL = "voyage-3.5"
DEFAULT_BASE_URL = "https://api.voyageai.com/v1"
MAX_TEXTS_PER_REQUEST = 1000

# Default output dimension of the current text models (all support 256/512/2048 on request,
# which this embedder does not ask for). Models not listed are probed with one call.
KNOWN_DIMENSIONS: dict[str, int] = {
    "voyage-4-large": 1024,
    "voyage-4": 1024,
    "voyage-4-lite": 1024,
    "voyage-3-large": 1024,
    "voyage-3.5": 1024,
    "voyage-3.5-lite": 1024,
    "voyage-3": 1024,
    "voyage-3-lite": 512,
    "voyage-code-3": 1024,
    "voyage-finance-2": 1024,
    "voyage-law-2": 1024,
}

# Most tokens one request may carry, per the API reference; unknown models get the
# smallest, so a batch is at worst split more than it had to be.
_TOKENS_PER_REQUEST: dict[str, int] = {
    "voyage-4-lite": 1_000_000,
    "voyage-3.5-lite": 1_000_000,
    "voyage-3-lite": 1_000_000,
    "voyage-4": 320_000,
    "voyage-3.5": 320_000,
    "voyage-3": 320_000,
    "voyage-2": 320_000,
}
_DEFAULT_TOKENS_PER_REQUEST = 120_000

_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_DETAIL = 300

_log = logging.getLogger(__name__)


class EmbeddingFailed(ServiceUnavailable):
    """A remote embedder refused or failed a request, after any retries worth making.

    A `ServiceUnavailable`, so the REST layer answers 503 and an agent turn reports an
    outage rather than a bad request. Messages never contain the API key.
    """

    title = "Embedding failed"

    def __init__(self, detail: str, *, status: int | None = None) -> None:
        super().__init__(detail)
        self.status = status


def _estimated_tokens(text: str) -> int:
    """An upper bound: byte-level BPE never makes more tokens than the text has bytes."""
    return len(text.encode("utf-8")) + 1


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait (`Retry-After` as seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


class VoyageEmbedder:
    """Voyage AI text embeddings: float32, unit-norm rows, in input order.

    Texts go in batches of at most `batch_size` and within the model's token limit per
    request. 429, 408 and 5xx answers and connection failures are retried up to
    `max_attempts` in all, with exponential backoff (`backoff`, doubling, with jitter) that
    never undercuts the server's `Retry-After`; a wait longer than `max_delay` is not
    sat out but reported. Other 4xx fail at once with `EmbeddingFailed`.

    `input_type` ("query"/"document") is left unset by default: the port does not say
    which a text is, and Voyage documents vectors with and without it as compatible.
    Empty texts, which the API rejects, are sent as a single space.

    `httpx.Client` is thread-safe, and the one piece of mutable state (a probed dimension)
    is set once under a lock, so `embed` may run from many threads at once.
    """

    def __init__(
        self,
        api_key: str,
        model: str = DEFAULT_MODEL,
        *,
        base_url: str = DEFAULT_BASE_URL,
        transport: httpx.BaseTransport | None = None,
        input_type: Literal["query", "document"] | None = None,
        batch_size: int = 128,
        max_attempts: int = 4,
        backoff: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise ValueError("a Voyage API key is required")
        if not model:
            raise ValueError("a Voyage model name is required")
        if not 1 <= batch_size <= MAX_TEXTS_PER_REQUEST:
            raise ValueError(f"batch_size must be between 1 and {MAX_TEXTS_PER_REQUEST}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._api_key = api_key
        self._model = model
        self._url = base_url.rstrip("/") + "/embeddings"
        self._input_type = input_type
        self._batch_size = batch_size
        self._token_budget = _TOKENS_PER_REQUEST.get(model, _DEFAULT_TOKENS_PER_REQUEST)
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_delay = max_delay
        self._sleep = sleep
        self._dimension = KNOWN_DIMENSIONS.get(model)
        self._lock = threading.Lock()
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            follow_redirects=False,
            verify=tls_context(),
        )

    def __repr__(self) -> str:  # never show the key
        return f"VoyageEmbedder(model={self._model!r}, url={self._url!r})"

    @property
    def model_name(self) -> str:
        return f"voyage/{self._model}"

    @property
    def dimension(self) -> int:
        """The model's vector size: from the known table, else learnt from one request."""
        if self._dimension is None:
            with self._lock:
                if self._dimension is None:
                    self._dimension = len(self._request(["dimension probe"])[0])
        return self._dimension

    def close(self) -> None:
        self._client.close()

    def embed(self, texts: Sequence[str]) -> Vectors:
        items = check_texts(texts)
        if not items:
            return empty_vectors(self.dimension)
        rows: list[list[float]] = []
        for batch in self._batches([text or " " for text in items]):
            rows.extend(self._request(batch))
        dimension = self.dimension
        if any(len(row) != dimension for row in rows):
            sizes = sorted({len(row) for row in rows})
            raise EmbeddingFailed(
                f"Voyage returned {sizes}-dimensional vectors for {self._model}; "
                f"expected {dimension}"
            )
        out = np.asarray(rows, dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if not np.all(np.isfinite(out)) or np.any(norms == 0.0):
            raise EmbeddingFailed("Voyage returned a zero or non-finite vector")
        out /= norms
        return out

    # -- requests ------------------------------------------------------------------------

    def _batches(self, items: list[str]) -> list[list[str]]:
        batches: list[list[str]] = []
        current: list[str] = []
        tokens = 0
        for text in items:
            cost = _estimated_tokens(text)
            if current and (len(current) == self._batch_size or tokens + cost > self._token_budget):
                batches.append(current)
                current, tokens = [], 0
            current.append(text)  # one text over the budget goes alone; the API truncates it
            tokens += cost
        if current:
            batches.append(current)
        return batches

    def _request(self, batch: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"input": batch, "model": self._model, "truncation": True}
        if self._input_type is not None:
            body["input_type"] = self._input_type
        for attempt in range(1, self._max_attempts + 1):
            retry_after: float | None = None
            try:
                response = self._client.post(self._url, json=body)
            except httpx.TransportError as exc:
                problem = f"could not reach Voyage at {self._url} ({type(exc).__name__})"
            else:
                if response.status_code == 200:
                    return self._parse(response, len(batch))
                if response.status_code not in _RETRY_STATUSES:
                    raise self._refused(response)
                problem = f"Voyage answered {response.status_code}{self._detail(response)}"
                retry_after = _retry_after(response)
            if attempt == self._max_attempts:
                raise EmbeddingFailed(f"{problem}; gave up after {attempt} attempts")
            delay = self._backoff * 2 ** (attempt - 1) * (1.0 + 0.25 * random.random())  # noqa: S311
            if retry_after is not None:
                delay = max(delay, retry_after)
            if delay > self._max_delay:
                raise EmbeddingFailed(f"{problem}; asked to wait {delay:.0f} s, not retrying")
            _log.warning(
                "%s; retrying in %.2f s (attempt %d of %d)",
                problem,
                delay,
                attempt,
                self._max_attempts,
            )
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _parse(self, response: httpx.Response, expected: int) -> list[list[float]]:
        try:
            data = response.json()["data"]
            rows: list[list[float] | None] = [None] * expected
            for item in data:
                index = item["index"]
                if (
                    not isinstance(index, int)
                    or not 0 <= index < expected
                    or rows[index] is not None
                ):
                    raise ValueError(f"bad index {index!r}")
                embedding = item["embedding"]
                if not isinstance(embedding, list) or not embedding:
                    raise ValueError("embedding is not a non-empty list")
                rows[index] = embedding
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingFailed(f"Voyage sent a malformed embeddings response: {exc}") from None
        if any(row is None for row in rows):
            raise EmbeddingFailed(f"Voyage returned {len(data)} embeddings for {expected} texts")
        return [row for row in rows if row is not None]

    def _refused(self, response: httpx.Response) -> EmbeddingFailed:
        status = response.status_code
        detail = self._detail(response)
        if status == 401:
            message = (
                "VOYAGE_API_KEY was rejected by Voyage (401); check the key at "
                "dash.voyageai.com and restart"
            )
        elif status == 403:
            message = f"Voyage refused the request (403, it blocks some IP addresses){detail}"
        elif status == 400:
            message = f"Voyage rejected the request for model {self._model} (400){detail}"
        else:
            message = f"Voyage answered {status}{detail}"
        return EmbeddingFailed(message, status=status)

    def _detail(self, response: httpx.Response) -> str:
        """The server's explanation (`{"detail": ...}`), short and with the key scrubbed."""
        try:
            payload = response.json()
            text = payload.get("detail") if isinstance(payload, dict) else None
            text = str(text) if text is not None else response.text
        except ValueError:
            text = response.text
        text = " ".join(text.split()).replace(self._api_key, "[redacted]")[:_MAX_DETAIL]
        return f": {text}" if text else ""
