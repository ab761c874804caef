"""Executions as jobs: what a crash between the decision and its enqueue leaves on the aws
store is found by the sweep, and a job that cannot run fails once (dead letter, reason)
instead of being retried forever."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.config_document import parse_document
from core.db import Database
from core.db.ids import new_id
from core.execution import jobs as execution_jobs
from core.jobs import SYSTEM_TENANT, JobWorker
from core.outputs.aws_setup import ensure_bucket_and_table
from core.outputs.port import NewOutput, Output, OutputStatus, Transition
from core.skills.runtime import SkillResult
from core.wiring import Container, aws_clients, build_container
from tests.conftest import execution_worker, make_settings
from tests.fakes.moto_server import CREDENTIALS, REGION

CONFIG = """
apiVersion: cosmo/v1
personas: [{name: p, role: r}]
skills:
  - {name: create_task, description: d, kind: action, is_automatable: true}
agents:
  - {name: bot, persona: p, skills: [create_task], approvers: [U0LEAD]}
"""


def prepared(container: Container) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []

    async def create_task(arguments: dict[str, Any], ctx: Any) -> SkillResult:
        runs.append(arguments)
        return SkillResult("done")

    container.skill_factory.builtins.register("create_task", create_task)
    container.config.apply("default", parse_document(CONFIG), actor="test")
    return runs


def propose(container: Container, snapshot: dict[str, Any] | None = None) -> Output:
    agent = container.agents.get_by_name("default", "bot")
    session = container.sessions.start("default", agent.id, user_id="U0REQ")
    return container.outputs.create(
        NewOutput(
            id=new_id("out"),
            tenant_id="default",
            agent_id=agent.id,
            session_id=session.id,
            skill="create_task",
            is_automatable=True,
            arguments={"title": "Call Ana"},
            content="Create task: Call Ana",
            requested_by="U0REQ",
            skill_snapshot=snapshot,
        )
    )


@pytest.fixture
def aws_container(
    db: Database, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Container]:
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for name, value in {
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        settings = make_settings(
            tmp_path / "data", OUTPUT_STORE="aws", S3_BUCKET="cosmo-exec", DYNAMODB_TABLE="exec"
        )
        ensure_bucket_and_table(*aws_clients(settings), "cosmo-exec", "exec")
        container = build_container(settings, db=db)
        assert container.outputs.name == "aws"
        yield container


async def test_an_approval_whose_enqueue_a_crash_prevented_is_found_by_the_sweep(
    aws_container: Container,
):
    c = aws_container
    runs = prepared(c)
    output = propose(c)
    # What a process that died right after its DynamoDB write leaves: the output approved
    # (naming its execution job), the job never enqueued.
    approved_at = datetime.now(UTC) - timedelta(minutes=1)
    key = execution_jobs.execution_key(output.id)
    c.outputs.transition(
        "default",
        output.id,
        Transition(
            expected=OutputStatus.PENDING,
            to=OutputStatus.APPROVED,
            at=approved_at,
            decided_by="U0LEAD",
            decision="approved",
            via="slack",
            identity="verified",
            execution_job=key,
        ),
    )
    assert c.jobs.find(key) is None
    c.jobs.submit(
        tenant_id=SYSTEM_TENANT,
        kind=execution_jobs.SWEEP,
        key=f"schedule:{execution_jobs.SWEEP}",
    )

    worker = JobWorker(c.jobs, execution_jobs.job_kinds(c))
    await worker.run_until_idle()

    final = c.outputs.get("default", output.id)
    assert final.status == OutputStatus.EXECUTED
    assert runs == [{"title": "Call Ana"}]
    job = c.jobs.find(key)
    assert job is not None and job.state == "succeeded"
    # Executed: no longer awaiting, so the next sweep finds nothing to enqueue.
    assert c.outputs.awaiting_execution(datetime.now(UTC)) == []
    receipts = c.receipts.for_output("default", output.id)
    assert receipts[-1].receipt.decided_by == "U0LEAD"  # owed to the decider it recorded


async def test_an_execute_job_for_a_deleted_output_fails_once_with_its_reason(
    container: Container,
):
    key = execution_jobs.execution_key("out_gone")
    container.jobs.submit(
        tenant_id="default",
        kind=execution_jobs.EXECUTE,
        key=key,
        payload={"output_id": "out_gone"},
    )

    await execution_worker(container).run_until_idle()

    job = container.jobs.find(key)
    assert job is not None
    assert (job.state, job.attempt, job.failures) == ("dead", 1, 1)
    assert job.error == "output out_gone no longer exists"


async def test_an_execution_whose_skill_snapshot_cannot_be_built_fails_once(
    container: Container,
):
    from core.approvals.policy import Actor

    runs = prepared(container)
    output = propose(
        container, snapshot={"name": "create_task", "version": 1, "executor": {"type": "nope"}}
    )
    await container.approvals.decide(
        "default", output.id, "approve", Actor("U0LEAD", "slack", verified=True)
    )

    await execution_worker(container).run_until_idle()

    final = container.outputs.get("default", output.id)
    assert final.status == OutputStatus.EXECUTION_FAILED
    assert final.execution_error == "the output's skill snapshot is not a valid skill"
    job = container.jobs.find(execution_jobs.execution_key(output.id))
    assert job is not None
    assert (job.state, job.attempt) == ("dead", 1)
    assert job.error == "the output's skill snapshot is not a valid skill"
    assert runs == []
