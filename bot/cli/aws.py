"""`cosmo aws`: the AWS resources of the `aws` output store."""

from __future__ import annotations

import typer
from rich.console import Console

from bot.cli.common import err, load_settings
from core.wiring import aws_clients

aws_app = typer.Typer(help="AWS resources for OUTPUT_STORE=aws.", no_args_is_help=True)

out = Console()


@aws_app.command()
def init() -> None:
    """Create the S3 bucket and DynamoDB table (S3_BUCKET, DYNAMODB_TABLE) if missing.

    Safe to run again: what exists is kept. Honours AWS_ENDPOINT_URL (LocalStack, MinIO).
    """
    # botocore is loaded by this command alone (the `aws` output store is optional).
    from botocore.exceptions import BotoCoreError, ClientError

    from core.outputs.aws_setup import ensure_bucket_and_table

    settings = load_settings()
    missing = [
        name
        for name, value in (
            ("S3_BUCKET", settings.s3_bucket),
            ("DYNAMODB_TABLE", settings.dynamodb_table),
        )
        if not value
    ]
    if missing:
        err.print(f"error: set {' and '.join(missing)} first")
        raise typer.Exit(2)
    assert settings.s3_bucket and settings.dynamodb_table
    where = settings.aws_endpoint_url or "AWS"
    try:
        s3, dynamodb = aws_clients(settings)
        report = ensure_bucket_and_table(s3, dynamodb, settings.s3_bucket, settings.dynamodb_table)
    except (BotoCoreError, ClientError, TimeoutError) as exc:
        err.print(f"error: {where}: {exc}")
        raise typer.Exit(1) from None
    out.print(
        f"bucket {settings.s3_bucket}: {'created' if report.bucket_created else 'found'}",
        highlight=False,
    )
    table = "created" if report.table_created else "found"
    if report.indexes_created:
        table += f", added indexes {', '.join(report.indexes_created)}"
    out.print(f"table {settings.dynamodb_table}: {table}", highlight=False)
    out.print(f"({where})", highlight=False)
