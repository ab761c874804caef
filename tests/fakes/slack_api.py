"""A local stand-in for the Slack Web API that the real `slack_sdk` clients talk to over HTTP.

Bolt listeners, Block Kit rendering and approval flows are only trustworthy if they are tested
against the wire: form versus JSON bodies, `ok: false` errors, 429 with `Retry-After`, message
timestamps. So this serves `/api/<method>` on 127.0.0.1 from a background thread, keeps a
small workspace (users, channels, messages, views) and records every call.

    with FakeSlackAPI() as fake:
        client = WebClient(token=BOT_TOKEN, base_url=fake.base_url)
        sent = client.chat_postMessage(channel=CHANNEL_ID, text="hi")
        fake.fail("chat.update", "cant_update_message", times=1)
        ...
        assert fake.last("chat.postMessage").params["text"] == "hi"
        assert [m.text for m in fake.messages_in(CHANNEL_ID)] == ["hi"]

Choices worth knowing:

* Authentication: the token comes from `Authorization: Bearer` or a `token` parameter. None
  answers `not_authed` and an unknown one `invalid_auth`, as Slack does. `BOT_TOKEN` is known
  from the start; `add_token` and `oauth.v2.access` add more. Unknown methods answer HTTP 404
  `unknown_method`.
* Order of checks: unknown method, authentication, scripted failures (`fail`, `rate_limit`),
  throttles, then the method itself. Every call is recorded, refused or not; `Call.ok` tells.
* Channels: by default posting to an unknown channel id creates it (most tests do not care);
  `strict=True` answers `channel_not_found` instead, and also makes `reactions.add` and
  `chat.getPermalink` require a known message. Posting to a user id opens a DM (`D...`).
* Timestamps are real-clock based and strictly increasing, so they sort like Slack's.
* `reset()` returns to the state right after construction; use it with a module-scoped
  server (see tests/integration/test_fake_slack_api.py).

This module is the transport and the test controls; the workspace state is in
`slack_workspace` and what each method does in `slack_methods`. Import everything from here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import json
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.local_server import ServedFake, TrackedHandler, TrackedHTTPServer
from tests.fakes.slack_methods import HANDLERS
from tests.fakes.slack_workspace import (
    APP_ID,
    BOT_ID,
    BOT_SCOPES,
    BOT_TOKEN,
    BOT_USER_ID,
    CHANNEL_ID,
    CLIENT_ID,
    CLIENT_SECRET,
    TEAM_DOMAIN,
    TEAM_ID,
    USER_ID,
    AssistantThread,
    Channel,
    Message,
    MethodCall,
    Refused,
    SessionStatus,
    SlackFile,
    Token,
    User,
    Workspace,
    WorkspaceConfig,
    ts_key,
)

__all__ = [
    "APP_ID",
    "BOT_ID",
    "BOT_TOKEN",
    "BOT_USER_ID",
    "CHANNEL_ID",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "HANDLER_THREAD_NAME",
    "TEAM_DOMAIN",
    "TEAM_ID",
    "USER_ID",
    "AssistantThread",
    "Call",
    "Channel",
    "FakeSlackAPI",
    "Message",
    "SessionStatus",
    "SlackFile",
    "User",
]

HANDLER_THREAD_NAME = "fake-slack-api-handler"

SLACK_TIERS: dict[str, tuple[int, float, bool]] = {
    "chat.postMessage": (1, 1.0, True),
    "chat.startStream": (1, 1.0, True),
    "chat.update": (50, 60.0, False),
    "chat.appendStream": (100, 60.0, False),
    "chat.stopStream": (100, 60.0, False),
}
"""`enforce_tiers`: method -> (calls, per seconds, per channel). Slack's documented tiers
(limits per method per app per workspace): chat.update Tier 3 (50/min), chat.appendStream
Tier 4 (100/min); posting ~1 message/s per channel, and startStream posts one. stopStream's
tier is not published where we looked: it gets appendStream's."""

# Form-encoded calls carry these as JSON strings; record them decoded, as Slack reads them.
_JSON_FIELDS = frozenset(
    {"attachments", "blocks", "chunks", "loading_messages", "metadata", "prompts", "view"}
)
_NO_AUTH = frozenset({"oauth.v2.access", "response_url"})
FILES_PATH = "/files-pri/"
DOWNLOAD = "file.download"
"""How `calls()` names a request for a file's `url_private_download` (not a Web API method)."""
LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in</body></html>"

Answer = tuple[int, dict[str, str], dict[str, Any]]


@dataclass(frozen=True)
class Call:
    """One request as the fake received and answered it."""

    method: str
    params: dict[str, Any]
    """Arguments, with JSON-string form fields (`blocks`, `view`, ...) decoded; no `token`."""
    raw_params: dict[str, Any]
    """Arguments exactly as sent: form fields are strings."""
    token: str | None
    at: float
    http_method: str
    content_type: str
    status: int
    response: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        error = self.response.get("error")
        return str(error) if error is not None else None


@dataclass
class _Failure:
    method: str
    error: str
    remaining: int | None
    channel: str | None
    status: int
    retry_after: int | None


@dataclass
class _Throttle:
    limit: int
    per: float
    per_channel: bool
    seen: dict[str | None, deque[float]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------


class _Server(TrackedHTTPServer["FakeSlackAPI"]):
    request_queue_size = 128


class _Handler(TrackedHandler):
    thread_name = HANDLER_THREAD_NAME
    server: _Server

    def _serve(self) -> None:
        body = self._body()
        if self.path.startswith(FILES_PATH):
            code, kind, data, extra = self.server.fake._download(self.path, dict(self.headers))
            self._send(code, kind, data, extra)
            return
        status, headers, payload = self.server.fake._handle(
            self.command, self.path, dict(self.headers.items()), body
        )
        self._send(status, "application/json; charset=utf-8", json.dumps(payload).encode(), headers)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------


class FakeSlackAPI(ServedFake, server=_Server, handler=_Handler, thread_name="fake-slack-api"):
    """A Slack Web API on 127.0.0.1:<ephemeral>, served from a background thread.

    One lock guards the workspace and the record, so handler threads, the test thread and an
    event loop polling `wait_for_async` can all use one instance at once.
    """

    def __init__(
        self,
        *,
        users: Iterable[User] = (),
        channels: Iterable[Channel] = (),
        usergroups: Mapping[str, Sequence[str]] | None = None,
        strict: bool = False,
        bot_token: str = BOT_TOKEN,
        bot_user_id: str = BOT_USER_ID,
        team_id: str = TEAM_ID,
        team_domain: str = TEAM_DOMAIN,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        stream_lifetime: float = 300.0,
    ) -> None:
        self.config = WorkspaceConfig(
            strict=strict,
            bot_token=bot_token,
            bot_user_id=bot_user_id,
            team_id=team_id,
            team_domain=team_domain,
            client_id=client_id,
            client_secret=client_secret,
            stream_lifetime=stream_lifetime,
        )
        self._seed_users = [dataclasses.replace(u) for u in users]
        self._seed_channels = [dataclasses.replace(c) for c in channels]
        self._seed_groups = {k: list(v) for k, v in (usergroups or {}).items()}
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._calls: list[Call] = []
        self._failures: list[_Failure] = []
        self._throttles: dict[str, _Throttle] = {}
        self._latency: dict[str | None, float] = {}
        self._errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._ws = self._fresh_workspace()

    def _fresh_workspace(self) -> Workspace:
        ws = Workspace(self.config)
        defaults = [
            User(self.config.bot_user_id, "cosmo", "Cosmo", "Cosmo", is_bot=True),
            User(USER_ID, "alice", "Alice Example", "alice"),
        ]
        for user in [*defaults, *self._seed_users]:
            ws.users[user.id] = dataclasses.replace(user)
        for channel in [Channel(CHANNEL_ID, "general"), *self._seed_channels]:
            ws.add_channel(dataclasses.replace(channel))
        ws.usergroups.update({k: list(v) for k, v in self._seed_groups.items()})
        return ws

    # -- lifecycle: start(), stop(), `with` and `port` come from ServedFake ------------------------

    @property
    def base_url(self) -> str:
        """Pass as `base_url=` to WebClient / AsyncWebClient (the trailing slash matters)."""
        return f"http://127.0.0.1:{self.port}/api/"

    def reset(self) -> None:
        """Back to the state right after construction: workspace, record, failures, latency."""
        with self._lock:
            self._ws = self._fresh_workspace()
            self._calls.clear()
            self._failures.clear()
            self._throttles.clear()
            self._latency.clear()
            self._errors.clear()

    # -- workspace set-up --------------------------------------------------------------------------

    def add_user(self, user_id: str, name: str, *, is_admin: bool = False, **fields: Any) -> User:
        """`fields`: real_name, display_name, is_owner, is_bot, deleted, email, tz."""
        user = User(user_id, name, is_admin=is_admin, **fields)
        with self._lock:
            self._ws.users[user_id] = user
        return dataclasses.replace(user)

    def add_usergroup(
        self,
        group_id: str,
        members: Iterable[str],
        *,
        name: str | None = None,
        handle: str | None = None,
    ) -> None:
        with self._lock:
            self._ws.usergroups[group_id] = list(members)
            if name or handle:
                self._ws.usergroup_names[group_id] = (name or group_id, handle or group_id)

    def add_channel(
        self, channel_id: str, name: str = "", *, is_private: bool = False, user: str | None = None
    ) -> Channel:
        """A channel, or with `user=` a DM with that user."""
        with self._lock:
            return dataclasses.replace(
                self._ws.add_channel(
                    Channel(channel_id, name or channel_id.lower(), is_private, user)
                )
            )

    def add_token(self, token: str, *, user_id: str, bot: bool = False, scopes: str = "") -> None:
        """Another valid token: a user token (`xoxp-`) or a second bot."""
        with self._lock:
            self._ws.tokens[token] = Token(
                user_id, self.config.team_id, BOT_ID if bot else None, scopes or BOT_SCOPES
            )

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = USER_ID,
        thread_ts: str | None = None,
        ts: str | None = None,
        blocks: Sequence[Any] = (),
    ) -> Message:
        """A message someone else wrote (Slack would have sent it to the app as an event), so
        `conversations.replies` and `messages_in` see it. Returns a copy; `.ts` is its id."""
        with self._lock:
            ch = self._ws.channel(channel, create=True)
            message = Message(ch.id, ts or self._ws.next_ts(), text, user, list(blocks), thread_ts)
            self._ws.messages[ch.id][message.ts] = message
            return copy.deepcopy(message)

    def upload_file(
        self,
        name: str,
        content: bytes,
        *,
        mimetype: str,
        filetype: str,
        user: str = USER_ID,
        channel: str | None = None,
        title: str = "",
    ) -> dict[str, Any]:
        """A file someone uploaded (and shared in `channel`): returns its file object as
        `files.info` and a `file_share` message event carry it. The bytes are served at its
        `url_private_download` to tokens with `files:read`."""
        with self._lock:
            self._ws.files_base = f"http://127.0.0.1:{self.port}"
            found = SlackFile(
                self._ws.new_id("F"),
                name,
                content,
                user,
                mimetype,
                filetype,
                title,
                channels=[channel] if channel else [],
            )
            self._ws.files[found.id] = found
            return found.to_api(self.config.team_id, self.config.team_domain, self._ws.files_base)

    def downloads(self) -> list[Call]:
        """Requests for files' `url_private_download`, answered or not."""
        return self.calls(DOWNLOAD)

    def issue_oauth_code(
        self,
        code: str = "fake-oauth-code",
        *,
        user_id: str = USER_ID,
        bot_user_id: str | None = None,
        redirect_uri: str | None = None,
        token_rotation: bool = False,
        user_token: bool = False,
    ) -> str:
        """A one-time code that `oauth.v2.access` exchanges for a new bot token (registered as
        valid at once). `token_rotation` adds `refresh_token`/`expires_in`."""
        with self._lock:
            self._ws.oauth_codes[code] = {
                "user_id": user_id,
                "bot_user_id": bot_user_id or self.config.bot_user_id,
                "redirect_uri": redirect_uri,
                "rotate": token_rotation,
                "user_token": user_token,
            }
        return code

    def response_url(
        self, channel: str | None = None, message_ts: str | None = None, user: str = USER_ID
    ) -> str:
        """A `response_url` for a request builder. Posts to it are recorded as method
        `response_url`; bound to a message, they apply `replace_original`, `delete_original`
        and `response_type: in_channel` to the workspace."""
        with self._lock:
            key = f"{next(self._ws.ids)}-{self.config.team_id}"
            self._ws.response_urls[key] = (channel, message_ts, user)
        return f"http://127.0.0.1:{self.port}/response/{key}"

    # -- failure scripting -------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        error: str,
        *,
        times: int | None = None,
        channel: str | None = None,
        status: int = 200,
    ) -> None:
        """Answer `{"ok": false, "error": error}`: every matching call until `clear_failures`,
        or the next `times` ones. `channel` limits it to calls for that channel."""
        with self._lock:
            self._failures.append(_Failure(method, error, times, channel, status, None))

    def rate_limit(
        self,
        method: str,
        *,
        times: int | None = 1,
        retry_after: int = 1,
        channel: str | None = None,
    ) -> None:
        """Answer HTTP 429 `ratelimited` with `Retry-After: <retry_after>` to the next `times`
        matching calls (None: until `clear_failures`)."""
        with self._lock:
            self._failures.append(_Failure(method, "ratelimited", times, channel, 429, retry_after))

    def throttle(
        self, method: str, *, limit: int, per: float = 1.0, per_channel: bool = True
    ) -> None:
        """Slack's real kind of limit: at most `limit` calls per `per` seconds (per channel by
        default, like chat.postMessage's ~1/s); the excess gets 429 with an honest Retry-After."""
        with self._lock:
            self._throttles[method] = _Throttle(limit, per, per_channel)

    def enforce_tiers(self, tiers: Mapping[str, tuple[int, float, bool]] | None = None) -> None:
        """Switch on Slack's per-method limits (`SLACK_TIERS`, or the `tiers` given) as
        `throttle`s, counted from now."""
        for name, (limit, per, per_channel) in (tiers or SLACK_TIERS).items():
            self.throttle(name, limit=limit, per=per, per_channel=per_channel)

    def subscribe_events(self, *events: str) -> None:
        """What the app's event subscriptions hold (the manifest's `bot_events`)."""
        with self._lock:
            self._ws.subscribed_events.update(events)

    def set_latency(self, seconds: float, method: str | None = None) -> None:
        """Delay answers to `method` (or to every method) by `seconds`."""
        with self._lock:
            self._latency[method] = seconds

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()
            self._throttles.clear()

    # -- inspection --------------------------------------------------------------------------------

    def calls(self, method: str | None = None, *, ok: bool | None = None) -> list[Call]:
        """Recorded calls in arrival order, optionally only one method and/or only (un)ok."""
        with self._lock:
            return [
                c
                for c in self._calls
                if (method is None or c.method == method) and (ok is None or c.ok == ok)
            ]

    def last(self, method: str) -> Call:
        found = self.calls(method)
        if not found:
            seen = sorted({c.method for c in self.calls()})
            raise AssertionError(f"no {method} call was made; calls so far: {seen}")
        return found[-1]

    def wait_for(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Block until `count` calls of `method` arrived; TimeoutError says what did arrive.
        Do not call it on an event loop that must make those calls: use `wait_for_async`."""
        with self._arrived:
            done = self._arrived.wait_for(
                lambda: sum(c.method == method for c in self._calls) >= count, timeout
            )
        if not done:
            raise TimeoutError(self._timeout_message(method, count, timeout))
        return self.calls(method)

    async def wait_for_async(
        self,
        method: str,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - the same signature as wait_for
    ) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(found := self.calls(method)) < count:
            if time.monotonic() >= deadline:
                raise TimeoutError(self._timeout_message(method, count, timeout))
            await asyncio.sleep(0.005)
        return found

    def _timeout_message(self, method: str, count: int, timeout: float) -> str:
        got = len(self.calls(method))
        seen = [c.method for c in self.calls()]
        return f"expected {count} {method} call(s) within {timeout}s, got {got}; calls: {seen}"

    def messages_in(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        """Copies of the messages in `channel` as they stand now, oldest first: all of them,
        or with `thread_ts` the thread (its parent, if the fake knows it, then the replies).
        Deleted messages are gone; ephemeral ones are in `ephemeral_messages`."""
        with self._lock:
            if thread_ts is not None:
                found = self._ws.thread(channel, thread_ts)
            else:
                found = sorted(
                    self._ws.messages.get(channel, {}).values(), key=lambda m: ts_key(m.ts)
                )
            return [copy.deepcopy(m) for m in found]

    def message(self, channel: str, ts: str) -> Message:
        with self._lock:
            found = self._ws.messages.get(channel, {}).get(ts)
            if found is None:
                raise AssertionError(f"no message {ts} in {channel}")
            return copy.deepcopy(found)

    def ephemeral_messages(
        self, channel: str | None = None, user: str | None = None
    ) -> list[Message]:
        with self._lock:
            return [
                copy.deepcopy(m)
                for m in self._ws.ephemerals
                if channel in (None, m.channel) and user in (None, m.ephemeral_to)
            ]

    def view(self, view_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._ws.views[view_id])

    def home_view(self, user_id: str) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self._ws.home_views.get(user_id))

    def stop_streams(self, channel: str, thread_ts: str) -> list[str]:
        """What Slack does when someone clicks Stop on a processing agent session: it ends
        the thread's open streams itself (then sends `agent_session_stopped` naming them).
        Returns their ts, for the event's `streaming_message_ts`."""
        with self._lock:
            stopped = [m for m in self._ws.thread(channel, thread_ts) if m.streaming]
            for message in stopped:
                message.streaming = False
            return [m.ts for m in stopped]

    def session_statuses(self, channel: str, thread_ts: str) -> list[str]:
        """Every status set on the thread's agent session, oldest first."""
        return [s.status for s in self.session_history(channel, thread_ts)]

    def session_history(self, channel: str, thread_ts: str) -> list[SessionStatus]:
        with self._lock:
            return list(self._ws.agent_sessions.get((channel, thread_ts), []))

    def rate_limited(self, method: str | None = None) -> list[Call]:
        """Calls answered 429."""
        return [c for c in self.calls(method) if c.status == 429]

    def assistant_thread(self, channel: str, thread_ts: str) -> AssistantThread:
        with self._lock:
            return self._ws.assistant.get((channel, thread_ts), AssistantThread())

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised inside the fake; each was also answered 500 `fatal_error`."""
        with self._lock:
            return list(self._errors)

    # -- request handling (server threads) ---------------------------------------------------------

    def _handle(
        self, http_method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Answer:
        url = urlsplit(path)
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        raw: dict[str, Any] = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path.startswith("/api/"):
            method = url.path[len("/api/") :]
        elif url.path.startswith("/response/"):
            method = "response_url"
            raw["_key"] = url.path[len("/response/") :]
        else:
            return 404, {}, {"ok": False, "error": "not_found"}
        bad_body = False
        if body:
            if content_type.lower().startswith("application/json"):
                try:
                    loaded = json.loads(body)
                    bad_body = not isinstance(loaded, dict)
                    raw.update(loaded if isinstance(loaded, dict) else {})
                except ValueError:
                    bad_body = True
            else:
                raw.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        token = raw.pop("token", None)
        if auth.startswith("Bearer "):
            token = auth[len("Bearer ") :].strip()
        elif auth.startswith("Basic "):  # oauth.v2.access: client_id:client_secret
            with contextlib.suppress(ValueError):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                raw.update(client_id=user, client_secret=password)
        params = {k: self._decode(k, v) for k, v in raw.items()}

        with self._lock:
            latency = self._latency.get(method, self._latency.get(None, 0.0))
        if latency:
            self._stopping.wait(latency)
        with self._lock:
            answer: Answer = (
                (200, {}, {"ok": False, "error": "invalid_json"})
                if bad_body
                else self._answer(method, params, token)
            )
            status, extra, response = answer
            public = {k: v for k, v in params.items() if k != "_key"}
            self._calls.append(
                Call(
                    method,
                    public,
                    {k: v for k, v in raw.items() if k != "_key"},
                    token,
                    time.time(),
                    http_method,
                    content_type,
                    status,
                    response,
                )
            )
            self._arrived.notify_all()
        return status, extra, response

    def _download(
        self, path: str, headers: Mapping[str, str]
    ) -> tuple[int, str, bytes, dict[str, str]]:
        """A file's bytes for a token with `files:read`. Anyone else gets what Slack serves
        them: its sign-in page, as HTML with status 200 (the trap every app falls into once).
        A file the workspace does not have is a 404."""
        url = urlsplit(path)
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else None
        with self._lock:
            ws = self._ws
            found = next(
                (f for f in ws.files.values() if f.download_path(ws.team_id) == url.path), None
            )
            known = ws.tokens.get(token) if token else None
            answer: tuple[int, str, bytes, dict[str, str]]
            if found is None:
                answer = (404, "text/plain", b"Not Found", {})
            elif known is None or "files:read" not in known.scopes.split(","):
                answer = (200, "text/html; charset=utf-8", LOGIN_PAGE, {})
            else:
                answer = (200, found.mimetype, found.content, {})
            status = answer[0]
            self._calls.append(
                Call(
                    DOWNLOAD,
                    {"path": url.path},
                    {"path": url.path},
                    token,
                    time.time(),
                    "GET",
                    "",
                    status,
                    {"ok": answer[2] is not LOGIN_PAGE and status == 200, "bytes": len(answer[2])},
                )
            )
            self._arrived.notify_all()
        return answer

    @staticmethod
    def _decode(name: str, value: Any) -> Any:
        if name in _JSON_FIELDS and isinstance(value, str):
            with contextlib.suppress(ValueError):
                return json.loads(value)
        return value

    def _answer(self, method: str, params: dict[str, Any], token: str | None) -> Answer:
        handler = HANDLERS.get(method)
        if handler is None:
            return 404, {}, {"ok": False, "error": "unknown_method", "req_method": method}
        found: Token | None = None
        if method not in _NO_AUTH:
            if not token:
                return 200, {}, {"ok": False, "error": "not_authed"}
            found = self._ws.tokens.get(token)
            if found is None:
                return 200, {}, {"ok": False, "error": "invalid_auth"}
        elif method == "response_url" and params["_key"] not in self._ws.response_urls:
            return 404, {}, {"ok": False, "error": "expired_url"}
        channel = params.get("channel") or params.get("channel_id")
        channel = str(channel) if channel is not None else None
        refused = self._scripted_failure(method, channel) or self._throttled(method, channel)
        if refused is not None:
            return refused
        headers = {"x-oauth-scopes": found.scopes} if found else {}
        try:
            response = handler(self._ws, MethodCall(method, params, found))
        except Refused as refusal:
            return 200, headers, {"ok": False, "error": refusal.error, **refusal.extra}
        except Exception as exc:  # a bug in the fake must not look like a Slack answer
            self._errors.append(exc)
            return 500, {}, {"ok": False, "error": "fatal_error"}
        return 200, headers, {"ok": True, **response}

    def _scripted_failure(self, method: str, channel: str | None) -> Answer | None:
        for failure in self._failures:
            if failure.method != method or failure.channel not in (None, channel):
                continue
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            return failure.status, headers, {"ok": False, "error": failure.error}
        return None

    def _throttled(self, method: str, channel: str | None) -> Answer | None:
        throttle = self._throttles.get(method)
        if throttle is None:
            return None
        now = time.monotonic()
        seen = throttle.seen.setdefault(channel if throttle.per_channel else None, deque())
        while seen and seen[0] <= now - throttle.per:
            seen.popleft()
        if len(seen) >= throttle.limit:
            wait = max(1, math.ceil(seen[0] + throttle.per - now))
            return 429, {"Retry-After": str(wait)}, {"ok": False, "error": "ratelimited"}
        seen.append(now)
        return None
