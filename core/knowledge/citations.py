"""Citations: knowledge passages numbered once per turn, and the ones a reply cites.

In one turn the model reads passages from two places, the excerpts put into the system
prompt and the results of `search_knowledge`, under one numbering, so `[2]` names the
same passage wherever it appeared (a passage seen twice keeps its first number). When the
turn ends, the `[n]` markers in the reply pick out the passages it relied on. A marker that
names no passage (a slip of the model, or a number from an earlier turn) is dropped rather
than shown as a source nobody can find.
"""

from __future__ import annotations

import re
import threading
from typing import Protocol

from pydantic import BaseModel, Field

# `[1]`, `[1][2]`, `[1, 3]`; not `items[1]` (an index in code or prose).
_MARKER = re.compile(r"(?<!\w)\[(\d{1,4}(?:\s*,\s*\d{1,4})*)\]")


def section_label(section: str | None, page: int | None) -> str | None:
    """Section and page in one label (`Refunds > EU (page 3)`), as the model reads them."""
    where = f"page {page}" if page is not None else None
    if section and where:
        return f"{section} ({where})"
    return section or where


class Citation(BaseModel):
    """A knowledge passage a reply cited: its number in the turn and where it comes from."""

    number: int = Field(ge=1, description="The `[n]` marker the reply uses for it.")
    document: str = Field(description="Name of the document the passage is from.")
    section: str | None = Field(
        default=None, description="Heading path of the passage (`Refunds > EU`), if any."
    )
    page: int | None = Field(default=None, description="Page of the passage, for paged formats.")


class Passage(Protocol):
    """What numbering needs to know of a passage (`KnowledgeSnippet`, `KnowledgeHit`)."""

    @property
    def text(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def section(self) -> str | None: ...
    @property
    def page(self) -> int | None: ...
    @property
    def chunk_id(self) -> str | None: ...


class PassageNumbers:
    """One turn's numbering of the knowledge passages its model saw.

    A passage is the same passage when its document, section, page and chunk are (the
    text stands in for the chunk id when a provider has none). `number` may be called from
    worker threads (skills run there), hence the lock.
    """

    def __init__(self) -> None:
        self._numbered: dict[tuple[str, str | None, int | None, str], Citation] = {}
        self._lock = threading.Lock()

    def number(self, passage: Passage) -> int:
        key = (passage.source, passage.section, passage.page, passage.chunk_id or passage.text)
        with self._lock:
            found = self._numbered.get(key)
            if found is None:
                found = Citation(
                    number=len(self._numbered) + 1,
                    document=passage.source,
                    section=passage.section,
                    page=passage.page,
                )
                self._numbered[key] = found
            return found.number

    def cited(self, reply: str) -> list[Citation]:
        """The passages `reply` cites with `[n]` markers, in the order first cited."""
        with self._lock:
            by_number = {c.number: c for c in self._numbered.values()}
        cited: dict[int, Citation] = {}
        for number in cited_numbers(reply):
            if number in by_number and number not in cited:
                cited[number] = by_number[number]
        return list(cited.values())


def cited_numbers(text: str) -> list[int]:
    """Every number cited by a `[n]` marker in `text`, in order, repeats included."""
    numbers: list[int] = []
    for found in _MARKER.finditer(text):
        numbers.extend(int(n) for n in found.group(1).split(","))
    return numbers
