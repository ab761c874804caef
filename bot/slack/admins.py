"""Who may change agents from Slack: workspace admins and owners (`users.info`), and the
users and user groups named in `COSMO_SLACK_ADMINS`."""

from __future__ import annotations

from bot.slack.runtime import SlackRuntime


async def may_configure(rt: SlackRuntime, tenant_id: str, user_id: str) -> bool:
    """Fails closed: a `users.info` or user-group lookup that fails counts as "no"."""
    configured = rt.container.settings.slack_admin_ids
    if user_id in configured:
        return True
    if await rt.directory.is_admin(tenant_id, user_id):
        return True
    for group in sorted(g for g in configured if g.startswith("S")):
        if user_id in await rt.directory.members(tenant_id, group):
            return True
    return False
