"""`cosmo audit verify`: walk every tenant's audit chain and check every receipt.

Exit codes: 0 everything verified; 1 a chain or a receipt is broken (the first broken link
of each tenant is named); 2 bad arguments (an unreadable `--public-key`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bot.cli.common import err, load_settings, open_container
from core.approvals.receipts import load_public_key, public_key_id

audit_app = typer.Typer(
    help="The tamper-evident audit log and signed receipts.", no_args_is_help=True
)

out = Console(highlight=False, markup=False, soft_wrap=True)


@audit_app.command("verify")
def verify(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Only this tenant (default: every tenant).")
    ] = None,
    public_keys: Annotated[
        list[str] | None,
        typer.Option(
            "--public-key",
            help="Also accept receipts signed by this Ed25519 public key (a PEM file, or the "
            "base64 `public_key` the API served) — for receipts signed before a "
            "COSMO_SECRET_KEY rotation. Repeatable.",
        ),
    ] = None,
) -> None:
    """Check that no audit entry was edited, deleted, inserted or reordered, and that every
    receipt is signed and still matches the entry it names."""
    keys: dict[str, bytes] = {}
    for given in public_keys or []:
        path = Path(given)
        try:
            raw = load_public_key(path.read_text("utf-8") if path.is_file() else given)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            err.print(f"error: --public-key {given}: {exc}")
            raise typer.Exit(2) from None
        keys[public_key_id(raw)] = raw

    container = open_container(load_settings())
    try:
        audit, receipts = container.audit, container.receipts
        tenants = [tenant] if tenant else sorted({*audit.tenants(), *receipts.tenants()})
        if not tenants:
            out.print("no audit entries yet: nothing to verify")
            return
        broken = 0
        for tenant_id in tenants:
            chain = audit.verify_chain(tenant_id)
            signed = receipts.verify(tenant_id, keys)
            if chain.intact and signed.intact:
                out.print(
                    f"tenant {tenant_id}: {chain.entries} audit entries, chain intact; "
                    f"{signed.receipts} receipts, signatures and links intact"
                )
                continue
            broken += 1
            for c in chain.breaks:
                where = f"audit entry {c.entry_id} (seq {c.seq})" if c.entry_id else "chain head"
                out.print(
                    f"tenant {tenant_id}: BROKEN at {where}: {c.problem} "
                    f"({chain.entries} entries before it verified)"
                )
            for r in signed.breaks:
                out.print(
                    f"tenant {tenant_id}: BROKEN receipt {r.receipt_id}: {r.problem} "
                    f"({signed.receipts} receipts before it verified)"
                )
    finally:
        container.close()
    out.print(
        f"{len(tenants)} tenant(s) checked with receipt key {container.receipts.signer.key_id}: "
        + (f"{broken} broken" if broken else "all intact")
    )
    if broken:
        raise typer.Exit(1)
