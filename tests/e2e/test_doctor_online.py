"""`cosmo doctor --online` as an operator runs it: a real process against the fake Slack and
Claude APIs, a real MCP server, webhook URLs through the delivery guard."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from tests.e2e.test_cli import cli_env, cosmo, env  # noqa: F401 - `env` is a fixture
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.slack_api import BOT_TOKEN, BOT_USER_ID, FakeSlackAPI

FAKE_MCP = str(Path(__file__).resolve().parents[1] / "fakes" / "mcp_server.py")
ANTHROPIC_KEY = "sk-ant-doctor-0123456789"
WRONG_SLACK = "xoxb-0000-not-a-real-token-doctor"
WRONG_KEY = "sk-ant-wrong-key-doctor-9876"

CONFIG = """
apiVersion: cosmo/v1
personas: [{name: p, role: r}]
skills:
  - name: crm_lookup
    description: Look up a contact.
    kind: read
    input_schema: {type: object, properties: {q: {type: string}}}
    executor:
      type: http
      method: GET
      url: https://crm.example.com/contacts
      secret_headers: {Authorization: DOCTOR_CRM_TOKEN}
agents:
  - name: ok-bot
    persona: p
    skills: [crm_lookup]
    webhook: {url: "https://93.184.215.14/hooks", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
  - name: typo-bot
    persona: p
    model: claude-sonet-4
    webhook: {url: "https://93.184.215.14/hooks", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
"""


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database `cosmo db upgrade` made once for the module; each test starts from a copy."""
    data = tmp_path_factory.mktemp("doctor") / "data"
    upgraded = cosmo(cli_env(data), "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    return data / "cosmo.db"


@pytest.fixture
def online(env, tmp_path, migrated):  # noqa: F811
    data = Path(env["COSMO_DATA_DIR"])
    data.mkdir(parents=True)
    source, target = sqlite3.connect(migrated), sqlite3.connect(data / "cosmo.db")
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    servers = tmp_path / "mcp.yaml"
    servers.write_text(
        f"servers:\n  crm:\n    command: [{sys.executable!r}, {FAKE_MCP!r}]\n"
        "  broken:\n    command: [/nonexistent/mcp-server]\n"
    )
    with FakeSlackAPI() as slack, FakeAnthropicAPI(api_key=ANTHROPIC_KEY) as claude:
        values = {
            **env,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": "doctor-signing-secret",
            "SLACK_API_URL": slack.base_url,
            "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
            "ANTHROPIC_BASE_URL": claude.base_url,
            "COSMO_EMBEDDER": "hashing",
            "COSMO_MCP_SERVERS": str(servers),
            "COSMO_SKILL_SECRETS": "DOCTOR_*",
        }
        yield values, slack, servers


def test_a_ready_configuration_passes_every_online_check(online):
    values, slack, servers = online
    servers.write_text(f"servers:\n  crm:\n    command: [{sys.executable!r}, {FAKE_MCP!r}]\n")

    result = cosmo(values, "doctor", "--online")

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "slack (online): ok, team Cosmo Test, bot " in out
    assert "every scope of manifest.yml" in out
    assert "claude (online): ok" in out
    assert "mcp server crm (online): ok, started" in out and "lookup_contact" in out
    assert "embedder (online): ok" in out
    assert [c.method for c in slack.calls("auth.test")] == ["auth.test"]


def test_each_problem_is_named_and_the_exit_code_says_not_ready(online, tmp_path):
    values, _, _ = online
    doc = tmp_path / "agents.yaml"
    doc.write_text(CONFIG)
    applied = cosmo({**values, "DOCTOR_CRM_TOKEN": "x"}, "apply", "-f", str(doc))
    assert applied.returncode == 0, applied.stdout + applied.stderr

    result = cosmo(values, "doctor", "--online")

    assert result.returncode == 1
    out = result.stdout
    assert "skill crm_lookup (tenant default): credential DOCTOR_CRM_TOKEN is not set" in out
    assert "claude (online): unknown model claude-sonet-4 (used by agent typo-bot" in out
    assert "mcp server broken (online):" in out
    assert "mcp server crm (online): ok" in out
    assert "webhook of agent ok-bot (tenant default): ok" in out

    with_secret = cosmo({**values, "DOCTOR_CRM_TOKEN": "x"}, "doctor", "--online")
    assert "credential DOCTOR_CRM_TOKEN" not in with_secret.stdout


def test_a_webhook_url_the_guard_refuses_is_reported(online, tmp_path):
    values, _, servers = online
    servers.write_text("servers: {}\n")
    doc = tmp_path / "hook.yaml"
    doc.write_text(
        "apiVersion: cosmo/v1\npersonas: [{name: p, role: r}]\n"
        "agents: [{name: local-bot, persona: p, webhook: {url: 'http://127.0.0.1:9/h', "
        "secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}}]\n"
    )
    # Saved while the operator allowed insecure URLs (local development)...
    insecure = {**values, "COSMO_WEBHOOK_ALLOW_INSECURE": "true"}
    assert cosmo(insecure, "apply", "-f", str(doc)).returncode == 0
    assert cosmo(insecure, "doctor", "--online").returncode == 0
    # ...and refused by the guard once they are not.
    result = cosmo(values, "doctor", "--online")
    assert result.returncode == 1
    assert "webhook of agent local-bot (tenant default): refused:" in result.stdout


def test_bad_credentials_fail_naming_the_setting_never_printing_the_value(online):
    values, _, servers = online
    servers.write_text("servers: {}\n")

    result = cosmo(
        {**values, "SLACK_BOT_TOKEN": WRONG_SLACK, "ANTHROPIC_API_KEY": WRONG_KEY},
        "doctor",
        "--online",
    )

    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert "slack (online): auth.test refused SLACK_BOT_TOKEN: invalid_auth" in out
    assert "claude (online): the API refused ANTHROPIC_API_KEY" in out
    assert WRONG_SLACK not in out and WRONG_KEY not in out


def test_an_unknown_cosmo_model_fails_and_missing_scopes_are_listed(online):
    values, slack, servers = online
    servers.write_text("servers: {}\n")
    narrow = "xoxb-doctor-narrow-token"
    slack.add_token(narrow, user_id=BOT_USER_ID, bot=True, scopes="chat:write,commands")

    result = cosmo(
        {**values, "SLACK_BOT_TOKEN": narrow, "COSMO_MODEL": "claude-sonet-4"},
        "doctor",
        "--online",
    )

    assert result.returncode == 1
    out = result.stdout
    assert "the token lacks scopes manifest.yml asks for: app_mentions:read," in out
    assert "claude (online): unknown model claude-sonet-4 (used by COSMO_MODEL)" in out
    assert narrow not in out
