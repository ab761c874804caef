"""The workspace behind FakeSlackAPI: users, channels, messages, views, tokens.

Plain state with the lookups Slack's methods share (`channel`, `message`, `thread`, `post`);
the methods themselves are in `slack_methods`, the HTTP server in `slack_api`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TEAM_ID = "T0COSMO001"
TEAM_NAME = "Cosmo Test"
TEAM_DOMAIN = "cosmo-test"
APP_ID = "A0COSMO001"
BOT_TOKEN = "xoxb-1111-2222-cosmotesttoken"
BOT_USER_ID = "U0COSMOBOT"
BOT_ID = "B0COSMOBOT"
USER_ID = "U0ALICE001"
"""A human in the default workspace: `alice`, not an admin."""
CHANNEL_ID = "C0GENERAL1"
"""The default workspace's `#general`."""
CLIENT_ID = "1111.2222"
CLIENT_SECRET = "fake-client-secret"
BOT_SCOPES = (
    # What an install from manifest.yml grants (`cosmo doctor --online` compares the two).
    "app_mentions:read,assistant:write,channels:history,channels:read,chat:write,commands,"
    "files:read,groups:history,groups:read,im:history,im:write,mpim:history,mpim:read,"
    "usergroups:read,users:read"
)


# --------------------------------------------------------------------------------------------
# Workspace objects
# --------------------------------------------------------------------------------------------


@dataclass
class User:
    """A workspace member as `users.info` describes it."""

    id: str
    name: str
    real_name: str = ""
    display_name: str = ""
    is_admin: bool = False
    is_owner: bool = False
    is_bot: bool = False
    deleted: bool = False
    email: str | None = None
    tz: str = "Europe/Berlin"

    def to_api(self, team_id: str) -> dict[str, Any]:
        real = self.real_name or self.name
        profile: dict[str, Any] = {
            "real_name": real,
            "real_name_normalized": real,
            "display_name": self.display_name,
            "display_name_normalized": self.display_name,
            "title": "",
            "image_48": f"https://avatars.example/{self.id}_48.png",
            "team": team_id,
        }
        if self.email:
            profile["email"] = self.email
        if self.is_bot:
            profile["bot_id"] = BOT_ID
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "deleted": self.deleted,
            "real_name": real,
            "tz": self.tz,
            "tz_label": "Central European Time",
            "tz_offset": 3600,
            "profile": profile,
            "is_admin": self.is_admin,
            "is_owner": self.is_owner,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "updated": 1_700_000_000,
        }


@dataclass
class Channel:
    """A conversation: public (`C...`), private, or a DM (`D...`, with `user`)."""

    id: str
    name: str = ""
    is_private: bool = False
    user: str | None = None
    created: int = 1_700_000_000

    @property
    def is_im(self) -> bool:
        return self.user is not None or self.id.startswith("D")

    def to_api(self) -> dict[str, Any]:
        if self.is_im:
            return {
                "id": self.id,
                "created": self.created,
                "is_im": True,
                "user": self.user,
                "is_org_shared": False,
                "is_user_deleted": False,
                "priority": 0,
            }
        blank = {"value": "", "creator": "", "last_set": 0}
        return {
            "id": self.id,
            "name": self.name,
            "name_normalized": self.name,
            "is_channel": not self.is_private,
            "is_group": self.is_private,
            "is_im": False,
            "is_mpim": False,
            "is_private": self.is_private,
            "is_archived": False,
            "is_general": self.name == "general",
            "is_shared": False,
            "is_org_shared": False,
            "is_member": True,
            "created": self.created,
            "creator": USER_ID,
            "topic": dict(blank),
            "purpose": dict(blank),
            "previous_names": [],
        }


@dataclass
class Message:
    """A message as it stands now: `chat.update`, streams and reactions already applied."""

    channel: str
    ts: str
    text: str
    user: str
    blocks: list[Any] = field(default_factory=list)
    thread_ts: str | None = None
    bot_id: str | None = None
    attachments: list[Any] = field(default_factory=list)
    metadata: Any = None
    reactions: dict[str, list[str]] = field(default_factory=dict)
    edited_ts: str | None = None
    streaming: bool = False
    stream_started: float = field(default=0.0, repr=False)
    chunks: list[Any] = field(default_factory=list)
    """Non-text stream chunks (`task_update`, `plan_update`, ...) in arrival order."""
    ephemeral_to: str | None = None

    def to_api(self, team_id: str, replies: Sequence[Message] = ()) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "message",
            "ts": self.ts,
            "user": self.user,
            "text": self.text,
            "team": team_id,
        }
        if self.bot_id:
            out.update(bot_id=self.bot_id, app_id=APP_ID)
        for key in ("blocks", "attachments", "metadata"):
            if getattr(self, key):
                out[key] = copy.deepcopy(getattr(self, key))
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if replies:
            out.update(
                thread_ts=self.ts,
                reply_count=len(replies),
                latest_reply=replies[-1].ts,
                reply_users=sorted({r.user for r in replies}),
            )
        if self.edited_ts:
            out["edited"] = {"user": self.user, "ts": self.edited_ts}
        if self.reactions:
            out["reactions"] = [
                {"name": name, "users": list(users), "count": len(users)}
                for name, users in self.reactions.items()
            ]
        return out


@dataclass
class SlackFile:
    """A file someone uploaded, with its bytes: `files.info` describes it and its
    `url_private_download` serves `content` to a token with `files:read`."""

    id: str
    name: str
    content: bytes
    user: str
    mimetype: str
    filetype: str
    title: str = ""
    created: int = 1_700_000_000
    channels: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.content)

    def download_path(self, team_id: str) -> str:
        return f"/files-pri/{team_id}-{self.id}/download/{self.name}"

    def to_api(self, team_id: str, team_domain: str, files_base: str) -> dict[str, Any]:
        """The file object of `files.info` and of a `file_share` message event. Slack's own
        URLs point at files.slack.com; the fake's at itself (`files_base`)."""
        private = f"{files_base}/files-pri/{team_id}-{self.id}/{self.name}"
        ims = [c for c in self.channels if c.startswith("D")]
        return {
            "id": self.id,
            "created": self.created,
            "timestamp": self.created,
            "name": self.name,
            "title": self.title or self.name,
            "mimetype": self.mimetype,
            "filetype": self.filetype,
            "pretty_type": self.filetype.upper(),
            "user": self.user,
            "user_team": team_id,
            "editable": False,
            "size": self.size,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": False,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": private,
            "url_private_download": files_base + self.download_path(team_id),
            "permalink": f"https://{team_domain}.slack.com/files/{self.user}/{self.id}/{self.name}",
            "channels": [c for c in self.channels if c.startswith("C")],
            "groups": [c for c in self.channels if c.startswith("G")],
            "ims": ims,
            "comments_count": 0,
        }


@dataclass(frozen=True)
class AssistantThread:
    """What `assistant.threads.*` last set on a thread. Slack clears the status when the app
    replies in the thread, and so does the fake."""

    status: str = ""
    title: str = ""
    prompts: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class SessionStatus:
    """One `agents.sessions.setStatus` (or `chat.stopStream` `session_status`) on a thread."""

    status: str
    title: str | None = None
    initiator_user_id: str | None = None


@dataclass(frozen=True)
class Token:
    """Who a token authenticates."""

    user_id: str
    team_id: str
    bot_id: str | None
    scopes: str


class Refused(Exception):
    """A method's `{"ok": false, "error": ...}` answer."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    try:
        return int(seconds), int(micros.ljust(6, "0")[:6] or 0)
    except ValueError:
        return (0, 0)


def truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


@dataclass(frozen=True)
class WorkspaceConfig:
    """What FakeSlackAPI was built with; fixed for the life of the fake."""

    strict: bool = False
    bot_token: str = BOT_TOKEN
    bot_user_id: str = BOT_USER_ID
    team_id: str = TEAM_ID
    team_domain: str = TEAM_DOMAIN
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    stream_lifetime: float = 300.0


# --------------------------------------------------------------------------------------------
# The workspace
# --------------------------------------------------------------------------------------------


@dataclass
class MethodCall:
    """One authenticated call as a method implementation sees it."""

    method: str
    params: dict[str, Any]
    token: Token | None

    def get(self, name: str, default: Any = None) -> Any:
        value = self.params.get(name)
        return default if value in (None, "") else value

    def need(self, name: str, error: str = "invalid_arguments") -> Any:
        value = self.get(name)
        if value is None:
            raise Refused(error)
        return value

    @property
    def actor(self) -> Token:
        assert self.token is not None
        return self.token


class Workspace:
    """Everything the Web API methods read and change. `FakeSlackAPI.reset()` swaps in a
    fresh one; the fake's lock guards it, so nothing here locks."""

    def __init__(self, config: WorkspaceConfig) -> None:
        self.config = config
        self.team_id = config.team_id
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.usergroup_names: dict[str, tuple[str, str]] = {}
        """Group id -> (name, handle), for `usergroups.list`; unnamed groups use their id."""
        self.tokens: dict[str, Token] = {
            config.bot_token: Token(config.bot_user_id, config.team_id, BOT_ID, BOT_SCOPES)
        }
        self.messages: dict[str, dict[str, Message]] = {}
        self.ephemerals: list[Message] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.home_views: dict[str, dict[str, Any]] = {}
        self.used_triggers: set[str] = set()
        self.assistant: dict[tuple[str, str], AssistantThread] = {}
        self.agent_sessions: dict[tuple[str, str], list[SessionStatus]] = {}
        """(channel, thread_ts) -> every status set on that thread's agent session, in order."""
        self.subscribed_events: set[str] = set()
        """Events the app's configuration subscribes to (`setStatus` warns without Stop's)."""
        self.oauth_codes: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: dict[str, str] = {}
        self.response_urls: dict[str, tuple[str | None, str | None, str | None]] = {}
        self.files: dict[str, SlackFile] = {}
        self.files_base = ""
        """Where the fake serves file downloads (`http://127.0.0.1:<port>`), set on start."""
        self.last_ts = 0
        self.ids = itertools.count(1)

    # -- ids ---------------------------------------------------------------------------------------

    def next_ts(self) -> str:
        self.last_ts = max(self.last_ts + 1, int(time.time() * 1_000_000))
        return f"{self.last_ts // 1_000_000}.{self.last_ts % 1_000_000:06d}"

    def new_id(self, prefix: str) -> str:
        return f"{prefix}0{next(self.ids):08X}"

    # -- lookups -----------------------------------------------------------------------------------

    def channel(self, channel_id: Any, *, create: bool) -> Channel:
        key = str(channel_id or "")
        if key in self.channels:
            return self.channels[key]
        if key[:1] in ("U", "W") and (key in self.users or not self.config.strict) and create:
            for existing in self.channels.values():
                if existing.user == key:
                    return existing
            return self.add_channel(Channel("D" + key[1:], user=key))
        if create and key and not self.config.strict:
            return self.add_channel(Channel(key, key.lower()))
        raise Refused("channel_not_found")

    def add_channel(self, channel: Channel) -> Channel:
        self.channels[channel.id] = channel
        self.messages.setdefault(channel.id, {})
        return channel

    def message(self, channel: str, ts: Any) -> Message:
        found = self.messages.get(channel, {}).get(str(ts or ""))
        if found is None:
            raise Refused("message_not_found")
        return found

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        found = [
            m
            for m in self.messages.get(channel, {}).values()
            if m.ts == thread_ts or m.thread_ts == thread_ts
        ]
        return sorted(found, key=lambda m: ts_key(m.ts))

    def replies(self, message: Message) -> list[Message]:
        if message.thread_ts not in (None, message.ts):
            return []
        return [m for m in self.thread(message.channel, message.ts) if m.ts != message.ts]

    def api_message(self, message: Message) -> dict[str, Any]:
        return message.to_api(self.team_id, self.replies(message))

    def post(
        self, channel: Channel, call: MethodCall, *, text: str, streaming: bool = False
    ) -> Message:
        thread_ts = call.get("thread_ts")
        message = Message(
            channel=channel.id,
            ts=self.next_ts(),
            text=text,
            user=call.actor.user_id,
            blocks=list(call.get("blocks", [])),
            thread_ts=str(thread_ts) if thread_ts else None,
            bot_id=call.actor.bot_id,
            attachments=list(call.get("attachments", [])),
            metadata=call.get("metadata"),
            streaming=streaming,
            stream_started=time.monotonic(),
        )
        self.messages[channel.id][message.ts] = message
        if message.thread_ts:
            key = (channel.id, message.thread_ts)
            if key in self.assistant:  # Slack clears the status once the app replies
                self.assistant[key] = dataclasses.replace(self.assistant[key], status="")
        return message
