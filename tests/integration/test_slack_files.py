"""Shared files over the wire: the fake's `files.info` and downloads as Slack documents them,
`bot.slack.slack_files` against them (real `slack_sdk` and httpx clients), and how often the
ingestion of a dropped file edits its message."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack import slack_files
from bot.slack.file_drop import SlackIngestProgress
from bot.slack.runtime import SlackClients
from bot.slack.slack_files import FileRefused, SlackFileInfo
from core.knowledge.jobs import IngestOutcome
from tests.fakes.slack_api import BOT_TOKEN, CHANNEL_ID, FakeSlackAPI

LIMIT = 10_000


@pytest.fixture(scope="module")
def served() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI() as fake:
        yield fake


@pytest.fixture
def fake(served: FakeSlackAPI) -> FakeSlackAPI:
    served.reset()
    return served


def client(fake: FakeSlackAPI, token: str | None = BOT_TOKEN) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=fake.base_url)


def upload(fake: FakeSlackAPI, content: bytes = b"# Notes\n\nhello\n") -> dict[str, Any]:
    return fake.upload_file(
        "notes.md", content, mimetype="text/markdown", filetype="markdown", channel="D0ALICE001"
    )


# -- the fake, as Slack documents it -------------------------------------------------------


async def test_files_info_describes_a_file_to_a_token_with_files_read(fake):
    file = upload(fake)

    answer = await client(fake).files_info(file=file["id"])

    assert answer["file"]["name"] == "notes.md" and answer["file"]["size"] == 15
    assert answer["file"]["ims"] == ["D0ALICE001"]
    assert answer["file"]["url_private_download"].endswith(f"{file['id']}/download/notes.md")


@pytest.mark.parametrize(
    ("token", "file_id", "error"),
    [
        (None, None, "not_authed"),
        ("xoxb-nobody", None, "invalid_auth"),
        (BOT_TOKEN, "F0NOPE0001", "file_not_found"),
        ("xoxb-no-files", None, "missing_scope"),
    ],
)
async def test_files_info_refuses_as_slack_does(fake, token, file_id, error):
    file = upload(fake)
    fake.add_token("xoxb-no-files", user_id="U0OTHERBOT", bot=True, scopes="chat:write")

    with pytest.raises(SlackApiError) as raised:
        await client(fake, token).files_info(file=file_id or file["id"])

    assert raised.value.response["error"] == error


def test_a_download_needs_the_token_else_slack_serves_its_sign_in_page(fake):
    file = upload(fake)
    url = file["url_private_download"]

    with_token = httpx.get(url, headers={"Authorization": f"Bearer {BOT_TOKEN}"})
    without = httpx.get(url)
    missing = httpx.get(url.replace(file["id"], "F0NOPE0001"))

    assert with_token.content == b"# Notes\n\nhello\n"
    assert without.status_code == 200 and without.headers["content-type"].startswith("text/html")
    assert missing.status_code == 404
    assert [c.response["ok"] for c in fake.downloads()] == [True, False, False]


# -- slack_files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://files.slack.com/files-pri/T1-F1/download/a.pdf", True),
        ("https://slack.com/files-pri/T1-F1/download/a.pdf", True),
        ("http://files.slack.com/files-pri/T1-F1/download/a.pdf", False),
        ("https://files.slack.com.evil.example/files-pri/T1-F1/a.pdf", False),
        ("https://evil.example/files-pri/T1-F1/download/a.pdf", False),
        ("https://files.slack.com:8443/files-pri/T1-F1/download/a.pdf", False),
        ("https://user:pw@files.slack.com/files-pri/T1-F1/download/a.pdf", False),
        ("https://files.slack.com/api/users.info", False),
        ("file:///etc/passwd", False),
    ],
)
def test_downloads_come_only_from_slacks_file_host(url, allowed):
    assert slack_files.allowed_download(url, "https://slack.com/api/") is allowed


def info(**fields: Any) -> SlackFileInfo:
    defaults = {
        "id": "F1",
        "name": "a.pdf",
        "size": 100,
        "mimetype": "application/pdf",
        "url_private_download": "https://files.slack.com/files-pri/T1-F1/download/a.pdf",
    }
    return SlackFileInfo.model_validate(defaults | fields)


def test_check_takes_supported_files_within_the_limit():
    assert slack_files.check(info(), LIMIT) == "application/pdf"
    assert slack_files.check(info(name="notes", mimetype="text/markdown"), LIMIT) == "text/markdown"
    with pytest.raises(FileRefused, match="limited to"):
        slack_files.check(info(size=LIMIT + 1), LIMIT)
    with pytest.raises(FileRefused, match="knowledge bases take"):
        slack_files.check(info(name="a.zip", mimetype="application/zip"), LIMIT)
    with pytest.raises(FileRefused, match="isn't stored in Slack"):
        slack_files.check(info(mode="external"), LIMIT)


async def test_download_reads_the_file_with_the_bot_token(fake):
    found = await slack_files.file_info(client(fake), upload(fake)["id"])

    data = await slack_files.download(found, token=BOT_TOKEN, api_url=fake.base_url, limit=LIMIT)

    assert data == b"# Notes\n\nhello\n"
    assert fake.downloads()[-1].token == BOT_TOKEN


async def test_a_sign_in_page_instead_of_the_file_is_refused_with_the_fix(fake):
    fake.add_token("xoxb-no-files", user_id="U0OTHERBOT", bot=True, scopes="chat:write")
    found = await slack_files.file_info(client(fake), upload(fake)["id"])

    with pytest.raises(FileRefused, match="files:read"):
        await slack_files.download(found, token="xoxb-no-files", api_url=fake.base_url, limit=LIMIT)


async def test_a_file_larger_than_slack_said_is_refused_while_reading(fake):
    found = await slack_files.file_info(client(fake), upload(fake, b"x" * 5000)["id"])
    lying = found.model_copy(update={"size": 100, "name": "notes.md"})

    with pytest.raises(FileRefused, match="larger than"):
        await slack_files.download(lying, token=BOT_TOKEN, api_url=fake.base_url, limit=1000)


async def test_a_url_off_slacks_host_is_never_fetched(fake):
    found = info(url_private_download="http://127.0.0.1:9/files-pri/T1-F1/download/a.pdf")

    with pytest.raises(FileRefused, match="outside its file host"):
        await slack_files.download(found, token=BOT_TOKEN, api_url=fake.base_url, limit=LIMIT)
    assert fake.downloads() == []


# -- progress in the thread ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_progress_edits_the_message_at_most_once_a_second_and_always_at_the_end(fake):
    posted = await client(fake).chat_postMessage(channel=CHANNEL_ID, text="prompt")
    runtime: Any = SimpleNamespace(clients=SlackClients(client(fake)))
    clock = Clock()
    observer = SlackIngestProgress(runtime, every=1.0, clock=clock)
    notify = {
        "slack": {"channel": CHANNEL_ID, "ts": posted["ts"]},
        "tenant": "default",
        "name": "a.pdf",
        "kb": "handbook",
    }

    for done, later in ((0, 0.0), (64, 0.3), (128, 0.5), (192, 1.2), (256, 0.1)):
        clock.now += later
        await observer.progress(notify, done, 256)
    await observer.finished(notify, IngestOutcome("ready", "a.pdf", 256))
    await observer.progress({"elsewhere": True}, 1, 2)  # not a Slack drop: nothing to edit

    edits = [c.params["text"] for c in fake.calls("chat.update")]
    assert edits == [
        "⏳ Adding *a.pdf* to *handbook*: 0/256 chunks…",
        "⏳ Adding *a.pdf* to *handbook*: 192/256 chunks…",
        "⏳ Adding *a.pdf* to *handbook*: 256/256 chunks…",
        "✅ *a.pdf* is ready in *handbook*: 256 chunks. (`/agent kb show handbook` lists "
        "its documents.)",
    ]
