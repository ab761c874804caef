"""What every `cosmo` command group shares: the error console, the `--tenant` option, and
opening the settings and the container with the errors an operator can act on.

`main.py` assembles the command groups; the groups (`kb.py`, `aws.py`, ...) import from here,
never from `main.py`, so the imports run one way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from core.errors import CosmoError, SchemaOutOfDate
from core.settings import Settings
from core.wiring import Container, build_container

# markup off: messages quote user input (regex patterns, YAML) that rich would eat.
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)

TenantOpt = Annotated[
    str | None, typer.Option("--tenant", help="Tenant (Slack workspace id); default tenant.")
]


def load_settings() -> Settings:
    """The settings from the environment, or exit 2 naming each invalid variable."""
    try:
        return Settings()
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            where = ".".join(str(p) for p in e["loc"]).upper()
            err.print(f"configuration error: {where}: {e['msg']}")
        raise typer.Exit(2) from None


def require_database(settings: Settings) -> None:
    """Only `cosmo db upgrade` creates the embedded database: any other command run from
    the wrong directory would otherwise make a new empty `./.cosmo/cosmo.db` and then fail
    on its schema, without saying which file it had opened."""
    file = settings.sqlite_file()
    if file is not None and not file.exists():
        err.print(
            f"error: no database at {file} (COSMO_DATA_DIR is {settings.cosmo_data_dir}, "
            f"relative to {Path.cwd()}); run from the directory that holds it, set "
            "COSMO_DATA_DIR or DATABASE_URL, or create it with `cosmo db upgrade`"
        )
        raise typer.Exit(1)


def open_container(settings: Settings) -> Container:
    """The container on a database whose schema this release can use; the caller closes it.
    Exit 2 on a configuration error, 1 when the database is missing or out of date."""
    require_database(settings)
    try:
        container = build_container(settings)
    except CosmoError as exc:
        err.print(f"configuration error: {exc.detail}")
        raise typer.Exit(2) from None
    try:
        container.db.require_current_schema()
    except SchemaOutOfDate as exc:
        err.print(f"error: {exc.detail} (database: {settings.describe_database()})")
        container.close()
        raise typer.Exit(1) from None
    return container
