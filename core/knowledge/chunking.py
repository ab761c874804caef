"""Structure-aware chunking: passages that keep to one section, split where the text breaks.

Extractors turn a document into `Block`s — paragraphs, list items, code, table rows — each
tagged with the heading path it sits under (`Pricing > Plans`) and, for PDFs, its page.
`chunk_blocks` packs consecutive blocks of one section (and page) into chunks of at most
`size` characters. A new section always starts a new chunk, so a passage never mixes two
topics and its citation names one section. A block longer than `size` is split at
sentence ends (code at line ends), then at spaces, and only as a last resort mid-word.
Consecutive chunks of one section share about `overlap` characters, taken at a word
boundary, so a sentence cut by a chunk boundary is whole in one of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby

_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])[\"')\]]*\s+")
_BLOCK_JOIN = "\n\n"


@dataclass(frozen=True)
class Block:
    """A unit of a document's structure, in reading order.

    `verbatim` blocks (code, preformatted text, table rows) are split at line ends rather
    than sentence ends, and their whitespace is kept.
    """

    text: str
    section: str | None = None
    page: int | None = None
    verbatim: bool = False


@dataclass(frozen=True)
class Chunk:
    """A passage ready to embed; `ordinal` is its position in the document."""

    ordinal: int
    text: str
    section: str | None
    page: int | None


@dataclass(frozen=True)
class _Piece:
    text: str
    joiner: str  # what separates it from the piece before it in the same chunk


def check_chunking(size: int, overlap: int) -> None:
    if size < 1:
        raise ValueError("chunk size must be positive")
    if not 0 <= overlap <= size // 2:
        raise ValueError("chunk overlap must be between 0 and half the chunk size")


def chunk_blocks(blocks: Iterable[Block], *, size: int, overlap: int) -> list[Chunk]:
    """Chunks of at most `size` characters; see the module docstring for the rules."""
    check_chunking(size, overlap)
    chunks: list[Chunk] = []
    for (section, page), group in groupby(
        (b for b in blocks if b.text.strip()), key=lambda b: (b.section, b.page)
    ):
        for text in _pack(_pieces(group, size), size, overlap):
            chunks.append(Chunk(len(chunks), text, section, page))
    return chunks


def _pieces(blocks: Iterable[Block], size: int) -> Iterator[_Piece]:
    """Each block as one piece, or several when it is longer than a chunk."""
    for block in blocks:
        text = block.text.strip("\n") if block.verbatim else block.text.strip()
        if len(text) <= size:
            yield _Piece(text, _BLOCK_JOIN)
            continue
        parts = _split_lines(text) if block.verbatim else _split_sentences(text)
        joiner = _BLOCK_JOIN
        for part in parts:
            for piece in _fit(part, size):
                yield _Piece(piece, joiner)
                joiner = "\n" if block.verbatim else " "


def _split_sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if s]


def _split_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


def _fit(text: str, size: int) -> Iterator[str]:
    """`text` in pieces of at most `size`, cut at the last space that fits when there is one."""
    while len(text) > size:
        cut = text.rfind(" ", 0, size + 1)
        if cut <= 0:
            cut = size
        yield text[:cut].rstrip()
        text = text[cut:].lstrip()
    if text:
        yield text


def _pack(pieces: Iterable[_Piece], size: int, overlap: int) -> Iterator[str]:
    """Greedy packing of one section's pieces; each new chunk opens with the previous tail."""
    current = ""
    for piece in pieces:
        if not current:
            current = piece.text
        elif len(current) + len(piece.joiner) + len(piece.text) <= size:
            current += piece.joiner + piece.text
        else:
            yield current
            tail = _tail(current, overlap, room=size - len(piece.text) - 1)
            current = f"{tail} {piece.text}" if tail else piece.text
    if current:
        yield current


def _tail(text: str, overlap: int, *, room: int) -> str:
    """The last ~`overlap` characters of `text`, fitting in `room`, starting at a sentence
    when one starts in that window and at a word otherwise."""
    limit = min(overlap, room)
    if limit <= 0:
        return ""
    start = len(text) - limit
    if start <= 0:
        return text.strip()
    window = text[start:]
    sentence = _SENTENCE_END.search(window)
    if sentence is not None and sentence.end() < len(window):
        return window[sentence.end() :].strip()
    if text[start - 1].isspace():
        return window.strip()
    word = re.search(r"\s", window)
    return window[word.end() :].strip() if word else ""
