"""The `cosmo` command as an operator uses it: a real process, a real database file."""

from __future__ import annotations

import importlib.metadata
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cosmo_zygote import run_cosmo

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sales-team.yaml"
COSMO = [sys.executable, "-m", "bot.cli"]


def cli_env(data_dir: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COSMO_", "DATABASE_"))}
    clean.update(
        {
            "COSMO_DATA_DIR": str(data_dir),
            "COSMO_API_TOKEN": "cli-token",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )
    return clean


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path / "data")


def cosmo(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`cosmo ARGS` in a process of its own, forked from one that has the imports done
    (tests/cosmo_zygote.py); `test_version_and_help…` runs the command from scratch."""
    return run_cosmo(env, list(args), cwd=cwd)


def cosmo_from_scratch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COSMO, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_the_example_applies_exports_and_reapplies_with_no_change(env, tmp_path):
    assert cosmo(env, "db", "upgrade").returncode == 0

    first = cosmo(env, "apply", "-f", str(EXAMPLE))
    assert first.returncode == 0, first.stderr
    assert "agent sales-bot: created" in first.stdout
    assert "8 changed, 0 unchanged" in first.stdout

    again = cosmo(env, "apply", "-f", str(EXAMPLE))
    assert again.returncode == 0
    assert "0 changed, 8 unchanged" in again.stdout

    exported = cosmo(env, "agents", "export", "sales-bot")
    assert exported.returncode == 0
    assert "apiVersion: cosmo/v1" in exported.stdout
    assert "CRM_AUTH_HEADER" in exported.stdout
    path = tmp_path / "exported.yaml"
    path.write_text(exported.stdout)
    reapplied = cosmo(env, "apply", "-f", str(path))
    assert reapplied.returncode == 0
    assert "0 changed, 8 unchanged" in reapplied.stdout

    listed = cosmo(env, "agents", "list", "--json")
    assert listed.returncode == 0
    assert '"name": "sales-bot"' in listed.stdout


def test_an_edit_is_reported_field_by_field(env, tmp_path):
    cosmo(env, "db", "upgrade")
    cosmo(env, "apply", "-f", str(EXAMPLE))
    edited = tmp_path / "edited.yaml"
    edited.write_text(
        EXAMPLE.read_text().replace("daily_output_limit: 200", "daily_output_limit: 50")
    )

    dry = cosmo(env, "apply", "-f", str(edited), "--dry-run")
    assert "agent sales-bot: updated (limits)" in dry.stdout
    assert "1 would change" in dry.stdout
    real = cosmo(env, "apply", "-f", str(edited))
    assert "agent sales-bot: updated (limits)" in real.stdout
    assert "0 changed" in cosmo(env, "apply", "-f", str(edited)).stdout


def test_invalid_input_exits_non_zero_with_line_and_field(env, tmp_path):
    cosmo(env, "db", "upgrade")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: cosmo/v1\n"
        "personas:\n"
        "  - name: p\n"
        "    role: r\n"
        "    instructions: Hello {{nobody}}\n"
    )
    result = cosmo(env, "apply", "-f", str(bad))
    assert result.returncode == 1
    assert f"{bad}:5: personas.0.instructions:" in result.stderr
    assert "{{nobody}}" in result.stderr
    assert "persona p" not in result.stdout


def test_a_reference_to_a_missing_persona_names_the_agent_field_and_writes_nothing(env, tmp_path):
    cosmo(env, "db", "upgrade")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: cosmo/v1\n"
        "skills:\n"
        "  - {name: s1, description: d, executor: {type: builtin, function: current_time}}\n"
        "agents:\n"
        "  - {name: a1, persona: ghost}\n"
    )
    result = cosmo(env, "apply", "-f", str(bad))
    assert result.returncode == 1
    assert "agents.0.persona" in result.stderr and "ghost" in result.stderr
    export = cosmo(env, "agents", "export", "a1")
    assert export.returncode == 1  # nothing was written: not even the skill's agent


def test_commands_refuse_a_database_whose_schema_is_behind(env):
    result = cosmo(env, "agents", "list")
    assert result.returncode == 1
    assert "cosmo db upgrade" in result.stderr


def test_doctor_reports_disabled_integrations(env):
    cosmo(env, "db", "upgrade")
    result = cosmo(env, "doctor")
    assert result.returncode == 0
    assert "slack: disabled" in result.stdout
    assert "ANTHROPIC_API_KEY" in result.stdout


def test_doctor_warns_about_models_the_pricing_table_does_not_know(env, tmp_path):
    cosmo(env, "db", "upgrade")
    clean = cosmo(env, "doctor")
    assert "models: ok" in clean.stdout
    doc = tmp_path / "typo.yaml"
    doc.write_text(
        "apiVersion: cosmo/v1\n"
        "personas: [{name: p, role: r}]\n"
        "agents: [{name: typo-bot, persona: p, model: claude-sonet-4}]\n"
    )
    assert cosmo(env, "apply", "-f", str(doc)).returncode == 0
    result = cosmo({**env, "COSMO_MODEL": "claude-opus-9"}, "doctor")
    assert result.returncode == 0  # a warning: a model newer than this release still works
    assert "models: warning: COSMO_MODEL: model 'claude-opus-9' is not in the pricing" in (
        result.stdout
    )
    assert "models: warning: agent typo-bot (tenant default): model 'claude-sonet-4'" in (
        result.stdout
    )


def test_doctor_checks_the_knowledge_provider(env, pgvector_url):
    cosmo(env, "db", "upgrade")
    embedded = cosmo(env, "doctor")
    assert "knowledge (embedded): ok" in embedded.stdout

    on_sqlite = cosmo({**env, "KNOWLEDGE_PROVIDER": "pgvector"}, "doctor")
    assert on_sqlite.returncode == 1
    assert "knowledge (pgvector): DATABASE_URL is sqlite, not PostgreSQL" in on_sqlite.stdout

    served = cosmo(
        {**env, "KNOWLEDGE_PROVIDER": "pgvector", "DATABASE_URL": pgvector_url}, "doctor"
    )
    assert "knowledge (pgvector): ok" in served.stdout, served.stdout + served.stderr


def test_apply_refuses_a_skill_the_operator_does_not_allow_at_its_line(env, tmp_path):
    cosmo(env, "db", "upgrade")
    bad = tmp_path / "team.yaml"
    bad.write_text(
        "apiVersion: cosmo/v1\n"
        "skills:\n"
        "  - name: crm\n"
        "    description: d\n"
        "    executor:\n"
        "      type: http\n"
        "      url: https://crm.example.com\n"
        "      secret_headers: {Authorization: SLACK_BOT_TOKEN}\n"
    )
    result = cosmo(env, "apply", "-f", str(bad))
    assert result.returncode == 1
    assert f"invalid: {bad}:8: skills.0.executor.secret_headers.Authorization: " in result.stderr
    assert "SLACK_BOT_TOKEN is reserved" in result.stderr


def test_a_command_run_away_from_the_database_names_the_file_and_creates_nothing(env, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    relative = {**env, "COSMO_DATA_DIR": ".cosmo"}
    for args in (("agents", "list"), ("doctor",), ("db", "status")):
        result = cosmo(relative, *args, cwd=elsewhere)
        assert result.returncode == 1, args
        assert f"no database at {elsewhere / '.cosmo' / 'cosmo.db'}" in result.stderr
        assert "cosmo db upgrade" in result.stderr
    assert not (elsewhere / ".cosmo").exists()
    assert cosmo(relative, "db", "upgrade", cwd=elsewhere).returncode == 0
    assert (elsewhere / ".cosmo" / "cosmo.db").exists()


def test_an_empty_schema_error_names_the_database_file(env, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sqlite3.connect(data / "cosmo.db").close()  # a file with no schema in it
    result = cosmo(env, "agents", "list")
    assert result.returncode == 1
    assert "schema is at revision (empty)" in result.stderr
    assert f"(database: SQLite file {data / 'cosmo.db'})" in result.stderr


def test_version_and_help_without_types_on_flags(env):
    version = cosmo_from_scratch(env, "--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"cosmo {importlib.metadata.version('cosmo-agents')}"
    for args in (("apply", "--help"), ("kb", "ingest", "--help"), ("--help",)):
        shown = cosmo(env, *args)
        assert shown.returncode == 0, shown.stderr
        assert "<bool>" not in shown.stdout, args
    assert "<path>" in cosmo(env, "apply", "--help").stdout  # options that take values keep it
