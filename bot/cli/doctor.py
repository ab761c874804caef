"""`cosmo doctor --online`: ask the outside world whether this configuration works.

The offline doctor reads configuration and the database; these checks call Slack
(`auth.test`, and the scopes the token carries against the manifest's), Claude (the models
list: is every configured model one this key can use), each agent's webhook URL through the
guard deliveries use, each MCP server the operator configured (started, tools listed), and
the embedder (one sentence embedded). A secret is never printed: failures name the setting.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from core.agent.service import agent_models, agent_webhooks
from core.db import Database
from core.embeddings import build_embedder
from core.errors import CosmoError
from core.schemas.skill import McpExecutor
from core.settings import DEFAULT_SLACK_SCOPES, Settings
from core.skills.mcp_executor import McpPool
from core.skills.mcp_servers import McpServersInvalid
from core.webhooks.url_guard import check_webhook_url
from core.wiring import build_skill_policy

Say = Callable[[str], None]

#: Seconds each outside call may take before doctor reports it unreachable.
TIMEOUT = 15.0


def run_online_checks(settings: Settings, db: Database | None, say: Say) -> bool:
    """Every online check, each line printed as it is known; True when all passed."""
    ok = check_slack(settings, say)
    ok = check_claude(settings, db, say) and ok
    if db is not None:
        ok = check_webhooks(settings, db, say) and ok
    ok = check_mcp_servers(settings, say) and ok
    return check_embedder(settings, say) and ok


def _scrub(text: str, settings: Settings) -> str:
    """Belt and braces: an error message from a library never carries one of our secrets."""
    for secret in (
        settings.slack_bot_token,
        settings.anthropic_api_key,
        settings.slack_signing_secret,
        settings.api_token,
        settings.voyage_api_key,
    ):
        value = secret.get_secret_value() if secret is not None else ""
        if value:
            text = text.replace(value, "***")
    return text


def check_slack(settings: Settings, say: Say) -> bool:
    # The Slack and Anthropic SDKs load here: only `doctor --online` calls them from the CLI.
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    if settings.slack_bot_token is None:
        if settings.slack_oauth_enabled:
            say("slack (online): OAuth installs: each workspace's token is checked at use")
        else:
            say("slack (online): not configured, skipped")
        return True
    client = WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        timeout=int(TIMEOUT),
    )
    try:
        response = client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        say(f"slack (online): auth.test refused SLACK_BOT_TOKEN: {error or 'unknown error'}")
        return False
    except Exception as exc:
        say(
            f"slack (online): {settings.slack_api_url} unreachable "
            f"({_scrub(type(exc).__name__, settings)})"
        )
        return False
    headers = {k.lower(): v for k, v in (response.headers or {}).items()}
    raw = headers.get("x-oauth-scopes", "")
    granted = {s.strip() for s in str(raw).split(",") if s.strip()}
    wanted = {s for s in DEFAULT_SLACK_SCOPES.split(",") if s}
    who = f"team {response.get('team') or response.get('team_id')}, bot {response.get('user')}"
    missing = sorted(wanted - granted)
    if missing:
        say(
            f"slack (online): {who}: the token lacks scopes manifest.yml asks for: "
            f"{', '.join(missing)} (reinstall the app from manifest.yml)"
        )
        return False
    extra = sorted(granted - wanted)
    more = f"; also granted: {', '.join(extra)}" if extra else ""
    say(f"slack (online): ok, {who}, every scope of manifest.yml{more}")
    return True


def check_claude(settings: Settings, db: Database | None, say: Say) -> bool:
    import anthropic

    if settings.anthropic_api_key is None or not settings.anthropic_api_key.get_secret_value():
        say("claude (online): not configured, skipped")
        return True
    client = anthropic.Anthropic(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        max_retries=0,
        timeout=TIMEOUT,
    )
    try:
        available = {m.id for m in client.models.list(limit=1000)}
    except anthropic.AuthenticationError:
        say("claude (online): the API refused ANTHROPIC_API_KEY (authentication_error)")
        return False
    except anthropic.APIStatusError as exc:
        say(f"claude (online): the models list answered {exc.status_code}")
        return False
    except anthropic.APIConnectionError:
        say(f"claude (online): {client.base_url} unreachable")
        return False
    users: dict[str, list[str]] = {settings.model: ["COSMO_MODEL"]}
    if db is not None:
        try:
            for tenant, agent, model in agent_models(db):
                users.setdefault(model, []).append(f"agent {agent} (tenant {tenant})")
        except Exception as exc:
            say(f"claude (online): agents' models not checked ({type(exc).__name__})")
            return False
    ok = True
    for model in sorted(users):
        if model in available or _is_alias(client, model):
            continue
        ok = False
        say(
            f"claude (online): unknown model {model} (used by {', '.join(users[model])}): "
            "not in the API's models list"
        )
    if ok:
        say(f"claude (online): ok, {len(users)} model(s) in use, all known to the API")
    return ok


def _is_alias(client: Any, model: str) -> bool:
    """The list holds model ids; an alias (`claude-sonnet-4-5`) resolves through a lookup."""
    import anthropic

    try:
        client.models.retrieve(model)
    except anthropic.NotFoundError:
        return False
    except anthropic.APIError:
        return False
    return True


def check_webhooks(settings: Settings, db: Database, say: Say) -> bool:
    """The delivery guard's verdict on each agent's webhook URL, as of now (DNS included),
    and whether the variable holding its secret is set."""
    try:
        hooks = agent_webhooks(db)
    except Exception as exc:
        say(f"webhooks (online): not checked ({type(exc).__name__})")
        return False
    ok = True
    for tenant, agent, url, secret_env in hooks:
        where = f"webhook of agent {agent} (tenant {tenant})"
        try:
            check_webhook_url(url, allow_insecure=settings.webhook_allow_insecure)
        except CosmoError as exc:
            ok = False
            say(f"{where}: refused: {exc.detail}")
            continue
        if secret_env and not os.environ.get(secret_env):
            ok = False
            say(f"{where}: its secret variable {secret_env} is not set")
            continue
        say(f"{where}: ok")
    if not hooks:
        say("webhooks (online): no agent has one")
    return ok


def check_mcp_servers(settings: Settings, say: Say) -> bool:
    try:
        policy = build_skill_policy(settings)
    except McpServersInvalid:
        return False  # the offline part has said why
    if not policy.mcp_servers:
        return True
    # The servers' own stderr chatter would drown the report.
    with open(os.devnull, "w") as quiet:
        return asyncio.run(_list_mcp_tools(policy.mcp_servers, say, quiet))


async def _list_mcp_tools(servers: Any, say: Say, errlog: Any) -> bool:
    pool = McpPool(servers=servers, secrets=os.environ.get, errlog=errlog)
    try:
        return await _each_server(pool, servers, say)
    finally:
        await pool.aclose()


async def _each_server(pool: Any, servers: Any, say: Say) -> bool:
    ok = True
    for name in sorted(servers):
        try:
            tools = await pool.list_tools(McpExecutor(server=name), timeout_seconds=TIMEOUT)
        except CosmoError as exc:
            ok = False
            say(f"mcp server {name} (online): {exc.detail}")
            continue
        names = ", ".join(sorted(t.name for t in tools)[:10])
        more = "…" if len(tools) > 10 else ""
        say(f"mcp server {name} (online): ok, started, {len(tools)} tool(s): {names}{more}")
    return ok


def check_embedder(settings: Settings, say: Say) -> bool:
    try:
        vectors = build_embedder(settings).embed(["cosmo doctor"])
    except CosmoError as exc:
        say(f"embedder (online): {_scrub(exc.detail, settings)}")
        return False
    except Exception as exc:
        say(f"embedder (online): embedding a sentence failed ({type(exc).__name__})")
        return False
    say(f"embedder (online): ok, embedded a sentence ({len(vectors[0])} dimensions)")
    return True
