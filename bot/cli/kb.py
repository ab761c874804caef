"""`cosmo kb`: create, change and delete knowledge bases; ingest, list and remove their
documents; search; re-index.

Exit codes of `kb ingest`: 0 every file ingested or unchanged; 1 some files failed (the
others were ingested; each failure is reported) or the knowledge base cannot be used;
2 bad arguments (a path that does not exist, no supported file found).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from bot.cli.common import TenantOpt, err, load_settings, open_container
from core.concurrency import run_sync
from core.errors import CosmoError, NotFound, ValidationFailed
from core.jobs import FINISHED, JobView, JobWorker
from core.knowledge.files import OutsideRoot, discover
from core.knowledge.jobs import IngestJob, submit_document
from core.knowledge.schemas import (
    DocumentRejected,
    KnowledgeBaseInUse,
    KnowledgeBaseSpec,
    KnowledgeBaseView,
)
from core.knowledge.service import parse_patch, parse_spec
from core.settings import Settings
from core.wiring import Container

kb_app = typer.Typer(help="Knowledge bases agents search and cite.", no_args_is_help=True)

out = Console(highlight=False)


def _open() -> tuple[Settings, Container]:
    settings = load_settings()
    return settings, open_container(settings)


@contextmanager
def _session(tenant: str | None) -> Iterator[tuple[str, Container]]:
    """The tenant id (`--tenant` or the default) and a container, closed at the end."""
    settings, container = _open()
    try:
        yield tenant or settings.default_tenant, container
    finally:
        container.close()


@contextmanager
def _errors_exit_1() -> Iterator[None]:
    """A `CosmoError` is reported as `error: <detail>` and ends the command with exit code 1."""
    try:
        yield
    except CosmoError as exc:
        err.print(f"error: {exc.detail}")
        raise typer.Exit(1) from None


def _knowledge_base(container: Container, tenant: str, name: str) -> KnowledgeBaseView:
    try:
        return container.knowledge.get_by_name(tenant, name)
    except NotFound:
        err.print(f"error: no knowledge base named {name!r}; create it with `cosmo kb create`")
        container.close()
        raise typer.Exit(1) from None


@kb_app.command("create")
def create(
    name: str,
    description: Annotated[str, typer.Option(help="What it holds.")] = "",
    chunk_size: Annotated[int, typer.Option(help="Largest chunk, in characters.")] = 800,
    chunk_overlap: Annotated[int, typer.Option(help="Characters chunks share.")] = 100,
    top_k: Annotated[int, typer.Option(help="Passages a search returns.")] = 5,
    threshold: Annotated[
        float, typer.Option(help="Cosine a passage needs to match by meaning.")
    ] = 0.3,
    tenant: TenantOpt = None,
) -> None:
    """Create a knowledge base (its chunking is fixed for documents ingested later)."""
    with _session(tenant) as (tenant_id, container), _errors_exit_1():
        try:
            spec = parse_spec(
                {
                    "name": name,
                    "description": description,
                    "chunk_size": chunk_size,
                    "chunk_overlap": chunk_overlap,
                    "top_k": top_k,
                    "score_threshold": threshold,
                }
            )
            kb = container.knowledge.create(tenant_id, spec)
        except ValidationFailed as exc:
            for e in exc.errors:
                err.print(f"invalid: {e.path.removeprefix('body.')}: {e.msg}")
            raise typer.Exit(2) from None
    out.print(f"knowledge base {kb.name} created ({kb.id}, {kb.embedding_model})")


@kb_app.command("list")
def list_(tenant: TenantOpt = None) -> None:
    """List knowledge bases with their documents and chunks."""
    with _session(tenant) as (tenant_id, container):
        page = container.knowledge.list(tenant_id, limit=200)
    table = Table("name", "documents", "chunks", "chunking", "top_k", "threshold", "model")
    for kb in page.items:
        table.add_row(
            kb.name,
            str(kb.document_count),
            str(kb.chunk_count),
            f"{kb.chunk_size}/{kb.chunk_overlap}",
            str(kb.top_k),
            f"{kb.score_threshold:g}",
            kb.embedding_model,
        )
    out.print(table)


@kb_app.command("update")
def update(
    name: str,
    description: Annotated[str | None, typer.Option(help="What it holds.")] = None,
    top_k: Annotated[int | None, typer.Option(help="Passages a search returns.")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Cosine a passage needs to match by meaning.")
    ] = None,
    chunk_size: Annotated[
        int | None, typer.Option(help="Largest chunk, in characters (new documents).")
    ] = None,
    chunk_overlap: Annotated[
        int | None, typer.Option(help="Characters chunks share (new documents).")
    ] = None,
    tenant: TenantOpt = None,
) -> None:
    """Change settings. Search settings apply at once; chunk settings to documents ingested
    afterwards (run `cosmo kb ingest` again to re-chunk the existing ones)."""
    given = {
        "description": description,
        "top_k": top_k,
        "score_threshold": threshold,
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    if not changes:
        err.print(
            "error: nothing to change; pass --description, --top-k, --threshold, "
            "--chunk-size or --chunk-overlap"
        )
        raise typer.Exit(2)
    with _session(tenant) as (tenant_id, container), _errors_exit_1():
        try:
            before = _knowledge_base(container, tenant_id, name)
            after = container.knowledge.update(tenant_id, before.id, parse_patch(changes))
        except ValidationFailed as exc:
            for e in exc.errors:
                err.print(f"invalid: {_option(e.path)}: {e.msg}")
            raise typer.Exit(2) from None
    changed = [
        f"{field} {getattr(before, field)!r} -> {getattr(after, field)!r}"
        for field in given
        if getattr(before, field) != getattr(after, field)
    ]
    out.print(f"{after.name}: " + ("; ".join(changed) or "nothing changed"), markup=False)
    rechunk = (before.chunk_size, before.chunk_overlap) != (after.chunk_size, after.chunk_overlap)
    if rechunk and after.document_count:
        out.print(
            f"{after.document_count} document(s) keep their old chunks until ingested again: "
            f"cosmo kb ingest {after.name} PATH...",
            markup=False,
        )


def _option(path: str) -> str:
    """`body.score_threshold` as the option that sets it (`--threshold`)."""
    field = path.removeprefix("body.")
    return _OPTIONS.get(field, field)


_OPTIONS = {
    "description": "--description",
    "top_k": "--top-k",
    "score_threshold": "--threshold",
    "chunk_size": "--chunk-size",
    "chunk_overlap": "--chunk-overlap",
}


@kb_app.command("delete")
def delete(
    name: str,
    force: Annotated[
        bool,
        typer.Option("--force", help="Also remove it from the agents that use it."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    tenant: TenantOpt = None,
) -> None:
    """Delete a knowledge base with its documents. Refused while agents use it, unless
    --force (which removes it from their lists, as a new version of each)."""
    with _session(tenant) as (tenant_id, container), _errors_exit_1():
        try:
            kb = _knowledge_base(container, tenant_id, name)
            if not yes:
                if not sys.stdin.isatty():
                    err.print("error: not a terminal: pass --yes to delete without asking")
                    raise typer.Exit(2)
                question = (
                    f"Delete knowledge base {kb.name} with its {kb.document_count} document(s) "
                    f"and {kb.chunk_count} chunk(s)?"
                )
                if not typer.confirm(question, default=False):
                    err.print("not deleted")
                    raise typer.Exit(1)
            detached = container.knowledge.delete(tenant_id, kb.id, force=force, actor="cli")
        except KnowledgeBaseInUse as exc:
            err.print(
                f"error: {kb.name} is used by agent(s) {', '.join(exc.agents)}; remove it from "
                "them first, or pass --force to remove it from their lists as well"
            )
            raise typer.Exit(1) from None
    out.print(f"knowledge base {kb.name} deleted", markup=False)
    if detached:
        out.print(f"removed from agent(s) {', '.join(detached)}", markup=False)


@kb_app.command("docs")
def docs(
    knowledge_base: Annotated[str, typer.Argument(metavar="KB")],
    tenant: TenantOpt = None,
) -> None:
    """List a knowledge base's documents: name, status, chunks, size, last ingested."""
    with _session(tenant) as (tenant_id, container):
        kb = _knowledge_base(container, tenant_id, knowledge_base)
        documents = []
        cursor: str | None = None
        while True:
            page = container.knowledge.documents(tenant_id, kb.id, cursor=cursor, limit=200)
            documents.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
    if not documents:
        out.print(f"{kb.name} has no documents; add some with `cosmo kb ingest {kb.name} PATH`")
        return
    table = Table("name", "status", "chunks", "size", "updated")
    for d in sorted(documents, key=lambda d: d.name):
        table.add_row(
            Text(d.name),  # a file name, not markup: `notes [draft].md` shows as it is
            Text(f"failed: {d.error}" if d.status == "failed" and d.error else d.status),
            str(d.chunk_count),
            _size(d.size),
            d.updated_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


@kb_app.command("rm")
def rm(
    knowledge_base: Annotated[str, typer.Argument(metavar="KB")],
    document: Annotated[str, typer.Argument(metavar="DOC", help="Document name (see kb docs).")],
    tenant: TenantOpt = None,
) -> None:
    """Delete a document with its chunks and vectors."""
    with _session(tenant) as (tenant_id, container), _errors_exit_1():
        kb = _knowledge_base(container, tenant_id, knowledge_base)
        try:
            doc = container.knowledge.document_named(tenant_id, kb.id, document)
        except NotFound:
            err.print(
                f"error: {kb.name} has no document named {document!r}; "
                f"see `cosmo kb docs {kb.name}`"
            )
            raise typer.Exit(1) from None
        container.knowledge.delete_document(tenant_id, kb.id, doc.id)
    out.print(f"{doc.name} deleted from {kb.name} ({doc.chunk_count} chunks)", markup=False)


@kb_app.command("ingest")
def ingest(
    knowledge_base: Annotated[str, typer.Argument(metavar="KB", help="Knowledge base name.")],
    paths: Annotated[list[Path], typer.Argument(metavar="PATH...", help="Files or folders.")],
    create: Annotated[
        bool, typer.Option("--create", help="Create the knowledge base if it does not exist.")
    ] = False,
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            help="Folder that document names are relative to (default: the current "
            "directory); every PATH must be under it.",
        ),
    ] = None,
    tenant: TenantOpt = None,
) -> None:
    """Ingest files and folders (txt, md, html, pdf, csv, tsv; folders recursively).

    Documents are named by their path relative to the root (`--root`, default the current
    directory): `docs/guides/setup.md`. Ingesting `docs/guides` and later `docs` from the
    same root updates those documents instead of storing them twice. Use the same root
    each time for a knowledge base (names are what make a file the same document).

    Each file is stored and queued as a `knowledge.ingest` job, then this command runs the
    queued ingestion jobs itself (a running `cosmo worker` may take some of them: the
    progress bar, by chunks, follows the jobs wherever they run). Unchanged files (same
    content, same chunk settings) are skipped, so after `kb update` changed the chunking,
    running this again re-chunks every file; a file that fails is reported and the others
    go on. Exit code 0: all ingested or unchanged; 1: some failed; 2: bad paths.
    """
    try:
        files = discover(paths, root or Path.cwd())
    except FileNotFoundError as exc:
        err.print(f"error: {exc} does not exist")
        raise typer.Exit(2) from None
    except OutsideRoot as exc:
        err.print(
            f"error: {exc}; document names are paths relative to the root: run from a folder "
            "above it or pass --root (the same root each time, so names stay the same)"
        )
        raise typer.Exit(2) from None
    if not files:
        err.print("error: no supported files (txt, md, html, pdf, csv, tsv) found")
        raise typer.Exit(2)
    settings, container = _open()
    tenant_id = tenant or settings.default_tenant
    if create:
        try:
            container.knowledge.get_by_name(tenant_id, knowledge_base)
        except NotFound:
            container.knowledge.create(tenant_id, KnowledgeBaseSpec(name=knowledge_base))
    kb = _knowledge_base(container, tenant_id, knowledge_base)
    limit = container.knowledge.max_document_bytes
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    failures: list[tuple[str, str]] = []
    queued: dict[str, tuple[str, str]] = {}  # job id -> (document name, created/updated)
    started = time.perf_counter()
    try:
        with _errors_exit_1():
            for source in files:
                try:
                    size = source.path.stat().st_size
                    if size > limit:  # said before reading it all into memory
                        failures.append((source.name, f"is {size} bytes; the limit is {limit}"))
                        continue
                    submitted = submit_document(
                        container.knowledge,
                        container.jobs,
                        tenant_id,
                        kb.id,
                        source.name,
                        source.path.read_bytes(),
                    )
                except OSError as exc:
                    failures.append((source.name, exc.strerror or str(exc)))
                except CosmoError as exc:
                    if isinstance(exc, NotFound):
                        raise
                    failures.append((source.name, _reason(exc)))
                else:
                    if submitted.job_id is None:
                        counts[submitted.status] += 1
                    else:
                        # `unchanged` with a job: the same bytes were queued already
                        then = "updated" if submitted.status == "unchanged" else submitted.status
                        queued[submitted.job_id] = (source.name, then)
            chunks = _follow(
                container, tenant_id, kb.name, queued, len(files) - len(queued), started
            )
    except KeyboardInterrupt:
        err.print(
            "interrupted: documents not yet ingested stay queued; a worker (`cosmo worker`, "
            "`cosmo serve`) or the next `cosmo kb ingest` finishes them"
        )
        raise typer.Exit(130) from None
    finally:
        container.close()
    for job_id, (name, status) in queued.items():
        job = chunks.jobs[job_id]
        if job.state == "succeeded":
            counts[status] += 1
        else:
            reason = (job.error or job.state).removeprefix(f"{name}: ")
            failures.append((name, reason))
    for name, reason in failures:
        err.print(f"failed: {name}: {reason}")
    elapsed = time.perf_counter() - started
    rate = chunks.done / elapsed if elapsed > 0 else 0.0
    out.print(
        f"{counts['created']} created, {counts['updated']} updated, "
        f"{counts['unchanged']} unchanged, {len(failures)} failed; "
        f"{chunks.done} chunks in {elapsed:.1f}s ({rate:.0f} chunks/s)"
    )
    if failures:
        raise typer.Exit(1)


@dataclass
class _Followed:
    done: int
    jobs: dict[str, JobView]


#: How long `kb ingest` runs queued ingestion jobs before it gives up waiting for them.
INGEST_LIMIT_SECONDS = 24 * 3600.0


def _follow(
    container: Container,
    tenant_id: str,
    title: str,
    queued: dict[str, tuple[str, str]],
    settled: int,
    started: float,
) -> _Followed:
    """Run the queued ingestion jobs in this process while showing their chunks done, as
    the job rows report them, until every one has ended."""
    files = settled + len(queued)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks"),
        TextColumn("{task.fields[files]}/{task.fields[of]} files"),
        TextColumn("{task.fields[rate]} chunks/s"),
        TimeElapsedColumn(),
        console=out,
    )

    def read() -> dict[str, JobView]:
        return {job_id: container.jobs.get(tenant_id, job_id) for job_id in queued}

    async def run() -> _Followed:
        worker = JobWorker(container.jobs, [IngestJob(container.knowledge).kind()], concurrency=2)
        runner = asyncio.get_running_loop().create_task(
            worker.run_until_idle(limit_seconds=INGEST_LIMIT_SECONDS)
        )
        with progress:
            task = progress.add_task(title, total=None, files=settled, of=files, rate="-")
            while True:
                jobs = await run_sync(read)
                done = sum(int(j.progress.get("done", 0)) for j in jobs.values())
                known = [j for j in jobs.values() if "total" in j.progress]
                total = sum(int(j.progress["total"]) for j in known)
                ended = sum(1 for j in jobs.values() if j.state in FINISHED)
                rate = done / max(time.perf_counter() - started, 1e-9)
                progress.update(
                    task,
                    completed=done,
                    total=total if len(known) == len(jobs) or ended == len(jobs) else None,
                    files=settled + ended,
                    rate=f"{rate:.0f}",
                )
                if ended == len(jobs):
                    break
                if runner.done() and runner.exception() is not None:
                    raise runner.exception()  # type: ignore[misc]
                await asyncio.sleep(0.2)
        await runner
        return _Followed(done, jobs)

    if not queued:
        return _Followed(0, {})
    return asyncio.run(run())


def _reason(exc: Exception) -> str:
    if isinstance(exc, DocumentRejected):
        return exc.reason
    detail: str = getattr(exc, "detail", str(exc))
    return detail


@kb_app.command("search")
def search(
    knowledge_base: Annotated[str, typer.Argument(metavar="KB")],
    query: str,
    limit: Annotated[int | None, typer.Option(help="Default: the knowledge base's top_k.")] = None,
    tenant: TenantOpt = None,
) -> None:
    """Show what agents would find for QUERY, with sources and scores."""
    with _session(tenant) as (tenant_id, container), _errors_exit_1():
        kb = _knowledge_base(container, tenant_id, knowledge_base)
        matches = container.knowledge.search(tenant_id, kb.id, query, limit=limit)
    if not matches:
        out.print("no matches")
    for i, m in enumerate(matches, 1):
        where = m.document + (f" > {m.section}" if m.section else "")
        where += f" (page {m.page})" if m.page is not None else ""
        out.print(f"{i}. {where}  score {m.score:.3f}", markup=False)
        out.print(f"   {m.snippet}", markup=False)


@kb_app.command("reindex")
def reindex(
    knowledge_base: Annotated[str, typer.Argument(metavar="KB")],
    tenant: TenantOpt = None,
) -> None:
    """Re-embed every chunk with the current embedding model (after changing it)."""
    with _session(tenant) as (tenant_id, container), _errors_exit_1():
        kb = _knowledge_base(container, tenant_id, knowledge_base)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("chunks"),
            TimeElapsedColumn(),
            console=out,
        ) as progress:
            task = progress.add_task(kb.name, total=kb.chunk_count)
            done = container.knowledge.reindex(
                tenant_id, kb.id, progress=lambda n: progress.advance(task, n)
            )
    model = container.knowledge.embedder.model_name
    out.print(f"{kb.name}: {done} chunks re-embedded with {model}")
