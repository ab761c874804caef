"""slack-sdk's installation and OAuth-state tables, declared once for Alembic.

The tables belong to slack-sdk's SQLAlchemy stores (multi-workspace installs); our
migrations create them so `cosmo db upgrade` is the only schema step an operator runs.
"""

from __future__ import annotations

from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from sqlalchemy import MetaData

INSTALLATIONS = "slack_installations"
BOTS = "slack_bots"
OAUTH_STATES = "slack_oauth_states"

SLACK_METADATA = MetaData()
SQLAlchemyInstallationStore.build_installations_table(SLACK_METADATA, INSTALLATIONS)
SQLAlchemyInstallationStore.build_bots_table(SLACK_METADATA, BOTS)
SQLAlchemyOAuthStateStore.build_oauth_states_table(SLACK_METADATA, OAUTH_STATES)
