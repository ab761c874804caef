"""Signed requests to our `/slack/events`, built the way Slack builds them.

Slack signs `v0:{timestamp}:{raw body}` with HMAC-SHA256 under the app's signing secret and
sends `X-Slack-Request-Timestamp` and `X-Slack-Signature: v0=<hex>`. Events API callbacks are
JSON; interactivity (`block_actions`, `view_submission`) is a form with one `payload` field
holding JSON; slash commands are plain forms. Retries of an event resend the same body (same
`event_id`) with `X-Slack-Retry-Num`/`X-Slack-Retry-Reason` and a fresh signature.

    slack = SlackRequests(SIGNING_SECRET)
    mention = slack.app_mention("<@U0COSMOBOT> summarise this", thread_ts="1700000000.000100")
    response = mention.send(test_client)          # any client with .request(...), e.g. TestClient
    again = mention.retry(1, "http_timeout")       # Slack's redelivery of the same event
    click = slack.block_action("output_approve", "out_123", message_ts=posted_ts,
                               response_url=fake.response_url(CHANNEL_ID, posted_ts))
    hostile = mention.with_headers({"X-Slack-Request-Timestamp": "abc"})

Ids default to the fake Web API's workspace (`tests.fakes.slack_api`), so a listener that
calls back into `FakeSlackAPI` finds the same team, bot, user and channel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

from tests.fakes.slack_api import APP_ID, BOT_ID, BOT_USER_ID, CHANNEL_ID, TEAM_DOMAIN, TEAM_ID
from tests.fakes.slack_api import USER_ID as DEFAULT_USER_ID

__all__ = [
    "EVENTS_PATH",
    "SIGNING_SECRET",
    "SignedRequest",
    "SlackRequests",
    "slack_signature",
]

EVENTS_PATH = "/slack/events"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the example secret from Slack's docs
USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
VERIFICATION_TOKEN = "legacy-verification-token"  # still sent by Slack, deprecated, ignored
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

_counter = itertools.count(1)
_counter_lock = threading.Lock()


def _next() -> int:
    with _counter_lock:
        return next(_counter)


def slack_signature(signing_secret: str, timestamp: int | str, body: bytes | str) -> str:
    """`v0=<hex>` over `v0:{timestamp}:{body}`, as Slack computes it."""
    raw = body.encode() if isinstance(body, str) else body
    base = f"v0:{timestamp}:".encode() + raw
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


class _Client(Protocol):
    def request(self, method: str, url: str, *, content: bytes, headers: dict[str, str]) -> Any:
        """httpx.Client, httpx.AsyncClient and Starlette's TestClient all fit."""


@dataclass(frozen=True)
class SignedRequest:
    """A request as Slack would send it: exact body bytes, headers, and what the body says."""

    body: bytes
    headers: dict[str, str]
    payload: dict[str, Any] = field(repr=False)
    """The event envelope, the interactive payload, or the command's form fields."""
    signing_secret: str = field(repr=False, default=SIGNING_SECRET)
    path: str = EVENTS_PATH
    method: str = "POST"
    clock: Callable[[], float] = field(repr=False, compare=False, default=time.time)
    """The builder's clock: re-signing (`resigned`, `retry`, `with_body`) reads it."""

    def send(self, client: _Client) -> Any:
        return client.request(self.method, self.path, content=self.body, headers=self.headers)

    def with_headers(self, changes: Mapping[str, str | None]) -> SignedRequest:
        """Replace headers (case-insensitively); None removes one. The body stays as signed."""
        lowered = {k.lower() for k in changes}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in lowered}
        headers.update({k: v for k, v in changes.items() if v is not None})
        return dataclasses.replace(self, headers=headers)

    def with_body(self, body: bytes | str, *, resign: bool = True) -> SignedRequest:
        """Another body: re-signed by default (a signed but malformed body), or kept with the
        old signature (a tampered body)."""
        raw = body.encode() if isinstance(body, str) else body
        changed = dataclasses.replace(self, body=raw)
        return changed.resigned() if resign else changed

    def resigned(
        self, *, timestamp: int | None = None, signing_secret: str | None = None
    ) -> SignedRequest:
        """Signed again now (or at `timestamp`, or with another secret)."""
        ts = int(self.clock()) if timestamp is None else timestamp
        secret = self.signing_secret if signing_secret is None else signing_secret
        return self.with_headers(
            {
                "X-Slack-Request-Timestamp": str(ts),
                "X-Slack-Signature": slack_signature(secret, ts, self.body),
            }
        )

    def retry(self, num: int = 1, reason: str = "http_timeout") -> SignedRequest:
        """Slack's redelivery: same body and event_id, fresh signature, retry headers."""
        retried = self.with_headers({"X-Slack-Retry-Num": str(num), "X-Slack-Retry-Reason": reason})
        return retried.resigned()


class SlackRequests:
    """Builds signed requests for one app installation (team, app, bot user).

    Every builder takes `timestamp=` (default: now from `clock`) and returns a
    `SignedRequest`; `user` and `channel` default to the fake workspace's alice and #general.
    """

    def __init__(
        self,
        signing_secret: str = SIGNING_SECRET,
        *,
        team_id: str = TEAM_ID,
        team_domain: str = TEAM_DOMAIN,
        api_app_id: str = APP_ID,
        bot_user_id: str = BOT_USER_ID,
        bot_id: str = BOT_ID,
        user_id: str = DEFAULT_USER_ID,
        channel_id: str = CHANNEL_ID,
        path: str = EVENTS_PATH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.team_domain = team_domain
        self.api_app_id = api_app_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.user_id = user_id
        self.channel_id = channel_id
        self.path = path
        self.clock = clock
        self._last_ts = 0

    # -- ids ---------------------------------------------------------------------------------

    def next_ts(self) -> str:
        """A message timestamp later than any this builder made before."""
        now = int(self.clock() * 1_000_000)
        self._last_ts = max(self._last_ts + 1, now)
        return f"{self._last_ts // 1_000_000}.{self._last_ts % 1_000_000:06d}"

    @staticmethod
    def event_id() -> str:
        return f"Ev{_next():010d}"

    @staticmethod
    def trigger_id() -> str:
        n = _next()
        return f"{n}.{n * 7919}.{uuid.uuid4().hex[:32]}"

    # -- signing -----------------------------------------------------------------------------

    def sign(
        self,
        body: bytes | str,
        *,
        content_type: str,
        payload: dict[str, Any] | None = None,
        timestamp: int | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
    ) -> SignedRequest:
        """Any body, signed. The other builders end here."""
        raw = body.encode() if isinstance(body, str) else body
        ts = int(self.clock()) if timestamp is None else timestamp
        headers = {
            "Content-Type": content_type,
            "User-Agent": USER_AGENT,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": slack_signature(self.signing_secret, ts, raw),
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
        return SignedRequest(
            raw, headers, payload or {}, self.signing_secret, self.path, clock=self.clock
        )

    def _json(self, payload: dict[str, Any], **sign: Any) -> SignedRequest:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        return self.sign(body, content_type=JSON, payload=payload, **sign)

    def _form(
        self, fields: Mapping[str, str], payload: dict[str, Any], **sign: Any
    ) -> SignedRequest:
        return self.sign(urlencode(fields), content_type=FORM, payload=payload, **sign)

    # -- Events API --------------------------------------------------------------------------

    def url_verification(self, challenge: str | None = None, **sign: Any) -> SignedRequest:
        payload = {
            "token": VERIFICATION_TOKEN,
            "challenge": challenge or uuid.uuid4().hex,
            "type": "url_verification",
        }
        return self._json(payload, **sign)

    def event_callback(
        self,
        event: Mapping[str, Any],
        *,
        event_id: str | None = None,
        event_time: int | None = None,
        timestamp: int | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
    ) -> SignedRequest:
        """Any event inside Slack's `event_callback` envelope."""
        payload = {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.api_app_id,
            "event": dict(event),
            "type": "event_callback",
            "event_id": event_id or self.event_id(),
            "event_time": event_time if event_time is not None else int(self.clock()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
        }
        return self._json(
            payload, timestamp=timestamp, retry_num=retry_num, retry_reason=retry_reason
        )

    def agent_session_stopped(
        self,
        *,
        thread_ts: str,
        streaming_message_ts: Sequence[str] = (),
        user: str | None = None,
        channel: str | None = None,
        event_id: str | None = None,
    ) -> SignedRequest:
        """Someone clicked Stop on the thread's agent session (Slack already ended the
        streams it lists)."""
        event = {
            "type": "agent_session_stopped",
            "channel": channel or self.channel_id,
            "thread_ts": thread_ts,
            "user": user or self.user_id,
            "streaming_message_ts": list(streaming_message_ts),
            "event_ts": self.next_ts(),
        }
        return self.event_callback(event, event_id=event_id)

    def app_mention(
        self,
        text: str,
        *,
        user: str | None = None,
        channel: str | None = None,
        ts: str | None = None,
        thread_ts: str | None = None,
        **envelope: Any,
    ) -> SignedRequest:
        """`@bot ...` in a channel; with `thread_ts`, inside a thread. Slack also sends the
        same mention as a `message` event when the app subscribes to those."""
        event = self._message_fields(text, user, channel, ts, thread_ts)
        event["type"] = "app_mention"
        return self.event_callback(event, **envelope)

    def message(
        self,
        text: str,
        *,
        user: str | None = None,
        channel: str | None = None,
        ts: str | None = None,
        thread_ts: str | None = None,
        channel_type: str | None = None,
        subtype: str | None = None,
        bot_id: str | None = None,
        **envelope: Any,
    ) -> SignedRequest:
        """A `message` event; `channel_type` follows the channel id (`D...` is `im`)."""
        event = self._message_fields(text, user, channel, ts, thread_ts)
        event["type"] = "message"
        event["channel_type"] = channel_type or _channel_type(event["channel"])
        if subtype:
            event["subtype"] = subtype
        if bot_id:
            event.update(bot_id=bot_id, app_id=self.api_app_id)
        return self.event_callback(event, **envelope)

    def file_share(
        self,
        files: Sequence[Mapping[str, Any]],
        text: str = "",
        *,
        user: str | None = None,
        channel: str | None = None,
        thread_ts: str | None = None,
        **envelope: Any,
    ) -> SignedRequest:
        """Someone shared files (`FakeSlackAPI.upload_file`'s objects): a `message` event
        with subtype `file_share` and the files, in a DM by default (`channel` for another
        conversation, `thread_ts` for a thread)."""
        who = user or self.user_id
        event = self._message_fields(text, who, channel or "D" + who[1:], None, thread_ts)
        event.update(
            type="message",
            subtype="file_share",
            files=[dict(f) for f in files],
            upload=False,
            display_as_bot=False,
        )
        event["channel_type"] = _channel_type(event["channel"])
        if not text:
            event.pop("blocks")
        return self.event_callback(event, **envelope)

    def dm(
        self, text: str, *, user: str | None = None, channel: str | None = None, **kw: Any
    ) -> SignedRequest:
        """A direct message to the app (`message.im`)."""
        who = user or self.user_id
        return self.message(text, user=who, channel=channel or "D" + who[1:], **kw)

    def _message_fields(
        self,
        text: str,
        user: str | None,
        channel: str | None,
        ts: str | None,
        thread_ts: str | None,
    ) -> dict[str, Any]:
        ts = ts or self.next_ts()
        event: dict[str, Any] = {
            "user": user or self.user_id,
            "text": text,
            "ts": ts,
            "channel": channel or self.channel_id,
            "event_ts": ts,
            "team": self.team_id,
            "client_msg_id": str(uuid.uuid4()),
            "blocks": [
                {
                    "type": "rich_text",
                    "block_id": uuid.uuid4().hex[:5],
                    "elements": [
                        {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
                    ],
                }
            ],
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
            event["parent_user_id"] = user or self.user_id
        return event

    # -- interactivity -----------------------------------------------------------------------

    def block_action(
        self,
        action_id: str,
        value: str | None = None,
        *,
        user: str | None = None,
        channel: str | None = None,
        message_ts: str | None = None,
        thread_ts: str | None = None,
        block_id: str | None = None,
        message: Mapping[str, Any] | None = None,
        ephemeral: bool = False,
        action: Mapping[str, Any] | None = None,
        trigger_id: str | None = None,
        response_url: str | None = None,
        timestamp: int | None = None,
        **overrides: Any,
    ) -> SignedRequest:
        """A button click on a message the app posted (`message_ts`). `action` replaces the
        default button action; `overrides` replace top-level payload fields."""
        channel = channel or self.channel_id
        message_ts = message_ts or self.next_ts()
        clicked = (
            dict(action)
            if action is not None
            else {
                "type": "button",
                "action_id": action_id,
                "block_id": block_id or f"{action_id}_block",
                "text": {"type": "plain_text", "text": action_id, "emoji": True},
                "value": value,
                "action_ts": f"{self.clock():.6f}",
            }
        )
        if value is None:
            clicked.pop("value", None)
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": ephemeral,
        }
        if thread_ts:
            container["thread_ts"] = thread_ts
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user(user),
            "api_app_id": self.api_app_id,
            "token": VERIFICATION_TOKEN,
            "container": container,
            "trigger_id": trigger_id or self.trigger_id(),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": channel.lower()},
            "state": {"values": {}},
            "response_url": response_url or self._response_url(),
            "actions": [clicked],
        }
        if not ephemeral:  # Slack leaves `message` out for clicks on ephemeral messages
            posted: dict[str, Any] = {
                "type": "message",
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
                "app_id": self.api_app_id,
                "ts": message_ts,
                "text": "",
                "team": self.team_id,
                "blocks": [],
            }
            if thread_ts:
                posted["thread_ts"] = thread_ts
            payload["message"] = {**posted, **(message or {})}
        payload.update(overrides)
        return self._form({"payload": json.dumps(payload)}, payload, timestamp=timestamp)

    def view_action(
        self,
        action_id: str,
        view: Mapping[str, Any],
        values: Mapping[str, Any],
        *,
        user: str | None = None,
        block_id: str | None = None,
        value: str | None = None,
    ) -> SignedRequest:
        """A button click inside a modal the app opened: Slack sends `container.type: view`,
        the whole `view` with its current `state.values`, and no channel or message."""
        clicked: dict[str, Any] = {
            "type": "button",
            "action_id": action_id,
            "block_id": block_id or action_id,
            "text": {"type": "plain_text", "text": action_id, "emoji": True},
            "action_ts": f"{self.clock():.6f}",
        }
        if value is not None:
            clicked["value"] = value
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user(user),
            "api_app_id": self.api_app_id,
            "token": VERIFICATION_TOKEN,
            "container": {"type": "view", "view_id": view["id"]},
            "trigger_id": self.trigger_id(),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "view": {**view, "state": {"values": dict(values)}},
            "actions": [clicked],
        }
        return self._form({"payload": json.dumps(payload)}, payload)

    def view_submission(
        self,
        callback_id: str,
        values: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        user: str | None = None,
        private_metadata: str = "",
        view_id: str | None = None,
        blocks: list[Any] | None = None,
        timestamp: int | None = None,
        **overrides: Any,
    ) -> SignedRequest:
        """A modal's submit. `values` is `{block_id: {action_id: state}}`; a plain string state
        becomes a `plain_text_input` value, a mapping is sent as it is."""
        state = {
            block: {
                action: {"type": "plain_text_input", "value": v} if isinstance(v, str) else dict(v)
                for action, v in actions.items()
            }
            for block, actions in (values or {}).items()
        }
        view_id = view_id or f"V0{_next():08X}"
        view = {
            "id": view_id,
            "team_id": self.team_id,
            "type": "modal",
            "blocks": blocks or [],
            "private_metadata": private_metadata,
            "callback_id": callback_id,
            "state": {"values": state},
            "hash": f"{int(self.clock())}.{uuid.uuid4().hex[:8]}",
            "title": {"type": "plain_text", "text": "Cosmo", "emoji": True},
            "clear_on_close": False,
            "notify_on_close": False,
            "close": {"type": "plain_text", "text": "Cancel", "emoji": True},
            "submit": {"type": "plain_text", "text": "Submit", "emoji": True},
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": self.api_app_id,
            "external_id": "",
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        payload: dict[str, Any] = {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": self._user(user),
            "api_app_id": self.api_app_id,
            "token": VERIFICATION_TOKEN,
            "trigger_id": self.trigger_id(),
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        payload.update(overrides)
        return self._form({"payload": json.dumps(payload)}, payload, timestamp=timestamp)

    # -- slash commands, ssl_check -----------------------------------------------------------

    def slash_command(
        self,
        command: str,
        text: str = "",
        *,
        user: str | None = None,
        channel: str | None = None,
        channel_name: str | None = None,
        trigger_id: str | None = None,
        response_url: str | None = None,
        timestamp: int | None = None,
    ) -> SignedRequest:
        """`/agent help` and friends. Commands carry no `thread_ts`, as in Slack."""
        channel = channel or self.channel_id
        who = user or self.user_id
        fields = {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel,
            "channel_name": channel_name or _default_channel_name(channel),
            "user_id": who,
            "user_name": who.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url or self._response_url("commands"),
            "trigger_id": trigger_id or self.trigger_id(),
        }
        return self._form(fields, dict(fields), timestamp=timestamp)

    def ssl_check(self) -> SignedRequest:
        """Slack's certificate probe for command URLs: a form with `ssl_check=1`, unsigned."""
        fields = {"ssl_check": "1", "token": VERIFICATION_TOKEN}
        headers = {"Content-Type": FORM, "User-Agent": USER_AGENT}
        body = urlencode(fields).encode()
        return SignedRequest(
            body, headers, fields, self.signing_secret, self.path, clock=self.clock
        )

    # -- helpers -----------------------------------------------------------------------------

    def _user(self, user: str | None) -> dict[str, str]:
        who = user or self.user_id
        return {"id": who, "username": who.lower(), "name": who.lower(), "team_id": self.team_id}

    def _response_url(self, kind: str = "actions") -> str:
        n = _next()
        return f"https://hooks.slack.com/{kind}/{self.team_id}/{n}/{uuid.uuid4().hex[:24]}"


def _channel_type(channel: str) -> str:
    return {"D": "im", "G": "group"}.get(channel[:1], "channel")


def _default_channel_name(channel: str) -> str:
    if channel.startswith("D"):
        return "directmessage"
    return "general" if channel == CHANNEL_ID else channel.lower()
