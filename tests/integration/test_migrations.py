"""Migrations build exactly the schema the models describe, on every backend, both ways.

Each test gets a fresh, empty database (`empty_database_url_factory`): migrations run DDL
and move `alembic_version`, which the rolled-back `db` fixture cannot contain.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, inspect

from bot.server import create_app
from bot.slack.oauth_tables import SLACK_METADATA
from core.db import Database, downgrade, upgrade
from core.db.database import alembic_config, alembic_head
from core.db.models import Base
from core.errors import SchemaOutOfDate
from core.settings import Settings
from core.wiring import build_container
from tests.conftest import BACKENDS

ALL_METADATA = MetaData()
for _table in [*Base.metadata.tables.values(), *SLACK_METADATA.tables.values()]:
    _table.to_metadata(ALL_METADATA)
APP_TABLES = set(ALL_METADATA.tables)


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, empty_database_url_factory) -> Iterator[str]:
    yield empty_database_url_factory(request.param)


@pytest.fixture
def database(empty_database: str) -> Iterator[Database]:
    db = Database.from_url(empty_database)
    yield db
    db.dispose()


def tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def first_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    (base,) = script.get_bases()
    return base


def test_the_models_declare_the_configuration_tables() -> None:
    # Keeps the checks below from passing vacuously on an empty metadata.
    assert {"personas", "skills", "agents", "agent_skills", "agent_versions"} <= APP_TABLES


def test_upgrade_downgrade_and_upgrade_again(empty_database: str, database: Database) -> None:
    assert tables(database) == set()

    upgrade(empty_database)
    assert tables(database) == APP_TABLES | {"alembic_version"}
    assert database.schema_status().current == alembic_head()

    downgrade(empty_database, "base")
    assert tables(database) - {"alembic_version"} == set()
    assert database.schema_status().current is None

    upgrade(empty_database)
    assert tables(database) == APP_TABLES | {"alembic_version"}
    assert database.schema_status().is_current


def test_migrated_schema_matches_the_models(empty_database: str, database: Database) -> None:
    upgrade(empty_database)
    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, ALL_METADATA)
    assert differences == [], (
        "the models and the migrations disagree; write a migration "
        "(alembic revision --autogenerate) for these differences"
    )


def test_an_empty_database_is_refused_with_the_command_that_fixes_it(
    empty_database: str, database: Database
) -> None:
    with pytest.raises(SchemaOutOfDate) as refused:
        database.require_current_schema()
    assert refused.value.current is None
    assert refused.value.head == alembic_head()
    assert "cosmo db upgrade" in str(refused.value)

    upgrade(empty_database)
    database.require_current_schema()


def test_a_partly_migrated_database_is_refused_until_upgraded(
    empty_database: str, database: Database
) -> None:
    base = first_revision()
    if base == alembic_head():
        pytest.skip("only one migration exists")
    upgrade(empty_database, base)

    with pytest.raises(SchemaOutOfDate) as refused:
        database.require_current_schema()
    assert refused.value.current == base
    assert f"revision {base} but this version of Cosmo needs {alembic_head()}" in str(refused.value)
    assert "cosmo db upgrade" in str(refused.value)

    upgrade(empty_database)
    database.require_current_schema()


def test_readyz_is_503_until_the_database_is_migrated(
    empty_database: str, database: Database, settings: Settings
) -> None:
    app = create_app(container=build_container(settings, db=database))
    with TestClient(app, raise_server_exceptions=False) as client:
        before = client.get("/readyz")
        assert before.status_code == 503
        assert before.json()["status"] == "unavailable"
        assert before.json()["schema"] == {"current": None, "head": alembic_head()}

        upgrade(empty_database)

        after = client.get("/readyz")
        assert after.status_code == 200
        assert after.json()["status"] == "ok"
        assert after.json()["database"] == database.backend
        assert after.json()["schema"] == {"current": alembic_head(), "head": alembic_head()}
