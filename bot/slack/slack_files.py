"""Files people share with the app: what Slack says about one (`files.info`), whether we can
take it, and its bytes (`url_private_download` with the bot token).

Only a URL `files.info` returned is fetched, and only from Slack's file host — the Web API's
host (`SLACK_API_URL`) or its `files.` sibling (`files.slack.com` for `slack.com`), same
scheme and port — with redirects off: a file object cannot send the bot token anywhere
else. Size is checked against the ingest limit before downloading and again while reading.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from bot.slack.text import escape
from core.errors import CosmoError
from core.knowledge.extractors import content_type_for
from core.tls import tls_context

DOWNLOAD_TIMEOUT = 60.0
READ_CHUNK = 64 * 1024
SUPPORTED_KINDS = "PDF, Markdown, text, HTML or CSV"


class FileRefused(CosmoError):
    """A shared file we will not (or cannot) take; the detail is what the sharer reads
    (mrkdwn, with the names in it escaped)."""

    title = "File refused"


class SlackFileInfo(BaseModel):
    """The parts of Slack's file object we use (`files.info`)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    size: int
    mimetype: str = ""
    filetype: str = ""
    url_private_download: str | None = None
    mode: str | None = None

    @property
    def content_type(self) -> str | None:
        """What we would read it as (by name, else by its MIME type), or None."""
        return content_type_for(self.name, self.mimetype or None)


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


async def file_info(client: Any, file_id: str) -> SlackFileInfo:
    """`files.info`; a file Slack does not show us is `FileRefused`. Other Slack errors
    (`missing_scope`, outages) are raised as they are."""
    from slack_sdk.errors import SlackApiError

    try:
        answer = await client.files_info(file=file_id)
    except SlackApiError as exc:
        if exc.response.get("error") == "file_not_found":
            raise FileRefused("Slack no longer has that file (was it deleted?).") from None
        raise
    try:
        return SlackFileInfo.model_validate(answer.get("file") or {})
    except ValidationError:
        raise FileRefused("Slack described that file in a way I can't read.") from None


def check(info: SlackFileInfo, limit: int) -> str:
    """The content type to ingest it as, or `FileRefused` (too large, unsupported, not a
    file Slack hosts). Needs no download."""
    name = escape(info.name)
    if info.mode in ("external", "tombstone") or not info.url_private_download:
        raise FileRefused(f"*{name}* isn't stored in Slack, so I can't read it.")
    if info.size > limit:
        raise FileRefused(
            f"*{name}* is {human_size(info.size)}; knowledge base documents are limited "
            f"to {human_size(limit)}."
        )
    kind = info.content_type
    if kind is None:
        filetype = f" ({escape(info.filetype)})" if info.filetype else ""
        raise FileRefused(
            f"I can't read *{name}*{filetype}: knowledge bases take {SUPPORTED_KINDS} files."
        )
    return kind


def allowed_download(url: str, api_url: str) -> bool:
    """Whether `url` is on Slack's file host as our Web API setting names it."""
    target, api = urlsplit(url), urlsplit(api_url)
    if target.scheme != api.scheme or target.username or target.password:
        return False
    host, api_host = (target.hostname or "").lower(), (api.hostname or "").lower()
    if not host or host not in (api_host, f"files.{api_host}"):
        return False
    return target.port == api.port and target.path.startswith("/files-pri/")


async def download(
    info: SlackFileInfo,
    *,
    token: str,
    api_url: str,
    limit: int,
    http: httpx.AsyncClient | None = None,
) -> bytes:
    """The file's bytes, fetched with the bot token from the URL `files.info` gave."""
    url, name = info.url_private_download or "", escape(info.name)
    if not allowed_download(url, api_url):
        raise FileRefused(f"Slack pointed me outside its file host for *{name}*.")
    owned = http is None
    client = http or httpx.AsyncClient(
        timeout=DOWNLOAD_TIMEOUT, follow_redirects=False, verify=tls_context()
    )
    try:
        async with client.stream(
            "GET", url, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            if response.status_code != 200:
                raise FileRefused(
                    f"Slack answered {response.status_code} when I downloaded *{name}*."
                )
            served = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if served == "text/html" and info.content_type != "text/html":
                # Slack's sign-in page: the token was refused or lacks files:read.
                raise FileRefused(
                    "Slack sent me its sign-in page instead of the file: the app needs the "
                    "`files:read` permission (reinstall it from manifest.yml)."
                )
            data = bytearray()
            async for chunk in response.aiter_bytes(READ_CHUNK):
                data += chunk
                if len(data) > limit:
                    raise FileRefused(
                        f"*{name}* is larger than {human_size(limit)}, the document limit."
                    )
    finally:
        if owned:
            await client.aclose()
    if len(data) != info.size:
        raise FileRefused(
            f"I received {len(data)} of the {info.size} bytes of *{name}*. Please share it again."
        )
    return bytes(data)
