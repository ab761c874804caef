"""Receipt signing and verification per second, and audit appends per second with the hash
chain against a plain insert of the same rows (the baseline), measured in the same run.

Signing: `ReceiptSigner.sign` over the canonical bytes of a realistic receipt body (the
rendering is included, as `Receipts.issue_in` pays it). Verifying: what an outsider does
(`verify_receipt`: re-render, compare, Ed25519 verify).

Appends: N entries, one transaction each, by `--writers` threads on one tenant: the real
`AuditLog.record` (lock the tenant head, hash, insert, move the head) vs inserting the
same `AuditRow`s with precomputed chain columns and no head (what the log cost before).
Prints per-operation p50/p99 and throughput, and the chain/plain ratio.
Run: `.venv/bin/python bench/receipts.py [--receipts 5000] [--entries 2000] [--writers 1]
[--pg URL]` (SQLite in a temporary file unless `--pg` names a PostgreSQL database to
create a scratch database next to).
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.approvals.audit import AuditLog
from core.approvals.canonical import canonical_bytes, timestamp
from core.approvals.policy import Actor
from core.approvals.receipts import ReceiptBody, ReceiptSigner, SignedReceipt, verify_receipt
from core.db import Database, upgrade
from core.db.ids import new_id
from core.db.models import AuditRow


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def report(name: str, samples: list[float], wall: float) -> float:
    p50, p99 = percentiles(samples)
    rate = len(samples) / wall
    print(f"{name:<34} {rate:>10,.0f}/s   p50 {p50 * 1e6:>8.1f} µs   p99 {p99 * 1e6:>8.1f} µs")
    return rate


def body(i: int) -> dict[str, object]:
    return ReceiptBody(
        receipt_id=new_id("rcp"), tenant_id="T0123456", output_id=new_id("out"), revision=2,
        content_sha256="ab" * 32, decision="executed", decided_by=f"U{i:08d}", how="slack",
        identity="verified", api_key_id=None, at=timestamp(datetime.now(UTC)),
        result_sha256="cd" * 32, audit_entry_id=new_id("aud"), audit_entry_hash="ef" * 32,
    ).model_dump(mode="json")  # fmt: skip


def bench_receipts(n: int) -> None:
    signer = ReceiptSigner("bench-secret")
    bodies = [body(i) for i in range(n)]
    signed: list[SignedReceipt] = []
    samples = []
    start = time.perf_counter()
    for b in bodies:
        t = time.perf_counter()
        payload = canonical_bytes(b)
        signature = signer.sign(payload)
        samples.append(time.perf_counter() - t)
        signed.append(
            SignedReceipt(
                receipt=ReceiptBody.model_validate(b),
                canonical=payload.decode(),
                signature=base64.b64encode(signature).decode(),
                key_id=signer.key_id,
            )
        )
    report("receipt sign (render + Ed25519)", samples, time.perf_counter() - start)
    samples = []
    start = time.perf_counter()
    for s in signed:
        t = time.perf_counter()
        assert verify_receipt(s, signer.public_raw)
        samples.append(time.perf_counter() - t)
    report("receipt verify (outsider's check)", samples, time.perf_counter() - start)


def run_writers(writers: int, total: int, one: Callable[[int], None]) -> tuple[list[float], float]:
    samples: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(writers)

    def work(w: int) -> None:
        mine = []
        barrier.wait()
        for i in range(w, total, writers):
            t = time.perf_counter()
            one(i)
            mine.append(time.perf_counter() - t)
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples, time.perf_counter() - start


def bench_appends(db: Database, n: int, writers: int) -> None:
    actor = Actor("U0LEAD", "slack", verified=True)

    def plain(i: int) -> None:
        row = AuditRow(
            id=new_id("aud"), tenant_id="plain", output_id="out_1", actor=actor.id,
            identity="verified", via="slack", action="approve", outcome="lost", revision=1,
            content_sha256="ab" * 32, detail=f"entry {i}", created_at=datetime.now(UTC),
            seq=i + 1, prev_hash="0" * 64, entry_hash="1" * 64,
        )  # fmt: skip
        with db.session() as s:
            s.add(row)

    audit = AuditLog(db)

    def chained(i: int) -> None:
        audit.record(
            "chained", "out_1", actor=actor, action="approve", outcome="lost",
            detail=f"entry {i}", revision=1, content_sha256="ab" * 32,
        )  # fmt: skip

    plain_samples, plain_wall = run_writers(writers, n, plain)
    base = report(f"audit append, plain insert ({writers}w)", plain_samples, plain_wall)
    chain_samples, chain_wall = run_writers(writers, n, chained)
    rate = report(f"audit append, hash chain ({writers}w)", chain_samples, chain_wall)
    report_ok = audit.verify_chain("chained")
    assert report_ok.intact and report_ok.entries == n, report_ok.breaks
    print(f"chain/plain throughput ratio          {rate / base:.2f}")
    start = time.perf_counter()
    audit.verify_chain("chained")
    print(f"verify_chain over {n} entries        {n / (time.perf_counter() - start):>10,.0f}/s")


@contextmanager
def database(pg: str | None) -> Iterator[tuple[str, Database]]:
    if pg:
        admin = create_engine(pg, isolation_level="AUTOCOMMIT")
        name = f"bench_receipts_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(pg).set(database=name).render_as_string(hide_password=False)
        try:
            upgrade(url)
            db = Database.from_url(url)
            yield "postgresql", db
            db.dispose()
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        db = Database.from_url(url)
        yield "sqlite", db
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=5000)
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--pg", help="PostgreSQL URL to create a scratch database next to")
    args = parser.parse_args()
    bench_receipts(args.receipts)
    with database(args.pg) as (backend, db):
        print(f"-- {backend}, {args.entries} entries")
        bench_appends(db, args.entries, args.writers)


if __name__ == "__main__":
    main()
