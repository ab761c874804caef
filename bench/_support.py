"""What the in-process turn benches share: a fresh SQLite database in a temporary
directory, Claude pointed at the local fake Messages API, and a container built on them
with a `cosmo/v1` document applied. Not a bench itself (`make bench` skips `_*.py`).

Import it after the bench has put the repository root on `sys.path`.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
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


@contextlib.contextmanager
def fake_claude(**env: str) -> Iterator[tuple[Settings, FakeAnthropicAPI]]:
    """Settings for a migrated SQLite database in a temporary directory, with Claude at a
    running fake Messages API (zero latency); `env` adds settings by their variable names."""
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropicAPI() as fake:
        values: dict[str, Any] = {
            "COSMO_DATA_DIR": tmp,
            "ANTHROPIC_API_KEY": "bench",
            "ANTHROPIC_BASE_URL": fake.base_url,
            "COSMO_API_TOKEN": "bench",
            **env,
        }
        settings = Settings(_env_file=None, **values)
        upgrade(settings.resolved_database_url)
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
