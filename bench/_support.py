"""What the in-process benches share: a fresh SQLite database in a temporary directory,
Claude pointed at the local fake Messages API, a container built on them with a `cosmo/v1`
document applied, and the percentiles they print. Not a bench itself (`make bench` skips `_*.py`).

Import it after the bench has put the repository root on `sys.path`.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from core.agent.anthropic_client import AnthropicModelClient, anthropic_client
from core.agent.engine import ConfigurableAgent
from core.config_document import parse_document
from core.db import upgrade
from core.settings import Settings
from core.wiring import Container, build_container
from tests.fakes.anthropic_api import FakeAnthropicAPI

TENANT = "default"


def pct(values: list[float], q: float) -> float:
    """The `q` quantile of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def percentiles(samples: list[float]) -> tuple[float, float]:
    """The median and the p99 (the rank below 99 %) of `samples`."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.99) - 1)]


@contextlib.contextmanager
def migrated_settings(prefix: str = "cosmo-bench-", **env: Any) -> Iterator[Settings]:
    """Settings on a migrated SQLite database in a fresh temporary directory, removed on the
    way out; `env` adds settings by their variable names."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        url = f"sqlite:///{Path(tmp) / 'cosmo.db'}"
        upgrade(url)
        yield Settings(_env_file=None, COSMO_DATA_DIR=tmp, DATABASE_URL=url, **env)


@contextlib.contextmanager
def fake_claude(**env: str) -> Iterator[tuple[Settings, FakeAnthropicAPI]]:
    """`migrated_settings` with Claude at a running fake Messages API (zero latency)."""
    with FakeAnthropicAPI() as fake:
        values: dict[str, Any] = {
            "ANTHROPIC_API_KEY": "bench",
            "ANTHROPIC_BASE_URL": fake.base_url,
            "COSMO_API_TOKEN": "bench",
            **env,
        }
        with migrated_settings(**values) as settings:
            yield settings, fake


def claude(fake: FakeAnthropicAPI) -> AnthropicModelClient:
    """The real model client, talking to `fake`."""
    return AnthropicModelClient(anthropic_client("bench", base_url=fake.base_url))


@contextlib.asynccontextmanager
async def configured(settings: Settings, config: str, **deps: Any) -> AsyncIterator[Container]:
    """The container for `settings` (`deps` as `build_container` takes them) with `config`
    applied; closed on the way out."""
    container = build_container(settings, **deps)
    try:
        container.config.apply(TENANT, parse_document(config), actor="bench")
        yield container
    finally:
        await container.aclose()
        container.close()


async def agent_named(container: Container, name: str) -> tuple[str, ConfigurableAgent]:
    """The id of the agent called `name`, and the agent ready to chat."""
    agent_id = container.agents.get_by_name(TENANT, name).id
    return agent_id, await container.runner.agent(TENANT, agent_id)
