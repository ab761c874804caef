"""Drop a file in: an agent admin shares a document with the app and picks the knowledge base
it goes into, right there in the thread.

1. The share is a `message` event with subtype `file_share` (files of a DM, of a message
   that mentions the app, or of a thread the app is talking in). The ack path keeps only
   the file ids (`conversations.take_event`, one deduplicated insert as for any message).
2. The `slack.event` job (`offer`) asks `files.info` about each file and answers under it:
   a refusal (too large, a type we cannot read), or a prompt with a select of the
   workspace's knowledge bases and an Add button. Non-admins get a polite refusal.
3. Add (`on_add`, acked at once) queues a `slack.kb_drop` job (`take_file`): `files.info`
   again (size and type checked before any byte is downloaded), the download with the bot
   token from Slack's file host only (`bot.slack.slack_files`), a trial extraction (so an
   unreadable file leaves the knowledge base as it was), then `submit_document` — the REST
   upload's path — which queues the `knowledge.ingest` job with a `notify` naming the
   prompt message.
4. That job's progress and end reach `SlackIngestProgress`, the worker's `IngestObserver`,
   which edits the message: chunks done/total at most about once a second, then "ready:
   N chunks" or why it failed.

A file is named by its Slack file name, so sharing a new version of `handbook.pdf` replaces
the document of that name.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot.slack import kb_blocks as ui
from bot.slack import slack_files
from bot.slack.admins import may_configure
from bot.slack.runtime import SlackRuntime
from bot.slack.slack_files import FileRefused
from bot.slack.text import escape
from core.concurrency import run_sync
from core.errors import CosmoError, NotFound
from core.jobs import JobContext, JobKind
from core.knowledge.extractors import extract
from core.knowledge.jobs import IngestOutcome, submit_document
from core.knowledge.schemas import DocumentRejected

if TYPE_CHECKING:
    from bot.slack.conversations import SlackMessage

log = logging.getLogger("cosmo.slack.files")

DROP_JOB = "slack.kb_drop"
MAX_FILES = 10  # Slack attaches at most 10 files to a message
PROGRESS_EVERY = 1.0
"""Seconds between two progress edits of one message (Slack's chat.update is Tier 3)."""
NOT_ADMIN = (
    "I can only add files to knowledge bases for agent admins (workspace admins and owners, "
    "and the people listed in `COSMO_SLACK_ADMINS`). I haven't read your file."
)
NOT_ADMIN_PICK = (
    "Only agent admins can add files to knowledge bases (workspace admins and owners, and "
    "the people listed in `COSMO_SLACK_ADMINS`)."
)
PICK_FIRST = "Choose a knowledge base in the list first, then press Add."


class DropJob(BaseModel):
    """The `slack.kb_drop` job's payload: which file goes into which knowledge base, and
    the prompt message that shows how it goes."""

    file_id: str
    knowledge_base_id: str
    channel: str
    message_ts: str
    user: str


def file_ids(event: Any) -> list[str]:
    """The ids of the files a message event carries (the ack path keeps nothing else)."""
    files = event.get("files") if hasattr(event, "get") else None
    if not isinstance(files, list):
        return []
    ids = [f.get("id") for f in files if isinstance(f, dict)]
    return [i for i in ids if isinstance(i, str) and i][:MAX_FILES]


# -- the slack.event job: answer a share ------------------------------------------------------


async def offer(
    rt: SlackRuntime,
    job: JobContext,
    m: SlackMessage,
    *,
    mentioned: bool,
    in_session: bool,
    has_text: bool,
) -> dict[str, Any] | None:
    """Answer the files of a message: a prompt (or a refusal) under each. None when the
    files are not for us (the message goes on as any other: a turn, or nothing), or when a
    non-admin shared them with words, which still get an answer."""
    if not (m.is_dm or mentioned or in_session):
        return None  # a file in a channel thread we are not part of
    tenant = job.tenant_id
    client = await rt.clients.for_tenant(tenant)
    if not await may_configure(rt, tenant, m.user):
        if not job.previous.get("files_refused"):
            await client.chat_postMessage(
                channel=m.channel, thread_ts=m.thread_ts, text=NOT_ADMIN, unfurl_links=False
            )
            await job.progress(files_refused=True)
        return None if has_text else {"outcome": "not admin"}
    page = await run_sync(lambda: rt.container.knowledge.list(tenant, limit=ui.MAX_OPTIONS))
    answered = list(job.previous.get("files_answered") or [])
    limit = rt.container.settings.max_upload_bytes
    for file_id in m.files:
        if file_id in answered:
            continue  # a rerun after a crash: that one is answered already
        try:
            info = await slack_files.file_info(client, file_id)
            kind = slack_files.check(info, limit)
        except FileRefused as exc:
            text, blocks = ui.drop_status(f"⚠️ {exc.detail}")
        else:
            text, blocks = ui.drop_prompt(
                file_id=file_id,
                name=info.name,
                kind=kind.split("/")[-1].upper(),
                size=slack_files.human_size(info.size),
                sharer=m.user,
                bases=page.items,
            )
        await client.chat_postMessage(
            channel=m.channel, thread_ts=m.thread_ts, text=text, blocks=blocks, unfurl_links=False
        )
        answered.append(file_id)
        await job.progress(files_answered=answered)
    return {"outcome": "files offered", "files": len(m.files)}


# -- Add: the slack.kb_drop job ---------------------------------------------------------------


async def take_file(rt: SlackRuntime, job: JobContext) -> dict[str, Any]:
    """Check, download and hand the file to ingestion; every refusal is said in the
    prompt's message and ends the job (nothing to retry). Outages are retried."""
    try:
        drop = DropJob.model_validate(job.payload)
    except ValidationError:
        return {"outcome": "not a drop job"}
    tenant, c = job.tenant_id, rt.container
    client = await rt.clients.for_tenant(tenant)

    async def show(line: str) -> None:
        text, blocks = ui.drop_status(line)
        await client.chat_update(channel=drop.channel, ts=drop.message_ts, text=text, blocks=blocks)

    try:
        kb = await run_sync(c.knowledge.get, tenant, drop.knowledge_base_id)
    except NotFound:
        await show("⚠️ That knowledge base was deleted. Share the file again to pick another.")
        return {"outcome": "knowledge base gone"}
    name = drop.file_id
    try:
        info = await slack_files.file_info(client, drop.file_id)
        name = info.name
        limit = c.settings.max_upload_bytes
        kind = slack_files.check(info, limit)
        await show(f"⏳ Downloading *{escape(name)}* for *{escape(kb.name)}*…")
        data = await slack_files.download(
            info, token=client.token or "", api_url=c.settings.slack_api_url, limit=limit
        )
        # Read it once here: a file whose content cannot be read is refused before the
        # knowledge base is touched (the ingestion would replace a document's old version).
        await run_sync(extract, info.name, data, info.mimetype or kind)
        notify = {
            "slack": {"channel": drop.channel, "ts": drop.message_ts},
            "tenant": tenant,
            "name": info.name,
            "kb": kb.name,
        }
        submitted = await run_sync(
            lambda: submit_document(
                c.knowledge,
                c.jobs,
                tenant,
                kb.id,
                info.name,
                data,
                content_type=info.mimetype or kind,
                notify=notify,
            )
        )
    except FileRefused as exc:
        await show(ui.failed_line(name, kb.name, exc.detail))
        return {"outcome": "refused", "reason": exc.detail}
    except DocumentRejected as exc:
        await show(ui.failed_line(name, kb.name, escape(exc.reason)))
        return {"outcome": "refused", "reason": exc.reason}
    except CosmoError as exc:  # the knowledge base needs re-indexing, a bad name, ...
        await show(ui.failed_line(name, kb.name, escape(exc.detail)))
        return {"outcome": "refused", "reason": exc.detail}
    document = submitted.document
    log.info(
        "slack:%s dropped %s (%d bytes) into knowledge base %s: %s",
        drop.user,
        info.name,
        len(data),
        kb.name,
        submitted.status,
    )
    if submitted.status == "unchanged":
        if document.status == "ready":
            await show(ui.ready_line(name, kb.name, document.chunk_count, unchanged=True))
        else:
            await show(
                f"⏳ The same *{escape(name)}* is being added to *{escape(kb.name)}* already."
            )
        return {"outcome": "unchanged", "document_id": document.id}
    await show(f"⏳ Adding *{escape(name)}* to *{escape(kb.name)}*…")
    return {"outcome": submitted.status, "document_id": document.id, "job_id": submitted.job_id}


class SlackIngestProgress:
    """The worker's `IngestObserver` for documents dropped in Slack: edits the message the
    drop was prompted in. Progress edits of one message are at least `every` seconds apart
    (the first and the end always go)."""

    def __init__(
        self,
        rt: SlackRuntime,
        *,
        every: float = PROGRESS_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rt = rt
        self.every = every
        self.clock = clock
        self.last: dict[str, float] = {}

    @staticmethod
    def _where(notify: dict[str, Any]) -> tuple[str, str] | None:
        slack = notify.get("slack")
        if not isinstance(slack, dict):
            return None  # submitted by something else
        channel, ts = slack.get("channel"), slack.get("ts")
        return (channel, ts) if isinstance(channel, str) and isinstance(ts, str) else None

    async def _edit(self, notify: dict[str, Any], where: tuple[str, str], line: str) -> None:
        client = await self.rt.clients.for_tenant(str(notify.get("tenant") or "default"))
        text, blocks = ui.drop_status(line)
        await client.chat_update(channel=where[0], ts=where[1], text=text, blocks=blocks)

    async def progress(self, notify: dict[str, Any], done: int, total: int) -> None:
        where = self._where(notify)
        if where is None:
            return
        key = ":".join(where)
        now = self.clock()
        last = self.last.get(key)
        if last is not None and now - last < self.every and done < total:
            return
        self.last[key] = now
        line = ui.progress_line(str(notify.get("name")), str(notify.get("kb")), done, total)
        await self._edit(notify, where, line)

    async def finished(self, notify: dict[str, Any], outcome: IngestOutcome) -> None:
        where = self._where(notify)
        if where is None:
            return
        self.last.pop(":".join(where), None)
        name, kb = str(notify.get("name")), str(notify.get("kb"))
        if outcome.status == "ready":
            line = ui.ready_line(name, kb, outcome.chunks)
        elif outcome.status == "superseded":
            line = f"↪️ A newer upload of *{escape(name)}* replaced this one."
        else:
            line = ui.failed_line(name, kb, escape(outcome.reason or "ingestion failed"))
        await self._edit(notify, where, line)


# -- listeners ----------------------------------------------------------------------------------


def _chosen(body: dict[str, Any], file_id: str) -> str | None:
    values = ((body.get("state") or {}).get("values") or {}).get(f"{ui.DROP_BLOCK}:{file_id}")
    picked = ((values or {}).get(ui.PICK) or {}).get("selected_option") or {}
    value = picked.get("value")
    return value if isinstance(value, str) and value else None


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    async def on_pick(ack: AsyncAck) -> None:
        await ack()  # the choice is read from the message's state when Add is pressed

    async def on_add(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        try:
            clicked = json.loads(body["actions"][0]["value"])
            file_id, channel = str(clicked["f"]), str(body["channel"]["id"])
            message_ts = str(body["container"]["message_ts"])
        except (KeyError, IndexError, TypeError, ValueError):
            return
        tenant = rt.tenant_for((body.get("team") or {}).get("id"))
        user = str((body.get("user") or {}).get("id") or "")
        if not await may_configure(rt, tenant, user):
            await respond(text=NOT_ADMIN_PICK, replace_original=False)
            return
        kb_id = _chosen(body, file_id)
        if kb_id is None:
            await respond(text=PICK_FIRST, replace_original=False)
            return
        drop = DropJob(
            file_id=file_id,
            knowledge_base_id=kb_id,
            channel=channel,
            message_ts=message_ts,
            user=user,
        )
        # One job per prompt: a second click (or Slack's retry) finds the first.
        await rt.intake.submit(
            tenant_id=tenant,
            kind=DROP_JOB,
            key=f"slack-drop:{tenant}:{channel}:{message_ts}",
            payload=drop.model_dump(),
        )

    app.action(ui.PICK)(on_pick)
    app.action(ui.ADD)(on_add)


def job_kinds(rt: SlackRuntime) -> list[JobKind]:
    async def on_drop(job: JobContext) -> dict[str, Any]:
        return await take_file(rt, job)

    return [JobKind(DROP_JOB, on_drop)]
