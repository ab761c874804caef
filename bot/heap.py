"""Keep what a process built at start out of the garbage collector's full passes.

`cosmo serve` holds some 190,000 objects once its app is built (modules, routes, pydantic
and SQLAlchemy models), and nearly all of them live as long as the process. CPython's full
collection walks every tracked object with the event loop stopped: 110-164 ms here, once in a
bench run of about 900 acks, and that pause was the whole tail of Slack's ack latency
(`bench/slack_ack.py`: quiet p99 134-151 ms before, 16-40 ms after). Freezing them moves
them to a generation no collection scans, so a full pass walks only what was made since.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("cosmo")


def freeze_startup_heap() -> int:
    """Call once, after the process has built everything it keeps and before it serves.
    Returns how many objects were frozen."""
    # Garbage made while starting goes first, or it would be kept for good.
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("startup heap frozen: %d objects left out of garbage collection", frozen)
    return frozen
