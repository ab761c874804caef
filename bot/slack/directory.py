"""Cached lookups of Slack users, channels and user groups."""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("cosmo.slack.directory")
TTL_SECONDS = 300.0


class SlackDirectory:
    """Names for prompts and user-group members for approvals, cached for a few minutes.

    Implements `core.approvals.policy.GroupDirectory`.
    """

    def __init__(self, clients: Any, ttl: float = TTL_SECONDS) -> None:
        self.clients = clients
        self.ttl = ttl
        self._cache: dict[tuple[str, str, str], tuple[float, Any]] = {}

    def _get(self, key: tuple[str, str, str]) -> Any:
        hit = self._cache.get(key)
        if hit and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        return None

    def _put(self, key: tuple[str, str, str], value: Any) -> Any:
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (time.monotonic(), value)
        return value

    async def user(self, tenant_id: str, user_id: str) -> dict[str, Any]:
        key = (tenant_id, "user", user_id)
        cached = self._get(key)
        if cached is not None:
            return dict(cached)
        try:
            client = await self.clients.for_tenant(tenant_id)
            response = await client.users_info(user=user_id)
            user = dict(response["user"])
        except Exception:
            log.warning("users.info failed for a user; using the id as the name")
            user = {"id": user_id}
        return dict(self._put(key, user))

    async def user_name(self, tenant_id: str, user_id: str) -> str:
        user = await self.user(tenant_id, user_id)
        profile = user.get("profile") or {}
        return str(
            profile.get("display_name")
            or profile.get("real_name")
            or user.get("real_name")
            or user.get("name")
            or user_id
        )

    async def bot_user_id(self, tenant_id: str) -> str:
        """Our bot's user id in the tenant's workspace (`auth.test`): it tells a mention of
        the app from a mention of someone else. A failure propagates (the caller's job is
        retried) rather than guess."""
        key = (tenant_id, "bot", "")
        cached = self._get(key)
        if cached is not None:
            return str(cached)
        client = await self.clients.for_tenant(tenant_id)
        response = await client.auth_test()
        return str(self._put(key, str(response["user_id"])))

    async def is_admin(self, tenant_id: str, user_id: str) -> bool:
        user = await self.user(tenant_id, user_id)
        return bool(user.get("is_admin") or user.get("is_owner"))

    async def channel_name(self, tenant_id: str, channel_id: str) -> str:
        if channel_id.startswith("D"):
            return "a direct message"
        key = (tenant_id, "channel", channel_id)
        cached = self._get(key)
        if cached is not None:
            return str(cached)
        try:
            client = await self.clients.for_tenant(tenant_id)
            response = await client.conversations_info(channel=channel_id)
            name = f"#{response['channel']['name']}"
        except Exception:
            log.warning("conversations.info failed; using the channel id")
            name = channel_id
        return str(self._put(key, name))

    async def members(self, tenant_id: str, group_id: str) -> set[str]:
        key = (tenant_id, "group", group_id)
        cached = self._get(key)
        if cached is not None:
            return set(cached)
        try:
            client = await self.clients.for_tenant(tenant_id)
            response = await client.usergroups_users_list(usergroup=group_id)
            members = set(response.get("users") or [])
        except Exception:
            log.warning("usergroups.users.list failed for %s; treating it as empty", group_id)
            return set()  # not cached: a transient failure must not lock approvers out
        return set(self._put(key, frozenset(members)))

    async def usergroups(self, tenant_id: str) -> list[tuple[str, str]] | None:
        """(id, label) of the workspace's active user groups for pickers, or None when
        `usergroups.list` failed (no `usergroups:read` on an older install): callers then
        keep the groups they have instead of offering none."""
        key = (tenant_id, "usergroups", "")
        cached = self._get(key)
        if cached is not None:
            return list(cached)
        try:
            client = await self.clients.for_tenant(tenant_id)
            response = await client.usergroups_list()
        except Exception:
            log.warning("usergroups.list failed; user groups cannot be picked in forms")
            return None
        found = []
        for group in response.get("usergroups") or []:
            if group.get("date_delete"):
                continue
            handle = group.get("handle")
            label = f"@{handle}" if handle else str(group.get("name") or group["id"])
            if group.get("name") and group.get("name") != handle:
                label += f" ({group['name']})"
            found.append((str(group["id"]), label))
        return list(self._put(key, tuple(sorted(found, key=lambda g: g[1].lower()))))
