"""Word-level matching for memory search: the part of the score that makes exact names match.

Sentence embeddings are good at "what did I say about my trip" and bad at "ABC-1234" or
"U024BE7LH": two ticket ids differing by one digit embed almost identically. So memory
search blends the embedding's cosine with an IDF-weighted share of the query's words that
a memory contains. Identifiers with inner punctuation (`abc-1234`, `ops/runbook`,
`ana@example.com`) are kept whole as well as split, so the exact id outranks a neighbour
that only shares its parts.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping

_WORD = re.compile(r"\w+")
_COMPOUND = re.compile(r"\w+(?:[-./@:#+]\w+)+")

# Function words that would otherwise match nearly every memory. Kept short on purpose:
# IDF already discounts common words; this only removes the ones that carry no meaning.
_STOPWORD_TEXT = """
    a about above after again all am an and any are as at be been being below between both
    but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves
    out over own same she should so some such than that the their theirs them themselves
    then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours yourself yourselves
    s t d ll m re ve don doesn didn isn wasn aren weren won wouldn shouldn couldn
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def normalise(text: str) -> str:
    """Case- and accent-fold, so "Café" matches "cafe" as it does for the embedder."""
    if text.isascii():  # the common case, and 10x faster than decomposing
        return text.casefold()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def tokens(text: str) -> frozenset[str]:
    """Distinct searchable tokens: words (minus stopwords and lone letters) and compounds."""
    folded = normalise(text)
    out = {
        word
        for word in _WORD.findall(folded)
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit())
    }
    out.update(_COMPOUND.findall(folded))
    return frozenset(out)


def idf(document_frequency: int, documents: int) -> float:
    """Smoothed inverse document frequency; a word no memory contains still weighs in."""
    return math.log(1.0 + max(documents, 1) / max(document_frequency, 1))


def query_weights(
    query_tokens: Iterable[str], document_frequency: Mapping[str, int], documents: int
) -> dict[str, float]:
    """Each query token's weight, normalised so a memory containing them all scores 1.0."""
    weights = {t: idf(document_frequency.get(t, 0), documents) for t in query_tokens}
    total = sum(weights.values())
    if total <= 0.0:
        return {}
    return {t: w / total for t, w in weights.items()}
