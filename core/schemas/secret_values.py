"""Recognising a secret pasted where a plain value belongs (a skill's plain `headers`).

Plain headers are stored, exported and shown to every admin; a credential there leaks with
every `cosmo export`. Two signs give one away: a prefix a provider puts on its keys, or a
long run of random-looking characters. What stays allowed, on purpose: URLs and paths (their
pieces are checked one by one, so a token in a query string is still caught), UUIDs (tenant
and organisation ids in CRM headers are UUIDs and are not secret), words and version strings.
"""

from __future__ import annotations

import math
import re
from collections import Counter

#: Prefixes providers put on keys and tokens (Anthropic/OpenAI, Stripe, Slack, GitHub,
#: GitLab, AWS access key ids, Standard Webhooks, ours), and HTTP auth schemes.
_KNOWN_PREFIX = re.compile(
    r"(?:^|[\s,;:=\"'])(?:"
    r"sk-[A-Za-z0-9_-]{8,}|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}|"
    r"xox[abposre]-[A-Za-z0-9-]{8,}|xapp-[A-Za-z0-9-]{8,}|"
    r"gh[pousr]_[A-Za-z0-9]{16,}|github_pat_[A-Za-z0-9_]{16,}|glpat-[A-Za-z0-9_-]{16,}|"
    r"(?:AKIA|ASIA)[A-Z0-9]{16}|whsec_[A-Za-z0-9+/=]{16,}|cosmo_[A-Za-z0-9_-]{16,}|"
    r"(?:Bearer|Basic|Token)\s+\S{8,}"
    r")",
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
# Token characters of base64, base64url, hex and JWTs; URL and list punctuation splits.
# A slash belongs to standard base64 too, so runs with slashes that are not paths or URLs
# are checked whole as well.
_TOKENS = re.compile(r"[A-Za-z0-9+_=.~-]+")
_SLASHED = re.compile(r"[A-Za-z0-9+/_=-]+")
# Words inside a name: `CustomerRelationship2024`, `X-Request-Source`, `sales_team`.
_WORD = re.compile(r"[A-Z]?[a-z]{3,}|[A-Z]{4,}(?![a-z])")
_VOWELS = frozenset("aeiouyAEIOUY")

MIN_SECRET_LENGTH = 24
# Bits per character. Random base64 of 24+ characters scores 4.2-5; hex 3.4-4 (at most 4);
# Names made of words can score as high, so those are recognised by their words instead.
_MIN_ENTROPY = 3.5
_MIN_HEX_ENTROPY = 3.0


def shannon_entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _random_looking(token: str) -> bool:
    token = token.rstrip("=")
    if len(token) < MIN_SECRET_LENGTH or _UUID.match(token):
        return False
    if _HEX.match(token):
        has_digit = any(ch.isdigit() for ch in token)
        has_letter = any(ch.isalpha() for ch in token)
        return has_digit and has_letter and shannon_entropy(token) >= _MIN_HEX_ENTROPY
    if _mostly_words(token):
        return False
    classes = sum(
        (
            any(ch.islower() for ch in token),
            any(ch.isupper() for ch in token),
            any(ch.isdigit() for ch in token),
        )
    )
    return classes >= 2 and shannon_entropy(token) >= _MIN_ENTROPY


def _path_like(token: str) -> bool:
    """`/api/v1/x`, `a/b`-style media types and paths: slash-separated, some part a word."""
    return token.startswith("/") or any(
        _mostly_words(part) for part in token.split("/") if len(part) >= 3
    )


def _mostly_words(token: str) -> bool:
    """Most of the token is runs of 3+ letters with vowels: a name, not a key. Random
    base64 rarely keeps letters of one case together that long."""
    in_words = sum(len(w) for w in _WORD.findall(token) if _VOWELS.intersection(w))
    return in_words >= 0.75 * len(token)


def secret_looking(value: str) -> str | None:
    """Why `value` looks like a credential, or None. Never quotes the value itself."""
    if _KNOWN_PREFIX.search(value):
        return "looks like a credential (it starts the way API keys and tokens do)"
    tokens = _TOKENS.findall(value)
    tokens += [t for t in _SLASHED.findall(value) if "/" in t and not _path_like(t)]
    if any(_random_looking(t) for t in tokens):
        return f"looks like a credential (a run of {MIN_SECRET_LENGTH}+ random-looking characters)"
    return None
