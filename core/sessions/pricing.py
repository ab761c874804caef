"""What Claude costs, per model family, in US dollars per million tokens.

Cache writes cost 1.25x the input price and cache reads 0.1x (5-minute cache), as
Anthropic prices them. Costs are kept as integer micro-dollars so sums are exact.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    input: float
    output: float

    @property
    def cache_write(self) -> float:
        return self.input * 1.25

    @property
    def cache_read(self) -> float:
        return self.input * 0.1


# Longest prefix wins; dated snapshots (`claude-sonnet-4-6-20250929`) match their family.
PRICES: dict[str, Price] = {
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-opus-4-1": Price(15.0, 75.0),
    "claude-opus-4": Price(15.0, 75.0),
    "claude-sonnet-4": Price(3.0, 15.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-haiku-4": Price(1.0, 5.0),
    "claude-3-5-haiku": Price(0.8, 4.0),
    "claude-3-haiku": Price(0.25, 1.25),
}

#: Model names offered in pickers (the Slack agent form), newest first; each is priced by
#: `PRICES` (a test keeps it so). Any other name is still accepted, with a warning.
KNOWN_MODELS = (
    "claude-opus-4-5",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-1",
    "claude-sonnet-4-0",
    "claude-opus-4-0",
    "claude-3-7-sonnet-latest",
    "claude-3-5-haiku-latest",
)


def price_for(model: str) -> Price | None:
    best = None
    for prefix, price in PRICES.items():
        if model.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, price)
    return best[1] if best else None


def cost_micros(
    model: str, *, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int
) -> int:
    """Cost in micro-dollars; 0 for a model we have no price for (reported as unpriced)."""
    price = price_for(model)
    if price is None:
        return 0
    dollars_per_token_micros = (
        input_tokens * price.input
        + output_tokens * price.output
        + cache_read * price.cache_read
        + cache_write * price.cache_write
    )  # $/MTok * tokens = micro-dollars
    return round(dollars_per_token_micros)


def unpriced_warning(model: str) -> str | None:
    """Why a model name deserves a second look, or None when it has a price.

    Not an error: a model released after this table works, it is only counted at $0. But a
    typo (`claude-sonet-4`) looks the same from here, so saving one says so."""
    if price_for(model) is not None:
        return None
    families = ", ".join(sorted(PRICES))
    return (
        f"model {model!r} is not in the pricing table, so its turns would cost $0 in usage "
        f"and budgets; check the name (known families: {families})"
    )
