"""Property-based fuzzing of the REST API from its own OpenAPI document.

Every `/api/v1` operation gets schema-valid and schema-invalid requests (schemathesis'
examples, coverage and fuzzing phases) with the bearer token, against the real app over ASGI.
Whatever the input, the API must answer without a server error, and every error it returns
must be `application/problem+json`.

Runs on SQLite only. Hypothesis calls the test many times inside one pytest test, so the
rolled-back-per-test `db` fixture cannot isolate examples; instead the module owns a migrated
SQLite file that the run fills and throws away. The routes under test are backend-agnostic
and `tests/integration/test_api_*.py` covers them on PostgreSQL; fuzzing a second backend
would double the slowest test module for little more coverage.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from bot.api.openapi_export import build_openapi
from bot.server import create_app
from core.config_document import parse_document
from core.db import Database, upgrade
from core.wiring import Container, build_container
from tests.conftest import AUTH, make_settings

PROBLEM = "application/problem+json"
EXAMPLES_PER_OPERATION = 25

schema = schemathesis.openapi.from_dict(build_openapi()).include(path_regex="^/api/v1/")

# What `seeded` puts in the database. Random ids and names almost always answer 404 (or 422 for
# an unknown persona), which would leave the handlers' success paths unfuzzed; the hooks below
# point about half of the generated requests at rows that exist. The fixture fills `SEEDED`
# before generation starts inside the test.
SEEDED: dict[str, str] = {}
SEEDED_PERSONA = "support"
SEEDED_SKILL = "lookup"


@schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    real = {k: SEEDED[k] for k in path_parameters or {} if k in SEEDED}
    if not path_parameters or not real:
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, {**path_parameters, **real}])


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    if not isinstance(body, dict) or not {"persona", "skills"} & body.keys():
        return st.just(body)
    known = dict(body)
    if "persona" in known:
        known["persona"] = SEEDED_PERSONA
    if "skills" in known:
        known["skills"] = [SEEDED_SKILL]
    return st.sampled_from([body, known])


@schema.hook
def flatmap_headers(
    context: schemathesis.HookContext, headers: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    # A random tenant sees none of the seeded rows; a random If-Match is a 400 before any work.
    drop = {"x-cosmo-tenant", "if-match"}
    if not headers or not drop & {k.lower() for k in headers}:
        return st.just(headers)
    return st.sampled_from([headers, {k: v for k, v in headers.items() if k.lower() not in drop}])


SEED = f"""
apiVersion: cosmo/v1
personas:
  - name: {SEEDED_PERSONA}
    role: Support agent
    instructions: "Greet {{{{user_name}}}} by name."
skills:
  - name: {SEEDED_SKILL}
    description: Look up a customer by email
    executor: {{type: builtin, function: current_time}}
    input_schema:
      type: object
      properties: {{email: {{type: string}}}}
agents:
  - name: helper
    persona: {SEEDED_PERSONA}
    skills: [{SEEDED_SKILL}]
"""


@pytest.fixture(scope="module")
def fuzz_container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{data_dir / 'cosmo.db'}"
    upgrade(url)
    container = build_container(make_settings(data_dir, DATABASE_URL=url), Database.from_url(url))
    yield container
    container.close()


@pytest.fixture(scope="module")
def fuzzed_app(fuzz_container: Container) -> FastAPI:
    return create_app(container=fuzz_container)


@pytest.fixture
def seeded(fuzz_container: Container) -> Iterator[None]:
    """The seed rows exist before each operation is fuzzed, whatever earlier ones deleted.

    Function-scoped on purpose: pytest runs it once per operation (not per Hypothesis
    example), so a DELETE or rename fuzzed earlier cannot starve the operations after it.
    """
    tenant = fuzz_container.settings.default_tenant
    fuzz_container.config.apply(tenant, parse_document(SEED), actor="test")
    personas = fuzz_container.personas.list(tenant, name=SEEDED_PERSONA, limit=200).items
    SEEDED.update(
        agent_id=fuzz_container.agents.get_by_name(tenant, "helper").id,
        persona_id=next(p.id for p in personas if p.name == SEEDED_PERSONA),
        name=SEEDED_SKILL,
    )
    yield
    SEEDED.clear()


def error_is_problem_json(
    ctx: schemathesis.CheckContext,
    response: schemathesis.Response,
    case: schemathesis.Case[Any],
) -> bool | None:
    if response.status_code >= 400:
        media_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
        assert media_type == PROBLEM, (
            f"{response.status_code} answered as {media_type!r}, not {PROBLEM}: "
            + response.text[:200]
        )
    return None


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    # `seeded` is function-scoped on purpose: once per operation, not per example.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_api_answers_every_request_without_a_server_error(
    case: schemathesis.Case[Any], fuzzed_app: FastAPI, seeded: None
) -> None:
    response = case.call(app=fuzzed_app, headers=AUTH)
    case.validate_response(response, checks=[not_a_server_error, error_is_problem_json])


# -- what fuzzing found, pinned so it stays fixed without Hypothesis finding it again ----
# These use the `client` fixture, so unlike the fuzzing above they run on every backend.


def test_rolling_back_to_a_version_too_large_to_store_is_not_found(client: TestClient) -> None:
    # Was a 500 on SQLite: binding 2**63 raised OverflowError in the driver.
    assert client.post("/api/v1/personas", json={"name": "p", "role": "r"}).status_code == 201
    agent = client.post("/api/v1/agents", json={"name": "a", "persona": "p"}).json()
    for version in (2**31, 2**63, 10**30):
        r = client.post(f"/api/v1/agents/{agent['id']}/rollback", json={"version": version})
        assert (r.status_code, r.headers["content-type"]) == (404, PROBLEM)
        assert r.json()["detail"] == f"version '{agent['id']}@{version}' does not exist"
