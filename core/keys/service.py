"""Create, list, revoke and check tenant API keys.

A key is `cosmo_<key id>_<secret>`: the id finds the row with one primary-key read, the
secret is 256 random bits. Only `sha256("cosmo-api-key:v1:<id>:<secret>")` is stored.
A slow password hash (bcrypt, argon2) exists to make guessing low-entropy passwords
expensive; a 256-bit random secret cannot be guessed, so a fast hash loses nothing and keeps
the check to microseconds on every request. It is deliberately not keyed with
`COSMO_SECRET_KEY`: rotating that secret must not invalidate every API key. The id inside
the hashed message ties a hash to its row, so copying a hash onto another row does nothing.

Keys are rows, read on every request: revoking one takes effect on the next request in every
process, with no restart and no cache to expire.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select, update

from core.db import Database
from core.db.ids import new_id
from core.db.models import ApiKeyRow
from core.db.types import utcnow
from core.errors import FieldError, Forbidden, NotFound, ValidationFailed
from core.keys.roles import Role

PREFIX = "cosmo_"
_KEY = re.compile(r"^cosmo_(key_[0-9a-z]{26})_([A-Za-z0-9_-]{43})$")
TENANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,20}$")


class KeySpec(BaseModel):
    """What a new key is: a name people recognise in audit entries, a role, and optionally
    the Slack user it decides as."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@-]*$",
        description="Shown in audit entries and `cosmo keys list`; need not be unique, so a "
        "replacement can keep the old key's name while both exist.",
    )
    role: Role
    user_id: str | None = Field(
        default=None,
        description="Slack user this key decides as (verified). Only reviewer and admin keys "
        "decide, so only they can be bound.",
    )

    @field_validator("user_id")
    @classmethod
    def _slack_user(cls, value: str | None) -> str | None:
        if value is not None and not _SLACK_USER.match(value):
            raise ValueError("must be a Slack user id such as U0123ABCD")
        return value

    @model_validator(mode="after")
    def _reader_is_not_bound(self) -> KeySpec:
        if self.user_id is not None and self.role is Role.READER:
            raise ValueError("a reader key cannot decide, so it cannot be bound to a Slack user")
        return self


class ApiKeyView(BaseModel):
    """A key as it can be shown: everything but its secret, which is never stored."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant_id: str
    name: str
    role: Role
    user_id: str | None
    created_by: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def looks_like_key(token: str) -> bool:
    return _KEY.match(token) is not None


def _a(role: Role) -> str:
    return f"{'an' if role is Role.ADMIN else 'a'} {role.value}"


def _digest(key_id: str, secret: str) -> str:
    return hashlib.sha256(f"cosmo-api-key:v1:{key_id}:{secret}".encode()).hexdigest()


class ApiKeys:
    """The tenant keys of every tenant; callers decide which tenant they may touch."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self, tenant_id: str, spec: KeySpec, *, created_by: str, creator_role: Role | None = None
    ) -> tuple[ApiKeyView, str]:
        """The new key's view and the key itself, which is never available again.
        `creator_role`: the role of the key asking (None for the operator), which the new key
        may not exceed."""
        if creator_role is not None and not creator_role.includes(spec.role):
            raise Forbidden(
                f"{_a(creator_role)} key cannot create {_a(spec.role)} key: "
                "a key can only create keys of its own role or lower"
            )
        if not TENANT_ID.match(tenant_id):
            raise ValidationFailed(
                [FieldError(("tenant",), "must be 1-64 letters, digits, '-' or '_'")]
            )
        key_id = new_id("key")
        secret = secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=key_id,
            tenant_id=tenant_id,
            name=spec.name,
            role=spec.role.value,
            user_id=spec.user_id,
            secret_sha256=_digest(key_id, secret),
            created_by=created_by[:200],
            created_at=utcnow(),
        )
        with self.db.session() as s:
            s.add(row)
        return ApiKeyView.model_validate(row), f"{PREFIX}{key_id}_{secret}"

    def list(self, tenant_id: str | None = None) -> list[ApiKeyView]:
        """Keys of one tenant (all tenants when None), oldest first, revoked ones included."""
        query = select(ApiKeyRow).order_by(ApiKeyRow.id)
        if tenant_id is not None:
            query = query.where(ApiKeyRow.tenant_id == tenant_id)
        with self.db.session() as s:
            return [ApiKeyView.model_validate(r) for r in s.scalars(query)]

    def revoke(self, key_id: str, tenant_id: str | None = None) -> ApiKeyView:
        """Revoke a key (of `tenant_id` only, when given). Revoking twice keeps the first
        time: the answer says when it stopped working."""
        with self.db.session() as s:
            s.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                .where(*([ApiKeyRow.tenant_id == tenant_id] if tenant_id is not None else []))
                .values(revoked_at=utcnow())
            )
            row = s.get(ApiKeyRow, key_id)
            if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
                raise NotFound("key", key_id)
            return ApiKeyView.model_validate(row)

    def authenticate(self, token: str) -> ApiKeyView | None:
        """The active key this is, or None (malformed, unknown, wrong secret, revoked)."""
        match = _KEY.match(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        # Read-only: on SQLite, every request must not queue behind a writer for this.
        with self.db.read_session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(row.secret_sha256, _digest(key_id, secret)):
                return None
            return ApiKeyView.model_validate(row)
