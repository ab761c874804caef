"""Drop a file in: how long from sharing a 1 MB PDF with the app to "ready" in its thread.

The whole Slack path in one process: signed events and clicks to our `/slack/events` (real
Bolt), the fake Slack Web API (with `files.info` and the download over HTTP), a temporary
SQLite database, and the job worker run the way the tests run it (until idle). Two spans,
since a person picks the knowledge base in between:

* share -> prompt: the `file_share` event acked, the `slack.event` job asks `files.info`
  and posts the prompt with its select;
* Add -> ready: the click acked, the `slack.kb_drop` job (files.info, download, a trial
  extraction, stored) and the `knowledge.ingest` job (extract, chunk, embed, write, with
  progress edits of the message) until the message reads "ready".

For the hashing embedder and, when installed, MiniLM. Each run uses a fresh knowledge base.
Not a test: the figures depend on the machine and its load.
Run: `.venv/bin/python bench/slack_file_ingest.py [--runs 3] [--mb 1.0]
[--embedders hashing,minilm]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.slack import kb_blocks
from bot.worker import build_worker
from core.db import Database, upgrade
from tests.fakes.slack_api import BOT_USER_ID
from tests.slack_support import SlackApp, portal_of, slack_app, slack_of
from tests.unit.test_extractors import make_pdf

ADMIN = "U0ADA00001"
DM = "D" + ADMIN[1:]
CONFIG = "apiVersion: cosmo/v1\npersonas: [{name: helper, role: Assistant}]\n"
WORDS = [
    "refund",
    "shipping",
    "invoice",
    "warranty",
    "seat",
    "plan",
    "price",
    "contract",
    "renewal",
    "support",
    "region",
    "account",
    "billing",
    "upgrade",
    "discount",
    "customer",
    "order",
    "delivery",
    "return",
    "policy",
]


def pdf_of(megabytes: float) -> bytes:
    """A text PDF of about that size: pages of varied sentences."""
    pages: list[list[str]] = []
    n = 0
    while True:
        lines = []
        for _ in range(40):
            words = [WORDS[(n * 7 + i * 3) % len(WORDS)] for i in range(12)]
            lines.append(f"Clause {n}: the {' '.join(words)}.")
            n += 1
        pages.append(lines)
        if len(pages) % 20 == 0 and len(make_pdf(pages)) >= megabytes * 1024 * 1024:
            return make_pdf(pages)


def run_jobs(app: SlackApp) -> None:
    """`SlackApp.run_jobs`, with room for a large file on a slow embedder."""
    slack = slack_of(app.client)
    worker = build_worker(app.container, slack)
    portal = portal_of(app.client)
    while True:
        portal.call(slack.runtime.drain)
        ran = portal.call(lambda: worker.run_until_idle(limit_seconds=1800))
        if not ran and not slack.runtime.tasks:
            return


def job_seconds(app: SlackApp, kind: str) -> float:
    """How long the latest job of `kind` ran."""
    jobs = app.container.jobs.list_jobs("default", kind=kind, limit=200).items
    last = jobs[-1]
    assert last.started_at and last.finished_at, last
    return (last.finished_at - last.started_at).total_seconds()


def bot_replies(app: SlackApp, ts: str) -> list[Any]:
    return [m for m in app.slack.messages_in(DM, thread_ts=ts) if m.user == BOT_USER_ID]


def one_run(app: SlackApp, run: int, data: bytes) -> tuple[float, float, int]:
    kb = f"bench-{run}"
    app.container.knowledge.create("default", parse_kb(kb))
    kb_id = app.container.knowledge.get_by_name("default", kb).id
    file = app.slack.upload_file(
        "handbook.pdf", data, mimetype="application/pdf", filetype="pdf", user=ADMIN, channel=DM
    )
    share = app.requests.file_share([file], user=ADMIN)
    started = time.perf_counter()
    assert app.send(share).status_code == 200
    run_jobs(app)
    ts = share.payload["event"]["ts"]
    (prompt,) = bot_replies(app, ts)
    offered = time.perf_counter() - started
    block_id = f"{kb_blocks.DROP_BLOCK}:{file['id']}"
    picked = {"type": "static_select", "selected_option": {"value": kb_id}}
    click = app.requests.block_action(
        kb_blocks.ADD,
        kb_blocks.add_value(file["id"], ADMIN),
        user=ADMIN,
        channel=DM,
        message_ts=prompt.ts,
        thread_ts=ts,
        response_url=app.slack.response_url(user=ADMIN),
        state={"values": {block_id: {kb_blocks.PICK: picked}}},
    )
    started = time.perf_counter()
    assert app.send(click).status_code == 200
    run_jobs(app)
    ready = time.perf_counter() - started
    final = app.slack.message(DM, prompt.ts).text
    assert final.startswith("✅"), final
    chunks = app.container.knowledge.get_by_name("default", kb).chunk_count
    drop, ingest = job_seconds(app, "slack.kb_drop"), job_seconds(app, "knowledge.ingest")
    print(
        f"  run {run}: share -> prompt {offered * 1000:.0f} ms, Add -> ready {ready:.2f} s "
        f"(download + check {drop:.2f} s, ingestion {ingest:.2f} s), {chunks} chunks",
        flush=True,
    )
    return offered, ready, chunks


def parse_kb(name: str) -> Any:
    from core.knowledge.service import parse_spec

    return parse_spec({"name": name})


def embedders() -> list[str]:
    from core.embeddings import minilm

    return ["hashing", "minilm"] if minilm.is_available() else ["hashing"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument(
        "--embedders", default=",".join(embedders()), help="comma-separated: hashing,minilm"
    )
    args = parser.parse_args()
    data = pdf_of(args.mb)
    print(f"PDF: {len(data) / 1024 / 1024:.2f} MB; {args.runs} runs per embedder")
    for embedder in args.embedders.split(","):
        print(f"{embedder}:", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            upgrade(url)
            db = Database.from_url(url)
            try:
                with slack_app(
                    db,
                    Path(tmp),
                    CONFIG,
                    COSMO_EMBEDDER=embedder,
                    COSMO_SLACK_ADMINS=ADMIN,
                    COSMO_MAX_UPLOAD_BYTES=max(len(data) * 2, 1024),
                ) as app:
                    results = [one_run(app, run, data) for run in range(args.runs)]
            finally:
                db.dispose()
        offered = statistics.median(r[0] for r in results)
        ready = statistics.median(r[1] for r in results)
        print(
            f"{embedder:>8}: share -> prompt {offered * 1000:.0f} ms, Add -> ready "
            f"{ready:.2f} s, together {offered + ready:.2f} s (median of {len(results)}; "
            f"{results[0][2]} chunks)"
        )


if __name__ == "__main__":
    main()
