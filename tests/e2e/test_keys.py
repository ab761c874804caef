"""Tenant keys as an operator uses them: `cosmo keys` in a real process, against a real
`cosmo serve` that picks up new and revoked keys without a restart."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cosmo_process import ROOT, cosmo_serve
from tests.cosmo_zygote import run_cosmo

ROOT_TOKEN = "root-token-for-keys"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COSMO_", "DATABASE_", "SLACK_", "ANTHROPIC_"))
    }
    clean.update(
        {
            "COSMO_DATA_DIR": str(tmp_path / "data"),
            "COSMO_API_TOKEN": ROOT_TOKEN,
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )
    cosmo(clean, "db", "upgrade").check_returncode()
    return clean


def cosmo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`cosmo ARGS` in a process of its own, forked from one that has the imports done
    (tests/cosmo_zygote.py)."""
    return run_cosmo(env, list(args))


def create_key(env: dict[str, str], *args: str) -> str:
    result = cosmo(env, "keys", "create", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_keys_are_created_listed_and_revoked_from_the_command_line(env):
    created = cosmo(
        env,
        "keys",
        "create",
        "--tenant",
        "T1",
        "--role",
        "reviewer",
        "--name",
        "lena",
        "--as",
        "U0LEAD",
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("cosmo_key_") and len(key) > 70  # the key alone on stdout
    assert "shown once" in created.stderr and key not in created.stderr

    listed = cosmo(env, "keys", "list", "--json")
    assert listed.returncode == 0
    (entry,) = json.loads(listed.stdout)
    assert entry["tenant_id"] == "T1" and entry["role"] == "reviewer"
    assert entry["user_id"] == "U0LEAD" and entry["revoked_at"] is None
    secret = key.removeprefix(f"cosmo_{entry['id']}_")  # base64url: may itself hold "_"
    assert len(secret) >= 43 and key not in listed.stdout and secret not in listed.stdout
    assert entry["id"] in cosmo(env, "keys", "list", "--tenant", "T1").stdout
    assert cosmo(env, "keys", "list", "--tenant", "T2", "--json").stdout.strip() == "[]"

    revoked = cosmo(env, "keys", "revoke", entry["id"])
    assert revoked.returncode == 0
    assert f"revoked key {entry['id']} (lena, tenant T1)" in revoked.stdout
    assert json.loads(cosmo(env, "keys", "list", "--json").stdout)[0]["revoked_at"]


def test_bad_key_requests_name_the_option_and_write_nothing(env):
    bound_reader = cosmo(
        env, "keys", "create", "--tenant", "T1", "--role", "reader", "--name", "r", "--as", "U0LEAD"
    )
    assert bound_reader.returncode == 2
    assert "--as: a reader key cannot decide" in bound_reader.stderr
    bad_tenant = cosmo(env, "keys", "create", "--tenant", "T 1", "--role", "admin", "--name", "a")
    assert bad_tenant.returncode == 2 and "--tenant:" in bad_tenant.stderr
    bad_role = cosmo(env, "keys", "create", "--tenant", "T1", "--role", "owner", "--name", "a")
    assert bad_role.returncode == 2
    assert cosmo(env, "keys", "list", "--json").stdout.strip() == "[]"
    missing = cosmo(env, "keys", "revoke", "key_01m00000000000000000000000")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


@pytest.fixture
def server(env) -> Iterator[httpx.Client]:
    with (
        cosmo_serve({**env, "COSMO_WORKERS": "0"}) as base,
        httpx.Client(base_url=f"{base}/api/v1", timeout=30) as client,
    ):
        yield client


def as_key(key: str, tenant: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **({"X-Cosmo-Tenant": tenant} if tenant else {})}


def test_only_the_root_key_reaches_every_tenant(env, server):
    """Seen: one token reached every tenant through a header it chose. Now only the
    operator's root key does; a tenant key naming another tenant is refused."""
    root = as_key(ROOT_TOKEN)
    for tenant in ("T1", "T2"):
        r = server.post(
            "/personas",
            json={"name": f"p-{tenant.lower()}", "role": "r"},
            headers={**root, "X-Cosmo-Tenant": tenant},
        )
        assert r.status_code == 201, r.text

    # Keys made while the server runs work at once: they are rows, not configuration.
    t1_admin = create_key(env, "--tenant", "T1", "--role", "admin", "--name", "t1-admin")
    t1_reviewer = create_key(env, "--tenant", "T1", "--role", "reviewer", "--name", "t1-ops")

    own = server.get("/personas", headers=as_key(t1_admin))
    assert own.status_code == 200
    assert [p["name"] for p in own.json()["items"]] == ["p-t1"]

    for key in (t1_admin, t1_reviewer):
        other = server.get("/personas", headers=as_key(key, "T2"))
        assert other.status_code == 403
        assert other.headers["content-type"] == "application/problem+json"
        assert "cannot act on tenant T2" in other.json()["detail"]
    write = server.post(
        "/personas", json={"name": "sneak", "role": "r"}, headers=as_key(t1_admin, "T2")
    )
    assert write.status_code == 403
    names = [
        p["name"]
        for p in server.get("/personas", headers={**root, "X-Cosmo-Tenant": "T2"}).json()["items"]
    ]
    assert names == ["p-t2"]

    # Memories are personal data: not for reviewers.
    memory = server.get(
        "/agents/agt_01m00000000000000000000000/memory", headers=as_key(t1_reviewer)
    )
    assert memory.status_code == 403

    # Revoked from the command line, refused on the next request, no restart.
    key_id = next(
        k["id"]
        for k in json.loads(cosmo(env, "keys", "list", "--json").stdout)
        if k["name"] == "t1-admin"
    )
    assert cosmo(env, "keys", "revoke", key_id).returncode == 0
    assert server.get("/personas", headers=as_key(t1_admin)).status_code == 401
    assert server.get("/personas", headers=as_key(t1_reviewer)).status_code == 200


def test_the_documents_say_the_root_key_is_root_equivalent():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "root-equivalent" in readme
    assert "cosmo keys create" in readme
