"""The Voyage embedder over real HTTP, against the local fake of Voyage's embeddings API.

The fake validates requests as Voyage documents them and answers with hash-derived vectors
that are not unit length, so these tests catch a client that sends the wrong shape, loses
the input order, forgets to normalise, retries what it should not (or not what it should),
or lets the API key slip into an error or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.embeddings import Embedder, EmbeddingFailed, VoyageEmbedder, build_embedder
from tests.conftest import make_settings
from tests.fakes.voyage_api import API_KEY, FakeVoyageAPI
from tests.fakes.webhook_receiver import refusing_port

TEXTS = [
    "Deploy the release to staging on Friday.",
    "ok",
    "The refund window is 30 days from delivery.",
    "Ünïcödé, ponctuation… «quotes» and 数字 123!",
    "Invoices are due at the end of the month.",
    "ABC-123 is the ticket for the login bug.",
    "Lunch is at noon.",
    "The quarterly report goes to the board.",
]


@pytest.fixture(scope="module")
def _server() -> Iterator[FakeVoyageAPI]:
    with FakeVoyageAPI() as server:
        yield server


@pytest.fixture
def fake(_server: FakeVoyageAPI) -> Iterator[FakeVoyageAPI]:
    """One server for the module, wiped per test."""
    _server.reset()
    _server.reverse_data = False
    yield _server
    _server.reverse_data = False


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_embedder(
    fake: FakeVoyageAPI, sleeps: list[float]
) -> Iterator[Callable[..., VoyageEmbedder]]:
    made: list[VoyageEmbedder] = []

    def make(**kwargs: Any) -> VoyageEmbedder:
        options: dict[str, Any] = {
            "base_url": fake.base_url,
            "backoff": 0.01,
            "sleep": sleeps.append,  # records the waits instead of sitting them out
            **kwargs,
        }
        embedder = VoyageEmbedder(options.pop("api_key", API_KEY), **options)
        made.append(embedder)
        return embedder

    yield make
    for embedder in made:
        embedder.close()


def _assert_unit_float32(vectors: np.ndarray, rows: int, dimension: int) -> None:
    assert vectors.shape == (rows, dimension)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# --- vectors --------------------------------------------------------------------------------


def test_vectors_are_unit_float32_rows_in_input_order_across_batches(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder]
) -> None:
    fake.reverse_data = True  # only placing rows by `index` keeps them in order
    embedder = make_embedder(batch_size=3)

    vectors = embedder.embed(TEXTS)

    _assert_unit_float32(vectors, len(TEXTS), 1024)
    for row, text in zip(vectors, TEXTS, strict=True):
        np.testing.assert_allclose(row, fake.expected_vector(text, "voyage-3.5"), atol=1e-6)
    sent = [r.body["input"] for r in fake.embedding_requests()]
    assert sent == [TEXTS[0:3], TEXTS[3:6], TEXTS[6:8]]


def test_requests_follow_the_documented_wire_format(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder]
) -> None:
    make_embedder(model="voyage-3-large").embed(["hello"])

    (request,) = fake.embedding_requests()
    assert request.path == "/v1/embeddings"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {"input": ["hello"], "model": "voyage-3-large", "truncation": True}


def test_input_type_is_sent_when_configured(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder]
) -> None:
    vectors = make_embedder(input_type="query").embed(["refund window"])

    assert fake.embedding_requests()[0].body["input_type"] == "query"
    expected = fake.expected_vector("refund window", "voyage-3.5", "query")
    np.testing.assert_allclose(vectors[0], expected, atol=1e-6)


def test_empty_input_makes_no_request(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder]
) -> None:
    vectors = make_embedder().embed([])

    assert vectors.shape == (0, 1024)
    assert vectors.dtype == np.float32
    assert fake.requests == []


def test_empty_text_is_sent_as_a_space_because_voyage_rejects_empty_strings(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder]
) -> None:
    vectors = make_embedder().embed(["a", ""])

    assert fake.embedding_requests()[0].body["input"] == ["a", " "]
    np.testing.assert_allclose(vectors[1], fake.expected_vector(" ", "voyage-3.5"), atol=1e-6)


def test_a_batch_over_the_model_token_limit_is_split_instead_of_refused(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder]
) -> None:
    # 128 texts of 4,000 characters are ~128K tokens: over voyage-3-large's 120K per request.
    texts = [f"{i:04d} " + "lorem ipsum " * 333 for i in range(128)]
    embedder = make_embedder(model="voyage-3-large")

    vectors = embedder.embed(texts)

    _assert_unit_float32(vectors, 128, 1024)
    sizes = [len(r.body["input"]) for r in fake.embedding_requests()]
    assert len(sizes) > 1 and sum(sizes) == 128
    np.testing.assert_allclose(
        vectors[-1], fake.expected_vector(texts[-1], "voyage-3-large"), atol=1e-6
    )


def test_batch_size_defaults_to_128_texts(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder]
) -> None:
    texts = [f"note {i}" for i in range(300)]

    make_embedder().embed(texts)

    assert [len(r.body["input"]) for r in fake.embedding_requests()] == [128, 128, 44]


def test_concurrent_calls_each_get_their_own_rows(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder]
) -> None:
    embedder = make_embedder(batch_size=2)
    batches = [[f"thread {t} text {i}" for i in range(5)] for t in range(6)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(embedder.embed, batches))

    for texts, vectors in zip(batches, results, strict=True):
        expected = np.stack([fake.expected_vector(t, "voyage-3.5") for t in texts])
        np.testing.assert_allclose(vectors, expected, atol=1e-6)


def test_unknown_model_dimension_is_probed_once() -> None:
    with FakeVoyageAPI(dimensions={"voyage-custom-1": 64}) as fake:
        embedder = VoyageEmbedder(API_KEY, "voyage-custom-1", base_url=fake.base_url)
        try:
            assert embedder.dimension == 64
            assert embedder.dimension == 64
            assert len(fake.embedding_requests()) == 1
            assert embedder.embed([]).shape == (0, 64)
            _assert_unit_float32(embedder.embed(["x", "y"]), 2, 64)
            assert len(fake.embedding_requests()) == 2
        finally:
            embedder.close()


def test_vectors_of_an_unexpected_size_are_an_error() -> None:
    # The known table says voyage-3.5 is 1024-d; a server answering otherwise is wrong.
    with FakeVoyageAPI(dimensions={"voyage-3.5": 256}) as fake:
        embedder = VoyageEmbedder(API_KEY, base_url=fake.base_url)
        try:
            with pytest.raises(EmbeddingFailed, match="expected 1024"):
                embedder.embed(["hello"])
        finally:
            embedder.close()


# --- retries --------------------------------------------------------------------------------


def test_429_is_retried_after_the_servers_retry_after(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder], sleeps: list[float]
) -> None:
    fake.fail_next(1, 429, retry_after="3")

    vectors = make_embedder().embed(["hello", "world"])

    _assert_unit_float32(vectors, 2, 1024)
    requests = fake.embedding_requests()
    assert len(requests) == 2
    assert requests[0].body == requests[1].body
    assert sleeps == [3.0]


def test_5xx_is_retried_with_exponential_backoff(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder], sleeps: list[float]
) -> None:
    fake.fail_next(1, 500).fail_next(1, 503)

    vectors = make_embedder(backoff=0.1).embed(["hello"])

    np.testing.assert_allclose(vectors[0], fake.expected_vector("hello", "voyage-3.5"), atol=1e-6)
    assert len(fake.embedding_requests()) == 3
    assert len(sleeps) == 2
    assert 0.1 <= sleeps[0] <= 0.125  # backoff, plus at most 25% jitter
    assert 0.2 <= sleeps[1] <= 0.25


def test_retries_are_bounded(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder], sleeps: list[float]
) -> None:
    fake.fail_next(10, 503)

    with pytest.raises(EmbeddingFailed, match=r"503.*gave up after 3 attempts"):
        make_embedder(max_attempts=3).embed(["hello"])

    assert len(fake.embedding_requests()) == 3
    assert len(sleeps) == 2


def test_a_retry_after_beyond_max_delay_is_reported_not_waited_for(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder], sleeps: list[float]
) -> None:
    fake.fail_next(1, 429, retry_after="120")

    with pytest.raises(EmbeddingFailed, match=r"429.*wait 120 s"):
        make_embedder(max_delay=5.0).embed(["hello"])

    assert sleeps == []
    assert len(fake.embedding_requests()) == 1


def test_connection_failures_are_retried_then_reported(sleeps: list[float]) -> None:
    with refusing_port() as port:
        embedder = VoyageEmbedder(
            API_KEY,
            base_url=f"http://127.0.0.1:{port}/v1",
            max_attempts=2,
            backoff=0.01,
            sleep=sleeps.append,
        )
        try:
            with pytest.raises(EmbeddingFailed, match=r"could not reach Voyage.*after 2 attempts"):
                embedder.embed(["hello"])
        finally:
            embedder.close()
    assert len(sleeps) == 1


# --- refusals and the key -------------------------------------------------------------------


def test_a_rejected_key_is_a_clear_error_that_never_shows_the_key(
    fake: FakeVoyageAPI,
    make_embedder: Callable[..., VoyageEmbedder],
    caplog: pytest.LogCaptureFixture,
    sleeps: list[float],
) -> None:
    wrong = "pa-wrong-key-7f3a9c2e"
    embedder = make_embedder(api_key=wrong)

    with caplog.at_level(logging.DEBUG), pytest.raises(EmbeddingFailed) as caught:
        embedder.embed(["hello"])

    assert "VOYAGE_API_KEY was rejected" in caught.value.detail
    assert caught.value.status == 401
    assert fake.embedding_requests()[0].headers["authorization"] == f"Bearer {wrong}"
    assert len(fake.embedding_requests()) == 1  # a bad key is not retried
    assert sleeps == []
    for text in (str(caught.value), repr(caught.value), caplog.text, repr(embedder)):
        assert wrong not in text


def test_the_key_is_scrubbed_from_a_server_message_that_echoes_it(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder]
) -> None:
    fake.fail_next(1, 400, detail=f"malformed request from key {API_KEY}")

    with pytest.raises(EmbeddingFailed) as caught:
        make_embedder().embed(["hello"])

    assert "malformed request from key [redacted]" in caught.value.detail
    assert API_KEY not in str(caught.value)


def test_a_bad_request_is_not_retried_and_carries_voyages_reason(
    fake: FakeVoyageAPI, make_embedder: Callable[..., VoyageEmbedder], sleeps: list[float]
) -> None:
    fake.fail_next(1, 400, detail="The batch size limit is 1000.")

    with pytest.raises(EmbeddingFailed, match=r"\(400\): The batch size limit is 1000\."):
        make_embedder().embed(["hello"])

    assert len(fake.embedding_requests()) == 1
    assert sleeps == []


def test_an_unsupported_model_reports_voyages_reason(
    make_embedder: Callable[..., VoyageEmbedder],
) -> None:
    embedder = make_embedder(model="voyage-3.5-typo")

    with pytest.raises(EmbeddingFailed, match=r"Model voyage-3\.5-typo is not supported"):
        embedder.embed(["hello"])


# --- wiring ---------------------------------------------------------------------------------


def test_build_embedder_wires_voyage_from_settings(fake: FakeVoyageAPI, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        COSMO_EMBEDDER="voyage",
        COSMO_EMBEDDING_MODEL="voyage-3-lite",
        VOYAGE_API_KEY=API_KEY,
        VOYAGE_API_URL=fake.base_url,
    )

    embedder = build_embedder(settings)

    assert isinstance(embedder, VoyageEmbedder)
    assert isinstance(embedder, Embedder)
    assert (embedder.model_name, embedder.dimension) == ("voyage/voyage-3-lite", 512)
    try:
        vectors = embedder.embed(["hello"])
    finally:
        embedder.close()
    np.testing.assert_allclose(
        vectors[0], fake.expected_vector("hello", "voyage-3-lite"), atol=1e-6
    )
    assert fake.embedding_requests()[0].body["model"] == "voyage-3-lite"
