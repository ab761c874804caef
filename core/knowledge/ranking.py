"""Hybrid ranking: reciprocal rank fusion of the two retrievers, and snippets to cite.

Cosine similarities and BM25 scores live on unrelated scales, so instead of adding them
we add each chunk's reciprocal ranks (Cormack et al., 2009): `1 / (60 + rank)` from every
list it appears in. A chunk both retrievers like rises above one that only one of them
likes, and neither scale can drown the other. Scores are divided by the best possible
sum, so 1.0 means "first by meaning and first by keywords" and a chunk only one retriever
found scores at most 0.5.

Rank fusion forgets by how much a list's first beat its second, which matters most for
keywords: for `ABC-1234`, the passage with that exact id and one that merely shares `ABC`
would be 1st and 2nd, and the second's better cosine could tie it with the first. So a
keyword match must score at least half of the best one to count (`strong_keyword_matches`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from core.knowledge.port import Candidate
from core.memory import lexical

RRF_K = 60
RETRIEVERS = 2
KEYWORD_FLOOR = 0.5  # of the best keyword score
# BM25's term-frequency saturation and length normalisation, shared by every provider so
# they rank keywords alike.
BM25_K1 = 1.2
BM25_B = 0.75
SNIPPET_CHARS = 240


@dataclass(frozen=True)
class Fused:
    chunk_id: str
    score: float
    similarity: float | None
    keyword_score: float | None


def reciprocal_rank_fusion(
    semantic: Sequence[Candidate], keyword: Sequence[Candidate], *, k: int = RRF_K
) -> list[Fused]:
    """Both lists fused, best first; ties go to the higher similarity, then the older chunk."""
    best = RETRIEVERS / (k + 1)
    scores: dict[str, float] = {}
    similarity = {c.chunk_id: c.score for c in semantic}
    keyword_score = {c.chunk_id: c.score for c in keyword}
    for ranking in (semantic, keyword):
        for rank, candidate in enumerate(ranking, 1):
            scores[candidate.chunk_id] = scores.get(candidate.chunk_id, 0.0) + 1.0 / (k + rank)
    order = sorted(
        scores,
        key=lambda cid: (-scores[cid], -similarity.get(cid, -2.0), cid),
    )
    return [
        Fused(cid, scores[cid] / best, similarity.get(cid), keyword_score.get(cid)) for cid in order
    ]


def strong_keyword_matches(
    keyword: Sequence[Candidate], *, floor: float = KEYWORD_FLOOR
) -> list[Candidate]:
    """Keyword candidates (best first) scoring at least `floor` times the best one."""
    if not keyword:
        return []
    cutoff = keyword[0].score * floor
    return [c for c in keyword if c.score >= cutoff]


def snippet(text: str, query: str, *, width: int = SNIPPET_CHARS) -> str:
    """Up to `width` characters of `text` around the first query word it contains (else
    its start), cut at word boundaries and marked with … where cut."""
    flat = re.sub(r"\s+", " ", text).strip()
    if len(flat) <= width:
        return flat
    start = _first_hit(flat, lexical.tokens(query))
    start = max(0, min(start - width // 4, len(flat) - width))
    end = start + width
    if start > 0:
        space = flat.find(" ", start)
        start = space + 1 if 0 <= space < start + 30 else start
    if end < len(flat):
        space = flat.rfind(" ", start, end)
        end = space if space > start + width // 2 else end
    return ("…" if start > 0 else "") + flat[start:end].strip() + ("…" if end < len(flat) else "")


def _first_hit(text: str, tokens: Iterable[str]) -> int:
    folded = text.casefold()
    if len(folded) != len(text):  # case folding changed offsets: do not guess
        return 0
    hits = [m.start() for t in tokens if (m := re.search(rf"\b{re.escape(t)}\b", folded))]
    return min(hits, default=0)
