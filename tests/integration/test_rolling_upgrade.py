"""Rolling upgrades: a release keeps serving while a newer one has migrated the database
with `expand` migrations, and stops (unready, refusing to start) once a `contract` migration
newer than itself has run. Every migration says which it is."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from bot.server import create_app
from core.db import Database
from core.db.database import MIGRATIONS_DIR, alembic_head, compatible_from
from core.errors import SchemaOutOfDate
from core.settings import Settings
from core.wiring import build_container

NEWER = "9998"  # a revision from a release this code has never seen


@pytest.fixture
def migrated(migrated_database_url_factory: Callable[[str], str]) -> Iterator[tuple[str, Database]]:
    url = migrated_database_url_factory("sqlite")
    db = Database.from_url(url)
    yield url, db
    db.dispose()


def newer_release_migrated(db: Database, *, contract: bool) -> None:
    """What `cosmo db upgrade` of a newer release leaves behind: its revision, and the
    oldest code it still supports (its own revision after a contract migration)."""
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": NEWER})
        oldest = NEWER if contract else alembic_head()
        conn.execute(text("UPDATE schema_compat SET compatible_from = :v"), {"v": oldest})


def test_every_migration_declares_its_phase() -> None:
    for path in sorted(MIGRATIONS_DIR.glob("versions/0*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert getattr(module, "phase", None) in ("expand", "contract"), path.name


def test_upgrade_records_the_oldest_code_the_schema_supports(migrated) -> None:
    _url, db = migrated
    with db.engine.connect() as conn:
        recorded = conn.execute(text("SELECT compatible_from FROM schema_compat")).scalar()
    assert recorded == compatible_from(alembic_head())
    assert recorded == "0008"  # the newest contract migration so far (audit chain NOT NULL)


def test_an_older_release_keeps_serving_a_schema_ahead_by_expand_migrations(
    migrated, tmp_path: Path
) -> None:
    _url, db = migrated
    newer_release_migrated(db, contract=False)
    db.require_current_schema()  # starts
    settings = Settings(_env_file=None, COSMO_DATA_DIR=str(tmp_path / "data"), COSMO_API_TOKEN="t")
    with TestClient(create_app(container=build_container(settings, db=db), background=False)) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ok"
        assert ready.json()["schema"] == {
            "current": NEWER,
            "head": alembic_head(),
            "ahead": True,
            "compatible_from": alembic_head(),
        }
        # Smoke: the API still reads and writes.
        auth = {"Authorization": "Bearer t"}
        made = c.post("/api/v1/personas", json={"name": "p", "role": "Helper"}, headers=auth)
        assert made.status_code == 201, made.text
        assert c.get("/api/v1/personas", headers=auth).status_code == 200


def test_a_contract_migration_newer_than_the_code_makes_it_unready(
    migrated, tmp_path: Path
) -> None:
    _url, db = migrated
    newer_release_migrated(db, contract=True)
    with pytest.raises(SchemaOutOfDate) as refused:
        db.require_current_schema()
    assert "newer than this version" in refused.value.detail
    settings = Settings(_env_file=None, COSMO_DATA_DIR=str(tmp_path / "data"), COSMO_API_TOKEN="t")
    with TestClient(create_app(container=build_container(settings, db=db), background=False)) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["schema"]["compatible_from"] == NEWER
