"""Block Kit of knowledge bases in Slack (`bot.slack.kb_blocks`): names people chose are
shown, never acted on; admins get Remove buttons; messages stay within Slack's limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bot.slack import kb_blocks as ui
from bot.slack import slack_files
from core.knowledge.schemas import DocumentView, KnowledgeBaseView

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def kb(name: str = "handbook", description: str = "") -> KnowledgeBaseView:
    return KnowledgeBaseView(
        id="kb_1",
        tenant_id="default",
        name=name,
        description=description,
        chunk_size=800,
        chunk_overlap=100,
        top_k=5,
        score_threshold=0.2,
        embedding_model="hashing",
        embedding_dimension=256,
        document_count=1,
        chunk_count=3,
        created_at=NOW,
        updated_at=NOW,
    )


def doc(name: str, n: int = 1, status: str = "ready") -> DocumentView:
    return DocumentView(
        id=f"doc_{n}",
        knowledge_base_id="kb_1",
        name=name,
        content_type="text/markdown",
        size=10,
        sha256="0" * 64,
        chunk_count=3,
        pages=None,
        title=None,
        status=status,
        error="no text found in it <!here>" if status == "failed" else None,
        job_id=None,
        created_at=NOW,
        updated_at=NOW,
    )


def test_a_hostile_file_name_is_shown_not_acted_on():
    text, blocks = ui.drop_prompt(
        file_id="F1",
        name="<!channel> & co.md",
        kind="MARKDOWN",
        size="1 KB",
        sharer="U1",
        bases=[kb()],
    )
    assert "&lt;!channel&gt; &amp; co.md" in text and "<!channel>" not in json.dumps(blocks)
    info = slack_files.SlackFileInfo(
        id="F1", name="<!here>.exe", size=1, url_private_download="https://x/files-pri/a"
    )
    try:
        slack_files.check(info, 1000)
    except slack_files.FileRefused as exc:
        assert "&lt;!here&gt;.exe" in exc.detail and "<!here>" not in exc.detail
    else:
        raise AssertionError("an .exe was accepted")


def test_show_gives_admins_a_confirmed_remove_button_per_document_and_others_none():
    documents = [doc("faq.md"), doc("broken.pdf", 2, "failed")]

    _, for_admin = ui.kb_details(kb(), documents, can_configure=True)
    _, for_member = ui.kb_details(kb(), documents, can_configure=False)

    buttons = [b["accessory"] for b in for_admin if "accessory" in b]
    assert [json.loads(b["value"]) for b in buttons] == [
        {"k": "kb_1", "d": "doc_1"},
        {"k": "kb_1", "d": "doc_2"},
    ]
    assert all(b["action_id"] == ui.REMOVE and b["confirm"]["style"] == "danger" for b in buttons)
    assert not [b for b in for_member if "accessory" in b]
    failed = json.dumps(for_member, ensure_ascii=False)
    assert "⚠️ *broken.pdf* — failed" in failed and "&lt;!here&gt;" in failed


def test_a_long_list_of_documents_stays_under_slacks_50_blocks_and_says_where_the_rest_are():
    documents = [doc(f"d{i}.md", i) for i in range(ui.MAX_DOCUMENTS + 5)]

    _, blocks = ui.kb_details(kb(), documents, can_configure=True, more=True)

    assert len(blocks) <= 50
    assert "`cosmo kb docs handbook` lists them all" in json.dumps(blocks)


def test_the_only_knowledge_base_is_chosen_already_and_several_are_not():
    _, one = ui.drop_prompt(
        file_id="F1", name="a.md", kind="MARKDOWN", size="1 KB", sharer="U1", bases=[kb()]
    )
    _, two = ui.drop_prompt(
        file_id="F1",
        name="a.md",
        kind="MARKDOWN",
        size="1 KB",
        sharer="U1",
        bases=[kb(), kb("policies", "Company policies")],
    )
    select_one = next(b for b in one if b["type"] == "actions")["elements"][0]
    select_two = next(b for b in two if b["type"] == "actions")["elements"][0]
    assert select_one["initial_option"]["value"] == "kb_1"
    assert "initial_option" not in select_two
    assert select_two["options"][1]["description"]["text"] == "Company policies"
