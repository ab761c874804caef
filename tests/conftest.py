"""Shared fixtures: databases on every backend, a wired container, an API client.

Database tests run on SQLite always, and on PostgreSQL when `TEST_DATABASE_URL` is set
(CI sets it). A configured but unreachable PostgreSQL fails the run instead of skipping,
so a broken CI database can never pass as green.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections import Counter

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `cosmo serve` does; see bot/cli/main.py
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bot.server import create_app
from core.db import Database, make_engine, upgrade
from core.execution import jobs as execution_jobs
from core.jobs import JobWorker
from core.settings import Settings
from core.wiring import Container, build_container

API_TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PG_URL = os.environ.get("TEST_DATABASE_URL", "")
BACKENDS = ["sqlite", "postgres"] if PG_URL else ["sqlite"]


def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """pytest-xdist's module scheduling keys tests by node id: tests sharing one id would
    silently run once. Refuse such a collection instead (schemathesis' operations, which
    pytest 9 gives one id, get one each in `pytest_collection_modifyitems`)."""
    dist = getattr(node.config.option, "dist", "no")
    if dist not in ("loadscope", "loadfile"):
        return
    twice = sorted(i for i, n in Counter(ids).items() if n > 1)
    if twice:
        raise pytest.UsageError(
            f"{len(twice)} node ids are shared by several tests, which --dist {dist} would "
            f"run once: {twice[:3]}; run them without it"
        )


#: The slowest modules, slowest first (their setup, call and teardown times summed, from
#: `make pytest` with `--durations=0` on this 2-core machine while another suite ran on it,
#: 2026-12-07: test_chaos.py 483 s, the next 58 s down to 17 s; test_chaos.py alone on a
#: quiet machine since replies stopped queueing appends, later that day: 332 s, from 452 s;
#: in a 3-worker run of the suite after its CPU was cut (session 11): 426 s, the next
#: 40 s down to 15 s; `make pytest` prints the 15 slowest tests of each run). `make pytest`
#: hands whole modules to the workers in collection order (`--no-loadscope-reorder`; xdist
#: would otherwise start with the modules that have the most tests, the quick parametrized
#: ones, and leave these for last, where one of them finishing alone stretches the run).
SLOW_FIRST = (
    "tests/e2e/test_chaos.py",
    "tests/e2e/test_decision_race.py",
    "tests/integration/test_schemathesis.py",
    "tests/e2e/test_knowledge_ingest_worker.py",
    "tests/e2e/test_skill_limits.py",
    "tests/e2e/test_skill_ssrf.py",
    "tests/integration/test_output_edits.py",
    "tests/e2e/test_rest_turn_recovery.py",
    "tests/e2e/test_server_process.py",
    "tests/e2e/test_slack_turn_crash.py",
    "tests/e2e/test_slack_streaming.py",
    "tests/e2e/test_package.py",
    "tests/integration/test_api_agents.py",
    "tests/integration/test_output_store_contract.py",
    "tests/e2e/test_execution_crash.py",
    "tests/integration/test_api_knowledge.py",
    "tests/e2e/test_doctor_online.py",
    "tests/integration/test_agent_engine.py",
    "tests/e2e/test_cli_kb.py",
    "tests/e2e/test_keep_alive.py",
    "tests/integration/test_skill_egress.py",
    "tests/e2e/test_worker_processes.py",
    "tests/integration/test_api_errors.py",
    "tests/e2e/test_tracing_processes.py",
    "tests/e2e/test_slack_edit.py",
    "tests/e2e/test_cli.py",
    "tests/integration/test_approvals.py",
    "tests/unit/test_tracing.py",
    "tests/e2e/test_slack_admin_process.py",
    "tests/e2e/test_embedder_install.py",
    "tests/e2e/test_slack_turn_jobs.py",
    "tests/integration/test_approval_lifecycle.py",
    "tests/e2e/test_slack_conversation.py",
    "tests/e2e/test_slack_commands.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each schemathesis operation its own node id; slow modules first, the rest in
    collection order (the sort is stable)."""
    for item in items:
        name_operation(item)
    rank = {module: i for i, module in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def name_operation(item: pytest.Item) -> None:
    """Schemathesis names each operation's test `test_…[GET /api/v1/agents]`, but pytest 9
    builds a node id from the function's name alone, so all of them share one: reports could
    not tell them apart and xdist's module scheduling would run one. The operation goes into
    the id's brackets, where pytest 8 had it."""
    label = getattr(item, "operation_label", None)
    if label and not item.nodeid.endswith("]"):
        item._id = item.id.with_params(label)


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "COSMO_DATA_DIR": str(data_dir),
        "COSMO_API_TOKEN": API_TOKEN,
        "COSMO_SECRET_KEY": "test-secret-key",
        "COSMO_WEBHOOK_ALLOW_INSECURE": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]  # the env's names, not fields


class PostgresDatabases:
    """Creates throwaway databases next to TEST_DATABASE_URL and drops them afterwards."""

    def __init__(self, url: str) -> None:
        self.base = make_url(url)
        self.admin: Engine = create_engine(self.base, isolation_level="AUTOCOMMIT")
        try:
            with self.admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # pragma: no cover - environment failure
            pytest.exit(f"TEST_DATABASE_URL is set but PostgreSQL is unreachable: {exc}", 2)
        self.created: list[str] = []

    def create(self, template: str | None = None) -> str:
        """A new database (a copy of `template`, a URL nobody is connected to, if given)."""
        name = f"cosmo_test_{uuid.uuid4().hex[:12]}"
        copy = f' TEMPLATE "{make_url(template).database}"' if template else ""
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
        self.created.append(name)
        return self.base.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases | None]:
    if not PG_URL:
        yield None
        return
    pg = PostgresDatabases(PG_URL)
    yield pg
    pg.drop_all()


@pytest.fixture(scope="session")
def empty_database_url_factory(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresDatabases | None
):
    """Makes a new, empty database on a backend and returns its URL."""

    def make(backend: str) -> str:
        if backend == "sqlite":
            path = tmp_path_factory.mktemp("db") / "cosmo.db"
            return f"sqlite:///{path}"
        assert postgres is not None
        return postgres.create()

    return make


@pytest.fixture(scope="session")
def migrated_database_url_factory(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresDatabases | None,
    empty_database_url_factory,
):
    """Makes a new database at the head of the migrations and returns its URL. The first on
    a backend is migrated; the next are copies of it (SQLite's backup API, PostgreSQL's
    `CREATE DATABASE … TEMPLATE`): the same schema and rows, without running every
    migration again for each test. Tests of the migrations themselves start from
    `empty_database_url_factory`."""
    templates: dict[str, str] = {}

    def make(backend: str) -> str:
        if backend not in templates:
            url = empty_database_url_factory(backend)
            upgrade(url)
            templates[backend] = url
        template = templates[backend]
        if backend == "sqlite":
            path = tmp_path_factory.mktemp("db") / "cosmo.db"
            source = sqlite3.connect(make_url(template).database or "")
            target = sqlite3.connect(path)
            try:
                source.backup(target)
            finally:
                source.close()
                target.close()
            return f"sqlite:///{path}"
        assert postgres is not None
        return postgres.create(template=template)

    return make


@pytest.fixture(scope="session")
def pgvector_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresDatabases]:
    """A PostgreSQL with the pgvector extension, for the pgvector knowledge provider.

    `TEST_PGVECTOR_URL` points at one you run yourself; otherwise the `pgserver` package
    (a dev dependency) starts its bundled PostgreSQL 16 + pgvector in a temporary folder.
    """
    url = os.environ.get("TEST_PGVECTOR_URL", "")
    server = None
    data = Path(tempfile.mkdtemp(prefix="cosmo-pgvector-"))
    if not url:
        # platformdirs (under pgserver) warns when this is unset, as it is in CI containers.
        os.environ.setdefault("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("run")))
        from pgserver.postgres_server import get_server

        # Not under pytest's temporary root: as root, pgserver runs PostgreSQL as another
        # user and opens the folders to it, and every pytest run resets that root to 0700.
        server = get_server(data, cleanup_mode="stop")
        # pgserver listens on a Unix socket only; its URI names the socket directory.
        raw = make_url(server.get_uri())
        url = raw.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    databases = PostgresDatabases(url)
    yield databases
    databases.drop_all()
    if server is not None:
        server.cleanup()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def pgvector_template(pgvector_server: PostgresDatabases) -> str:
    """A migrated database with the pgvector schema that no one connects to: tests that
    need commits of their own copy it (`pgvector_server.create(template=…)`), fast."""
    from core.knowledge.pgvector import PgvectorKnowledgeIndex

    url = pgvector_server.create()
    upgrade(url)
    db = Database.from_url(url)
    PgvectorKnowledgeIndex(db)
    db.dispose()
    return url


@pytest.fixture(scope="session")
def pgvector_url(pgvector_server: PostgresDatabases, pgvector_template: str) -> str:
    """A migrated database on the pgvector server (shared by the tests of a run)."""
    return pgvector_server.create(template=pgvector_template)


@pytest.fixture(scope="session", params=BACKENDS)
def migrated_engine(request: pytest.FixtureRequest, empty_database_url_factory) -> Iterator[Engine]:
    url = empty_database_url_factory(request.param)
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def db(migrated_engine: Engine) -> Iterator[Database]:
    """A migrated database; everything a test writes is rolled back afterwards."""
    connection = migrated_engine.connect()
    outer = connection.begin()
    try:
        yield Database.bound_to(connection)
    finally:
        outer.rollback()
        connection.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def container(db: Database, settings: Settings) -> Container:
    return build_container(settings, db=db)


def execution_worker(container: Container) -> JobWorker:
    """A worker for `output.execute` only: other background work stays off in tests that
    drive it by hand."""
    kinds = [k for k in execution_jobs.job_kinds(container) if k.every is None]
    return JobWorker(container.jobs, kinds, poll=0.2)


@contextmanager
def executions_running(client: TestClient, container: Container) -> Iterator[None]:
    """Approved outputs execute on an in-process worker, as with `cosmo serve`."""
    worker = execution_worker(container)
    client.portal.call(worker.start)  # type: ignore[union-attr]
    try:
        yield
    finally:
        client.portal.call(worker.stop)  # type: ignore[union-attr]


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    app = create_app(container=container, background=False)
    with (
        TestClient(app, headers=AUTH, raise_server_exceptions=False) as c,
        executions_running(c, container),
    ):
        yield c


# -- Claude ------------------------------------------------------------------------


@pytest.fixture
def fake_claude():
    """A local Messages API speaking the real wire format (see tests/fakes/anthropic_api.py)."""
    from tests.fakes.anthropic_api import FakeAnthropicAPI

    with FakeAnthropicAPI() as fake:
        yield fake


@pytest.fixture
def claude_settings(tmp_path: Path, fake_claude) -> Settings:
    return make_settings(
        tmp_path / "data",
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=fake_claude.base_url,
    )


@pytest.fixture
def claude_container(db: Database, claude_settings: Settings) -> Container:
    """A container whose agents talk to the fake Claude, with embedded lexical memory."""
    from core.embeddings.hashing import HashingEmbedder
    from core.memory.local import LocalMemory

    return build_container(claude_settings, db=db, memory=LocalMemory(db, HashingEmbedder()))


@pytest.fixture
def claude_client(claude_container: Container) -> Iterator[TestClient]:
    """An API client whose chats are answered: a worker runs the REST turns (only those)."""
    from tests.job_support import running_worker

    app = create_app(container=claude_container, background=False)
    with (
        TestClient(app, headers=AUTH, raise_server_exceptions=False) as c,
        running_worker(c, claude_container),
    ):
        yield c


@pytest.fixture
def model():
    """Claude at the `ModelClient` port, scripted (see tests/fakes/scripted_model.py); the
    test fails if it leaves an answer unused or the engine calls beyond the script."""
    from tests.fakes.scripted_model import ScriptedModel

    scripted = ScriptedModel()
    yield scripted
    scripted.assert_done()


@pytest.fixture(scope="module", params=BACKENDS)
def module_db(request: pytest.FixtureRequest, migrated_database_url_factory) -> Iterator[Database]:
    """A migrated database per module and backend, with real commits and connections; tests
    sharing it keep apart by what they write (their own kinds, tenants or names)."""
    url = migrated_database_url_factory(request.param)
    database = Database.from_url(url)
    yield database
    database.dispose()


@pytest.fixture
def real_db(request: pytest.FixtureRequest, migrated_database_url_factory) -> Iterator[Database]:
    """A freshly migrated database with real, separate connections (for concurrency tests).

    Runs on every backend. Slower than `db` (a new database per test), so use it only where
    several connections must race.
    """
    backend = getattr(request, "param", "sqlite")
    url = migrated_database_url_factory(backend)
    database = Database.from_url(url)
    yield database
    database.dispose()
