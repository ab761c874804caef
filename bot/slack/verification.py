"""Verify Slack's request signature before Bolt sees the request.

Bolt's own check answers 500 to hostile headers (a timestamp like `abc` or 5000 digits, a
non-ASCII signature byte) and to a signed but malformed body, and it logs signature, timestamp
and body of every failure at INFO. This guard runs first and answers instead:

* 401 problem+json for a missing, duplicated or malformed `X-Slack-Request-Timestamp` or
  `X-Slack-Signature`, a timestamp more than five minutes from now, or a signature that does
  not match (compared in constant time);
* 400 problem+json for a correctly signed body that Bolt could not parse (not UTF-8, bad JSON,
  JSON that is not an object, a `payload=` form field that is not a JSON object);
* 200 with an empty body for Slack's `ssl_check=1` pings, which carry nothing to act on.

A rejection is logged as one line with a fixed reason; header values and bodies never reach
the log. An accepted request goes downstream with its raw body replayed untouched (so Bolt's
`AsyncSlackRequestHandler` can read it and check it again) and the `VerifiedRequest` in
`request.state.slack_request`.

    app.add_middleware(SlackRequestGuard, signing_secret=secret)  # before BodyLimitMiddleware

`verify_slack_request` is the pure core: headers, body and the current time in, a
`VerifiedRequest` out, or `SlackRequestRejected(status, reason)`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "MAX_CLOCK_SKEW_SECONDS",
    "STATE_KEY",
    "RequestKind",
    "SlackRequestGuard",
    "SlackRequestRejected",
    "VerifiedRequest",
    "is_ssl_check",
    "verified_request",
    "verify_slack_request",
]

log = logging.getLogger("cosmo.slack")

MAX_CLOCK_SKEW_SECONDS: Final = 300
"""Slack's rule: refuse a request whose timestamp is more than five minutes from local time."""

STATE_KEY: Final = "slack_request"
"""Where the guard puts the `VerifiedRequest`: `request.state.slack_request`."""

# Unix seconds need 10 digits until the year 2286; 12 leaves room and keeps `int()` cheap.
_TIMESTAMP: Final = re.compile(rb"[0-9]{1,12}")
_SIGNATURE: Final = re.compile(rb"v0=[0-9a-fA-F]{64}")
_TIMESTAMP_HEADER: Final = b"x-slack-request-timestamp"
_SIGNATURE_HEADER: Final = b"x-slack-signature"
_RETRY_NUM_HEADER: Final = b"x-slack-retry-num"
_RETRY_REASON_HEADER: Final = b"x-slack-retry-reason"
_CONTENT_TYPE_HEADER: Final = b"content-type"
_RETRY_NUM: Final = re.compile(rb"[0-9]{1,3}")
_RETRY_REASON: Final = re.compile(rb"[a-z_]{1,64}")

RequestKind = Literal["event", "interaction", "command", "form"]
"""`event`: Events API JSON (`event_callback`, `url_verification`, `app_rate_limited`);
`interaction`: a form with a `payload` JSON object (block actions, view submissions, ...);
`command`: a slash command form; `form`: any other form Slack signed."""

Headers = Mapping[str, str] | Iterable[tuple[bytes, bytes]]
"""A plain mapping, or raw ASGI header pairs (which keep duplicates, so they can be refused)."""


class SlackRequestRejected(Exception):
    """The request must not reach Bolt. `reason` is fixed text, safe to log and to answer with:
    it never contains a header value or any part of the body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason

    @property
    def title(self) -> str:
        return "Unauthorized" if self.status == 401 else "Bad Request"


@dataclass(frozen=True)
class VerifiedRequest:
    """A request whose signature matched, with its body parsed the way Bolt parses it."""

    body: bytes
    timestamp: int
    kind: RequestKind
    payload: Mapping[str, Any] = field(repr=False)
    retry_num: int | None = None
    retry_reason: str | None = None
    """Set when Slack resends an event it thinks failed (the `event_id` stays the same)."""


def verify_slack_request(
    signing_secret: str | bytes,
    headers: Headers,
    body: bytes,
    now: float,
    *,
    max_skew: int = MAX_CLOCK_SKEW_SECONDS,
) -> VerifiedRequest:
    """Check Slack's v0 signature over `body`; raise `SlackRequestRejected` if it fails.

    Cheap checks run first (header shape, then freshness), the HMAC after them, and the body
    is parsed only once the signature holds, so an unsigned request learns nothing about it.
    """
    secret = signing_secret.encode() if isinstance(signing_secret, str) else signing_secret
    if not secret:
        raise ValueError("the Slack signing secret is empty")
    values = _collect(headers)

    timestamp = _single(values, _TIMESTAMP_HEADER)
    if timestamp is None or not _TIMESTAMP.fullmatch(timestamp):
        raise SlackRequestRejected(401, "X-Slack-Request-Timestamp is missing or malformed")
    signature = _single(values, _SIGNATURE_HEADER)
    if signature is None or not _SIGNATURE.fullmatch(signature):
        raise SlackRequestRejected(401, "X-Slack-Signature is missing or malformed")
    sent_at = int(timestamp)
    if abs(now - sent_at) > max_skew:
        raise SlackRequestRejected(401, "X-Slack-Request-Timestamp is too far from now")

    base = b"v0:" + timestamp + b":" + body
    expected = hmac.new(secret, base, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(expected, signature[3:].lower()):
        raise SlackRequestRejected(401, "signature does not match")

    kind, payload = _parse_body(body, _single(values, _CONTENT_TYPE_HEADER))
    retry_num, retry_reason = _retry(values)
    return VerifiedRequest(body, sent_at, kind, payload, retry_num, retry_reason)


def is_ssl_check(method: str, query_string: bytes, body: bytes) -> bool:
    """Slack's certificate probe: `ssl_check=1` in the query (GET) or the form body (POST)."""
    source = query_string if method in ("GET", "HEAD") else body
    if b"ssl_check" not in source:
        return False
    try:
        fields = parse_qsl(source.decode("ascii"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return False
    return ("ssl_check", "1") in fields


def verified_request(connection: HTTPConnection) -> VerifiedRequest:
    """The guard's verdict for this request. Call it first in the Slack route: a route that is
    reachable without the guard then fails closed instead of skipping verification."""
    verified = getattr(connection.state, STATE_KEY, None)
    if not isinstance(verified, VerifiedRequest):
        raise RuntimeError("SlackRequestGuard did not run for this request; is it installed?")
    return verified


class SlackRequestGuard:
    """ASGI middleware that verifies every POST to `paths` before the app sees it.

    Other paths and methods pass straight through (FastAPI answers a GET with 405). Mount it
    inside `BodyLimitMiddleware` (add it first: Starlette runs the last added outermost), so
    oversized bodies are refused before they are buffered here.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        signing_secret: str,
        paths: Collection[str] = ("/slack/events",),
        clock: Callable[[], float] = time.time,
        max_skew: int = MAX_CLOCK_SKEW_SECONDS,
    ) -> None:
        if not signing_secret:
            raise ValueError("SlackRequestGuard needs SLACK_SIGNING_SECRET")
        self.app = app
        self._secret = signing_secret.encode()
        self.paths = frozenset(paths)
        self.clock = clock
        self.max_skew = max_skew

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        if method in ("GET", "HEAD") and is_ssl_check(method, scope.get("query_string", b""), b""):
            await _respond(send, 200, b"", b"text/plain; charset=utf-8")
            return
        if method != "POST":
            await self.app(scope, receive, send)
            return

        body = await _read_body(receive)
        if body is None:  # the client went away; there is no one to answer
            return
        if is_ssl_check(method, b"", body):
            await _respond(send, 200, b"", b"text/plain; charset=utf-8")
            return
        try:
            verified = verify_slack_request(
                self._secret, scope["headers"], body, self.clock(), max_skew=self.max_skew
            )
        except SlackRequestRejected as rejected:
            log.warning("Slack request rejected with %d: %s", rejected.status, rejected.reason)
            await _problem(send, rejected)
            return
        state = {**scope.get("state", {}), STATE_KEY: verified}
        await self.app({**scope, "state": state}, _replay(body, receive), send)


# -- body parsing, the way slack_bolt.request.internals.parse_body does it ---------------------


def _parse_body(body: bytes, content_type: bytes | None) -> tuple[RequestKind, dict[str, Any]]:
    if not body:
        raise SlackRequestRejected(400, "the body is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SlackRequestRejected(400, "the body is not UTF-8") from None
    media_type = (content_type or b"").split(b";", 1)[0].strip().lower()
    if media_type == b"application/json" or text.startswith("{"):
        return "event", _json_object(text, "the JSON body")
    fields = dict(parse_qsl(text, keep_blank_values=True))
    if "payload" in fields:
        return "interaction", _json_object(fields["payload"], "the payload form field")
    if "command" in fields:
        return "command", fields
    return "form", fields


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise SlackRequestRejected(400, f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise SlackRequestRejected(400, f"{what} is not a JSON object")
    return value


# -- headers ------------------------------------------------------------------------------------


def _collect(headers: Headers) -> dict[bytes, list[bytes]]:
    pairs: Iterable[tuple[bytes | str, bytes | str]] = (
        headers.items() if isinstance(headers, Mapping) else headers
    )
    values: dict[bytes, list[bytes]] = {}
    for name, value in pairs:
        key = (name.encode("utf-8") if isinstance(name, str) else name).lower()
        raw = value.encode("utf-8") if isinstance(value, str) else value
        values.setdefault(key, []).append(raw.strip(b" \t"))
    return values


def _retry(values: dict[bytes, list[bytes]]) -> tuple[int | None, str | None]:
    """Slack's retry headers are not signed: informational only, so odd values are dropped."""
    num = _single(values, _RETRY_NUM_HEADER)
    reason = _single(values, _RETRY_REASON_HEADER)
    return (
        int(num) if num is not None and _RETRY_NUM.fullmatch(num) else None,
        reason.decode() if reason is not None and _RETRY_REASON.fullmatch(reason) else None,
    )


def _single(values: dict[bytes, list[bytes]], name: bytes) -> bytes | None:
    """The header's one value; a repeated header is as good as a missing one."""
    found = values.get(name)
    return found[0] if found is not None and len(found) == 1 else None


# -- ASGI plumbing ------------------------------------------------------------------------------


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the buffered body downstream once, then defer to the server (disconnects)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _problem(send: Send, rejected: SlackRequestRejected) -> None:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": rejected.title,
            "status": rejected.status,
            "detail": rejected.reason,
        }
    ).encode()
    await _respond(send, rejected.status, body, b"application/problem+json")


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
