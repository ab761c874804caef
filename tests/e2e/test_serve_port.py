"""`cosmo_serve` (tests/cosmo_process.py) talks only to the server it started.

A port from `free_port()` is released before `cosmo serve` binds it, and under load the
server takes seconds to start: in a parallel run another test's fake could take the port
meanwhile. `WebhookReceiver` answers 200 to any path, so the readiness poll and then the
test's requests went to that fake: the test's own server was never reached ("agent
'sales-bot' does not exist" right after an import that "answered 200"), and the fake's
test saw requests it never caused (a CRM with more than one request after one approval).
Here the port is taken on purpose, before the server starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import cosmo_process
from tests.cosmo_process import cosmo, cosmo_serve, embedded_env
from tests.fakes.webhook_receiver import WebhookReceiver

TOKEN = "port-token"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = embedded_env(tmp_path / "data", COSMO_API_TOKEN=TOKEN, COSMO_SECRET_KEY="port-secret")
    cosmo(env, "db", "upgrade")
    return env


@pytest.fixture
def squatter() -> Iterator[WebhookReceiver]:
    """Someone else's fake, on a port `free_port()` could have handed out a moment ago."""
    with WebhookReceiver() as receiver:
        yield receiver


def test_the_helper_never_talks_to_a_port_someone_else_holds(env, squatter, monkeypatch):
    # Asked for that port: the server cannot bind it, and says so.
    with (
        pytest.raises(AssertionError, match=r"(?i)address already in use"),
        cosmo_serve(env, squatter.port, args=["--workers", "0"]),
    ):
        pass  # pragma: no cover - the server cannot start on a taken port

    # Its port chosen for it, and taken before the server binds it: another is chosen.
    ports = iter([squatter.port])
    fresh = cosmo_process.free_port
    monkeypatch.setattr(cosmo_process, "free_port", lambda: next(ports, None) or fresh())
    with cosmo_serve(env, args=["--workers", "0"]) as base:
        assert base != f"http://127.0.0.1:{squatter.port}"
        agents = httpx.get(
            f"{base}/api/v1/agents", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
    assert agents.status_code == 200 and agents.json()["items"] == []

    assert squatter.requests == []
