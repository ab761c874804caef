"""The guard in front of Bolt: signed requests pass, everything else is a clean 401 or 400.

Requests come from `tests.fakes.slack_requests`, which signs exactly as Slack does, so these
tests also pin that the builders and the guard agree on the wire format.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bot.server.body_limit import BodyLimitMiddleware
from bot.slack.verification import (
    MAX_CLOCK_SKEW_SECONDS,
    SlackRequestGuard,
    SlackRequestRejected,
    VerifiedRequest,
    is_ssl_check,
    verified_request,
    verify_slack_request,
)
from tests.fakes.slack_requests import SIGNING_SECRET, SignedRequest, SlackRequests, slack_signature

NOW = 1_790_000_000
SLACK = SlackRequests(SIGNING_SECRET, clock=lambda: NOW)
VALID_HEX = "0" * 64


def _raw(request: SignedRequest) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in request.headers.items()]


def _verify(request: SignedRequest, *, now: float = NOW) -> VerifiedRequest:
    return verify_slack_request(SIGNING_SECRET, _raw(request), request.body, now)


def _rejected(request: SignedRequest, *, now: float = NOW) -> SlackRequestRejected:
    with pytest.raises(SlackRequestRejected) as caught:
        _verify(request, now=now)
    return caught.value


# --------------------------------------------------------------------------------------------
# verify_slack_request: what passes
# --------------------------------------------------------------------------------------------


def test_a_signed_event_callback_passes_with_its_payload() -> None:
    mention = SLACK.app_mention("<@U0COSMOBOT> hello", thread_ts="1790000000.000100")

    verified = _verify(mention)

    assert verified.kind == "event"
    assert verified.timestamp == NOW
    assert verified.body == mention.body
    assert verified.payload["event"]["type"] == "app_mention"
    assert verified.payload["event_id"] == mention.payload["event_id"]
    assert verified.retry_num is None


def test_each_kind_of_slack_request_is_recognised() -> None:
    assert _verify(SLACK.url_verification("c")).payload["challenge"] == "c"
    action = _verify(SLACK.block_action("output_approve", "out_1"))
    assert action.kind == "interaction"
    assert action.payload["actions"][0] == {**action.payload["actions"][0], "value": "out_1"}
    submission = _verify(SLACK.view_submission("output_reject_reason", {"b": {"a": "no"}}))
    assert submission.payload["view"]["state"]["values"]["b"]["a"]["value"] == "no"
    command = _verify(SLACK.slash_command("/agent", "help"))
    assert (command.kind, command.payload["command"], command.payload["text"]) == (
        "command",
        "/agent",
        "help",
    )


def test_a_retry_is_marked_and_keeps_the_event_id() -> None:
    first = SLACK.message("hi", channel="D0ALICE001")
    retry = first.retry(2, "http_timeout")

    verified = _verify(retry)

    assert (verified.retry_num, verified.retry_reason) == (2, "http_timeout")
    assert verified.payload["event_id"] == first.payload["event_id"]


def test_odd_retry_headers_are_dropped_not_trusted() -> None:
    # The retry headers are outside the signature: informational, never a reason to fail.
    odd = SLACK.message("hi").with_headers(
        {"X-Slack-Retry-Num": "99999999999", "X-Slack-Retry-Reason": "<script>"}
    )
    verified = _verify(odd)
    assert (verified.retry_num, verified.retry_reason) == (None, None)


@pytest.mark.parametrize("offset", [-MAX_CLOCK_SKEW_SECONDS, MAX_CLOCK_SKEW_SECONDS])
def test_clock_skew_up_to_five_minutes_is_accepted(offset: int) -> None:
    assert _verify(SLACK.message("hi"), now=NOW + offset).timestamp == NOW


def test_plain_header_mappings_work_too() -> None:
    request = SLACK.message("hi")
    verified = verify_slack_request(SIGNING_SECRET, request.headers, request.body, NOW)
    assert verified.kind == "event"


def test_uppercase_hex_in_the_signature_is_the_same_signature() -> None:
    request = SLACK.message("hi")
    upper = request.with_headers(
        {"X-Slack-Signature": "v0=" + request.headers["X-Slack-Signature"][3:].upper()}
    )
    assert _verify(upper).kind == "event"


def test_an_empty_signing_secret_is_a_configuration_error() -> None:
    request = SLACK.message("hi")
    with pytest.raises(ValueError, match="signing secret"):
        verify_slack_request("", request.headers, request.body, NOW)
    with pytest.raises(ValueError, match="SLACK_SIGNING_SECRET"):
        SlackRequestGuard(JSONResponse({}), signing_secret="")


# --------------------------------------------------------------------------------------------
# verify_slack_request: what is refused with 401
# --------------------------------------------------------------------------------------------

_SIGNED = SLACK.app_mention("<@U0COSMOBOT> do it")
_TS = "X-Slack-Request-Timestamp"
_SIG = "X-Slack-Signature"
_GOOD_SIG = _SIGNED.headers[_SIG]

HOSTILE_HEADERS: dict[str, dict[str, str | None]] = {
    "timestamp missing": {_TS: None},
    "signature missing": {_SIG: None},
    "both missing": {_TS: None, _SIG: None},
    "timestamp abc": {_TS: "abc"},
    "timestamp empty": {_TS: ""},
    "timestamp negative": {_TS: "-1790000000"},
    "timestamp float": {_TS: f"{NOW}.5"},
    "timestamp exponent": {_TS: "1.79e9"},
    "timestamp 5000 digits": {_TS: "9" * 5000},
    "timestamp 13 digits": {_TS: "1" * 13},
    "timestamp arabic-indic digits": {_TS: "١٧٩٠٠٠٠٠٠٠"},
    "timestamp with null byte": {_TS: f"{NOW}\x00"},
    "signature v1 prefix": {_SIG: "v1=" + _GOOD_SIG[3:]},
    "signature without prefix": {_SIG: _GOOD_SIG[3:]},
    "signature uppercase prefix": {_SIG: "V0=" + _GOOD_SIG[3:]},
    "signature short hex": {_SIG: _GOOD_SIG[:-1]},
    "signature long hex": {_SIG: _GOOD_SIG + "0"},
    "signature bad hex": {_SIG: "v0=" + "zz" * 32},
    "signature non-ascii": {_SIG: _GOOD_SIG[:-1] + "é"},
    "signature empty": {_SIG: ""},
    "signature with a second value": {_SIG: f"{_GOOD_SIG}, {_GOOD_SIG}"},
    "signature well formed but wrong": {_SIG: "v0=" + VALID_HEX},
}


@pytest.mark.parametrize("changes", HOSTILE_HEADERS.values(), ids=HOSTILE_HEADERS.keys())
def test_hostile_headers_are_a_401(changes: dict[str, str | None]) -> None:
    rejected = _rejected(_SIGNED.with_headers(changes))
    assert rejected.status == 401


@pytest.mark.parametrize(
    "raw_value",
    [b"\xff\xfe", b"v0=" + b"\xc3\xa9" * 32, b"\x00" * 67, b"v0=" + b"a" * 63 + b"\x80"],
    ids=["latin-1 junk", "utf-8 multibyte", "nul bytes", "high byte at the end"],
)
def test_non_ascii_signature_bytes_are_a_401(raw_value: bytes) -> None:
    headers = [(k, v) for k, v in _raw(_SIGNED) if k != b"x-slack-signature"]
    headers.append((b"x-slack-signature", raw_value))
    with pytest.raises(SlackRequestRejected) as caught:
        verify_slack_request(SIGNING_SECRET, headers, _SIGNED.body, NOW)
    assert caught.value.status == 401


def test_a_repeated_signature_header_is_a_401_even_if_one_copy_is_right() -> None:
    headers = [*_raw(_SIGNED), (b"x-slack-signature", b"v0=" + VALID_HEX.encode())]
    with pytest.raises(SlackRequestRejected, match="X-Slack-Signature"):
        verify_slack_request(SIGNING_SECRET, headers, _SIGNED.body, NOW)


@pytest.mark.parametrize(
    "offset", [-MAX_CLOCK_SKEW_SECONDS - 1, MAX_CLOCK_SKEW_SECONDS + 1, -86400]
)
def test_a_stale_or_future_timestamp_is_a_401(offset: int) -> None:
    rejected = _rejected(_SIGNED, now=NOW + offset)
    assert (rejected.status, rejected.reason) == (
        401,
        "X-Slack-Request-Timestamp is too far from now",
    )


def test_a_signature_made_with_another_secret_is_a_401() -> None:
    forged = _SIGNED.resigned(timestamp=NOW, signing_secret="not-our-secret")
    rejected = _rejected(forged)
    assert (rejected.status, rejected.reason) == (401, "signature does not match")


def test_a_tampered_body_is_a_401() -> None:
    tampered = _SIGNED.with_body(_SIGNED.body.replace(b"do it", b"rm -rf"), resign=False)
    assert _rejected(tampered).status == 401


def test_a_replayed_signature_under_a_new_timestamp_is_a_401() -> None:
    replay = _SIGNED.with_headers({_TS: str(NOW + 10)})
    assert _rejected(replay, now=NOW + 10).reason == "signature does not match"


def test_random_header_bytes_never_escape_as_anything_but_a_401() -> None:
    rng = random.Random(20261124)
    for _ in range(2000):
        ts = rng.randbytes(rng.randint(0, 16))
        sig = rng.choice([b"v0=", b""]) + rng.randbytes(rng.randint(0, 80))
        headers = [(b"x-slack-request-timestamp", ts), (b"x-slack-signature", sig)]
        with pytest.raises(SlackRequestRejected) as caught:
            verify_slack_request(SIGNING_SECRET, headers, b"{}", NOW)
        assert caught.value.status == 401


# --------------------------------------------------------------------------------------------
# verify_slack_request: signed but unparseable is a 400
# --------------------------------------------------------------------------------------------

_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"

MALFORMED_BODIES: dict[str, tuple[bytes, str]] = {
    "bad JSON": (b'{"type": "event_callback",', _JSON),
    "JSON array": (b"[1, 2]", _JSON),
    "JSON null": (b"null", _JSON),
    "JSON string": (b'"event"', _JSON),
    "deeply nested JSON": (b"[" * 100_000, _JSON),
    "brace but not JSON under a form type": (b"{payload=1", _FORM),
    "payload that is not JSON": (b"payload=%7Bnot-json", _FORM),
    "payload that is a JSON list": (b"payload=%5B%5D", _FORM),
    "payload that is empty": (b"payload=", _FORM),
    "not UTF-8": (b"\xff\xfe{}", _JSON),
    "empty": (b"", _FORM),
}


@pytest.mark.parametrize(
    ("body", "content_type"), MALFORMED_BODIES.values(), ids=MALFORMED_BODIES.keys()
)
def test_a_signed_but_malformed_body_is_a_400(body: bytes, content_type: str) -> None:
    request = SLACK.sign(body, content_type=content_type, timestamp=NOW)
    rejected = _rejected(request)
    assert rejected.status == 400
    assert rejected.title == "Bad Request"


def test_an_unsigned_malformed_body_is_a_401_not_a_400() -> None:
    # Parsing waits for the signature, so an attacker learns nothing about the parser.
    request = SLACK.sign(b"[", content_type=_JSON, timestamp=NOW)
    forged = request.with_headers({_SIG: "v0=" + VALID_HEX})
    assert _rejected(forged).status == 401


def test_a_signed_form_that_is_neither_command_nor_payload_is_passed_on() -> None:
    request = SLACK.sign(b"something=else", content_type=_FORM, timestamp=NOW)
    assert _verify(request).kind == "form"


# --------------------------------------------------------------------------------------------
# is_ssl_check
# --------------------------------------------------------------------------------------------


def test_ssl_check_is_recognised_in_the_query_or_the_form() -> None:
    assert is_ssl_check("GET", b"ssl_check=1&token=x", b"")
    assert is_ssl_check("POST", b"", b"ssl_check=1&token=x")
    assert not is_ssl_check("POST", b"ssl_check=1", b"command=%2Fagent")
    assert not is_ssl_check("POST", b"", b"ssl_check=0")
    assert not is_ssl_check("POST", b"", b'{"ssl_check": "1"}')
    assert not is_ssl_check("POST", b"", b"ssl_check=1\xff")


# --------------------------------------------------------------------------------------------
# SlackRequestGuard, mounted in an ASGI app
# --------------------------------------------------------------------------------------------


class Downstream:
    """Stands in for the Bolt route: reads the body like AsyncSlackRequestHandler does."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, VerifiedRequest]] = []

    async def endpoint(self, request: Request) -> JSONResponse:
        body = await request.body()
        verified = verified_request(request)
        self.seen.append((body, verified))
        return JSONResponse({"kind": verified.kind, "length": len(body)})


@pytest.fixture
def downstream() -> Downstream:
    return Downstream()


def _app(downstream: Downstream, *, max_bytes: int = 1 << 20, clock: Any = lambda: NOW) -> Any:
    async def other(request: Request) -> JSONResponse:
        return JSONResponse({"length": len(await request.body())})

    app = Starlette(
        routes=[
            Route("/slack/events", downstream.endpoint, methods=["POST"]),
            Route("/other", other, methods=["POST"]),
        ]
    )
    app.add_middleware(SlackRequestGuard, signing_secret=SIGNING_SECRET, clock=clock)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes)  # added last: outermost
    return app


@pytest.fixture
def client(downstream: Downstream) -> Iterator[TestClient]:
    with TestClient(_app(downstream)) as test_client:
        yield test_client


def test_a_valid_request_reaches_the_route_with_its_body_intact(
    client: TestClient, downstream: Downstream
) -> None:
    click = SLACK.block_action("output_approve", "out_42", message_ts="1790000000.000200")

    response = click.send(client)

    assert response.status_code == 200
    assert response.json() == {"kind": "interaction", "length": len(click.body)}
    [(body, verified)] = downstream.seen
    assert body == click.body
    assert verified.payload["actions"][0]["value"] == "out_42"


def test_a_rejected_request_never_reaches_the_route(
    client: TestClient, downstream: Downstream
) -> None:
    response = _SIGNED.with_headers({_TS: "9" * 5000}).send(client)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "X-Slack-Request-Timestamp is missing or malformed",
    }
    assert downstream.seen == []


def test_a_malformed_signed_body_is_a_400_problem(
    client: TestClient, downstream: Downstream
) -> None:
    request = SLACK.sign(b'{"type":', content_type=_JSON, timestamp=NOW)

    response = request.send(client)

    assert response.status_code == 400
    assert response.json()["detail"] == "the JSON body is not valid JSON"
    assert downstream.seen == []


def test_ssl_check_pings_are_answered_without_the_route(
    client: TestClient, downstream: Downstream
) -> None:
    assert SLACK.ssl_check().send(client).status_code == 200
    get = client.get("/slack/events", params={"ssl_check": "1", "token": "x"})
    assert (get.status_code, get.content) == (200, b"")
    assert downstream.seen == []


def test_other_methods_and_paths_pass_through_unguarded(client: TestClient) -> None:
    assert client.get("/slack/events").status_code == 405  # the route's answer, not ours
    assert client.post("/other", content=b"unsigned").json() == {"length": 8}


def test_the_guard_uses_its_clock_for_freshness(downstream: Downstream) -> None:
    later = NOW + MAX_CLOCK_SKEW_SECONDS + 1
    with TestClient(_app(downstream, clock=lambda: later)) as late_client:
        assert _SIGNED.send(late_client).status_code == 401


def test_an_oversized_body_is_refused_by_the_body_limit_first(downstream: Downstream) -> None:
    big = SLACK.app_mention("x" * 5000)
    with TestClient(_app(downstream, max_bytes=1000)) as small_client:
        response = big.send(small_client)
        chunked = small_client.post(
            "/slack/events", content=iter([big.body[:800], big.body[800:]]), headers=big.headers
        )
    assert response.status_code == 413
    assert chunked.status_code == 413
    assert downstream.seen == []


def test_a_route_reachable_without_the_guard_fails_closed() -> None:
    downstream = Downstream()
    unguarded = Starlette(routes=[Route("/slack/events", downstream.endpoint, methods=["POST"])])
    with (
        TestClient(unguarded) as bare,
        pytest.raises(RuntimeError, match="SlackRequestGuard did not run"),
    ):
        SLACK.message("hi").send(bare)


# --------------------------------------------------------------------------------------------
# Logging: one line with the reason, nothing an attacker sent
# --------------------------------------------------------------------------------------------


def test_rejections_log_one_line_without_headers_or_bodies(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret_text = "the quarterly numbers are bad"
    mention = SLACK.app_mention(secret_text)
    hostile = [
        mention.with_headers({_SIG: "v0=" + VALID_HEX}),
        mention.with_headers({_TS: "9" * 5000}),
        mention.with_headers({_TS: "abc"}),
        mention.with_headers({_SIG: None}),
        mention.resigned(timestamp=NOW - 3600),
        mention.resigned(timestamp=NOW, signing_secret="wrong"),
        SLACK.sign(b'{"text": "' + secret_text.encode() + b'"', content_type=_JSON, timestamp=NOW),
    ]
    caplog.set_level(logging.DEBUG)

    statuses = [request.send(client).status_code for request in hostile]

    assert statuses == [401, 401, 401, 401, 401, 401, 400]
    records = [r for r in caplog.records if r.name == "cosmo.slack"]
    assert len(records) == len(hostile)
    assert all(r.levelno == logging.WARNING for r in records)
    everything = "\n".join(
        f"{r.name} {r.getMessage()} {json.dumps(r.args, default=str)}" for r in caplog.records
    )
    sent = [r.headers.get(h, "") for r in hostile for h in (_TS, _SIG)]
    for value in filter(None, sent):
        assert value[:40] not in everything
    assert secret_text not in everything
    assert str(NOW) not in everything
    assert slack_signature(SIGNING_SECRET, NOW, mention.body)[3:20] not in everything
