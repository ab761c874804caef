"""How the delivery worker delivers: `DeliveryPolicy`, and the retry schedule it follows.

The dispatcher's constructor takes what it talks to (database, HTTP client, output store)
and one frozen policy for everything that is a number or a switch, the way httpx groups
`Timeout` and `Limits`. The composition root (`core.wiring`) builds it once from
`Settings`; tests and benchmarks build their own.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

#: Backoff before attempt n+1 is min(cap, base * 2**(n-1)) before jitter: 4, 8, 16, 30 s.
BACKOFF_BASE = 4.0
BACKOFF_CAP = 30.0
DEFAULT_TIMEOUT = 10.0


def backoff_delay(attempt: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """The delay after failed attempt `attempt` (1-based), before jitter."""
    return min(cap, base * float(2 ** max(0, attempt - 1)))


def equal_jitter(delay: float) -> float:
    """Half the delay fixed, half random: spreads retries without ever retrying at once."""
    return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - timing, not security


@dataclass(frozen=True)
class DeliveryPolicy:
    """Where the worker may send, and how hard it tries."""

    allow_insecure: bool = False
    """Allow `http` URLs and loopback/private addresses (`COSMO_WEBHOOK_ALLOW_INSECURE`:
    local development and tests only)."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds for each connect, write and read of one address."""
    concurrency: int = 16
    """Deliveries sent at once in one round."""
    lease_seconds: float | None = None
    """How long a leased row stays this worker's; None: long enough for the slowest attempt
    (see `lease`)."""
    backoff_base: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP
    """The retry schedule (`backoff_delay`); a receiver's `Retry-After` is capped too."""
    held_after: timedelta = timedelta(minutes=5)
    """`held` rows younger than this are left to their writer: its write may still be in
    flight."""
    db_threads: int = 1
    """Threads for database work, off the event loop. One suits a `Database` bound to a
    single connection (tests); with a real engine a few more record attempts in parallel."""

    def __post_init__(self) -> None:
        numbers = {
            "timeout": self.timeout,
            "concurrency": self.concurrency,
            "backoff_base": self.backoff_base,
            "backoff_cap": self.backoff_cap,
            "db_threads": self.db_threads,
        }
        if self.lease_seconds is not None:
            numbers["lease_seconds"] = self.lease_seconds
        wrong = [name for name, value in numbers.items() if value <= 0]
        if wrong:
            raise ValueError(f"DeliveryPolicy: {', '.join(wrong)} must be positive")

    @property
    def attempt_budget(self) -> float:
        """One attempt may try several addresses, each up to `timeout`: the whole attempt
        is cut off here."""
        return self.timeout * 3

    @property
    def lease(self) -> timedelta:
        """Outlives the attempt budget comfortably, so a live worker never loses its lease
        mid-send."""
        return timedelta(seconds=self.lease_seconds or max(60.0, self.attempt_budget * 2 + 10))

    def retry_delay(
        self, attempt: int, retry_after: float | None, jitter: Callable[[float], float]
    ) -> float:
        """Seconds before the attempt after failed `attempt`: the receiver's `Retry-After`
        when it sent one, else the jittered backoff; never past the cap."""
        if retry_after is not None:
            return min(self.backoff_cap, max(0.0, retry_after))
        delay = backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap)
        return min(self.backoff_cap, max(0.0, jitter(delay)))
