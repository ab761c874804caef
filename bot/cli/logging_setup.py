"""Log format for every process: one line per event (text or JSON), the same for our
loggers and uvicorn's access log, with what the line is about (tenant, request, turn,
output, job). Never request bodies or secrets; third-party chatter only from WARNING."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

from core.log_context import FIELDS, current

LogFormat = Literal["text", "json"]

#: Libraries that narrate at INFO what we do not want in an operator's log: Bolt logs
#: failed signature checks with their bodies; httpx/httpcore (also under the anthropic and
#: slack SDKs) log full URLs, and a webhook or skill URL may carry a token in its query;
#: alembic narrates its setup on every schema check. httpx2/httpcore2 are the same client
#: under the names the anthropic SDK and our skill egress client import it by.
QUIET = (
    "slack_bolt",
    "slack_sdk",
    "alembic",
    "httpx",
    "httpcore",
    "httpx2",
    "httpcore2",
    "anthropic",
    "botocore",
    "urllib3",
    "mcp",
)


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.cosmo = current()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        about = getattr(record, "cosmo", {}) or {}
        tail = " ".join(f"{k}={about[k]}" for k in FIELDS if k in about)
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if tail:
            line += f" [{tail}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **(getattr(record, "cosmo", {}) or {}),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str, fmt: LogFormat = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_Context())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    floor = max(logging.WARNING, root.level)
    for name in QUIET:
        logging.getLogger(name).setLevel(floor)
    # uvicorn's loggers go through our handler (uvicorn runs with log_config=None).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
