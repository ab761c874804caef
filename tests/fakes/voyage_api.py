"""A local stand-in for Voyage AI's embeddings endpoint, speaking its documented wire format.

    with FakeVoyageAPI(api_key="pa-test") as fake:
        embedder = VoyageEmbedder("pa-test", base_url=fake.base_url)
        fake.fail_next(1, 429, retry_after="2")     # the next request is rate limited
        vectors = embedder.embed(["a", "b"])
        assert fake.requests[-1].body["input"] == ["a", "b"]

`POST /v1/embeddings` (docs.voyageai.com/reference/embeddings-api):

* `Authorization: Bearer <key>`; any other key is 401 `{"detail": ...}`.
* Body `{"input": str | [str], "model", "input_type": null|"query"|"document",
  "truncation": bool, "output_dimension"?}`. Validated as documented: 1 to `max_texts`
  (1,000) inputs, each a non-empty string; a known model (`dimensions`); the request's
  tokens under the model's limit. Violations are 400 `{"detail": ...}`.
* Answer `{"object": "list", "data": [{"object": "embedding", "embedding": [...],
  "index": i}], "model", "usage": {"total_tokens"}}`.

Vectors are deterministic — derived from a hash of the model, the input-type prompt Voyage
documents prepending, and the text — and deliberately *not* unit length (Voyage's are), so
a client that forgets to normalise is caught. `expected_vector` gives the unit vector a
correct client must return. With `reverse_data=True` the `data` items come in reverse
order, which only a client that places rows by `index` survives. Token counts are a
deterministic estimate: `ceil(len(text) / 4)` per text.

Failures are scripted: `fail_next(n, status, retry_after=..., detail=...)` answers the next
`n` requests with that status (after recording them), whatever they contain. `delay` makes
every embeddings request take that many seconds, like a busy service (long ingestions).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tests.fakes.local_server import ServedFake, TrackedHandler, TrackedHTTPServer

API_KEY = "pa-fake-voyage-key"

# Default output dimensions, per Voyage's model table.
DIMENSIONS: dict[str, int] = {
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
# Tokens per request, per the API reference; models not listed get 120K.
TOKEN_LIMITS: dict[str, int] = {
    "voyage-4-lite": 1_000_000,
    "voyage-3.5-lite": 1_000_000,
    "voyage-4": 320_000,
    "voyage-3.5": 320_000,
}
PROMPTS = {
    "query": "Represent the query for retrieving supporting documents: ",
    "document": "Represent the document for retrieval: ",
}
FLEXIBLE_DIMENSIONS = (256, 512, 1024, 2048)


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def raw_vector(text: str, model: str, dimension: int, input_type: str | None = None) -> list[float]:
    """What the fake sends for `text`: hash-derived, in about [-4, 4], never unit length."""
    seed = f"{model}\x00{PROMPTS.get(input_type or '', '')}{text}".encode()
    digest = hashlib.shake_256(seed).digest(2 * dimension)
    ints = np.frombuffer(digest, dtype="<i2").astype(np.float64)
    return [round(float(x), 6) for x in ints / 8192.0]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or the raw text when it was not JSON


@dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: str | None
    detail: str


_DEFAULT_DETAILS = {
    400: "Bad request.",
    401: "Provided API key is invalid.",
    403: "Forbidden.",
    429: "You have exceeded the rate limit. Please retry later.",
    500: "Internal server error.",
    502: "Bad gateway.",
    503: "Service unavailable. Please retry later.",
}


class _Server(TrackedHTTPServer["FakeVoyageAPI"]):
    request_queue_size = 64


class _Handler(TrackedHandler):
    server: _Server

    def _serve(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, payload = self.server.fake._handle(
            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw
        )
        self._send(status, "application/json", json.dumps(payload).encode(), headers)


class FakeVoyageAPI(ServedFake, server=_Server, handler=_Handler, thread_name="fake-voyage-api"):
    """Voyage's `/v1/embeddings` on 127.0.0.1:<ephemeral>, served from a background thread."""

    def __init__(
        self,
        *,
        api_key: str = API_KEY,
        dimensions: Mapping[str, int] | None = None,
        max_texts: int = 1000,
        reverse_data: bool = False,
        delay: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.delay = delay
        self.dimensions = {**DIMENSIONS, **(dimensions or {})}
        self.max_texts = max_texts
        self.reverse_data = reverse_data
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: deque[_Failure] = deque()
        self._stopping = threading.Event()  # set while stopping; nothing here waits on it

    # -- lifecycle: start(), stop(), `with` and `port` come from ServedFake --------------------

    @property
    def base_url(self) -> str:
        """Pass as `base_url=` (or `VOYAGE_API_URL`), like https://api.voyageai.com/v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        """Forget recorded requests and scripted failures; settings stay."""
        with self._lock:
            self._requests.clear()
            self._failures.clear()

    # -- scripting and inspection ------------------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        retry_after: str | None = None,
        detail: str | None = None,
    ) -> FakeVoyageAPI:
        """Answer the next `count` requests with `status` and `{"detail": ...}`."""
        failure = _Failure(status, retry_after, detail or _DEFAULT_DETAILS.get(status, "Error."))
        with self._lock:
            self._failures.extend([failure] * count)
        return self

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def embedding_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/embeddings"]

    def expected_vector(
        self, text: str, model: str, input_type: str | None = None
    ) -> npt.NDArray[np.float32]:
        """The unit-length float32 vector a correct client returns for `text`."""
        raw = np.asarray(raw_vector(text, model, self.dimensions[model], input_type))
        unit: npt.NDArray[np.float32] = (raw / np.linalg.norm(raw)).astype(np.float32)
        return unit

    # -- the endpoint ------------------------------------------------------------------------

    def _handle(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], Any]:
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self._lock:
            self._requests.append(RecordedRequest(method, path, headers, body))
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            extra = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            return failure.status, extra, {"detail": failure.detail}
        if path != "/v1/embeddings":
            return 404, {}, {"detail": "Not Found"}
        if method != "POST":
            return 405, {}, {"detail": "Method Not Allowed"}
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {}, {"detail": _DEFAULT_DETAILS[401]}
        if not isinstance(body, dict):
            return 400, {}, {"detail": "Request body must be a JSON object."}
        if self.delay:
            time.sleep(self.delay)
        try:
            return 200, {}, self._embeddings(body)
        except ValueError as exc:
            return 400, {}, {"detail": str(exc)}

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts:
            raise ValueError("input must be a string or a non-empty list of strings.")
        if len(texts) > self.max_texts:
            raise ValueError(
                f"The batch size limit is {self.max_texts}. Your batch size is {len(texts)}."
            )
        if not all(isinstance(t, str) and t for t in texts):
            raise ValueError("Each input must be a non-empty string.")
        model = body.get("model")
        if model not in self.dimensions:
            raise ValueError(f"Model {model} is not supported.")
        input_type = body.get("input_type")
        if input_type not in (None, "query", "document"):
            raise ValueError("input_type must be null, 'query' or 'document'.")
        if not isinstance(body.get("truncation", True), bool):
            raise ValueError("truncation must be a boolean.")
        dimension = body.get("output_dimension") or self.dimensions[model]
        if body.get("output_dimension") is not None and dimension not in FLEXIBLE_DIMENSIONS:
            raise ValueError(f"output_dimension must be one of {list(FLEXIBLE_DIMENSIONS)}.")
        tokens = sum(estimate_tokens(t) for t in texts)
        limit = TOKEN_LIMITS.get(model, 120_000)
        if tokens > limit:
            raise ValueError(
                f"Request to model '{model}' failed. The max allowed tokens per submitted "
                f"batch is {limit}. Your batch has {tokens} tokens."
            )
        data = [
            {
                "object": "embedding",
                "embedding": raw_vector(text, model, dimension, input_type),
                "index": i,
            }
            for i, text in enumerate(texts)
        ]
        if self.reverse_data:
            data.reverse()
        return {"object": "list", "data": data, "model": model, "usage": {"total_tokens": tokens}}
