"""Standard Webhooks signatures (https://www.standardwebhooks.com), symmetric `v1` scheme.

Receivers of our webhooks verify them with any Standard Webhooks library, so the wire
format here must match the spec exactly: HMAC-SHA256 over `{msg_id}.{timestamp}.{body}`
keyed with the base64-decoded part of a `whsec_` secret, sent as `v1,<base64>`.

`verify` exists for our own tests and for inbound callbacks. It treats every header as
hostile: whatever a sender puts in them, the only exception that escapes is
`SignatureInvalid`, so an adapter can map it to a 401 without a catch-all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _secrets
import time
from collections.abc import Mapping, Sequence

from core.errors import CosmoError

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format marker, not a secret
#: The spec asks for 24 to 64 random bytes: fewer is guessable, more is someone's mistake.
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
#: Five minutes either way, as the spec's reference libraries use: enough for clock skew
#: and slow queues, short enough that a captured request can't be replayed later.
DEFAULT_TOLERANCE = 300

_MAX_ID_LENGTH = 256
# Printable ASCII without "." or space: a "." in the id would make `{id}.{ts}.{body}`
# ambiguous (the spec forbids it), and anything non-ASCII can't travel in a header intact.
_ID_RE = re.compile(r"[\x21-\x2d\x2f-\x7e]+")
# Twelve digits is beyond the year 30000; anything longer is an attack on int() or a bug.
_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
# `version,base64`. Checked before decoding so that garbage fails with one clear message.
_SIGNATURE_RE = re.compile(r"(v[0-9]+[a-z]*),([A-Za-z0-9+/]+={0,2})")
# Room for a handful of rotated keys plus asymmetric (v1a) ones; more is not a real sender.
_MAX_SIGNATURE_HEADER = 4096


class SignatureInvalid(CosmoError):
    """An inbound webhook whose signature headers don't prove it came from a key holder."""

    title = "Invalid webhook signature"


def generate_secret() -> str:
    """A new `whsec_` secret, in the exact form receivers paste into their verifier."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(32)).decode("ascii")


def new_message_id() -> str:
    """A fresh `webhook-id`: receivers de-duplicate on it, so it must never repeat.

    URL-safe base64 has no "." so the signed content stays unambiguous.
    """
    return "msg_" + _secrets.token_urlsafe(18)


def parse_secret(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret.

    Raises ValueError (a configuration mistake, not an attack) whose message never
    repeats the secret, so it is safe to log.
    """
    text = secret.strip()  # tolerate the newline a copy from a terminal brings along
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"webhook secret must start with {SECRET_PREFIX!r}")
    encoded = text[len(SECRET_PREFIX) :]
    if not encoded:
        raise ValueError(f"webhook secret has nothing after {SECRET_PREFIX!r}")
    # Some tools strip base64 padding; put back exactly what is missing.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"webhook secret must be {SECRET_PREFIX!r} followed by standard base64"
        ) from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"webhook secret must encode {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
            f"not {len(key)}"
        )
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature.

    The body is signed as bytes, exactly as sent: re-serialising JSON before signing is
    the classic way to produce signatures that never verify.
    """
    _check_msg_id(msg_id)
    if isinstance(timestamp, bool) or timestamp < 0:
        raise ValueError("webhook timestamp must be a non-negative number of seconds")
    digest = _digest(parse_secret(secret), msg_id, timestamp, body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(
    secret: str | Sequence[str], msg_id: str, body: bytes, now: int | None = None
) -> dict[str, str]:
    """The three headers to send with `body`.

    Pass several secrets while rotating keys: the header then carries one signature per
    secret, so receivers holding either the old or the new key keep verifying.
    """
    keys = _as_list(secret)
    timestamp = int(time.time()) if now is None else now
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: " ".join(sign(key, msg_id, timestamp, body) for key in keys),
    }


def verify(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: int | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Return quietly if any `v1` signature in `headers` matches `body` under any secret.

    Several secrets are accepted for the receiving side of a key rotation. Secrets are
    parsed first, so a broken secret is reported as the ValueError it is rather than
    blamed on the sender.
    """
    keys = [parse_secret(s) for s in _as_list(secret)]
    lowered = _lower_headers(headers)
    msg_id = _required(lowered, HEADER_ID)
    raw_timestamp = _required(lowered, HEADER_TIMESTAMP)
    raw_signatures = _required(lowered, HEADER_SIGNATURE)

    if len(msg_id) > _MAX_ID_LENGTH or not _ID_RE.fullmatch(msg_id):
        raise SignatureInvalid(
            f"{HEADER_ID} must be printable ASCII without '.', at most {_MAX_ID_LENGTH} long"
        )
    if not _TIMESTAMP_RE.fullmatch(raw_timestamp):
        raise SignatureInvalid(f"{HEADER_TIMESTAMP} must be whole seconds since the epoch")
    timestamp = int(raw_timestamp)
    current = int(time.time()) if now is None else now
    if timestamp < current - tolerance:
        raise SignatureInvalid(
            f"{HEADER_TIMESTAMP} is {current - timestamp}s old, more than the {tolerance}s allowed"
        )
    if timestamp > current + tolerance:
        raise SignatureInvalid(
            f"{HEADER_TIMESTAMP} is {timestamp - current}s in the future, "
            f"more than the {tolerance}s allowed"
        )

    candidates = _v1_signatures(raw_signatures)
    expected = [_digest(key, msg_id, timestamp, body) for key in keys]
    for candidate in candidates:
        for digest in expected:
            if hmac.compare_digest(candidate, digest):
                return
    raise SignatureInvalid("no signature matches: wrong secret, or the message was altered")


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = msg_id.encode("ascii") + b"." + str(timestamp).encode("ascii") + b"." + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def _check_msg_id(msg_id: str) -> None:
    if len(msg_id) > _MAX_ID_LENGTH or not _ID_RE.fullmatch(msg_id):
        raise ValueError(
            f"webhook message id must be printable ASCII without '.', "
            f"at most {_MAX_ID_LENGTH} characters"
        )


def _as_list(secret: str | Sequence[str]) -> list[str]:
    # A str is itself a Sequence[str]; without this check we would "rotate" per character.
    keys = [secret] if isinstance(secret, str) else list(secret)
    if not keys:
        raise ValueError("at least one webhook secret is needed")
    return keys


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE):
            # Two spellings of one header would let a proxy and us read different values.
            if key in lowered:
                raise SignatureInvalid(f"{key} header appears more than once")
            if not isinstance(value, str):
                raise SignatureInvalid(f"{key} header must be text")
            lowered[key] = value
    return lowered


def _required(headers: Mapping[str, str], name: str) -> str:
    # Only HTTP's own optional whitespace: str.strip() would also eat Unicode spaces and
    # line separators, quietly accepting headers no HTTP parser would produce.
    value = headers.get(name, "").strip(" \t")
    if not value:
        raise SignatureInvalid(f"{name} header is missing")
    return value


def _v1_signatures(header: str) -> list[bytes]:
    """The decoded `v1` signatures; other schemes (such as asymmetric `v1a`) are skipped."""
    if len(header) > _MAX_SIGNATURE_HEADER or not header.isascii():
        raise SignatureInvalid(f"{HEADER_SIGNATURE} header is malformed")
    found: list[bytes] = []
    for entry in header.split(" "):
        if not entry:
            continue  # tolerate doubled spaces
        match = _SIGNATURE_RE.fullmatch(entry)
        if match is None:
            raise SignatureInvalid(
                f"{HEADER_SIGNATURE} header is malformed: expected 'v1,<base64>' entries "
                "separated by spaces"
            )
        if match.group(1) != "v1":
            continue
        try:
            found.append(base64.b64decode(match.group(2), validate=True))
        except (binascii.Error, ValueError):
            raise SignatureInvalid(
                f"{HEADER_SIGNATURE} header has a v1 signature that is not valid base64"
            ) from None
    if not found:
        raise SignatureInvalid(f"{HEADER_SIGNATURE} header has no v1 signature")
    return found
