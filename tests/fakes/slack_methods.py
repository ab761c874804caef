"""What each Slack Web API method does to the fake's workspace.

Each function takes the `Workspace` and one authenticated `MethodCall` and returns the fields of
an `ok: true` answer, or raises `Refused(error)` for an `ok: false` one. The shapes follow
Slack's method reference; only what a Slack app like ours reads is filled in.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from tests.fakes.slack_workspace import (
    APP_ID,
    BOT_ID,
    BOT_SCOPES,
    TEAM_NAME,
    USER_ID,
    AssistantThread,
    Message,
    MethodCall,
    Refused,
    SessionStatus,
    Token,
    Workspace,
    truthy,
)

Method = Callable[[Workspace, MethodCall], dict[str, Any]]
_STREAM_TEXT_LIMIT = 12_000
_TASK_STATUSES = frozenset({"pending", "in_progress", "complete", "error"})
_CHUNK_TYPES = frozenset({"markdown_text", "task_update", "plan_update", "blocks"})
_DISPLAY_MODES = frozenset({"timeline", "plan"})
SESSION_STATUSES = frozenset({"processing", "active", "suspended", "closed"})
STOP_EVENT = "agent_session_stopped"

HANDLERS: dict[str, Method] = {}
"""Method name -> implementation; `FakeSlackAPI` answers `unknown_method` for the rest."""


def method(*names: str) -> Callable[[Method], Method]:
    def register(fn: Method) -> Method:
        for name in names:
            HANDLERS[name] = fn
        return fn

    return register


# -- auth ------------------------------------------------------------------------------------------


@method("auth.test")
def auth_test(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    user = ws.users.get(call.actor.user_id)
    out = {
        "url": f"https://{ws.config.team_domain}.slack.com/",
        "team": TEAM_NAME,
        "user": user.name if user else call.actor.user_id,
        "team_id": call.actor.team_id,
        "user_id": call.actor.user_id,
        "is_enterprise_install": False,
    }
    if call.actor.bot_id:
        out["bot_id"] = call.actor.bot_id
    return out


@method("oauth.v2.access")
def oauth_v2_access(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    if call.get("client_id") != ws.config.client_id:
        raise Refused("invalid_client_id")
    if call.get("client_secret") != ws.config.client_secret:
        raise Refused("bad_client_secret")
    if call.get("grant_type") == "refresh_token":
        user_id = ws.refresh_tokens.pop(str(call.get("refresh_token")), None)
        if user_id is None:
            raise Refused("invalid_refresh_token")
        grant: dict[str, Any] = {"rotate": True, "bot_user_id": user_id, "user_token": False}
    else:
        grant = ws.oauth_codes.pop(str(call.get("code")), {})
        if not grant:
            raise Refused("invalid_code")
        if grant["redirect_uri"] and call.get("redirect_uri") != grant["redirect_uri"]:
            raise Refused("bad_redirect_uri")
    bot_user_id = grant["bot_user_id"]
    n = next(ws.ids)
    prefix = "xoxe.xoxb-1-" if grant["rotate"] else "xoxb-"
    access = f"{prefix}{ws.team_id}-{n}-issued"
    ws.tokens[access] = Token(bot_user_id, ws.team_id, BOT_ID, BOT_SCOPES)
    out: dict[str, Any] = {
        "access_token": access,
        "token_type": "bot",
        "scope": BOT_SCOPES,
        "bot_user_id": bot_user_id,
        "app_id": APP_ID,
        "team": {"id": ws.team_id, "name": TEAM_NAME},
        "enterprise": None,
        "is_enterprise_install": False,
    }
    if grant["rotate"]:
        refresh = f"xoxe-1-refresh-{n}"
        ws.refresh_tokens[refresh] = bot_user_id
        out.update(refresh_token=refresh, expires_in=43_200)
    if grant["user_token"]:
        user_token = f"xoxp-{ws.team_id}-{n}-issued"
        ws.tokens[user_token] = Token(grant["user_id"], ws.team_id, None, "chat:write")
        out["authed_user"] = {
            "id": grant["user_id"],
            "scope": "chat:write",
            "access_token": user_token,
            "token_type": "user",
        }
    else:
        out["authed_user"] = {"id": grant.get("user_id", USER_ID)}
    return out


# -- chat ------------------------------------------------------------------------------------------


@method("chat.postMessage")
def chat_post_message(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    channel = ws.channel(call.need("channel", "channel_not_found"), create=True)
    text = str(call.get("text") or call.get("markdown_text") or "")
    if not (text or call.get("blocks") or call.get("attachments")):
        raise Refused("no_text")
    message = ws.post(channel, call, text=text)
    return {"channel": channel.id, "ts": message.ts, "message": ws.api_message(message)}


@method("chat.update")
def chat_update(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    channel = ws.channel(call.need("channel", "channel_not_found"), create=False)
    message = ws.message(channel.id, call.need("ts", "message_not_found"))
    if message.user != call.actor.user_id:
        raise Refused("cant_update_message")
    # Slack keeps blocks/attachments that the update leaves out; [] removes them.
    if "text" in call.params or "markdown_text" in call.params:
        message.text = str(call.get("text") or call.get("markdown_text") or "")
    for key in ("blocks", "attachments"):
        if key in call.params:
            setattr(message, key, list(call.get(key, [])))
    if "metadata" in call.params:
        message.metadata = call.get("metadata")
    message.edited_ts = ws.next_ts()
    return {
        "channel": channel.id,
        "ts": message.ts,
        "text": message.text,
        "message": ws.api_message(message),
    }


@method("chat.delete")
def chat_delete(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    channel = ws.channel(call.need("channel", "channel_not_found"), create=False)
    message = ws.message(channel.id, call.need("ts", "message_not_found"))
    if message.user != call.actor.user_id:
        raise Refused("cant_delete_message")
    del ws.messages[channel.id][message.ts]
    return {"channel": channel.id, "ts": message.ts}


@method("chat.postEphemeral")
def chat_post_ephemeral(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    channel = ws.channel(call.need("channel", "channel_not_found"), create=True)
    user = str(call.need("user", "user_not_in_channel"))
    text = str(call.get("text") or call.get("markdown_text") or "")
    if not (text or call.get("blocks") or call.get("attachments")):
        raise Refused("no_text")
    thread_ts = call.get("thread_ts")
    message = Message(
        channel.id,
        ws.next_ts(),
        text,
        call.actor.user_id,
        blocks=list(call.get("blocks", [])),
        bot_id=call.actor.bot_id,
        thread_ts=str(thread_ts) if thread_ts else None,
        ephemeral_to=user,
    )
    ws.ephemerals.append(message)
    return {"message_ts": message.ts}


@method("chat.getPermalink")
def chat_get_permalink(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    channel = ws.channel(call.need("channel", "channel_not_found"), create=False)
    ts = str(call.need("message_ts", "message_not_found"))
    found = ws.messages[channel.id].get(ts)
    if found is None and ws.config.strict:
        raise Refused("message_not_found")
    link = f"https://{ws.config.team_domain}.slack.com/archives/{channel.id}/p{ts.replace('.', '')}"
    if found is not None and found.thread_ts and found.thread_ts != ts:
        link += f"?thread_ts={found.thread_ts}&cid={channel.id}"
    return {"channel": channel.id, "permalink": link}


@method("chat.startStream")
def chat_start_stream(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    channel = ws.channel(call.need("channel", "channel_not_found"), create=True)
    call.need("thread_ts")
    if not channel.is_im:  # in channels Slack needs to know who the stream is for
        call.need("recipient_team_id")
        call.need("recipient_user_id")
    if call.get("task_display_mode", "timeline") not in _DISPLAY_MODES:
        raise Refused("invalid_arguments")
    _check_chunks(call)
    message = ws.post(channel, call, text="", streaming=True)
    _stream(ws, message, call)
    return {"channel": channel.id, "ts": message.ts}


@method("chat.appendStream")
def chat_append_stream(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    message = _streaming_message(ws, call)
    if not (call.get("markdown_text") or call.get("chunks")):
        raise Refused("no_text")
    _check_chunks(call)
    _stream(ws, message, call)
    return {"channel": message.channel, "ts": message.ts}


@method("chat.stopStream")
def chat_stop_stream(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    message = _streaming_message(ws, call)
    status = call.get("session_status")
    if status is not None and status not in SESSION_STATUSES:
        raise Refused("invalid_arguments")
    _check_chunks(call)
    _stream(ws, message, call)
    message.streaming = False
    if status is not None and message.thread_ts:
        key = (message.channel, message.thread_ts)
        ws.agent_sessions.setdefault(key, []).append(SessionStatus(str(status)))
    if call.get("blocks"):
        message.blocks = list(message.blocks) + list(call.get("blocks"))
    if call.get("metadata"):
        message.metadata = call.get("metadata")
    return {"channel": message.channel, "ts": message.ts, "message": ws.api_message(message)}


def _streaming_message(ws: Workspace, call: MethodCall) -> Message:
    channel = ws.channel(call.need("channel", "channel_not_found"), create=False)
    message = ws.message(channel.id, call.need("ts", "message_not_found"))
    expired = time.monotonic() - message.stream_started > ws.config.stream_lifetime
    if not message.streaming or expired:
        message.streaming = False
        raise Refused("message_not_in_streaming_state")
    return message


def _check_chunks(call: MethodCall) -> None:
    """The chunk shapes of Slack's text streaming (slack_sdk.models.messages.chunk): a known
    `type`; a task needs an id, a title and one of Slack's four statuses; a plan a title."""
    chunks = call.get("chunks", [])
    if not isinstance(chunks, list):
        raise Refused("invalid_chunks")
    for chunk in chunks:
        if not isinstance(chunk, Mapping) or chunk.get("type") not in _CHUNK_TYPES:
            raise Refused("invalid_chunks")
        if chunk["type"] == "task_update" and not (
            chunk.get("id") and chunk.get("title") and chunk.get("status") in _TASK_STATUSES
        ):
            raise Refused("invalid_chunks")
        if chunk["type"] == "plan_update" and not chunk.get("title"):
            raise Refused("invalid_chunks")
        if chunk["type"] == "blocks" and not isinstance(chunk.get("blocks"), list):
            raise Refused("invalid_chunks")


def _stream(ws: Workspace, message: Message, call: MethodCall) -> None:
    chunks = list(call.get("chunks", []))
    if call.get("markdown_text"):
        chunks.insert(0, {"type": "markdown_text", "text": call.get("markdown_text")})
    for chunk in chunks:
        if not isinstance(chunk, Mapping):
            raise Refused("invalid_chunks")
        if chunk.get("type") == "markdown_text":
            if len(str(chunk.get("text", ""))) > _STREAM_TEXT_LIMIT:
                raise Refused("msg_too_long")
            message.text += str(chunk.get("text", ""))
        else:
            message.chunks.append(dict(chunk))


# -- reactions, views ------------------------------------------------------------------------------


@method("reactions.add")
def reactions_add(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    channel = ws.channel(call.need("channel", "channel_not_found"), create=False)
    name = str(call.need("name", "invalid_name")).strip(":")
    ts = str(call.need("timestamp", "no_item_specified"))
    message = ws.messages[channel.id].get(ts)
    if message is None:
        if ws.config.strict:
            raise Refused("message_not_found")
        # A message the fake never saw (a user's, from an event): keep a placeholder.
        message = Message(channel.id, ts, "", USER_ID)
        ws.messages[channel.id][ts] = message
    users = message.reactions.setdefault(name, [])
    if call.actor.user_id in users:
        raise Refused("already_reacted")
    users.append(call.actor.user_id)
    return {}


@method("views.open", "views.push")
def views_open(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    trigger = str(call.need("trigger_id"))
    if trigger in ws.used_triggers:
        raise Refused("exchanged_trigger_id")
    view = _view_arg(call, "modal")
    ws.used_triggers.add(trigger)
    stored = _store_view(ws, ws.new_id("V"), view)
    return {"view": copy.deepcopy(stored)}


@method("views.update")
def views_update(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    view = _view_arg(call, None)
    view_id, external_id = call.get("view_id"), call.get("external_id")
    if view_id is None and external_id is not None:
        view_id = next((i for i, v in ws.views.items() if v["external_id"] == external_id), None)
    if view_id is None:
        raise Refused("not_found" if external_id else "invalid_arguments")
    current = ws.views.get(str(view_id))
    if current is None:
        raise Refused("not_found")
    if call.get("hash") not in (None, current["hash"]):
        raise Refused("hash_conflict")
    return {"view": copy.deepcopy(_store_view(ws, str(view_id), view, current))}


@method("views.publish")
def views_publish(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    user_id = str(call.need("user_id"))
    view = _view_arg(call, "home")
    current = ws.home_views.get(user_id)
    if current is not None and call.get("hash") not in (None, current["hash"]):
        raise Refused("hash_conflict")
    view_id = current["id"] if current else ws.new_id("V")
    ws.home_views[user_id] = _store_view(ws, view_id, view, current)
    return {"view": copy.deepcopy(ws.home_views[user_id])}


def _view_arg(call: MethodCall, view_type: str | None) -> dict[str, Any]:
    view = call.get("view")
    if not isinstance(view, Mapping) or (view_type and view.get("type") != view_type):
        raise Refused("invalid_arguments")
    return dict(view)


def _store_view(
    ws: Workspace, view_id: str, view: dict[str, Any], current: dict[str, Any] | None = None
) -> dict[str, Any]:
    stored = {
        "id": view_id,
        "team_id": ws.team_id,
        "type": view.get("type", current["type"] if current else "modal"),
        "blocks": copy.deepcopy(view.get("blocks", [])),
        "private_metadata": view.get("private_metadata", ""),
        "callback_id": view.get("callback_id", ""),
        "state": {"values": {}},
        "hash": f"{int(time.time())}.{next(ws.ids):08x}",
        "title": view.get("title"),
        "submit": view.get("submit"),
        "close": view.get("close"),
        "clear_on_close": bool(view.get("clear_on_close", False)),
        "notify_on_close": bool(view.get("notify_on_close", False)),
        "previous_view_id": None,
        "root_view_id": current["root_view_id"] if current else view_id,
        "app_id": APP_ID,
        "external_id": view.get("external_id", ""),
        "app_installed_team_id": ws.team_id,
        "bot_id": BOT_ID,
    }
    if stored["type"] != "home":
        ws.views[view_id] = stored
    return stored


# -- users, conversations --------------------------------------------------------------------------


@method("users.info")
def users_info(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    user = ws.users.get(str(call.need("user", "user_not_found")))
    if user is None:
        raise Refused("user_not_found")
    return {"user": user.to_api(ws.team_id)}


@method("usergroups.users.list")
def usergroups_users_list(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    members = ws.usergroups.get(str(call.need("usergroup", "no_such_subteam")))
    if members is None:
        raise Refused("no_such_subteam")
    return {"users": list(members)}


@method("usergroups.list")
def usergroups_list(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    """Slack's user-group fields (id, team_id, is_usergroup, name, handle, description,
    date_delete, user_count; `users` with include_users). Needs `usergroups:read`."""
    if "usergroups:read" not in call.actor.scopes.split(","):
        raise Refused("missing_scope", needed="usergroups:read", provided=call.actor.scopes)
    with_users = truthy(call.get("include_users"))
    groups = []
    for group_id, members in sorted(ws.usergroups.items()):
        name, handle = ws.usergroup_names.get(group_id, (group_id, group_id.lower()))
        group: dict[str, Any] = {
            "id": group_id,
            "team_id": ws.team_id,
            "is_usergroup": True,
            "name": name,
            "handle": handle,
            "description": "",
            "date_delete": 0,
        }
        if truthy(call.get("include_count")):
            group["user_count"] = len(members)
        if with_users:
            group["users"] = list(members)
        groups.append(group)
    return {"usergroups": groups}


@method("conversations.open")
def conversations_open(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    """A 1:1 DM by `users` (1 to 8 ids; more than one would be a group DM, which this fake
    does not keep), or resume one by `channel`; as Slack documents its arguments/errors."""
    if call.get("channel"):
        channel = ws.channel(call.get("channel"), create=False)
        if not channel.is_im:
            raise Refused("method_not_supported_for_channel_type")
        return {"channel": {"id": channel.id}, "no_op": True, "already_open": True}
    users = [u.strip() for u in str(call.get("users") or "").split(",") if u.strip()]
    if not users:
        raise Refused("users_list_not_supplied")
    if len(users) > 8:
        raise Refused("too_many_users")
    for user in users:
        if user not in ws.users:
            raise Refused("user_not_found")
    if len(users) > 1:
        raise Refused("fake_models_no_group_dms")  # Slack opens a group DM; this fake does not
    existing = next((c for c in ws.channels.values() if c.user == users[0]), None)
    channel = ws.channel(users[0], create=True)
    opened: dict[str, Any] = {"channel": {"id": channel.id}}
    if existing is not None:
        opened.update(no_op=True, already_open=True)
    return opened


@method("conversations.info")
def conversations_info(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    return {"channel": ws.channel(call.get("channel"), create=False).to_api()}


@method("conversations.replies")
def conversations_replies(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    channel = ws.channel(call.get("channel"), create=False)
    found = ws.thread(channel.id, str(call.need("ts", "thread_not_found")))
    if not found:
        raise Refused("thread_not_found")
    try:
        limit = max(1, min(int(call.get("limit", 1000)), 1000))
        cursor = call.get("cursor")
        start = int(base64.b64decode(str(cursor)).decode().split(":")[1]) if cursor else 0
    except (ValueError, IndexError):
        raise Refused("invalid_cursor") from None
    page = found[start : start + limit]
    more = start + limit < len(found)
    next_cursor = base64.b64encode(f"offset:{start + limit}".encode()).decode() if more else ""
    return {
        "messages": [ws.api_message(m) for m in page],
        "has_more": more,
        "response_metadata": {"next_cursor": next_cursor},
    }


# -- files -----------------------------------------------------------------------------------------


def has_scope(token: Token, scope: str) -> bool:
    return scope in token.scopes.split(",")


@method("files.info")
def files_info(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    """A file's description, as Slack's `files.info` gives it (comments left out): needs
    `files:read`, and answers `file_not_found` for an id it does not know."""
    if not has_scope(call.actor, "files:read"):
        raise Refused("missing_scope", needed="files:read", provided=call.actor.scopes)
    found = ws.files.get(str(call.need("file", "file_not_found")))
    if found is None:
        raise Refused("file_not_found")
    return {
        "file": found.to_api(ws.team_id, ws.config.team_domain, ws.files_base),
        "comments": [],
        "response_metadata": {"next_cursor": ""},
    }


# -- assistant threads -----------------------------------------------------------------------------


@method(
    "assistant.threads.setStatus",
    "assistant.threads.setTitle",
    "assistant.threads.setSuggestedPrompts",
)
def assistant_threads(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    key = (str(call.need("channel_id")), str(call.need("thread_ts")))
    current = ws.assistant.get(key, AssistantThread())
    if call.method.endswith("setStatus"):
        if "status" not in call.params:
            raise Refused("invalid_arguments")
        current = dataclasses.replace(current, status=str(call.params["status"]))
    elif call.method.endswith("setTitle"):
        current = dataclasses.replace(current, title=str(call.need("title")))
    else:
        prompts = call.need("prompts")
        if not isinstance(prompts, list) or not 1 <= len(prompts) <= 4:
            raise Refused("invalid_arguments")
        current = dataclasses.replace(current, prompts=tuple(prompts))
    ws.assistant[key] = current
    return {}


# -- agent sessions --------------------------------------------------------------------------------


@method("agents.sessions.setStatus")
def agents_sessions_set_status(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    """Creates the thread's session if needed and records the status. Like Slack, it warns
    (ok, with `warning`) when the app does not subscribe to `agent_session_stopped`: without
    it the Stop button Slack shows while `processing` would reach nobody."""
    channel = ws.channel(call.need("channel_id", "channel_not_found"), create=False)
    thread_ts = str(call.need("thread_ts"))
    status = call.need("status")
    if status not in SESSION_STATUSES:
        raise Refused("invalid_arguments")
    history = ws.agent_sessions.setdefault((channel.id, thread_ts), [])
    title, initiator = call.get("title"), call.get("initiator_user_id")
    history.append(
        SessionStatus(
            str(status), str(title) if title else None, str(initiator) if initiator else None
        )
    )
    if STOP_EVENT in ws.subscribed_events:
        return {}
    warning = "missing_agent_session_stopped_event_subscription"
    return {"warning": warning, "response_metadata": {"warnings": [warning]}}


# -- response_url ----------------------------------------------------------------------------------


@method("response_url")
def response_url(ws: Workspace, call: MethodCall) -> dict[str, Any]:
    channel_id, message_ts, user = ws.response_urls[call.params["_key"]]
    params = call.params
    if channel_id is None:
        return {}
    if truthy(params.get("delete_original")) and message_ts:
        ws.messages[channel_id].pop(message_ts, None)
    elif truthy(params.get("replace_original")) and message_ts:
        message = ws.message(channel_id, message_ts)
        message.text = str(params.get("text", ""))
        message.blocks = list(params.get("blocks", []))
        message.edited_ts = ws.next_ts()
    elif params.get("response_type") == "in_channel":
        bot = Token(ws.config.bot_user_id, ws.team_id, BOT_ID, BOT_SCOPES)
        post = MethodCall("response_url", params, bot)
        ws.post(ws.channels[channel_id], post, text=str(params.get("text", "")))
    else:
        ws.ephemerals.append(
            Message(
                channel_id,
                ws.next_ts(),
                str(params.get("text", "")),
                ws.config.bot_user_id,
                ephemeral_to=user,
                blocks=list(params.get("blocks", [])),
            )
        )
    return {}
