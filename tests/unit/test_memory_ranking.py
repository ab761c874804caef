"""The pure parts of long-term memory: what a turn leaves behind, and how memories rank."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from core.memory import lexical
from core.memory.exchange import ASSISTANT_LIMIT, USER_LIMIT, clip, memory_texts
from core.memory.local import _Row, _ScopeIndex
from core.memory.mem0_provider import _parse_time, _results, _scope
from core.memory.port import MemoryMessage

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(i: int, text: str) -> _Row:
    return _Row(f"mem_{i:03d}", text, "U1", "A1", None, T0 + timedelta(seconds=i))


# -- exchange ------------------------------------------------------------------------------


def test_clip_collapses_whitespace_and_cuts_at_a_word_with_an_ellipsis() -> None:
    assert clip("  a\n\tb   c ", 10) == "a b c"
    cut = clip("alpha beta gamma delta", 14)
    assert cut == "alpha beta…" and len(cut) <= 14


def test_clip_cuts_inside_a_word_only_when_there_is_no_space_to_cut_at() -> None:
    assert clip("x" * 50, 10) == "x" * 9 + "…"


def test_a_turn_becomes_the_user_words_and_a_short_assistant_note() -> None:
    texts = memory_texts(
        [
            MemoryMessage("user", "I live in  Lisbon"),
            MemoryMessage("assistant", "Great city! " * 100),
            MemoryMessage("user", "   "),
        ]
    )

    assert [(t.role, t.text[:20]) for t in texts] == [
        ("user", "I live in Lisbon"),
        ("assistant", "assistant: Great cit"),
    ]
    assert len(texts[1].text) <= ASSISTANT_LIMIT


def test_a_huge_paste_is_capped() -> None:
    (text,) = memory_texts([MemoryMessage("user", "log line " * 5000)])
    assert len(text.text) <= USER_LIMIT


# -- lexical -------------------------------------------------------------------------------


def test_tokens_fold_case_and_accents_and_drop_function_words() -> None:
    assert lexical.tokens("What is the Café's WiFi?") == {"cafe", "wifi"}


def test_identifiers_are_kept_whole_as_well_as_split() -> None:
    assert lexical.tokens("see ABC-1234 and ana@example.com") >= {
        "abc-1234",
        "abc",
        "1234",
        "ana@example.com",
        "example",
    }


def test_rare_words_weigh_more_and_weights_sum_to_one() -> None:
    weights = lexical.query_weights({"ticket", "abc-1234"}, {"ticket": 90, "abc-1234": 1}, 100)
    assert weights["abc-1234"] > weights["ticket"]
    assert sum(weights.values()) == pytest.approx(1.0)


# -- scope index ---------------------------------------------------------------------------


def index_of(*texts: str, dimension: int | None = None) -> _ScopeIndex:
    index = _ScopeIndex(dimension)
    vectors = None
    if dimension:
        vectors = np.eye(len(texts), dimension, dtype=np.float32)
    index.reset([row(i, t) for i, t in enumerate(texts)], vectors)
    return index


def test_lexical_ranking_prefers_the_exact_identifier() -> None:
    index = index_of("ticket ABC-1243 closed", "ticket ABC-1234 blocked", "lunch at noon")

    found = index.rank(None, lexical.tokens("ABC-1234"), limit=5)

    assert [r.text for r in found] == ["ticket ABC-1234 blocked", "ticket ABC-1243 closed"]
    assert found[0].score is not None and found[0].score > (found[1].score or 0)


def test_cosine_and_words_blend() -> None:
    index = index_of("teal is my colour", "budget on thursday", dimension=4)
    query = np.array([0.0, 1.0, 0.0, 0.0], dtype=np.float32)  # points at the 2nd memory

    found = index.rank(query, lexical.tokens("colour"), limit=2)

    assert [r.text for r in found] == ["budget on thursday", "teal is my colour"]
    assert found[0].score == pytest.approx(0.7)
    assert found[1].score == pytest.approx(0.3)


def test_equal_scores_put_the_newer_memory_first() -> None:
    index = index_of("standup at nine", "standup at nine")
    assert [r.id for r in index.rank(None, lexical.tokens("standup"), limit=2)] == [
        "mem_001",
        "mem_000",
    ]


def test_removed_and_duplicate_rows_are_handled() -> None:
    index = index_of("alpha one", "alpha two")
    index.append(row(1, "alpha two"), None)  # already there (a reload saw it first)
    index.remove("mem_000")
    index.remove("mem_999")

    assert [r.id for r in index.rank(None, lexical.tokens("alpha"), limit=5)] == ["mem_001"]
    assert index.signature() == (1, T0 + timedelta(seconds=1))
    assert index.document_frequency["alpha"] == 1


def test_appending_beyond_capacity_keeps_vectors() -> None:
    index = index_of("seed", dimension=3)
    for i in range(1, 40):
        index.append(row(i, f"fact {i}"), np.array([0, 0, 1], dtype=np.float32))
    query = np.array([0, 0, 1], dtype=np.float32)
    assert len(index.rank(query, frozenset(), limit=50)) == 39


# -- mem0 helpers --------------------------------------------------------------------------


def test_mem0_namespace_round_trips_and_rejects_ambiguous_tenants() -> None:
    scope = _scope("T1")
    assert scope.unwrap(scope.wrap("U1:x")) == "U1:x"
    assert scope.unwrap("T2:U1") is None
    assert scope.owns({"metadata": {"cosmo_tenant": "T1"}, "user_id": "T2:U1"})
    assert not scope.owns({"user_id": "T10:U1"})
    for bad in ("", "a:b", "a b"):
        with pytest.raises(ValueError):
            _scope(bad)


def test_mem0_results_and_timestamps_are_read_leniently() -> None:
    assert _results({"results": [{"id": 1}, "junk"]}) == [{"id": 1}]
    assert _results([{"id": 2}]) == [{"id": 2}]
    assert _results({"status": "PENDING"}) == []
    assert _parse_time("2025-10-22T04:40:22.864647-07:00") == datetime(
        2025, 10, 22, 11, 40, 22, 864647, tzinfo=UTC
    )
    assert _parse_time("2025-01-01T00:00:00Z") == datetime(2025, 1, 1, tzinfo=UTC)
    assert _parse_time("yesterday") is None
