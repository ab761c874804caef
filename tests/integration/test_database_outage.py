"""When the database goes away, callers are told to come back, not handed a raw 500: REST
answers 503 problem+json with `Retry-After`, and Slack gets a 503 so it delivers the event
again (an event must never be acked and then dropped)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core.db import Database
from tests.conftest import AUTH, PostgresDatabases
from tests.fakes.slack_api import BOT_USER_ID
from tests.slack_support import SlackApp, slack_app

CONFIG = """
apiVersion: cosmo/v1
personas: [{name: p, role: Assistant}]
agents: [{name: bot, persona: p}]
"""

pytestmark = pytest.mark.postgres


@pytest.fixture
def doomed(
    postgres: PostgresDatabases | None, migrated_database_url_factory: Callable[[str], str]
) -> Iterator[tuple[Database, str]]:
    """A migrated PostgreSQL database the test may drop while the app uses it."""
    if postgres is None:
        pytest.skip("needs TEST_DATABASE_URL: dropping a database under a running app")
    url = migrated_database_url_factory("postgres")
    database = Database.from_url(url)
    yield database, url
    database.dispose()


def drop(postgres: PostgresDatabases, url: str) -> None:
    with postgres.admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))


@pytest.fixture
def app(doomed, tmp_path: Path) -> Iterator[SlackApp]:
    with slack_app(doomed[0], tmp_path, CONFIG) as running:
        yield running


def test_rest_answers_503_with_retry_after_while_the_database_is_gone(app, doomed, postgres):
    assert app.client.get("/api/v1/agents", headers=AUTH).status_code == 200

    drop(postgres, doomed[1])
    r = app.client.get("/api/v1/agents", headers=AUTH)

    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["retry-after"]) > 0
    assert "database" in r.json()["detail"]
    assert "password" not in r.text and "postgresql" not in r.text.lower()


def test_slack_gets_503_so_it_delivers_the_event_again(app, doomed, postgres):
    drop(postgres, doomed[1])

    r = app.send(app.requests.app_mention(f"<@{BOT_USER_ID}> hello"))

    assert r.status_code == 503, r.text
    assert app.claude.message_requests == []
