"""Which Slack app `build_slack` builds from the settings: none, one workspace (bot token) or
many (OAuth), and the settings' own rules for the new variables."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.slack.app import SlackIntegration, build_slack
from core.db import Database
from core.errors import ServiceUnavailable
from core.settings import DEFAULT_SLACK_SCOPES
from core.wiring import build_container
from tests.conftest import make_settings

SECRET = "signing-secret"
BOT = "xoxb-1-2-three"
OAUTH = {"SLACK_CLIENT_ID": "1111.2222", "SLACK_CLIENT_SECRET": "client-secret"}


def build(db: Database, tmp_path: Path, **env: object) -> SlackIntegration | None:
    return build_slack(build_container(make_settings(tmp_path / "data", **env), db=db))


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"SLACK_SIGNING_SECRET": SECRET},  # no way to authorize
        {"SLACK_BOT_TOKEN": BOT},  # no way to verify requests
        {**OAUTH},
        {"SLACK_BOT_TOKEN": "", "SLACK_SIGNING_SECRET": ""},  # .env.example copied as is
        {"SLACK_SIGNING_SECRET": SECRET, "SLACK_CLIENT_ID": "1111.2222"},  # half of OAuth
    ],
)
def test_without_a_complete_mode_there_is_no_slack_app(db, tmp_path, env):
    assert build(db, tmp_path, **env) is None


def test_a_bot_token_is_one_workspace_under_the_default_tenant(db, tmp_path):
    slack = build(db, tmp_path, SLACK_BOT_TOKEN=BOT, SLACK_SIGNING_SECRET=SECRET)

    assert slack is not None
    assert slack.app.oauth_flow is None
    assert slack.runtime.single_workspace
    assert slack.runtime.tenant_for("T0ANY") == "default"
    assert slack.runtime.clients.installation_lookup is None
    assert slack.app.client.token == BOT


def test_client_id_and_secret_are_oauth_with_a_tenant_per_workspace(db, tmp_path, caplog):
    caplog.set_level(logging.WARNING, "cosmo.slack")
    slack = build(db, tmp_path, SLACK_SIGNING_SECRET=SECRET, SLACK_BOT_TOKEN=BOT, **OAUTH)

    assert slack is not None
    flow = slack.app.oauth_flow
    assert flow is not None
    assert (flow.install_path, flow.redirect_uri_path) == (
        "/slack/install",
        "/slack/oauth_redirect",
    )
    assert flow.settings.scopes == DEFAULT_SLACK_SCOPES.split(",")
    assert flow.redirect_uri is None  # no COSMO_PUBLIC_URL: Slack uses the manifest's
    assert not slack.runtime.single_workspace
    assert slack.runtime.tenant_for("T0ANY") == "T0ANY"
    assert slack.runtime.clients.installation_lookup is not None
    assert slack.app.client.token is None  # the bot token is not used ...
    assert "SLACK_BOT_TOKEN is ignored" in caplog.text  # ... and the operator is told


def test_oauth_takes_its_redirect_url_and_scopes_from_the_settings(db, tmp_path):
    slack = build(
        db,
        tmp_path,
        SLACK_SIGNING_SECRET=SECRET,
        COSMO_PUBLIC_URL="https://cosmo.example.com/",
        SLACK_SCOPES="chat:write, commands",
        **OAUTH,
    )

    assert slack is not None and slack.app.oauth_flow is not None
    assert slack.app.oauth_flow.redirect_uri == "https://cosmo.example.com/slack/oauth_redirect"
    assert slack.app.oauth_flow.settings.scopes == ["chat:write", "commands"]


def test_exported_but_empty_oauth_variables_are_refused_not_silently_obeyed(
    db, tmp_path, monkeypatch
):
    # Bolt reads these two from the environment itself; empty, it would swap our bot token
    # for an installation store in $HOME.
    monkeypatch.setenv("SLACK_CLIENT_ID", "")
    monkeypatch.setenv("SLACK_CLIENT_SECRET", "")
    with pytest.raises(ServiceUnavailable, match="in the environment but empty"):
        build(db, tmp_path, SLACK_BOT_TOKEN=BOT, SLACK_SIGNING_SECRET=SECRET)


def test_blank_scopes_mean_the_manifests(tmp_path):
    settings = make_settings(tmp_path, SLACK_SCOPES="")
    assert settings.slack_scope_list == DEFAULT_SLACK_SCOPES.split(",")
    assert not settings.slack_oauth_enabled


def test_the_install_routes_say_when_oauth_is_not_configured(client):
    for path in ("/slack/install", "/slack/oauth_redirect?code=c&state=s"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert "SLACK_CLIENT_ID" in response.json()["detail"]
