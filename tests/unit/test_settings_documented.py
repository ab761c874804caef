"""Every setting a user can set is documented where they look for it."""

from pathlib import Path

import pytest

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NAMES = sorted(str(f.alias) for f in Settings.model_fields.values())


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_every_setting_is_documented(document):
    text = (ROOT / document).read_text(encoding="utf-8")
    assert [name for name in NAMES if name not in text] == []


def test_the_design_names_are_kept():
    design = {
        "DATABASE_URL",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "SLACK_API_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "COSMO_MODEL",
        "COSMO_API_TOKEN",
        "COSMO_SECRET_KEY",
        "OUTPUT_STORE",
        "S3_BUCKET",
        "DYNAMODB_TABLE",
        "AWS_ENDPOINT_URL",
        "MEMORY_PROVIDER",
        "MEM0_API_KEY",
        "PORT",
        "COSMO_WEBHOOK_ALLOW_INSECURE",
        "COSMO_DATA_DIR",
    }
    assert design <= set(NAMES)
