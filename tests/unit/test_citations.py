"""Citations: one numbering per turn, the passages a reply cites, and how Slack shows them."""

from __future__ import annotations

from datetime import date
from typing import Any

from bot.slack.blocks import SECTION_CHARS, reply_with_sources, sources_context
from bot.slack.reply import ThreadReply
from core.knowledge.citations import Citation, PassageNumbers, cited_numbers, section_label
from core.personas.prompt import CITATION_RULES, KnowledgeSnippet, PromptContext, build_system
from core.schemas.persona import PersonaSpec
from core.skills.runtime import KnowledgeHit

REFUNDS = KnowledgeSnippet("EU: 14 days.", "refunds.md", "Refunds > EU", 3, "chk_1")
PRICING = KnowledgeHit("Pro: $30.", "pricing.pdf", None, 0.7, page=7, chunk_id="chk_2")


# --- numbering ----------------------------------------------------------------------------------


def test_a_passage_keeps_its_number_wherever_it_is_seen_again() -> None:
    numbers = PassageNumbers()
    same_chunk = KnowledgeHit("EU: 14 days.", "refunds.md", "Refunds > EU", 0.9, 3, "chk_1")
    other_chunk = KnowledgeSnippet("EU: 14 days.", "refunds.md", "Refunds > EU", 3, "chk_9")

    assert [numbers.number(p) for p in (REFUNDS, PRICING, same_chunk, other_chunk)] == [1, 2, 1, 3]


def test_without_a_chunk_id_the_text_tells_passages_apart() -> None:
    numbers = PassageNumbers()
    first = KnowledgeHit("One.", "a.md")
    assert numbers.number(first) == numbers.number(KnowledgeHit("One.", "a.md", score=0.2))
    assert numbers.number(KnowledgeHit("Two.", "a.md")) == 2


def test_the_reply_cites_passages_in_first_cited_order_and_unknown_numbers_are_dropped() -> None:
    numbers = PassageNumbers()
    numbers.number(REFUNDS)
    numbers.number(PRICING)

    cited = numbers.cited("Pro costs $30 [2]. Refunds take 14 days [1][2], see [9] and [0].")

    assert cited == [
        Citation(number=2, document="pricing.pdf", section=None, page=7),
        Citation(number=1, document="refunds.md", section="Refunds > EU", page=3),
    ]
    assert numbers.cited("Nothing cited here.") == []
    assert PassageNumbers().cited("[1]") == []


def test_markers_are_bracketed_numbers_not_indexes() -> None:
    assert cited_numbers("a [1], b [2, 3][4] and items[5] or x[6]") == [1, 2, 3, 4]
    assert cited_numbers("[note] [1a] [ 2 ]") == []


def test_section_and_page_make_one_label() -> None:
    assert section_label("Refunds > EU", 3) == "Refunds > EU (page 3)"
    assert section_label(None, 7) == "page 7"
    assert section_label("Plans", None) == "Plans"
    assert section_label(None, None) is None


# --- the prompt ---------------------------------------------------------------------------------

PERSONA = PersonaSpec.model_validate({"name": "helper", "role": "Support assistant"})
CTX = PromptContext(agent_name="support-bot", today=date(2026, 3, 2))


def test_an_agent_with_knowledge_is_told_to_cite_by_number_and_to_admit_gaps() -> None:
    numbered = KnowledgeSnippet("EU: 14 days.", "refunds.md", "Refunds > EU", 3, "chk_1", 4)
    blocks = build_system(PERSONA, CTX, knowledge=[numbered], cites_knowledge=True)

    assert CITATION_RULES in blocks[0]["text"] and "cache_control" in blocks[0]
    assert "[1]" in CITATION_RULES and "do not cover" in CITATION_RULES
    assert (
        '<data source="knowledge" id="4" document="refunds.md" section="Refunds > EU (page 3)">'
        "\nEU: 14 days.\n</data>" in blocks[1]["text"]
    )
    # The rules stay (and the cached block with them) in a turn whose lookup found nothing.
    assert build_system(PERSONA, CTX, cites_knowledge=True)[0] == blocks[0]


def test_an_agent_without_knowledge_gets_no_citation_rules() -> None:
    assert CITATION_RULES not in build_system(PERSONA, CTX)[0]["text"]


# --- Slack --------------------------------------------------------------------------------------

CITED = [
    Citation(number=1, document="refunds.md", section="EU", page=3),
    Citation(number=2, document="pricing.pdf", page=7),
]


def test_the_sources_line_names_document_section_and_page() -> None:
    assert reply_with_sources("Refunds take 14 days [1].", CITED) == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "Refunds take 14 days [1]."}},
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "Sources: [1] refunds.md \u203a EU (p. 3) · [2] pricing.pdf (p. 7)",
                }
            ],
        },
    ]


def test_document_names_cannot_ping_or_link_and_long_names_are_cut() -> None:
    hostile = Citation(number=3, document="<!channel> & <http://evil.example|bank>.md")
    long = Citation(number=4, document="x" * 500, section="y" * 500)

    text = sources_context([hostile, long])["elements"][0]["text"]

    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt; &amp; &lt;http://evil.example|bank&gt;.md" in text
    assert len(text) < 250 and "…" in text


def test_many_sources_are_counted_past_the_cap_and_long_replies_fit_in_sections() -> None:
    many = [Citation(number=n, document=f"{'doc' * 20}-{n}.md") for n in range(1, 101)]
    reply = "A sentence of reply text. " * 200  # 5,200 characters, over a section's 3,000

    blocks = reply_with_sources(reply.strip(), many)

    sources = blocks[-1]["elements"][0]["text"]
    assert sources.startswith("Sources: [1] ") and sources.endswith(" more")
    assert len(sources) <= 3_000
    sections = blocks[:-1]
    assert len(sections) == 2 and all(len(b["text"]["text"]) <= SECTION_CHARS for b in sections)
    assert " ".join(b["text"]["text"] for b in sections) == reply.strip()


class RecordingClient:
    """Just enough of `AsyncWebClient` for `ThreadReply`: records each call's arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def chat_postMessage(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("post", kwargs))
        return {"ts": f"1.{len(self.calls)}"}

    async def chat_update(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("update", kwargs))
        return {"ts": kwargs["ts"]}


async def test_the_final_update_adds_sources_to_the_last_message_only() -> None:
    client = RecordingClient()
    reply = ThreadReply(client, "C1", "1.0", interval=0)
    await reply.start()
    await reply.write("Refunds take 14 days [1].")
    long = ("Long answer. " * 300) + "Refunds take 14 days [1]."

    await reply.finish(long, citations=CITED[:1])

    posted_later = [kw for kind, kw in client.calls[1:] if kind == "post"]
    updated = [kw for kind, kw in client.calls[1:] if kind == "update"]
    assert [("blocks" in kw) for kw in updated] == [False, False]  # streamed, then final text
    assert len(posted_later) == 1 and posted_later[0]["blocks"][-1]["type"] == "context"
    assert posted_later[0]["text"].endswith("Refunds take 14 days [1].")


async def test_a_final_reply_without_citations_is_sent_as_before() -> None:
    client = RecordingClient()
    reply = ThreadReply(client, "C1", "1.0", interval=0)
    await reply.start()
    await reply.write("Hello.")

    await reply.finish("Hello.")
    await reply.finish("Hello, Ada.")

    assert [kind for kind, _ in client.calls] == ["post", "update", "update"]
    assert all("blocks" not in kw for _, kw in client.calls)


async def test_sources_are_added_even_when_the_streamed_text_was_already_final() -> None:
    client = RecordingClient()
    reply = ThreadReply(client, "C1", "1.0", interval=0)
    await reply.start()
    await reply.write("Refunds take 14 days [1].")

    await reply.finish("Refunds take 14 days [1].", citations=CITED[:1])

    kind, final = client.calls[-1]
    assert kind == "update" and final["text"] == "Refunds take 14 days [1]."
    assert final["blocks"] == reply_with_sources("Refunds take 14 days [1].", CITED[:1])
    assert len(client.calls) == 3  # placeholder, streamed text, sources
