"""`cosmo keys`: create, list and revoke tenant API keys (the operator's side of `/api/v1/keys`).

Exit codes: 0 done; 1 the key does not exist or the database cannot be used; 2 bad arguments.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Column, Table

from bot.cli.common import err, load_settings, open_container
from core.errors import NotFound, ValidationFailed
from core.keys.roles import Role
from core.keys.service import KeySpec
from core.wiring import Container

keys_app = typer.Typer(
    help="Tenant API keys: each reaches one tenant with one role. COSMO_API_TOKEN is the root key.",
    no_args_is_help=True,
)

out = Console(highlight=False)


def _open() -> Container:
    return open_container(load_settings())


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant (Slack workspace id).")],
    role: Annotated[Role, typer.Option("--role", help="admin, reviewer or reader.")],
    name: Annotated[str, typer.Option("--name", help="Shown in audit entries and lists.")],
    as_user: Annotated[
        str | None,
        typer.Option("--as", help="Slack user the key decides as (verified); reviewer/admin."),
    ] = None,
) -> None:
    """Create a key and print it once: only its hash is kept, it cannot be shown again."""
    try:
        spec = KeySpec(name=name, role=role, user_id=as_user)
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            option = {"user_id": "--as"}.get(str(e["loc"][0]) if e["loc"] else "", "")
            where = option or (f"--{e['loc'][0]}" if e["loc"] else "--as")
            err.print(f"invalid: {where}: {str(e['msg']).removeprefix('Value error, ')}")
        raise typer.Exit(2) from None
    container = _open()
    try:
        view, key = container.keys.create(tenant, spec, created_by="cli")
    except ValidationFailed as failed:
        for problem in failed.errors:
            err.print(f"invalid: --{problem.path}: {problem.msg}")
        raise typer.Exit(2) from None
    finally:
        container.close()
    bound = f", decides as {view.user_id}" if view.user_id else ""
    err.print(f"created {view.role.value} key {view.id} ({view.name}) for tenant {tenant}{bound}")
    err.print("the key is shown once, below; Cosmo keeps only a hash of it")
    print(key)


@keys_app.command("list")
def list_keys(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Only this tenant's keys (default: all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List keys, revoked ones included (never the keys themselves)."""
    container = _open()
    try:
        keys = container.keys.list(tenant)
    finally:
        container.close()
    if as_json:
        out.print_json(json.dumps([k.model_dump(mode="json") for k in keys]))
        return
    table = Table("tenant", "name", "role", "as", "created", "revoked")
    table.columns.insert(0, Column("id", no_wrap=True))  # ids are copied into `revoke`
    for k in keys:
        table.add_row(
            k.id,
            k.tenant_id,
            k.name,
            k.role.value,
            k.user_id or "-",
            k.created_at.strftime("%Y-%m-%d %H:%M"),
            k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "-",
        )
    out.print(table)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_…).")]) -> None:
    """Revoke a key: its next request is refused, in every running process."""
    container = _open()
    try:
        view = container.keys.revoke(key_id)
    except NotFound as exc:
        err.print(f"error: {exc.detail}")
        raise typer.Exit(1) from None
    finally:
        container.close()
    assert view.revoked_at is not None
    out.print(f"revoked key {view.id} ({view.name}, tenant {view.tenant_id}) at {view.revoked_at}")
