"""Signed, expiring tokens bound to one output (approval callbacks, shared content links).

Format: `v1.<purpose>.<tenant>.<output_id>.<expires_unix>.<base64url hmac>`. The purpose keeps a
content link from being usable as an approval token and vice versa.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from core.errors import CosmoError

Purpose = Literal["approve", "content"]
_TOKEN = re.compile(
    r"^v1\.(approve|content)\.([A-Za-z0-9_-]{1,64})\.([a-z]{2,5}_[0-9a-z]{26})\.(\d{1,12})"
    r"\.([A-Za-z0-9_-]{43})$"
)


class InvalidToken(CosmoError):
    """Malformed, tampered, expired or for another purpose; callers answer 401."""

    title = "Invalid token"


@dataclass(frozen=True)
class TokenClaims:
    purpose: Purpose
    tenant_id: str
    output_id: str
    expires_at: datetime


class TokenSigner:
    def __init__(self, secret_key: str, ttl: timedelta) -> None:
        if not secret_key:
            raise ValueError("a secret key is required to sign tokens")
        self._key = hashlib.sha256(b"cosmo-output-tokens:" + secret_key.encode()).digest()
        self.ttl = ttl

    def _mac(self, message: str) -> str:
        digest = hmac.new(self._key, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(
        self, purpose: Purpose, tenant_id: str, output_id: str, now: datetime | None = None
    ) -> str:
        expires = int(((now or datetime.now(UTC)) + self.ttl).timestamp())
        message = f"v1.{purpose}.{tenant_id}.{output_id}.{expires}"
        return f"{message}.{self._mac(message)}"

    def verify(self, token: str, purpose: Purpose, now: datetime | None = None) -> TokenClaims:
        match = _TOKEN.match(token or "")
        if not match:
            raise InvalidToken("the token is malformed")
        kind, tenant_id, output_id, expires, mac = match.groups()
        message = f"v1.{kind}.{tenant_id}.{output_id}.{expires}"
        if not hmac.compare_digest(mac, self._mac(message)):
            raise InvalidToken("the token's signature does not match")
        if kind != purpose:
            raise InvalidToken(f"this is a {kind} token, not a {purpose} token")
        expires_at = datetime.fromtimestamp(int(expires), UTC)
        if (now or datetime.now(UTC)) >= expires_at:
            raise InvalidToken("the token has expired")
        return TokenClaims(
            purpose=purpose, tenant_id=tenant_id, output_id=output_id, expires_at=expires_at
        )
