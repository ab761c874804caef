"""The configuration models refuse what would break at run time, and say where and why."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from core.config_document import DocumentInvalid, parse_document
from core.schemas.agent import AgentPatch, AgentSpec, WebhookSpec
from core.schemas.persona import (
    BUILTIN_VARIABLES,
    PersonaSpec,
    render_template,
    template_variables,
)
from core.schemas.skill import HttpExecutor, McpExecutor, SkillSpec
from core.schemas.validation import field_errors


def errors(model: type[BaseModel], data: dict[str, Any]) -> list[tuple[str, str]]:
    """`(field path, message)` for each error, as the API and the CLI report them."""
    with pytest.raises(ValidationError) as refused:
        model.model_validate(data)
    return [(e.path, e.msg) for e in field_errors(refused.value)]


# -- personas: template variables ----------------------------------------------------


def persona(**fields: Any) -> dict[str, Any]:
    return {"name": "support", "role": "Support agent", **fields}


def test_instructions_may_use_declared_and_builtin_variables() -> None:
    spec = PersonaSpec.model_validate(
        persona(
            instructions="Help {{ user_name }} in {{channel}} with {{product}} ({{region}}).",
            variables={"product": {"default": "Cosmo"}, "region": {"default": "EU"}},
        )
    )
    assert spec.variables["product"].default == "Cosmo"
    assert template_variables(spec.instructions) == ["user_name", "channel", "product", "region"]


def test_every_builtin_variable_is_allowed_without_declaring_it() -> None:
    template = " ".join("{{" + name + "}}" for name in BUILTIN_VARIABLES)
    assert PersonaSpec.model_validate(persona(instructions=template)).variables == {}
    assert set(BUILTIN_VARIABLES) == {"user_name", "channel", "date", "agent_name"}


def test_an_undeclared_variable_is_refused_at_instructions() -> None:
    [(path, msg)] = errors(
        PersonaSpec,
        persona(instructions="Sell {{product}} in {{region}}", variables={"product": {}}),
    )
    assert path == "instructions"
    assert msg == (
        "instructions uses undeclared variable(s) {{region}}; declare each as a variable with a "
        "default (`variables` in a config file or REST body, the Variables rows of /agent "
        "persona in Slack), or use a built-in (agent_name, channel, date, user_name)"
    )


def test_a_builtin_variable_cannot_be_redeclared() -> None:
    [(path, msg)] = errors(
        PersonaSpec,
        persona(
            instructions="Hello {{user_name}} and {{undeclared}}",
            variables={"user_name": {"default": "x"}, "date": {}, "tier": {}},
        ),
    )
    # Only the real mistake is reported: with `variables` invalid, the template is not
    # checked against it (that would blame the instructions for the variables' error).
    assert path == "variables"
    assert msg == "date, user_name are built-in variables and cannot be redeclared"


def test_variable_names_must_be_identifiers() -> None:
    [(path, _)] = errors(PersonaSpec, persona(variables={"2fast": {}}))
    assert path == "variables.2fast.[key]"


def test_rendering_fills_placeholders_with_or_without_inner_spaces() -> None:
    template = "Hi {{user_name}}! Today is {{ date }}. {{user_name}} asked about {{ product }}."
    values = {"user_name": "Ada", "date": "2026-11-24", "product": "Cosmo"}
    assert render_template(template, values) == (
        "Hi Ada! Today is 2026-11-24. Ada asked about Cosmo."
    )


def test_rendering_leaves_unfilled_placeholders_and_non_placeholders_alone() -> None:
    template = "{{known}} {{missing}} {single} {{ not a name }} {{1x}}"
    assert render_template(template, {"known": "yes"}) == (
        "yes {{missing}} {single} {{ not a name }} {{1x}}"
    )
    assert template_variables(template) == ["known", "missing"]


def test_a_persona_refuses_unknown_fields() -> None:
    [(path, msg)] = errors(PersonaSpec, persona(tonne="warm"))
    assert (path, msg) == ("tonne", "Extra inputs are not permitted")


# -- skills: input schema and executors -------------------------------------------------


def skill(**fields: Any) -> dict[str, Any]:
    return {"name": "lookup", "description": "Look up a customer", **fields}


def test_a_skill_without_input_schema_takes_no_arguments() -> None:
    assert SkillSpec.model_validate(skill()).input_schema == {"type": "object", "properties": {}}


def test_an_invalid_json_schema_is_refused_with_where_it_is_wrong() -> None:
    [(path, msg)] = errors(
        SkillSpec,
        skill(input_schema={"type": "object", "properties": {"email": {"type": "text"}}}),
    )
    assert path == "input_schema"
    assert msg.startswith("not a valid JSON Schema at properties/email/type: 'text' is not valid")


def test_an_input_schema_must_describe_an_object() -> None:
    for schema in ({"type": "string"}, {"type": "array", "items": {}}, {}):
        [(path, msg)] = errors(SkillSpec, skill(input_schema=schema))
        assert (path, msg) == (
            "input_schema",
            'must describe an object: {"type": "object", "properties": {...}}',
        )


def test_an_input_schema_with_nan_is_refused_because_postgres_cannot_store_it() -> None:
    # Python's JSON and YAML parsers read NaN/Infinity; JSONB refuses them (was a 500).
    schema = {"type": "object", "properties": {"n": {"type": "number", "maximum": float("nan")}}}
    [(path, msg)] = errors(SkillSpec, skill(input_schema=schema))
    assert (path, msg) == (
        "input_schema",
        "must not contain NaN or Infinity (JSON has no such numbers)",
    )


def http(**fields: Any) -> dict[str, Any]:
    return {"type": "http", "url": "https://crm.example.com/customers/{{email}}", **fields}


@pytest.mark.parametrize("header", ["Authorization", "authorization", "X-Api-Key", "Cookie"])
def test_an_http_executor_refuses_credentials_in_plain_headers(header: str) -> None:
    [(path, msg)] = errors(SkillSpec, skill(executor=http(headers={header: "Bearer s3cr3t"})))
    assert path == "executor.http.headers"
    assert msg == (
        f"{header} carries credentials: declare it under secret_headers with the name of an "
        "environment variable instead"
    )


def test_an_http_executor_takes_credentials_from_the_environment() -> None:
    executor = HttpExecutor.model_validate(
        http(headers={"Accept": "application/json"}, secret_headers={"Authorization": "CRM_AUTH"})
    )
    assert executor.headers == {"Accept": "application/json"}
    assert executor.secret_headers == {"Authorization": "CRM_AUTH"}
    [(path, _)] = errors(HttpExecutor, http(secret_headers={"Authorization": "Bearer s3cr3t"}))
    assert path == "secret_headers.Authorization"


def test_an_http_executor_needs_an_absolute_http_url() -> None:
    [(path, msg)] = errors(HttpExecutor, http(url="ftp://crm.example.com/x"))
    assert (path, msg) == ("url", "must be an absolute http(s) URL")


def test_an_mcp_executor_over_stdio_names_an_operator_configured_server() -> None:
    ok = McpExecutor.model_validate({"type": "mcp", "server": "apollo", "tool": "search_people"})
    assert (ok.transport, ok.server) == ("stdio", "apollo")
    [(path, msg)] = errors(SkillSpec, skill(executor={"type": "mcp", "transport": "stdio"}))
    assert path == "executor.mcp"
    assert "needs `server`" in msg and "COSMO_MCP_SERVERS" in msg


def test_an_mcp_executor_over_http_needs_an_http_url() -> None:
    ok = McpExecutor.model_validate({"type": "mcp", "transport": "http", "url": "https://m.test"})
    assert ok.url == "https://m.test"
    for url in (None, "m.test/mcp", "ws://m.test"):
        [(path, msg)] = errors(McpExecutor, {"type": "mcp", "transport": "http", "url": url})
        assert (path, msg) == ("(root)", "an http MCP executor needs an absolute http(s) `url`")


@pytest.mark.parametrize(
    "executor",
    [
        {"type": "mcp", "transport": "stdio", "command": ["sh", "-c", "id > /tmp/x"]},
        {"type": "mcp", "server": "apollo", "env": {"LEAK": "COSMO_API_TOKEN"}},
        {"type": "mcp", "transport": "http", "url": "https://m.test", "command": ["x"]},
    ],
)
def test_a_command_line_or_environment_is_refused_naming_the_new_form(executor) -> None:
    problems = errors(SkillSpec, skill(executor=executor))
    assert problems, executor
    for path, msg in problems:
        assert path in ("executor.mcp.command", "executor.mcp.env")
        assert "COSMO_MCP_SERVERS" in msg and '"server": "NAME"' in msg


def test_a_refused_command_never_reaches_a_dump() -> None:
    dumped = McpExecutor(server="apollo").model_dump(mode="json")
    assert "command" not in dumped and "env" not in dumped


def test_an_unknown_executor_type_is_refused() -> None:
    [(path, msg)] = errors(SkillSpec, skill(executor={"type": "shell"}))
    assert path == "executor"
    assert "'builtin', 'http', 'mcp'" in msg


# -- agents: approvers, approval channel, webhook --------------------------------------


def agent(**fields: Any) -> dict[str, Any]:
    return {"name": "helper", "persona": "support", **fields}


def test_approvers_are_slack_user_and_group_ids_without_duplicates() -> None:
    spec = AgentSpec.model_validate(
        agent(approvers=["U0123ABCD", "W0456EFGH", "S0789", "U0123ABCD"])
    )
    assert spec.approvers == ["U0123ABCD", "W0456EFGH", "S0789"]


@pytest.mark.parametrize("model", [AgentSpec, AgentPatch])
def test_approvers_refuse_names_channels_and_lowercase_ids(model: type[BaseModel]) -> None:
    [(path, msg)] = errors(model, agent(approvers=["U0123ABCD", "@alice", "C0123ABCD", "u0123"]))
    assert path == "approvers"
    assert msg == (
        "@alice, C0123ABCD, u0123: approvers are Slack user ids (U…/W…) or user-group ids (S…)"
    )


@pytest.mark.parametrize("model", [AgentSpec, AgentPatch])
def test_the_approval_channel_is_a_slack_channel_id(
    model: type[AgentSpec] | type[AgentPatch],
) -> None:
    for channel in ("C0123ABCD", "G0123ABCD", "D0123ABCD"):
        assert model.model_validate(agent(approval_channel=channel)).approval_channel == channel
    for channel in ("#approvals", "approvals", "U0123ABCD", "c0123abcd"):
        [(path, msg)] = errors(model, agent(approval_channel=channel))
        assert (path, msg) == ("approval_channel", "must be a Slack channel id such as C0123ABCD")


def test_a_patch_can_clear_the_approval_channel() -> None:
    patch = AgentPatch.model_validate({"approval_channel": None})
    assert patch.model_dump(exclude_unset=True) == {"approval_channel": None}


def test_a_webhook_secret_must_be_a_standard_webhooks_secret() -> None:
    hook = WebhookSpec.model_validate(
        {"url": "https://hooks.example.com/cosmo", "secret": "whsec_MfKQ"}
    )
    assert hook.secret is not None and hook.secret.get_secret_value() == "whsec_MfKQ"
    assert "whsec_MfKQ" not in repr(hook)
    [(path, msg)] = errors(
        AgentSpec, agent(webhook={"url": "https://hooks.example.com/cosmo", "secret": "hunter2"})
    )
    assert (path, msg) == (
        "webhook.secret",
        "must be a Standard Webhooks secret starting with 'whsec_'",
    )


def test_a_webhook_takes_its_secret_from_one_place_only() -> None:
    [(path, msg)] = errors(
        AgentSpec,
        agent(
            webhook={
                "url": "https://hooks.example.com/cosmo",
                "secret": "whsec_MfKQ",
                "secret_env": "COSMO_HOOK_SECRET",
            }
        ),
    )
    assert (path, msg) == ("webhook", "give either `secret` or `secret_env`, not both")


def test_a_webhook_url_must_be_absolute() -> None:
    [(path, msg)] = errors(WebhookSpec, {"url": "hooks.example.com/cosmo"})
    assert (path, msg) == ("url", "must be an absolute https:// URL")


# -- config documents: errors point at the YAML line -------------------------------------

DOCUMENT = """\
apiVersion: cosmo/v1
personas:
  - name: support
    role: Support agent
skills:
  - name: lookup
    description: Look up a customer
    input_schema:
      type: string
agents:
  - name: helper
    persona: support
    approvers: [alice]
    approval_chanel: C0123ABCD
"""


def test_a_document_reports_the_line_of_each_invalid_field() -> None:
    with pytest.raises(DocumentInvalid) as refused:
        parse_document(DOCUMENT)
    assert refused.value.describe("team.yaml") == [
        "team.yaml:8: skills.0.input_schema: "
        'must describe an object: {"type": "object", "properties": {...}}',
        "team.yaml:13: agents.0.approvers: "
        "alice: approvers are Slack user ids (U…/W…) or user-group ids (S…)",
        "team.yaml:14: agents.0.approval_chanel: Extra inputs are not permitted",
    ]


def test_a_missing_field_is_reported_at_its_mapping() -> None:
    text = "personas:\n  - name: support\n    tone: warm\n"
    with pytest.raises(DocumentInvalid) as refused:
        parse_document(text)
    assert refused.value.describe("team.yaml") == ["team.yaml:2: personas.0.role: Field required"]


def test_broken_yaml_is_reported_at_its_line() -> None:
    with pytest.raises(DocumentInvalid) as refused:
        parse_document("personas:\n  - name: support\n    role: [unclosed\n")
    [line] = refused.value.describe("team.yaml")
    assert line.startswith("team.yaml:4: (root): not valid YAML:")


def test_a_valid_document_parses_into_specs() -> None:
    doc = parse_document(
        DOCUMENT.replace("type: string", "type: object").replace(
            "    approvers: [alice]\n    approval_chanel: C0123ABCD\n",
            "    approvers: [U0123ABCD]\n",
        )
    )
    assert [p.name for p in doc.personas] == ["support"]
    assert doc.skills[0].input_schema == {"type": "object"}
    assert doc.agents[0].approvers == ["U0123ABCD"]


# A fixed sample of what each kind of key looks like (generated once; none of them is live).
SECRET_VALUES = [
    "sk-ant-api03-Xq2vR8tLmN4pK7wZ",
    "xoxb-2210535565-4412234324-Z3fKp2QwErTy",
    "ghp_4a9ZxQm2LrT8vB6nK1pW3sY5uD7fH0jE",
    "AKIAIOSFODNN7EXAMPLE",
    "Bearer abcdefghijklmnop",
    "q8Zr2LmX7vN4tKp1wY9sB3fH",  # base64url, 24 characters
    "5ae2c46145a665337892a6b911ecc7cf",  # hex, 32 characters
    "l6jGCJEzml23sYFRQ8yzl+KhUFQDwIYT",  # standard base64
    "https://api.example.com/v1/x?token=z-GNx7Qp2LmR8vW4tK9sB3fH1yJ",  # a key in a URL
]
PLAIN_VALUES = [
    "d4d0b70a-a3a3-437f-ae2e-580e59fe3e66",  # a UUID: tenant and org ids are not secret
    "application/vnd.api+json; version=2",
    "https://example.com/api/v1/customers/12345/contacts?expand=contacts&limit=100",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
    "2024-05-01T12:00:00Z",
    "no-cache, no-store, must-revalidate",
    "CustomerRelationshipManagement2024",
    "X-Request-Source-Application-Name",
    "SalesforceIntegrationUser_EMEA_2024",
    "sk-SE",
    "org_12345",
]


@pytest.mark.parametrize("value", SECRET_VALUES)
def test_a_plain_header_refuses_a_value_that_looks_like_a_secret(value: str) -> None:
    [(path, msg)] = errors(SkillSpec, skill(executor=http(headers={"X-Partner": value})))
    assert path == "executor.http.headers"
    assert msg.startswith("the value of X-Partner looks like a credential")
    assert "secret_headers" in msg and value not in msg


@pytest.mark.parametrize("value", PLAIN_VALUES)
def test_a_plain_header_keeps_ordinary_values(value: str) -> None:
    executor = HttpExecutor.model_validate(http(headers={"X-Partner": value}))
    assert executor.headers == {"X-Partner": value}


def test_the_example_parses_without_bogus_schema_keys():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "examples" / "sales-team.yaml").read_text()
    doc = parse_document(text)
    [crm] = [s for s in doc.skills if s.name == "search_crm"]
    assert crm.input_schema["properties"]["query"] == {
        "type": "string",
        "minLength": 2,
        "description": "Name, email or domain",
    }


def test_a_flow_mapping_split_at_a_comma_is_refused_at_its_line():
    text = (
        "apiVersion: cosmo/v1\n"
        "skills:\n"
        "  - name: s\n"
        "    description: d\n"
        "    input_schema:\n"
        "      type: object\n"
        "      properties:\n"
        "        query: {type: string, description: Name, email or domain}\n"
    )
    with pytest.raises(DocumentInvalid) as caught:
        parse_document(text)
    assert caught.value.describe("f.yaml") == [
        "f.yaml:8: skills.0.input_schema.properties.query: 'email or domain' is not a JSON "
        "Schema keyword (a typo? or, in YAML, text with a comma inside {...} that needs quotes)"
    ]
