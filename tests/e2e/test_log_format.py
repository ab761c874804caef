"""`COSMO_LOG_FORMAT=json` over a real `cosmo serve` (and its supervised worker): every
line on stdout/stderr is one JSON object — ours, uvicorn's, the access log, the worker's —
access lines carry the request id and tenant, and no secret the process holds appears."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx

from tests.cosmo_process import COSMO, ROOT, cosmo, free_port, wait_serving
from tests.fakes.slack_api import BOT_TOKEN, FakeSlackAPI
from tests.fakes.slack_requests import SIGNING_SECRET, SlackRequests

TOKEN = "log-format-root-token-0123456789"
SECRET_KEY = "log-format-secret-key-9876543210"
ANTHROPIC_KEY = "sk-ant-log-format-test-key"


def test_json_logs_parse_line_by_line_name_requests_and_hold_no_secret(tmp_path: Path) -> None:
    with FakeSlackAPI() as slack:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMO_", "SLACK_"))}
        env.update(
            COSMO_DATA_DIR=str(tmp_path / "data"),
            COSMO_API_TOKEN=TOKEN,
            COSMO_SECRET_KEY=SECRET_KEY,
            COSMO_LOG_FORMAT="json",
            COSMO_WORKERS="1",
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=slack.base_url,
            ANTHROPIC_API_KEY=ANTHROPIC_KEY,
            ANTHROPIC_BASE_URL="http://127.0.0.1:9",
        )
        env.pop("DATABASE_URL", None)
        cosmo(env, "db", "upgrade")
        port = free_port()
        log_file = tmp_path / "serve.log"
        with log_file.open("wb") as sink:
            process = subprocess.Popen(
                [*COSMO, "serve", "--port", str(port)],
                env=env,
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
            try:
                base = wait_serving(process, port, log_file, time.monotonic() + 60)
                auth = {"Authorization": f"Bearer {TOKEN}", "X-Request-ID": "req-abc.123"}
                listed = httpx.get(f"{base}/api/v1/agents", headers=auth)
                assert listed.headers["x-request-id"] == "req-abc.123"
                wrong = httpx.get(f"{base}/api/v1/agents", headers={"Authorization": "Bearer no"})
                assert wrong.status_code == 401 and len(wrong.headers["x-request-id"]) == 16
                event = SlackRequests(SIGNING_SECRET).url_verification("challenge-x")
                httpx.post(f"{base}/slack/events", content=event.body, headers=event.headers)
                # The supervised worker logs its start (a bound, not a timing claim).
                deadline = time.monotonic() + 60
                while '"cosmo.worker"' not in log_file.read_text():
                    assert time.monotonic() < deadline, log_file.read_text()[-2000:]
                    time.sleep(0.2)
            finally:
                process.terminate()
                process.wait(timeout=40)
    text = log_file.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line, or the test fails naming it
        assert {"ts", "level", "logger", "msg"} <= entry.keys(), line
        entries.append(entry)
    loggers = {e["logger"] for e in entries}
    assert {"cosmo.access", "cosmo.worker", "uvicorn.error"} <= loggers, loggers
    access = [e for e in entries if e["logger"] == "cosmo.access"]
    [listing] = [e for e in access if e.get("request_id") == "req-abc.123"]
    assert listing["msg"].startswith("GET /api/v1/agents 200 ")
    assert listing["tenant"] == "default"
    assert any(e["msg"].startswith("GET /api/v1/agents 401 ") for e in access)
    for secret in (TOKEN, SECRET_KEY, ANTHROPIC_KEY, BOT_TOKEN, SIGNING_SECRET):
        assert secret not in text
    assert "token will be unused" not in text  # Bolt's expected warning is filtered
