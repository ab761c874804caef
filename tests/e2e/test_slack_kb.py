"""Knowledge from Slack, end to end: `/agent kb new|list|show`, the Remove button, and "drop
a file in" — an admin shares a document with the app, picks the knowledge base, watches it
ingest in the thread, and the agent cites it. Signed requests to our /slack/events, the real
Bolt app, the fake Slack Web API (with `files.info` and file downloads), the fake Messages
API, a real database, and the job worker doing the background work."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.slack import kb_blocks
from core.config_document import parse_document
from tests.fakes.anthropic_api import Reply
from tests.fakes.slack_api import BOT_TOKEN, BOT_USER_ID, CHANNEL_ID, USER_ID
from tests.slack_support import SlackApp, slack_app
from tests.unit.test_extractors import make_pdf

ALICE = USER_ID  # a member, not an admin
ADA = "U0ADA00001"  # workspace admin
ADA_DM = "D" + ADA[1:]
ALICE_DM = "D" + ALICE[1:]
CONFIG = """
apiVersion: cosmo/v1
personas: [{name: helper, role: Support assistant}]
"""
AGENT = """
apiVersion: cosmo/v1
agents:
  - {name: support-bot, persona: helper, knowledge_bases: [handbook], memory_enabled: false}
"""
PRICING = make_pdf(
    [["Price list 2026"], ["The Pro plan costs 30 dollars per seat and month."]],
    outline=[("Price list", 1), ("Pro plan", 2)],
)
PDF = {"mimetype": "application/pdf", "filetype": "pdf"}
MARKDOWN = {"mimetype": "text/markdown", "filetype": "markdown"}


@pytest.fixture
def app(real_db, tmp_path):
    with slack_app(real_db, tmp_path, CONFIG) as running:
        running.slack.add_user(ADA, "ada", is_admin=True)
        yield running


# -- helpers ------------------------------------------------------------------------------


def command(app: SlackApp, text: str, *, user: str = ADA) -> str:
    """`/agent TEXT`; the answer's text and block text."""
    request = app.requests.slash_command(
        "/agent", text, user=user, response_url=app.slack.response_url(CHANNEL_ID, user=user)
    )
    assert app.send(request).status_code == 200
    app.run_jobs()
    (answer, *_) = reversed(app.slack.ephemeral_messages(user=user))
    return "\n".join([answer.text, *(b["text"]["text"] for b in answer.blocks if "text" in b)])


def new_kb(app: SlackApp, name: str = "handbook") -> None:
    assert "Created the knowledge base" in command(app, f"kb new {name} Company handbook")


def share(
    app: SlackApp,
    name: str,
    content: bytes,
    kind: dict[str, str],
    *,
    user: str = ADA,
    channel: str | None = None,
    text: str = "",
    thread_ts: str | None = None,
) -> tuple[dict[str, Any], str]:
    """Upload a file and share it (a DM with the app by default); the worker answers."""
    where = channel or "D" + user[1:]
    file = app.slack.upload_file(name, content, user=user, channel=where, **kind)
    request = app.requests.file_share([file], text, user=user, channel=where, thread_ts=thread_ts)
    assert app.send(request).status_code == 200
    app.run_jobs()
    return file, str(request.payload["event"]["ts"])


def bot_replies(app: SlackApp, channel: str, ts: str) -> list[Any]:
    return [m for m in app.slack.messages_in(channel, thread_ts=ts) if m.user == BOT_USER_ID]


def prompt(app: SlackApp, channel: str, ts: str) -> Any:
    (message,) = bot_replies(app, channel, ts)
    return message


def add(
    app: SlackApp,
    message: Any,
    file: dict[str, Any],
    kb_id: str | None,
    *,
    user: str = ADA,
    sharer: str = ADA,
) -> Any:
    """Press Add under a dropped file with `kb_id` chosen in its select."""
    block_id = f"{kb_blocks.DROP_BLOCK}:{file['id']}"
    picked: dict[str, Any] = {"type": "static_select", "selected_option": None}
    if kb_id is not None:
        picked["selected_option"] = {"text": {"type": "plain_text", "text": "kb"}, "value": kb_id}
    request = app.requests.block_action(
        kb_blocks.ADD,
        kb_blocks.add_value(file["id"], sharer),
        user=user,
        channel=message.channel,
        message_ts=message.ts,
        thread_ts=message.thread_ts,
        response_url=app.slack.response_url(user=user),
        state={"values": {block_id: {kb_blocks.PICK: picked}}},
    )
    response = app.send(request)
    assert response.status_code == 200
    app.run_jobs()
    return response


def kb_id(app: SlackApp, name: str = "handbook") -> str:
    return app.container.knowledge.get_by_name("default", name).id


def documents(app: SlackApp, name: str = "handbook") -> list[Any]:
    return app.container.knowledge.documents("default", kb_id(app, name)).items


def texts_of_updates(app: SlackApp, ts: str) -> list[str]:
    return [
        str(c.params.get("text")) for c in app.slack.calls("chat.update") if c.params["ts"] == ts
    ]


# -- drop a file in -----------------------------------------------------------------------


def test_an_admin_drops_a_pdf_in_a_dm_and_the_agent_cites_it(app):
    new_kb(app)
    app.container.config.apply("default", parse_document(AGENT), actor="test")

    file, ts = share(app, "pricing.pdf", PRICING, PDF)

    ask = prompt(app, ADA_DM, ts)
    assert "pricing.pdf" in ask.text and "Add it to a knowledge base?" in ask.text
    (actions,) = [b for b in ask.blocks if b["type"] == "actions"]
    select, button = actions["elements"]
    assert [o["value"] for o in select["options"]] == [kb_id(app)]
    assert button["action_id"] == kb_blocks.ADD
    assert not app.slack.downloads()  # nothing is downloaded before someone picks

    add(app, ask, file, kb_id(app))

    (download,) = app.slack.downloads()
    assert download.token == BOT_TOKEN and download.response["ok"]
    assert download.params["path"].endswith("/download/pricing.pdf")
    updates = texts_of_updates(app, ask.ts)
    assert any("Downloading *pricing.pdf*" in t for t in updates), updates
    progress = [t for t in updates if "chunks…" in t]
    assert progress and progress[-1].startswith("⏳ Adding *pricing.pdf* to *handbook*: ")
    (doc,) = documents(app)
    assert (doc.name, doc.status, doc.pages) == ("pricing.pdf", "ready", 2)
    final = app.slack.message(ADA_DM, ask.ts)
    assert final.text.startswith(
        f"✅ *pricing.pdf* is ready in *handbook*: {doc.chunk_count} chunks"
    )
    assert not any(b["type"] == "actions" for b in final.blocks)  # no second pick

    app.claude.push(Reply.text("The Pro plan costs 30 dollars per seat [1]."))
    question = app.requests.dm("What does the Pro plan cost?", user=ADA)
    assert app.send(question).status_code == 200
    app.run_jobs()
    q_ts = question.payload["event"]["ts"]
    (answer,) = bot_replies(app, ADA_DM, q_ts)
    assert "pricing.pdf" in app.claude.message_requests[-1].system_text
    sources = [b for b in answer.blocks if b["type"] == "context"]
    assert sources and "pricing.pdf" in sources[0]["elements"][0]["text"]


def test_a_file_in_a_channel_thread_that_mentions_the_app_is_offered_too(app):
    new_kb(app)
    top = app.slack.add_message(CHANNEL_ID, "our docs", user=ADA)

    _, ts = share(
        app,
        "faq.md",
        b"# FAQ\n\nShipping takes three days.\n",
        MARKDOWN,
        channel=CHANNEL_ID,
        text=f"<@{BOT_USER_ID}> add this",
        thread_ts=top.ts,
    )

    (ask,) = bot_replies(app, CHANNEL_ID, top.ts)
    assert "faq.md" in ask.text and ask.thread_ts == top.ts
    assert ts != top.ts


def test_a_file_in_a_channel_that_does_not_concern_the_app_is_left_alone(app):
    new_kb(app)

    share(app, "faq.md", b"# FAQ\n\nShipping.\n", MARKDOWN, channel=CHANNEL_ID)

    assert not app.slack.calls("files.info")
    assert not [m for m in app.slack.messages_in(CHANNEL_ID) if m.user == BOT_USER_ID]


def test_a_file_too_large_is_refused_before_anything_is_downloaded(real_db, tmp_path):
    with slack_app(real_db, tmp_path, CONFIG, COSMO_MAX_UPLOAD_BYTES=1024) as app:
        app.slack.add_user(ADA, "ada", is_admin=True)
        new_kb(app)

        _, ts = share(
            app, "big.txt", b"word " * 1000, {"mimetype": "text/plain", "filetype": "text"}
        )

        (answer,) = bot_replies(app, ADA_DM, ts)
        assert answer.text == ("⚠️ *big.txt* is 5 KB; knowledge base documents are limited to 1 KB.")
        assert app.slack.calls("files.info") and not app.slack.downloads()
        assert documents(app) == []


def test_an_unsupported_type_gets_a_clear_answer(app):
    new_kb(app)

    _, ts = share(app, "photo.png", b"\x89PNG\r\n", {"mimetype": "image/png", "filetype": "png"})

    (answer,) = bot_replies(app, ADA_DM, ts)
    assert answer.text == (
        "⚠️ I can't read *photo.png* (png): knowledge bases take PDF, Markdown, text, HTML "
        "or CSV files."
    )
    assert not app.slack.downloads() and documents(app) == []


def test_a_file_that_cannot_be_read_leaves_the_knowledge_base_as_it_was(app):
    new_kb(app)
    first, ts = share(app, "pricing.pdf", PRICING, PDF)
    add(app, prompt(app, ADA_DM, ts), first, kb_id(app))
    (before,) = documents(app)

    broken, ts = share(app, "pricing.pdf", b"%PDF-1.4 this is not a pdf", PDF)
    ask = prompt(app, ADA_DM, ts)
    add(app, ask, broken, kb_id(app))

    final = app.slack.message(ADA_DM, ask.ts).text
    assert final.startswith("⚠️ I couldn't add *pricing.pdf* to *handbook*: "), final
    (after,) = documents(app)
    assert (after.id, after.status, after.sha256, after.chunk_count) == (
        before.id,
        "ready",
        before.sha256,
        before.chunk_count,
    )


def test_sharing_a_new_version_of_a_file_replaces_its_document(app):
    new_kb(app)
    v1, ts = share(app, "faq.md", b"# FAQ\n\nShipping takes three days.\n", MARKDOWN)
    add(app, prompt(app, ADA_DM, ts), v1, kb_id(app))
    v2, ts = share(app, "faq.md", b"# FAQ\n\nShipping takes five days now.\n", MARKDOWN)
    ask = prompt(app, ADA_DM, ts)
    add(app, ask, v2, kb_id(app))

    (doc,) = documents(app)
    assert doc.name == "faq.md" and doc.status == "ready"
    hits = app.container.knowledge.search("default", kb_id(app), "shipping days")
    assert hits and "five days" in hits[0].text
    assert app.slack.message(ADA_DM, ask.ts).text.startswith("✅ *faq.md* is ready")

    again, ts = share(app, "faq.md", b"# FAQ\n\nShipping takes five days now.\n", MARKDOWN)
    ask = prompt(app, ADA_DM, ts)
    add(app, ask, again, kb_id(app))
    assert "already in *handbook* with the same content" in app.slack.message(ADA_DM, ask.ts).text


def test_a_non_admin_is_refused_politely_and_nothing_is_read(app):
    new_kb(app)

    _, ts = share(app, "notes.md", b"# Notes\n\nSecret plans.\n", MARKDOWN, user=ALICE)

    (answer,) = bot_replies(app, ALICE_DM, ts)
    assert answer.text.startswith("I can only add files to knowledge bases for agent admins")
    assert not app.slack.calls("files.info") and not app.slack.downloads()


def test_only_admins_may_press_add(app):
    new_kb(app)
    file, ts = share(app, "faq.md", b"# FAQ\n\nShipping.\n", MARKDOWN)
    ask = prompt(app, ADA_DM, ts)

    add(app, ask, file, kb_id(app), user=ALICE)

    said = app.slack.last("response_url")
    assert said.params["text"].startswith("Only agent admins can add files")
    assert not app.slack.downloads() and documents(app) == []


def test_add_without_a_choice_asks_for_one(app):
    new_kb(app)
    new_kb(app, "policies")
    file, ts = share(app, "faq.md", b"# FAQ\n\nShipping.\n", MARKDOWN)
    ask = prompt(app, ADA_DM, ts)
    (actions,) = [b for b in ask.blocks if b["type"] == "actions"]
    assert "initial_option" not in actions["elements"][0]  # two to choose from

    add(app, ask, file, None)

    assert app.slack.last("response_url").params["text"] == kb_blocks_pick_first()
    assert not app.slack.downloads()


def kb_blocks_pick_first() -> str:
    from bot.slack.file_drop import PICK_FIRST

    return PICK_FIRST


def test_a_share_with_no_knowledge_base_yet_says_how_to_make_one(app):
    _, ts = share(app, "faq.md", b"# FAQ\n\nShipping.\n", MARKDOWN)

    (answer,) = bot_replies(app, ADA_DM, ts)
    assert "There is no knowledge base to add it to yet" in answer.text
    assert "`/agent kb new NAME`" in answer.text


# -- /agent kb new | list | show, and Remove ---------------------------------------------


def test_kb_new_validates_like_rest_and_is_for_admins(app):
    assert "Only agent admins may change agents" in command(app, "kb new handbook", user=ALICE)
    bad = command(app, "kb new Hand_Book!")
    assert bad.startswith("Nothing was created:") and "`name`" in bad
    new_kb(app)
    assert "already exists" in command(app, "kb new handbook")
    assert app.container.knowledge.get_by_name("default", "handbook").description == (
        "Company handbook"
    )


def test_kb_list_and_show_are_for_everyone_remove_buttons_for_admins(app):
    new_kb(app)
    file, ts = share(app, "faq.md", b"# FAQ\n\nShipping takes three days.\n", MARKDOWN)
    add(app, prompt(app, ADA_DM, ts), file, kb_id(app))

    listed = command(app, "kb list", user=ALICE)
    assert "*handbook* — Company handbook" in listed and "1 document(s)" in listed

    command(app, "kb show handbook", user=ALICE)
    shown = app.slack.ephemeral_messages(user=ALICE)[-1]
    assert not [b for b in shown.blocks if "accessory" in b]
    command(app, "kb show handbook")
    shown = app.slack.ephemeral_messages(user=ADA)[-1]
    (line,) = [b for b in shown.blocks if "accessory" in b]
    assert line["text"]["text"].startswith("✅ *faq.md* — ready, ")
    assert line["accessory"]["action_id"] == kb_blocks.REMOVE
    assert line["accessory"]["confirm"]["confirm"]["text"] == "Remove"
    assert "There is no knowledge base named `nope`" in command(app, "kb show nope")


def remove(app: SlackApp, value: str, user: str) -> Any:
    request = app.requests.block_action(
        kb_blocks.REMOVE,
        value,
        user=user,
        ephemeral=True,
        response_url=app.slack.response_url(user=user),
    )
    assert app.send(request).status_code == 200
    app.run_jobs()
    return app.slack.last("response_url").params


def test_remove_takes_a_document_out_for_admins_only(app):
    new_kb(app)
    file, ts = share(app, "faq.md", b"# FAQ\n\nShipping takes three days.\n", MARKDOWN)
    add(app, prompt(app, ADA_DM, ts), file, kb_id(app))
    command(app, "kb show handbook")
    (line,) = [b for b in app.slack.ephemeral_messages(user=ADA)[-1].blocks if "accessory" in b]
    value = line["accessory"]["value"]

    refused = remove(app, value, ALICE)
    assert refused["text"].startswith("Only agent admins") and len(documents(app)) == 1

    removed = remove(app, value, ADA)
    assert documents(app) == []
    assert removed["replace_original"] in (True, "true")
    assert f"<@{ADA}> removed *faq.md*" in json.dumps(removed["blocks"])
    assert app.container.knowledge.search("default", kb_id(app), "shipping") == []
