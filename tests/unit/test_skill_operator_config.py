"""The operator's skill configuration: secret names skills may read, the MCP server file."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.secret_names import SecretNameRule, SecretNotAllowed, parse_patterns
from core.skills.mcp_servers import McpServersInvalid, load_mcp_servers, parse_mcp_servers

RULE = SecretNameRule()


@pytest.mark.parametrize(
    "name",
    [
        "COSMO_API_TOKEN",
        "COSMO_SECRET_KEY",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "ANTHROPIC_API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "DATABASE_URL",
        "MEM0_API_KEY",
        "VOYAGE_API_KEY",
        "PGPASSWORD",
        "PORT",
        "S3_BUCKET",
        "DYNAMODB_TABLE",
        "OUTPUT_STORE",
        "MEMORY_PROVIDER",
        "KNOWLEDGE_PROVIDER",
        "cosmo_api_token",
    ],
)
def test_cosmos_own_and_its_sdks_variables_are_never_readable(name):
    assert RULE.refusal(name) is not None
    with pytest.raises(SecretNotAllowed, match="reserved"):
        RULE.confine({name: "live"}.get)(name)


@pytest.mark.parametrize("name", ["CRM_AUTH_HEADER", "HUBSPOT_TOKEN", "GITHUB_TOKEN"])
def test_other_names_are_readable_when_the_operator_sets_no_patterns(name):
    assert RULE.refusal(name) is None
    assert RULE.confine({name: "v"}.get)(name) == "v"


def test_the_operator_patterns_narrow_what_is_readable():
    rule = SecretNameRule(allowed=parse_patterns(" CRM_*, ,BILLING_TOKEN "))
    assert rule.allowed == ("CRM_*", "BILLING_TOKEN")
    assert rule.refusal("CRM_AUTH_HEADER") is None
    assert rule.refusal("BILLING_TOKEN") is None
    assert "not allowed by COSMO_SKILL_SECRETS" in (rule.refusal("GITHUB_TOKEN") or "")
    # A pattern can never open a reserved name.
    assert "reserved" in (SecretNameRule(allowed=("*",)).refusal("COSMO_API_TOKEN") or "")


GOOD = """
servers:
  apollo:
    command: [npx, -y, "@apollo/mcp"]
    env:
      APOLLO_API_KEY: ${APOLLO_KEY}
      AUTH: "Bearer ${APOLLO_KEY}"
      LOG_LEVEL: warn
    cwd: work
"""


def test_a_server_file_names_commands_environment_and_working_dir(tmp_path: Path):
    path = tmp_path / "mcp.yaml"
    path.write_text(GOOD, encoding="utf-8")
    servers = load_mcp_servers(path)
    apollo = servers["apollo"]
    assert apollo.command == ["npx", "-y", "@apollo/mcp"]
    assert apollo.cwd == str((tmp_path / "work").resolve())
    assert apollo.references() == ["APOLLO_KEY", "APOLLO_KEY"]
    env = apollo.resolved_env({"APOLLO_KEY": "k-1"}.get)
    assert env == {"APOLLO_API_KEY": "k-1", "AUTH": "Bearer k-1", "LOG_LEVEL": "warn"}
    with pytest.raises(LookupError, match="APOLLO_KEY"):
        apollo.resolved_env(lambda _: None)


def test_json_works_too():
    servers = parse_mcp_servers('{"servers": {"gh": {"command": ["gh-mcp"]}}}', "mcp.json")
    assert servers["gh"].env == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("servers:\n  apollo:\n    command: []\n", "mcp.yaml:3: servers.apollo.command"),
        ("servers:\n  apollo:\n    cmd: [x]\n", "mcp.yaml:3: servers.apollo.cmd"),
        ("servers:\n  Bad Name:\n    command: [x]\n", "servers.Bad Name"),
        (
            "servers:\n  a:\n    command: [x]\n    env: {T: '${COSMO_API_TOKEN}'}\n",
            "mcp.yaml:4: servers.a.env: COSMO_API_TOKEN is reserved",
        ),
        ("servers:\n  a:\n    command: [x]\n    env: {T: '${oops'}\n", "a reference is written"),
        ("servers: [unclosed\n", "mcp.yaml:2: not valid YAML"),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_a_bad_server_file_names_file_line_and_rule(text, expected):
    with pytest.raises(McpServersInvalid) as refused:
        parse_mcp_servers(text, "mcp.yaml")
    assert refused.value.detail.startswith("COSMO_MCP_SERVERS: ")
    assert expected in refused.value.detail


def test_a_missing_server_file_is_named(tmp_path: Path):
    with pytest.raises(McpServersInvalid, match=r"cannot read .*nope.yaml"):
        load_mcp_servers(tmp_path / "nope.yaml")
    assert load_mcp_servers(None) == {}
