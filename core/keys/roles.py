"""The three roles a tenant key carries; each includes the powers of the ones below it."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """`reader` reads; `reviewer` also edits and decides outputs and chats with agents;
    `admin` also configures the tenant (agents, personas, skills, knowledge, memories,
    webhooks, keys). The operator's root key is an admin of every tenant."""

    READER = "reader"
    REVIEWER = "reviewer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def includes(self, other: Role) -> bool:
        return self.rank >= other.rank


_RANK = {Role.READER: 0, Role.REVIEWER: 1, Role.ADMIN: 2}
