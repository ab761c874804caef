"""Structure-aware chunking: sizes, sections, overlap, and nothing lost on the way."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest

from core.knowledge.chunking import Block, Chunk, chunk_blocks
from core.knowledge.extractors import extract


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def sentences(n: int, topic: str = "topic") -> str:
    return " ".join(f"Sentence {i} explains {topic} number {i} in some detail." for i in range(n))


def shared_prefix(first: str, second: str) -> str:
    """The longest suffix of `first` that `second` starts with."""
    for start in range(len(first)):
        if second.startswith(first[start:]):
            return first[start:]
    return ""


def test_short_sections_become_one_chunk_each_with_their_heading_path():
    doc = extract(
        "guide.md",
        b"# Guide\n\nWelcome.\n\n## Install\n\nRun pip.\n\nThen run it.\n\n"
        b"### Linux\n\nUse apt.\n\n## Usage\n\nCall it.\n",
    )
    chunks = chunk_blocks(doc.blocks, size=200, overlap=20)
    assert [(c.section, c.text) for c in chunks] == [
        ("Guide", "Welcome."),
        ("Guide > Install", "Run pip.\n\nThen run it."),
        ("Guide > Install > Linux", "Use apt."),
        ("Guide > Usage", "Call it."),
    ]
    assert [c.ordinal for c in chunks] == [0, 1, 2, 3]


@pytest.mark.parametrize(("size", "overlap"), [(120, 0), (200, 40), (500, 100), (1000, 250)])
def test_no_chunk_is_longer_than_the_size_and_no_word_is_lost(size, overlap):
    long_paragraph = sentences(60)
    blocks = [
        Block("Intro " + sentences(3, "intro"), "Intro"),
        Block(long_paragraph, "Body"),
        Block("x" * (size * 2 + 7), "Blob"),  # no space at all: cut mid-word, last resort
        Block("def f():\n    return 1\n" * 40, "Code", verbatim=True),
    ]
    chunks = chunk_blocks(blocks, size=size, overlap=overlap)
    assert all(0 < len(c.text) <= size for c in chunks)
    for block in blocks:
        in_section = " ".join(c.text for c in chunks if c.section == block.section)
        if block.section == "Blob":
            assert in_section.replace(" ", "") == block.text
        else:
            assert set(words(block.text)) <= set(words(in_section))


def test_a_long_paragraph_is_cut_at_sentence_ends():
    chunks = chunk_blocks([Block(sentences(30), "S")], size=300, overlap=0)
    assert len(chunks) > 3
    assert all(c.text.endswith("detail.") for c in chunks)
    assert all(c.text.startswith("Sentence") for c in chunks)


def test_consecutive_chunks_of_a_section_overlap_at_a_word_boundary():
    chunks = chunk_blocks([Block(sentences(30), "S")], size=300, overlap=80)
    assert len(chunks) > 3
    for first, second in pairwise(chunks):
        shared = shared_prefix(first.text, second.text)
        assert 10 <= len(shared) <= 80, (first.text, second.text)
        assert second.text[0].isupper() or second.text[0].isdigit()  # starts on a word
        assert first.text[-len(shared) - 1] == " "  # ...that began after a space


def test_no_overlap_crosses_a_section_boundary():
    chunks = chunk_blocks(
        [Block(sentences(12, "alpha"), "A"), Block(sentences(12, "beta"), "B")],
        size=250,
        overlap=100,
    )
    first_b = next(c for c in chunks if c.section == "B")
    assert "alpha" not in first_b.text
    assert all("beta" not in c.text for c in chunks if c.section == "A")


def test_pages_split_chunks_and_are_kept_for_citations():
    blocks = [Block("Page one text.", None, 1), Block("Page two text.", None, 2)]
    assert chunk_blocks(blocks, size=500, overlap=0) == [
        Chunk(0, "Page one text.", None, 1),
        Chunk(1, "Page two text.", None, 2),
    ]


def test_blank_blocks_are_ignored_and_empty_input_gives_no_chunks():
    assert chunk_blocks([Block("  \n "), Block("")], size=100, overlap=0) == []
    assert chunk_blocks([], size=100, overlap=0) == []


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (100, 51), (100, -1)])
def test_impossible_chunking_settings_are_refused(size, overlap):
    with pytest.raises(ValueError):
        chunk_blocks([Block("text")], size=size, overlap=overlap)


def test_code_keeps_its_lines_and_indentation():
    code = "def f():\n    return 1\n\n\ndef g():\n    return 2"
    chunks = chunk_blocks([Block(code, "Code", verbatim=True)], size=500, overlap=0)
    assert chunks[0].text == code
