"""`cosmo`: run the service, migrate the database, manage configuration as code."""

from __future__ import annotations

import os

# One BLAS thread: on small machines OpenBLAS threading makes the embedder several times
# slower (measured: p99 per sentence 12 ms vs 300 ms). Must precede numpy's import.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import asyncio
import json
import logging
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bot.cli.audit import audit_app
from bot.cli.aws import aws_app
from bot.cli.common import TenantOpt, err, load_settings, open_container, require_database
from bot.cli.doctor import run_online_checks
from bot.cli.kb import kb_app
from bot.cli.keys import keys_app
from bot.cli.logging_setup import configure
from bot.cli.tracing_setup import configure_tracing
from bot.heap import freeze_startup_heap
from bot.worker import run_worker
from core.agent.service import unpriced_models
from core.config_document import DocumentInvalid, dump_document, parse_document
from core.db import Database, upgrade
from core.embeddings import MiniLMEmbedder, build_embedder
from core.embeddings.minilm import find_model_dir
from core.errors import CosmoError, NotFound, ValidationFailed
from core.knowledge.pgvector import pgvector_problem
from core.sessions.pricing import unpriced_warning
from core.settings import Settings
from core.skills.mcp_servers import McpServersInvalid, describe_servers
from core.skills.service import SkillService
from core.wiring import Container, build_skill_policy, disabled_integrations

app = typer.Typer(
    help="Cosmo Agents: configurable Claude agents in Slack, with a human in the loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
agents_app = typer.Typer(help="Inspect and export agents.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(agents_app, name="agents")
app.add_typer(aws_app, name="aws")
app.add_typer(audit_app, name="audit")
app.add_typer(kb_app, name="kb")
app.add_typer(keys_app, name="keys")


def _version(value: bool) -> None:
    if value:
        print(f"cosmo {metadata.version('cosmo-agents')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = None,
) -> None:
    """Cosmo Agents: configurable Claude agents in Slack, with a human in the loop."""


def main() -> None:
    """The `cosmo` command (console script and `python -m bot.cli`)."""
    command = typer.main.get_command(app)
    _hide_flag_types(command)
    command()


def _hide_flag_types(command: Any) -> None:
    """Typer's help prints a type after every option, `--dry-run <bool>` included, which
    reads as if a flag took a value: flags show none (help renders the metavar we set).
    Duck-typed: typer builds its commands from its own copy of click."""
    ctx = command.context_class(command)
    for param in command.get_params(ctx):  # the help option too
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _hide_flag_types(sub)


out = Console()
log = logging.getLogger("cosmo")


@app.command()
def serve(
    port: Annotated[int | None, typer.Option(help="Port (default PORT or 3000).")] = None,
    host: Annotated[str | None, typer.Option(help="Interface (default COSMO_HOST).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Worker processes to supervise (default COSMO_WORKERS or 1); 0 runs the "
            "HTTP surfaces only, for replicas next to `cosmo worker` ones.",
        ),
    ] = None,
) -> None:
    """Run the HTTP service (Slack events, the REST API, the approval webhook) and,
    unless `--workers 0`, the worker processes that do the background work."""
    # Imported here, not above: FastAPI, Bolt and aiohttp (some 600 modules) are for
    # `serve` alone, and every other command would pay for them on each start.
    import uvicorn

    from bot.server import create_app

    settings = load_settings()
    if port:
        # Skills must never reach the port we actually listen on (core.skills.egress);
        # the supervised workers run the skills, so they inherit it as PORT.
        settings = settings.model_copy(update={"port": port})
        os.environ["PORT"] = str(port)
    configure(settings.log_level, settings.log_format)
    stop_tracing = configure_tracing(settings, "serve")
    container = open_container(settings)
    for integration, reason in container.disabled.items():
        log.warning("%s integration disabled: %s", integration, reason)
    _announce_embedder(settings, container)
    _token, generated = settings.api_token_value()
    if generated:
        log.warning(
            "COSMO_API_TOKEN not set: generated the root key for the REST API (every tenant, "
            "every role), stored in %s; give integrations tenant keys (`cosmo keys create`)",
            (settings.cosmo_data_dir / "api-token").resolve(),
        )
    worker_processes = settings.workers if workers is None else workers
    application = create_app(
        settings, container=container, background=False, worker_processes=worker_processes
    )
    bind_port = settings.port
    freeze_startup_heap()
    log.info(
        "serving on http://%s:%d (database: %s, data directory %s, %d worker process%s)",
        host or settings.host,
        bind_port,
        settings.describe_database(),
        settings.cosmo_data_dir.resolve(),
        worker_processes,
        "" if worker_processes == 1 else "es",
    )
    try:
        uvicorn.run(
            application,
            host=host or settings.host,
            port=bind_port,
            log_level=settings.log_level.lower(),
            log_config=None,  # our handler and format (bot/cli/logging_setup.py)
            access_log=False,  # ours carries the request id (bot/server/request_context.py)
            proxy_headers=True,
            timeout_keep_alive=settings.keep_alive_seconds,
        )
    finally:
        container.close()
        stop_tracing()


@app.command()
def worker() -> None:
    """Run background work (turns, executions, ingestion, deliveries, schedules) until
    SIGTERM; running jobs get a grace period, then are handed back to other workers."""
    settings = load_settings()
    require_database(settings)
    configure(settings.log_level, settings.log_format)
    stop_tracing = configure_tracing(settings, "worker")
    try:
        asyncio.run(run_worker(settings))
    except CosmoError as exc:  # e.g. the embedding model is not installed
        err.print(f"configuration error: {exc.detail}")
        raise typer.Exit(2) from None
    finally:
        stop_tracing()


def _announce_embedder(settings: Settings, container: Container) -> None:
    """Which embedder this process uses, so an install without the model cannot go unseen."""
    name = container.knowledge.embedder.model_name
    if settings.embedder == "hashing":
        log.warning(
            "embedder: hashing (%s): memory and knowledge search by word overlap, not "
            "meaning (COSMO_EMBEDDER=hashing)",
            name,
        )
    else:
        log.info("embedder: %s (%s)", settings.embedder, name)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations (creates the embedded SQLite database if needed)."""
    settings = load_settings()
    settings.ensure_data_dir()
    upgrade(settings.resolved_database_url, revision)
    status = Database.from_url(settings.resolved_database_url).schema_status()
    out.print(
        f"database schema at revision {status.current} (head {status.head}): "
        f"{settings.describe_database()}",
        soft_wrap=True,
        markup=False,
    )


@db_app.command("status")
def db_status() -> None:
    """Show the schema revision; exit 1 when an upgrade is needed."""
    settings = load_settings()
    require_database(settings)
    out.print(f"database: {settings.describe_database()}", soft_wrap=True, markup=False)
    db = Database.from_url(settings.resolved_database_url)
    try:
        status = db.schema_status()
    finally:
        db.dispose()
    out.print(f"current: {status.current or '(empty)'}  head: {status.head}")
    if status.is_ahead:
        verdict = "compatible" if status.is_usable else "incompatible"
        out.print(
            f"the schema is ahead of this release ({verdict}: supports code from "
            f"{status.compatible_from or 'unknown'})"
        )
    if not status.is_usable:
        if not status.is_ahead:
            err.print("run `cosmo db upgrade` to bring the schema up to date")
        raise typer.Exit(1)


@agents_app.command("list")
def agents_list(
    tenant: TenantOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List agents."""
    settings = load_settings()
    container = open_container(settings)
    tenant_id = tenant or settings.default_tenant
    rows = []
    cursor = None
    try:
        while True:
            page = container.agents.list(tenant_id, cursor=cursor, limit=200)
            rows.extend(page.items)
            if not page.next_cursor:
                break
            cursor = page.next_cursor
    finally:
        container.close()
    if as_json:
        out.print_json(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    table = Table("name", "persona", "model", "skills", "active", "version")
    for a in rows:
        table.add_row(
            a.name,
            a.persona,
            a.model or settings.model,
            ", ".join(a.skills) or "-",
            "yes" if a.is_active else "no",
            str(a.version),
        )
    out.print(table)


@agents_app.command("export")
def agents_export(
    name: str,
    tenant: TenantOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="yaml or json")] = "yaml",
) -> None:
    """Print an agent with its persona and skills as a config document."""
    if fmt not in ("yaml", "json"):
        err.print("error: --format must be yaml or json")
        raise typer.Exit(2)
    settings = load_settings()
    container = open_container(settings)
    try:
        agent = container.agents.get_by_name(tenant or settings.default_tenant, name)
        doc = container.config.export_agent(agent.tenant_id, agent.id)
    except NotFound as exc:
        err.print(f"error: {exc.detail}")
        raise typer.Exit(1) from None
    finally:
        container.close()
    sys.stdout.write(dump_document(doc, "json" if fmt == "json" else "yaml"))


@app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="YAML (or JSON) config document.")],
    tenant: TenantOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report, write nothing.")] = False,
) -> None:
    """Create or update the personas, skills and agents a file declares (idempotent)."""
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"error: cannot read {source}: {exc}")
        raise typer.Exit(2) from None
    settings = load_settings()
    container = open_container(settings)
    try:
        # With the operator's policy, so a skill that cannot run here is refused at its line.
        doc = parse_document(text, policy=container.skills.policy)
    except DocumentInvalid as exc:
        container.close()
        for line in exc.describe(source):
            err.print(f"invalid: {line}")
        raise typer.Exit(1) from None
    try:
        report = container.config.apply(
            tenant or settings.default_tenant, doc, actor="cli", dry_run=dry_run
        )
    except ValidationFailed as exc:
        for e in exc.errors:
            err.print(f"invalid: {source}: {e.path}: {e.msg}")
        raise typer.Exit(1) from None
    except CosmoError as exc:
        err.print(f"error: {exc.detail}")
        raise typer.Exit(1) from None
    finally:
        container.close()
    for change in report.changes:
        detail = f" ({', '.join(change.fields)})" if change.fields else ""
        out.print(f"{change.kind} {change.name}: {change.action}{detail}")
    summary = "would change" if dry_run else "changed"
    n = sum(1 for c in report.changes if c.action != "unchanged")
    out.print(f"{n} {summary}, {len(report.changes) - n} unchanged")


@app.command()
def doctor(
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Also call Slack, Claude, webhook hosts, MCP servers and the embedder.",
        ),
    ] = False,
) -> None:
    """Check configuration, database and integrations; exit 1 when something is wrong
    (with `--online`, when anything outside does not answer as it must)."""
    settings = load_settings()
    require_database(settings)
    ok = True
    db = Database.from_url(settings.resolved_database_url)
    try:
        status = db.schema_status()
        if status.is_current:
            mark = "ok"
        elif status.is_usable:
            mark = f"ahead ({status.current}), compatible with this release"
        elif status.is_ahead:
            mark = f"ahead ({status.current}) and incompatible: run the newer release"
        else:
            mark = "behind: run `cosmo db upgrade`"
        ok = ok and status.is_usable
        out.print(f"database ({settings.describe_database()}): {mark}", soft_wrap=True)
        if settings.knowledge_provider == "pgvector":
            problem = pgvector_problem(db)
            ok = ok and problem is None
            out.print(f"knowledge (pgvector): {problem or 'ok'}")
        else:
            out.print("knowledge (embedded): ok")
    except Exception as exc:
        ok = False
        out.print(f"database: unreachable ({type(exc).__name__})")
    finally:
        db.dispose()
    for name, reason in disabled_integrations(settings).items():
        out.print(f"{name}: disabled ({reason})")
    ok = _doctor_embedder(settings) and ok
    ok = _doctor_skills(settings) and ok
    _doctor_models(settings)
    if online:
        ok = _doctor_online(settings) and ok
    if not ok:
        raise typer.Exit(1)


def _doctor_online(settings: Settings) -> bool:
    def say(line: str) -> None:
        out.print(line, soft_wrap=True, markup=False, highlight=False)

    db = Database.from_url(settings.resolved_database_url)
    try:
        usable = db.schema_status().is_usable
    except Exception:
        usable = False  # reported above
    try:
        return run_online_checks(settings, db if usable else None, say)
    finally:
        db.dispose()


def _doctor_embedder(settings: Settings) -> bool:
    """Build the configured embedder and, for the bundled model, load its files."""
    try:
        embedder = build_embedder(settings)
        if isinstance(embedder, MiniLMEmbedder):
            embedder.load()
    except CosmoError as exc:
        out.print(f"embedder ({settings.embedder}): {exc.detail}", soft_wrap=True, markup=False)
        return False
    if isinstance(embedder, MiniLMEmbedder):
        detail = f"{embedder.model_name} from {find_model_dir()}"
    elif settings.embedder == "hashing":
        detail = "word overlap, no model: search does not match by meaning"
    else:
        detail = embedder.model_name
    out.print(f"embedder ({settings.embedder}): ok, {detail}", soft_wrap=True, markup=False)
    return True


def _doctor_models(settings: Settings) -> None:
    """Model names the pricing table does not know: a warning, not a failure (a model newer
    than this release works), but a typo would otherwise only show as $0 in usage."""
    warnings = []
    if default := unpriced_warning(settings.model):
        warnings.append(f"COSMO_MODEL: {default}")
    db = Database.from_url(settings.resolved_database_url)
    try:
        for tenant, agent, model in unpriced_models(db):
            warnings.append(f"agent {agent} (tenant {tenant}): {unpriced_warning(model)}")
    except Exception as exc:
        warnings.append(f"agents not checked ({type(exc).__name__})")
    finally:
        db.dispose()
    for line in warnings or ["ok"]:
        out.print(f"models: {'warning: ' if warnings else ''}{line}", soft_wrap=True, markup=False)


def _doctor_skills(settings: Settings) -> bool:
    """The operator's skill configuration, and every stored skill that cannot run here."""

    def say(line: str) -> None:  # reasons quote names and paths: print them unwrapped
        out.print(line, soft_wrap=True, markup=False, highlight=False)

    try:
        policy = build_skill_policy(settings)
    except McpServersInvalid as exc:
        say(f"mcp servers: invalid: {exc.detail}")
        return False
    say(f"mcp servers: {describe_servers(policy.mcp_servers)}")
    db = Database.from_url(settings.resolved_database_url)
    try:
        skills = SkillService(db, policy)
        unusable = skills.unusable()
        # A skill whose secret header's variable is unset fails at its first call, in chat.
        missing = skills.missing_credentials(os.environ.get)
    except Exception as exc:
        say(f"skills: not checked ({type(exc).__name__})")
        return False
    finally:
        db.dispose()
    for tenant, skill_name, variable in missing:
        say(
            f"skill {skill_name} (tenant {tenant}): credential {variable} is not set: its "
            "calls will fail"
        )
    if not unusable and not missing:
        say("skills: ok")
        return True
    for tenant, skill in unusable:
        say(f"skill {skill.name} (tenant {tenant}): unusable: {skill.reason}")
    return False
