"""Log format for the service: one line per event, never request bodies or secrets."""

from __future__ import annotations

import logging


def configure(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    # Bolt logs failed signature checks with their bodies at INFO; keep them out.
    logging.getLogger("slack_bolt").setLevel(max(logging.WARNING, logging.getLogger().level))
    # Alembic narrates its plugin setup at INFO on every schema check.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    # httpx logs full URLs at INFO; a webhook or skill URL may carry a token in its query.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
