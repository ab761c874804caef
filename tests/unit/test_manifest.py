"""manifest.yml asks Slack for exactly what bot/slack/ uses: every Web API method the code calls
is covered by a scope, every event it listens to is subscribed, and nothing else is asked for.

The code is read with `ast`: `<anything>.<web api method>(...)` calls (method names are the
ones `AsyncWebClient` defines), `say(...)`, and `app.event/command/action/view(...)`
registrations. When a new call shows up, add it to METHOD_SCOPES with the scopes Slack's
method reference lists, then to the manifest and `DEFAULT_SLACK_SCOPES`.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from slack_sdk.web.async_base_client import AsyncBaseClient
from slack_sdk.web.async_client import AsyncWebClient

from core.settings import DEFAULT_SLACK_SCOPES

ROOT = Path(__file__).resolve().parents[2]
SLACK_CODE = ROOT / "bot" / "slack"
MANIFEST: dict[str, Any] = yaml.safe_load((ROOT / "manifest.yml").read_text(encoding="utf-8"))

# Web API method -> the bot scopes it needs for the conversations we use it on (Slack's method
# reference). An empty tuple: no scope (views.*, auth.test, the OAuth and Socket Mode calls).
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "auth.test": (),
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "chat.delete": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "chat.getPermalink": (),
    # directory.channel_name asks for channels, private channels and group DMs (not DMs).
    "conversations.info": ("channels:read", "groups:read", "mpim:read"),
    # approvals.post_approval opens a 1:1 DM with each approver (no approval channel).
    "conversations.open": ("im:write",),
    "conversations.replies": ("channels:history", "groups:history", "im:history", "mpim:history"),
    "usergroups.list": ("usergroups:read",),
    "usergroups.users.list": ("usergroups:read",),
    # file_drop: a dropped file's size and type, and its url_private_download (fetched with
    # the bot token, which Slack serves only to a token with files:read).
    "files.info": ("files:read",),
    "users.info": ("users:read",),
    "views.open": (),
    "views.push": (),
    "views.update": (),
    "views.publish": (),
    "oauth.v2.access": (),
    "apps.connections.open": (),  # the app-level token's connections:write, not a bot scope
    "assistant.threads.setStatus": ("assistant:write",),
    "assistant.threads.setSuggestedPrompts": ("assistant:write",),
    "assistant.threads.setTitle": ("assistant:write",),
    "agents.sessions.setStatus": ("chat:write",),
}
# Client helpers that wrap several methods.
HELPERS = {"chat_stream": ("chat.startStream", "chat.appendStream", "chat.stopStream")}
METHOD_SCOPES.update(
    {"chat.startStream": ("chat:write",), "chat.appendStream": ("chat:write",)}
    | {"chat.stopStream": ("chat:write",)}
)

# A listener registered with app.event(<type>) -> the event subscriptions that deliver it.
# Conversations follow a session's thread wherever it started, so `message` needs all four.
LISTENER_EVENTS = {
    "app_mention": {"app_mention"},
    "message": {"message.channels", "message.groups", "message.im", "message.mpim"},
    "app_home_opened": {"app_home_opened"},
    "assistant_thread_started": {"assistant_thread_started"},
    "assistant_thread_context_changed": {"assistant_thread_context_changed"},
    "agent_session_stopped": {"agent_session_stopped"},
}
EVENT_SCOPES: dict[str, str | None] = {
    "app_mention": "app_mentions:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "message.mpim": "mpim:history",
    "app_home_opened": None,
    "assistant_thread_started": "assistant:write",
    "assistant_thread_context_changed": "assistant:write",
    "agent_session_stopped": None,
}


@cache
def web_api_methods() -> dict[str, tuple[str, ...]]:
    """`AsyncWebClient` attribute -> the Web API method(s) it calls."""
    found: dict[str, tuple[str, ...]] = dict(HELPERS)
    for name in set(dir(AsyncWebClient)) - set(dir(AsyncBaseClient)):
        attribute = getattr(AsyncWebClient, name)
        if name.startswith("_") or name in found or not callable(attribute):
            continue
        called = set(re.findall(r'api_call\(\s*"([^"]+)"', inspect.getsource(attribute)))
        if called:
            found[name] = tuple(sorted(called))
    return found


def slack_modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(SLACK_CODE.glob("*.py")):
        yield path.name, ast.parse(path.read_text(encoding="utf-8"), str(path))


def calls_in_code() -> dict[str, set[str]]:
    """Web API method -> the files that call it."""
    methods = web_api_methods()
    used: dict[str, set[str]] = {}
    for name, tree in slack_modules():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in methods:
                called = methods[func.attr]
            elif isinstance(func, ast.Name) and func.id == "say":  # Bolt's say()
                called = ("chat.postMessage",)
            else:
                continue
            for method in called:
                used.setdefault(method, set()).add(name)
    return used


def constants() -> dict[tuple[str, str], str]:
    """Module-level string constants: (module, NAME) -> value (`blocks.APPROVE`, ...)."""
    found: dict[tuple[str, str], str] = {}
    for name, tree in slack_modules():
        for node in tree.body:
            if (
                isinstance(node, ast.Assign | ast.AnnAssign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        found[(name.removesuffix(".py"), target.id)] = node.value.value
    return found


def module_aliases(tree: ast.Module) -> dict[str, str]:
    """`from bot.slack import admin_blocks as ui` -> {"ui": "admin_blocks"}."""
    aliases: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "bot.slack":
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
    return aliases


def literal(
    node: ast.expr | None,
    module: str,
    known: dict[tuple[str, str], str],
    aliases: dict[str, str],
) -> str:
    """The string a listener is registered for: a literal, a constant, or `{"type": ...}`."""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.Name):
        return known.get((module, node.id), "?")
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return known.get((aliases.get(node.value.id, node.value.id), node.attr), "?")
    if isinstance(node, ast.Dict):
        for key, item in zip(node.keys, node.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "type":
                return literal(item, module, known, aliases)
    return "?"


def registrations() -> dict[str, set[str]]:
    """`app.<kind>(<first argument>)` listener registrations: kind -> the arguments."""
    known = constants()
    found: dict[str, set[str]] = {}
    for name, tree in slack_modules():
        aliases = module_aliases(tree)
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "app"
                and node.func.attr in ("event", "command", "action", "view", "message")
            ):
                continue
            argument = node.args[0] if node.args else None
            value = literal(argument, name.removesuffix(".py"), known, aliases)
            found.setdefault(node.func.attr, set()).add(value)
    return found


def manifest_scopes() -> list[str]:
    return list(MANIFEST["oauth_config"]["scopes"]["bot"])


def subscribed_events() -> set[str]:
    return set(MANIFEST["settings"]["event_subscriptions"]["bot_events"])


def listened_events() -> set[str]:
    kinds = registrations()
    events = set(kinds.get("event", set()))
    if "message" in kinds:
        events.add("message")
    return events


def needed_scopes() -> set[str]:
    needed = {scope for method in calls_in_code() for scope in METHOD_SCOPES.get(method, ())}
    needed |= {scope for e in subscribed_events() if (scope := EVENT_SCOPES.get(e)) is not None}
    if MANIFEST["features"].get("slash_commands"):
        needed.add("commands")
    return needed


# -- the tests ----------------------------------------------------------------------------------


def test_every_request_url_is_the_one_slack_endpoint():
    urls = [
        MANIFEST["settings"]["event_subscriptions"]["request_url"],
        MANIFEST["settings"]["interactivity"]["request_url"],
        *(command["url"] for command in MANIFEST["features"]["slash_commands"]),
    ]
    assert all(url.startswith("https://") and url.endswith("/slack/events") for url in urls)
    redirects = MANIFEST["oauth_config"]["redirect_urls"]
    assert all(url.endswith("/slack/oauth_redirect") for url in redirects)


def test_the_slash_command_is_agent_and_the_code_handles_it():
    commands = [command["command"] for command in MANIFEST["features"]["slash_commands"]]
    assert commands == ["/agent"]
    assert registrations().get("command", set()) == {"/agent"}


def test_every_web_api_call_in_the_code_has_its_scopes():
    used = calls_in_code()
    assert "chat.postMessage" in used  # the scan finds calls at all
    unknown = {m: sorted(files) for m, files in used.items() if m not in METHOD_SCOPES}
    assert not unknown, (
        f"add these methods to METHOD_SCOPES (and their scopes to manifest.yml): {unknown}"
    )
    missing = {
        method: [s for s in METHOD_SCOPES[method] if s not in manifest_scopes()] for method in used
    }
    assert not {m: s for m, s in missing.items() if s}, f"scopes missing from manifest: {missing}"


def test_every_event_listened_to_is_subscribed_and_nothing_else():
    listened = listened_events()
    assert {"app_mention", "message"} <= listened
    unknown = listened - LISTENER_EVENTS.keys()
    assert not unknown, f"add these listener events to LISTENER_EVENTS: {unknown}"
    expected = set().union(*(LISTENER_EVENTS[e] for e in listened))
    assert subscribed_events() == expected


def test_no_scope_is_asked_for_that_no_code_uses():
    scopes = manifest_scopes()
    assert len(scopes) == len(set(scopes))
    assert set(scopes) == needed_scopes(), (
        f"unused: {sorted(set(scopes) - needed_scopes())}, "
        f"missing: {sorted(needed_scopes() - set(scopes))}"
    )


def test_interactivity_and_app_home_match_the_listeners():
    kinds = registrations()
    assert {"output_approve", "output_reject", "output_edit"} <= kinds.get("action", set())
    assert {"output_reject_reason", "output_edit_submit"} <= kinds.get("view", set())
    assert MANIFEST["settings"]["interactivity"]["is_enabled"] is True
    home = MANIFEST["features"]["app_home"]
    assert home["home_tab_enabled"] is ("app_home_opened" in listened_events())
    assert home["messages_tab_enabled"] is True  # DMs are answered (message.im)
    assert home["messages_tab_read_only_enabled"] is False


def test_oauth_installs_request_the_manifests_scopes_by_default():
    assert DEFAULT_SLACK_SCOPES.split(",") == manifest_scopes()


@pytest.mark.parametrize("flag", ["socket_mode_enabled", "org_deploy_enabled"])
def test_http_delivery_and_workspace_installs_are_the_default(flag):
    assert MANIFEST["settings"][flag] is False
