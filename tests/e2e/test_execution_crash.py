"""A worker killed (SIGKILL) while the skill's target is answering: the execution never
stays `approved` in silence. Real processes: `cosmo serve --workers 0`, `cosmo worker`s,
the CRM and the agent's webhook receiver as local fakes over HTTP."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from core.db.ids import new_id
from core.outputs.port import NewOutput, Output
from core.outputs.snapshot import skill_snapshot
from core.schemas.skill import SkillSpec
from core.wiring import Container, build_container
from tests.conftest import make_settings
from tests.cosmo_process import cosmo, cosmo_serve, embedded_env, start_worker
from tests.fakes.webhook_receiver import Reply, WebhookReceiver
from tests.slack_support import eventually

TOKEN = "crash-token"
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LEAD = "U0LEAD0001"


def config(hooks: WebhookReceiver, crm: WebhookReceiver) -> str:
    executor = (
        f'{{type: http, method: POST, url: "{crm.url}", body_template: {{title: "{{{{title}}}}"}}}}'
    )
    schema = "{type: object, properties: {title: {type: string}}, required: [title]}"
    return f"""
apiVersion: cosmo/v1
personas: [{{name: seller, role: Sales assistant}}]
skills:
  - {{name: create_task, description: Create a CRM task., kind: action, is_automatable: true,
     input_schema: {schema}, executor: {executor}}}
  - {{name: upsert_task, description: Create or update a CRM task., kind: action,
     is_automatable: true, idempotent: true, input_schema: {schema}, executor: {executor}}}
agents:
  - name: sales-bot
    persona: seller
    skills: [create_task, upsert_task]
    approvers: [{LEAD}]
    webhook: {{url: "{hooks.url}", secret: "{HOOK_SECRET}"}}
"""


@dataclass
class Deployment:
    base: str
    env: dict[str, str]
    logs: Path
    container: Container
    crm: WebhookReceiver
    hooks: WebhookReceiver

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.request(method, f"{self.base}/api/v1{path}", headers=headers, timeout=60, **kw)

    def worker(self) -> subprocess.Popen[bytes]:
        return start_worker(self.env, self.logs)

    def propose(self, skill: str) -> Output:
        """An output as the agent makes it: the skill's snapshot taken at proposal."""
        c = self.container
        agent = c.agents.get_by_name("default", "sales-bot")
        view = c.skills.get("default", skill)
        spec = SkillSpec.model_validate(
            view.model_dump(
                include={"name", "description", "input_schema", "kind", "is_automatable"}
            )
            | {"idempotent": view.idempotent, "executor": view.executor}
        )
        session = c.sessions.start("default", agent.id, user_id="U0REQ")
        return c.outputs.create(
            NewOutput(
                id=new_id("out"),
                tenant_id="default",
                agent_id=agent.id,
                session_id=session.id,
                skill=skill,
                is_automatable=True,
                arguments={"title": "Call Globex"},
                content="Create task: Call Globex",
                requested_by="U0REQ",
                skill_snapshot=skill_snapshot(spec, view.version),
            )
        )

    def status(self, output_id: str) -> Output:
        return self.container.outputs.get("default", output_id)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with contextlib.ExitStack() as stack:
        hooks = stack.enter_context(WebhookReceiver())
        crm = stack.enter_context(WebhookReceiver(path="/api/tasks"))
        env = embedded_env(
            tmp_path / "data",
            COSMO_API_TOKEN=TOKEN,
            COSMO_SECRET_KEY="crash-secret",
            COSMO_WEBHOOK_ALLOW_INSECURE="true",
        )
        cosmo(env, "db", "upgrade")
        base = stack.enter_context(cosmo_serve(env, args=["--workers", "0"]))
        container = build_container(
            make_settings(tmp_path / "data", COSMO_WEBHOOK_ALLOW_INSECURE=True)
        )
        stack.callback(container.close)
        r = httpx.post(
            f"{base}/api/v1/agents/import",
            content=config(hooks, crm),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/yaml"},
        )
        assert r.status_code == 200, r.text
        yield Deployment(base, env, tmp_path / "workers.log", container, crm, hooks)


def approve_while_the_target_hangs(d: Deployment, output_id: str) -> None:
    """Approve; once the CRM has the call (and is slow to answer), kill the worker."""
    d.crm.then(Reply.slow(120))
    first = d.worker()
    try:
        # The REST answer waits for the execution: let it wait in the background.
        threading.Thread(
            target=d.api, args=("POST", f"/outputs/{output_id}/approve"), daemon=True
        ).start()
        d.crm.wait_for(1, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert d.status(output_id).status == "approved"


def test_an_execution_killed_mid_call_is_outcome_unknown_and_can_be_retried(deployment):
    d = deployment
    output = d.propose("create_task")
    approve_while_the_target_hangs(d, output.id)

    second = d.worker()
    try:
        # Taken over once the dead worker's lease lapses; not called again.
        failed = eventually(
            lambda: (o := d.status(output.id)).status != "approved" and o, timeout=60
        )
        assert failed.status == "execution_failed"
        assert failed.execution_error == "outcome unknown — check the target, then retry"
        assert len(d.crm.requests) == 1
        receipts = d.api("GET", f"/outputs/{output.id}/receipt").json()
        assert receipts["latest"]["receipt"]["decision"] == "outcome_unknown"
        audit = d.api("GET", f"/outputs/{output.id}/audit").json()["items"]
        assert audit[-1]["action"] == "execute" and audit[-1]["outcome"] == "outcome_unknown"

        verifier = Webhook(HOOK_SECRET)
        announced = eventually(
            lambda: [
                e
                for e in (verifier.verify(r.body, dict(r.headers)) for r in d.hooks.requests)
                if e["type"] == "output.execution_failed"
            ],
            timeout=30,
        )
        assert announced[0]["data"]["outputId"] == output.id
        assert announced[0]["data"]["outcome"] == "outcome_unknown"

        # Someone checked the CRM: retry runs it again.
        retried = d.api("POST", f"/outputs/{output.id}/retry", json={"user_id": LEAD})
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] == "executed"
        assert retried.json()["execution_error"] is None
        assert len(d.crm.requests) == 2
    finally:
        second.terminate()
        second.wait(timeout=30)


def test_an_idempotent_execution_killed_mid_call_runs_again_with_the_same_key(deployment):
    d = deployment
    output = d.propose("upsert_task")
    approve_while_the_target_hangs(d, output.id)

    second = d.worker()
    try:
        done = eventually(lambda: (o := d.status(output.id)).status != "approved" and o, timeout=60)
        assert done.status == "executed", done.execution_error
        keys = [r.headers.get("idempotency-key") for r in d.crm.requests]
        assert keys == [output.id, output.id]
    finally:
        second.terminate()
        second.wait(timeout=30)
