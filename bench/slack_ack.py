"""How fast our `/slack/events` acks while turns are running, against a bare Bolt app.

Two real uvicorn servers on loopback, each in its own process, in the same run:

* ours: `cosmo serve --workers 0` (the HTTP surfaces and the Slack ack path only) on a
  temporary SQLite database (or `--database-url`), Slack pointed at the fake Slack Web API
  and Claude at the fake Messages API (both in this process), with `--workers` separate
  `cosmo worker` processes running the turns, as production runs them;
* bare: Bolt's `AsyncApp` in FastAPI with `app_mention` and `message` listeners that do
  nothing.

First, the paced shape (below) with no turn running yet, bare and ours alternating, with
channel messages that mention nobody (the same ack path; a worker only finds each is not
for it): what the ack path costs by itself (on PostgreSQL, mostly the insert's round trip
and its WAL flush), apart from what the turns' work on the same cores adds to it.

Then 50 mentions go to ours and each starts a turn whose model is slow (seconds to the
first token, then a long stream, so each turn updates its Slack message about once a
second); once all 50 are at the model they are "in flight", and they stay so through the
load phases. A load process (its own process, so it shares no GIL) then sends signed
`app_mention` events, alternating windows bare, ours, bare, ours, in two shapes:

* paced: a fixed rate (default 20/s, over twice Slack's 30,000 events/hour per workspace),
  whatever the answers: the ack latency a workspace sees;
* closed loop: a fixed number of senders back to back: the most events/s each server acks.

Every event sent to ours is the real path — guard, one deduplicated `slack.event` job
inserted, ack — and a worker process then records and answers its turn (fast model).

The issue's targets, printed at the end as ratios of one run: closed-loop throughput
>= 0.5x bare Bolt, closed-loop p99 <= 150 ms, paced p50 <= 1.5x bare.

Also, for the 50 slow turns: from the moment the fake model starts writing its first text
delta to the moment the fake Slack receives the first `chat.appendStream` (or, without
native streaming, `chat.update`/`chat.postMessage`) carrying that text (both clocks in this
process).

On PostgreSQL it first measures one durable insert there, back to back and at the paced
rate, before either server starts: the round trip each of ours' acks includes.

Not a test: the figures depend on the machine. Takes about two and a half minutes.
Run: `.venv/bin/python bench/slack_ack.py [--rate 20] [--concurrency 8] [--rounds 2]
[--workers 1] [--database-url postgresql+psycopg://...]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from fastapi import FastAPI, Request, Response
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from tests.cosmo_process import free_port
from tests.fakes.anthropic_api import FakeAnthropicAPI, RecordedRequest, Reply
from tests.fakes.slack_api import BOT_TOKEN, BOT_USER_ID, Call, FakeSlackAPI
from tests.fakes.slack_requests import SIGNING_SECRET, SlackRequests

CONFIG = """
apiVersion: cosmo/v1
personas: [{name: seller, role: Sales assistant, instructions: "Help {{user_name}}."}]
skills:
  - {name: current_time, description: Current time., kind: read}
agents:
  - {name: sales-bot, persona: seller, skills: [current_time]}
"""
IN_FLIGHT = 50
ROOT = Path(__file__).resolve().parent.parent
PACED_CAP = 64  # unanswered requests a paced window allows before it waits
END = "[end]"
_SLOW = re.compile(r"slow-(\d+)")


# -- the two servers (child processes) ---------------------------------------------------------


def prepare_ours(database_url: str, data_dir: str) -> None:
    """Migrate the database and apply the agents, before any process of ours starts."""
    from core.config_document import parse_document
    from core.db import upgrade
    from core.settings import Settings
    from core.wiring import build_container

    upgrade(database_url)
    settings = Settings(
        _env_file=None,
        COSMO_DATA_DIR=data_dir,
        DATABASE_URL=database_url,
        COSMO_SECRET_KEY="bench-secret",
    )
    container = build_container(settings)
    try:
        container.config.apply("default", parse_document(CONFIG), actor="bench")
    finally:
        container.close()


def ours_environment(
    database_url: str, data_dir: str, slack_url: str, claude_url: str, worker_nice: int
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COSMO_", "SLACK_"))}
    env.update(
        COSMO_DATA_DIR=data_dir,
        DATABASE_URL=database_url,
        COSMO_API_TOKEN="bench",
        COSMO_SECRET_KEY="bench-secret",
        COSMO_LOG_LEVEL="WARNING",
        # 50 slow turns of one agent stay in flight while the fast ones pass them.
        COSMO_WORKER_CONCURRENCY="64",
        COSMO_AGENT_CONCURRENCY="64",
        COSMO_WORKER_NICE=str(worker_nice),
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack_url,
        ANTHROPIC_API_KEY="bench",
        ANTHROPIC_BASE_URL=claude_url,
    )
    return env


def start_ours(env: dict[str, str], port: int, workers: int, logs: Path) -> list[Any]:
    """`cosmo serve --workers 0` and `workers` `cosmo worker` processes."""
    cosmo = [sys.executable, "-m", "bot.cli"]
    commands = [[*cosmo, "serve", "--workers", "0", "--port", str(port)]]
    commands += [[*cosmo, "worker"] for _ in range(workers)]
    started = []
    for index, command in enumerate(commands):
        with (logs / f"ours-{index}.log").open("ab") as out:
            started.append(
                subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            )
    return started


def serve_bare(port: int, slack_url: str) -> None:
    import uvicorn

    bolt = AsyncApp(
        client=AsyncWebClient(token=BOT_TOKEN, base_url=slack_url),
        signing_secret=SIGNING_SECRET,
    )

    @bolt.event("app_mention")
    async def nothing() -> None:
        return None

    @bolt.event("message")
    async def nothing_either() -> None:
        return None

    handler = AsyncSlackRequestHandler(bolt)
    api = FastAPI()

    @api.post("/slack/events")
    async def events(request: Request) -> Response:
        return await handler.handle(request)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.Server(_uvicorn_config(api, port)).run()


def _uvicorn_config(app: Any, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the load generator (child process) --------------------------------------------------------


def load_worker(conn: Connection) -> None:
    """Answers (url, texts, concurrency, rate) with (latencies in ms, wall seconds), or with
    the exception. `rate` None: closed loop, `concurrency` senders back to back. A rate: open
    loop, one request every 1/rate s whatever the answers, at most `concurrency` unanswered.
    Requests are signed before the clock starts."""
    requests = SlackRequests(SIGNING_SECRET)
    while (command := conn.recv()) is not None:
        url, texts, concurrency, rate, mention = command
        signed = [
            requests.app_mention(f"<@{BOT_USER_ID}> {text}") if mention else requests.message(text)
            for text in texts
        ]
        try:
            conn.send(asyncio.run(_drive(url, signed, concurrency, rate)))
        except Exception as exc:
            conn.send(exc)


async def _drive(
    url: str, signed: list[Any], concurrency: int, rate: float | None
) -> tuple[list[float], float]:
    latencies: list[float] = []
    failures: dict[int, int] = {}
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def send(request: Any) -> None:
            try:
                began = time.perf_counter()
                response = await client.post(url, content=request.body, headers=request.headers)
                latencies.append((time.perf_counter() - began) * 1000)
                if response.status_code != 200:
                    failures[response.status_code] = failures.get(response.status_code, 0) + 1
            finally:
                slots.release()

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for index, request in enumerate(signed):
                if rate is not None:
                    await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
                await slots.acquire()
                group.create_task(send(request))
        wall = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{url}: not 200 ({len(signed)} sent), by status: {failures}")
    return latencies, wall


# -- the fake model ----------------------------------------------------------------------------


class SlowModel:
    """Answers `slow-N` turns slowly and everything else at once. Turn N waits `first_byte +
    N * spread / 50` s for its first token, so first tokens fall in every load window.
    Sleeping here, then returning a reply with no further first-byte delay, makes
    `first_token[marker]` the moment the fake starts writing the stream whose first text
    delta carries the marker."""

    def __init__(
        self, first_byte: float, spread: float, stream_seconds: float, stop: threading.Event
    ) -> None:
        self.first_byte = first_byte
        self.spread = spread
        self.stream_seconds = stream_seconds
        self.stop = stop
        self.lock = threading.Lock()
        self.arrived: set[str] = set()
        self.first_token: dict[str, float] = {}

    def __call__(self, request: RecordedRequest) -> Reply:
        found = _SLOW.search(request.last_user_text())
        if found is None:
            return Reply.text(f"Done. {END}").with_options(chunk_size=64, first_byte_delay=0)
        marker = f"[slow-{found.group(1)}]"
        with self.lock:
            self.arrived.add(marker)
        self.stop.wait(self.first_byte + int(found.group(1)) * self.spread / IN_FLIGHT)
        chunks = 40
        body = " ".join(f"word{i:02d}" for i in range(chunks * 2))  # 7 chars + space each
        text = f"{marker} {body} {END}"
        with self.lock:
            self.first_token.setdefault(marker, time.time())
        return Reply.text(text).with_options(
            chunk_size=max(16, len(text) // chunks),
            first_byte_delay=0,
            delta_delay=self.stream_seconds / chunks,
        )


# -- orchestration -----------------------------------------------------------------------------


def wait_until_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def shown_texts(slack: FakeSlackAPI) -> Iterator[tuple[Call, str]]:
    """Each Slack call that shows a reply's text, with the text its message shows after it:
    a post or an edit carries the whole text, a native stream's `appendStream` and
    `stopStream` add to what the stream showed so far."""
    streamed: dict[str, str] = {}
    for call in slack.calls():
        if call.method in ("chat.update", "chat.postMessage"):
            yield call, str(call.params.get("text", ""))
        elif call.method in ("chat.appendStream", "chat.stopStream"):
            ts = str(call.params.get("ts"))
            streamed[ts] = streamed.get(ts, "") + str(call.params.get("markdown_text", ""))
            yield call, streamed[ts]


def finished_slow_turns(slack: FakeSlackAPI) -> int:
    done = set()
    for _, text in shown_texts(slack):
        found = _SLOW.search(text)
        if found and END in text:
            done.add(found.group(1))
    return len(done)


def first_slack_text(
    slack: FakeSlackAPI, first_token: dict[str, float], periods: list[tuple[str, float, float]]
) -> dict[str, list[float]]:
    """Per slow turn: ms from the model's first text delta to the first Slack call with it,
    grouped by the load that was running when the token left the model."""
    seen: dict[str, float] = {}
    for call, text in shown_texts(slack):
        for marker in first_token:
            if marker in text and marker not in seen:
                seen[marker] = call.at
    grouped: dict[str, list[float]] = {}
    for marker, sent in first_token.items():
        if marker in seen:
            during = next((n for n, t0, t1 in periods if t0 <= sent <= t1), "between windows")
            grouped.setdefault(during, []).append((seen[marker] - sent) * 1000)
    return grouped


@dataclass
class Window:
    """All samples of one load shape against one server."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    in_flight: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall


def commit_round_trip(database_url: str, rate: float, n: int = 100) -> tuple[float, float]:
    """On PostgreSQL, what one durable one-row insert costs here, apart from either server:
    p50 ms back to back, and p50 ms sent at the paced rate (the database idle in between, as
    it is between paced events). Measured before the servers start, on a table of its own."""
    import psycopg

    from core.db.database import libpq_dsn

    dsn = libpq_dsn(database_url)
    results = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_round_trip (id bigserial, note text)")
        for pause in (0.0, 1 / rate):
            samples = []
            for _ in range(n):
                time.sleep(pause)
                started = time.perf_counter()
                conn.execute("INSERT INTO bench_round_trip (note) VALUES (%s)", ("x",))
                samples.append((time.perf_counter() - started) * 1000)
            results.append(statistics.median(samples))
        conn.execute("DROP TABLE bench_round_trip")
    return results[0], results[1]


def run(args: argparse.Namespace) -> None:
    ctx = mp.get_context("spawn")
    stop = threading.Event()
    model = SlowModel(args.first_byte, args.spread, args.stream_seconds, stop)
    periods: list[tuple[str, float, float]] = []  # (what was loaded, from, to) in time.time()
    children: list[Any] = []
    ours_processes: list[Any] = []
    windows: dict[tuple[str, str], Window] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeSlackAPI() as slack,
        FakeAnthropicAPI() as claude,
    ):
        claude.respond_with(model)
        ours_port, bare_port = free_port(), free_port()
        database_url = args.database_url or f"sqlite:///{Path(tmp) / 'cosmo.db'}"
        round_trip = (
            commit_round_trip(database_url, args.rate)
            if database_url.startswith("postgresql")
            else None
        )
        prepare_ours(database_url, tmp)
        env = ours_environment(database_url, tmp, slack.base_url, claude.base_url, args.worker_nice)
        servers = {"bare": f"http://127.0.0.1:{bare_port}", "ours": f"http://127.0.0.1:{ours_port}"}
        parent_end, child_end = ctx.Pipe()
        children = [
            ctx.Process(target=serve_bare, args=(bare_port, slack.base_url)),
            ctx.Process(target=load_worker, args=(child_end,)),
        ]
        try:
            for child in children:
                child.start()
            ours_processes = start_ours(env, ours_port, args.workers, Path(tmp))
            for url in servers.values():
                wait_until_up(url + "/healthz", timeout=120)

            def load(
                server: str,
                texts: list[str],
                concurrency: int,
                rate: float | None = None,
                *,
                mention: bool = True,
            ) -> tuple[list[float], float]:
                url = servers[server] + "/slack/events"
                parent_end.send((url, texts, concurrency, rate, mention))
                result = parent_end.recv()
                if isinstance(result, Exception):
                    raise result
                return tuple(result)

            began = time.monotonic()
            for server in servers:  # warm up: connections, auth.test, first queries
                load(server, [f"warm {i}" for i in range(50)], args.concurrency)
            time.sleep(2.0)

            # The same pace with nothing in flight: what the ack path costs by itself,
            # apart from what the turns' work on the same cores adds. Channel messages that
            # mention nobody: the same ack path (guard, one insert, ack), and a worker only
            # finds each is not for it, so no turn queues ahead of the slow ones.
            for round_no in range(args.rounds):
                for server in servers:
                    window = windows.setdefault(("quiet", server), Window())
                    texts = [f"quiet {round_no} {server} {i}" for i in range(args.paced)]
                    latencies, wall = load(server, texts, PACED_CAP, args.rate, mention=False)
                    window.latencies.extend(latencies)
                    window.wall += wall

            load("ours", [f"slow-{i:02d}" for i in range(IN_FLIGHT)], IN_FLIGHT)
            deadline = time.monotonic() + 30
            while len(model.arrived) < IN_FLIGHT and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(model.arrived) == IN_FLIGHT, f"only {len(model.arrived)} turns started"

            # Paced windows first (they leave no backlog), then the saturating ones.
            shapes = [("paced", args.rate), ("closed", None)]
            for shape, rate in shapes:
                for round_no in range(args.rounds):
                    for server in servers:
                        window = windows.setdefault((shape, server), Window())
                        n = args.paced if rate is not None else args.requests
                        texts = [f"load {shape} {round_no} {server} {i}" for i in range(n)]
                        window.in_flight.append(IN_FLIGHT - finished_slow_turns(slack))
                        senders = args.concurrency if rate is None else PACED_CAP
                        since = time.time()
                        latencies, wall = load(server, texts, senders, rate)
                        periods.append((f"{shape} load on {server}", since, time.time()))
                        window.in_flight.append(IN_FLIGHT - finished_slow_turns(slack))
                        window.latencies.extend(latencies)
                        window.wall += wall
            measured = time.monotonic() - began

            deadline = time.monotonic() + 90
            while finished_slow_turns(slack) < IN_FLIGHT and time.monotonic() < deadline:
                time.sleep(0.2)
            lag = first_slack_text(slack, model.first_token, periods)
            finished = finished_slow_turns(slack)
        except BaseException:
            for log in sorted(Path(tmp).glob("ours-*.log")):  # what our processes said
                print(f"== {log.name}\n{log.read_text(errors='replace')[-4000:]}", file=sys.stderr)
            raise
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                parent_end.send(None)
            for process in ours_processes:
                process.terminate()
            for process in ours_processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            for child in children:
                if child.pid is None:
                    continue  # never started
                if child.is_alive():
                    child.terminate()
                child.join(timeout=10)

    report(args, windows, lag, finished, measured, round_trip)


def report(
    args: argparse.Namespace,
    windows: dict[tuple[str, str], Window],
    lag: dict[str, list[float]],
    finished: int,
    measured: float,
    round_trip: tuple[float, float] | None,
) -> None:
    print(
        f"\n/slack/events, signed app_mention events over loopback HTTP, servers in their own "
        f"processes, {args.rounds} alternating windows per server and load shape.\n"
        f"Ours: `cosmo serve --workers 0` acking, {args.workers} `cosmo worker` process(es) "
        f"(nice {args.worker_nice}) "
        f"running the turns.\n"
        f"While ours is measured, {IN_FLIGHT} turns are in flight on its workers (slow model: "
        f"{args.first_byte:g}-{args.first_byte + args.spread:g} s to the first token, then "
        f"{args.stream_seconds:g} s of streaming); every event sent to ours also records "
        "and runs a turn of its own.\n"
    )
    labels = {"bare": "bare Bolt + FastAPI", "ours": "ours"}
    shapes = {
        "quiet": f"paced {args.rate:g}/s, no turn running",
        "paced": f"paced {args.rate:g}/s ({args.paced * args.rounds} events)",
        "closed": f"closed loop, {args.concurrency} senders ({args.requests * args.rounds} events)",
    }
    head = (
        f"{'load':<36} {'server':<20} {'p50 ms':>8} {'p99 ms':>8} {'events/s':>9} {'in flight':>10}"
    )
    print(head)
    print("-" * len(head))
    for shape, shape_label in shapes.items():
        for server in ("bare", "ours"):
            w = windows[(shape, server)]
            flight = (
                f"{min(w.in_flight)}-{max(w.in_flight)}" if server == "ours" and w.in_flight else ""
            )
            print(
                f"{shape_label:<36} {labels[server]:<20} {statistics.median(w.latencies):>8.2f} "
                f"{pct(w.latencies, 0.99):>8.2f} {w.rate:>9.1f} {flight:>10}"
            )
            shape_label = ""
        bare, ours = windows[(shape, "bare")], windows[(shape, "ours")]
        print(
            f"{'':<36} {'ratio ours/bare':<20} "
            f"{statistics.median(ours.latencies) / statistics.median(bare.latencies):>7.1f}x "
            f"{pct(ours.latencies, 0.99) / pct(bare.latencies, 0.99):>7.1f}x "
            f"{ours.rate / bare.rate:>8.3f}x"
        )
    everything = [ms for values in lag.values() for ms in values]
    print(
        f"\nfirst model token -> first text at the fake Slack ({len(everything)} of {IN_FLIGHT}"
        f" slow turns, {finished} finished), by what was running when the token left:"
    )
    print(f"{'while':<36} {'turns':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for during, values in [*sorted(lag.items()), ("all", everything)]:
        if values:
            print(
                f"{during:<36} {len(values):>5} {statistics.median(values):>8.1f} "
                f"{pct(values, 0.99):>8.1f} {max(values):>8.1f}"
            )
    print(
        f"(load phases took {measured:.0f} s; the {IN_FLIGHT} streams share one workspace, so"
        " Slack's chat.appendStream limit, 100/min, which our limiter keeps, spaces out their"
        " appends: a first text that finds the window full waits for it)"
    )
    closed_bare, closed_ours = windows[("closed", "bare")], windows[("closed", "ours")]
    paced_bare, paced_ours = windows[("paced", "bare")], windows[("paced", "ours")]
    throughput = closed_ours.rate / closed_bare.rate
    p99 = pct(closed_ours.latencies, 0.99)
    paced = statistics.median(paced_ours.latencies) / statistics.median(paced_bare.latencies)
    targets = [
        ("closed-loop throughput ours/bare", f"{throughput:.2f}x", ">= 0.5x", throughput >= 0.5),
        ("closed-loop p99 ours", f"{p99:.1f} ms", "<= 150 ms", p99 <= 150),
        ("paced p50 ours/bare", f"{paced:.2f}x", "<= 1.5x", paced <= 1.5),
    ]
    print("\nissue #14 targets (this run):")
    for name, value, target, met in targets:
        print(f"  {name:<34} {value:>10}   target {target:<10} {'met' if met else 'MISSED'}")
    if round_trip is not None:
        warm, idle = round_trip
        print(
            f"\nPostgreSQL here, before the servers started: a one-row insert (autocommit, so"
            f" its WAL flush) {warm:.2f} ms p50 back to back, {idle:.2f} ms p50 sent"
            f" {1000 / args.rate:.0f} ms apart, as paced events are. Each of ours' acks waits"
            " for one such commit (the durable insert); bare Bolt writes nothing."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="Ack latency of /slack/events vs bare Bolt.")
    parser.add_argument("--rate", type=float, default=20.0, help="paced events/s")
    parser.add_argument("--paced", type=int, default=100, help="events per paced window")
    parser.add_argument("--requests", type=int, default=200, help="events per closed window")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop senders")
    parser.add_argument("--rounds", type=int, default=2, help="windows per server and shape")
    parser.add_argument("--first-byte", type=float, default=2.5, help="model s to first token")
    parser.add_argument("--spread", type=float, default=32.0, help="s over which they start")
    parser.add_argument("--workers", type=int, default=1, help="cosmo worker processes")
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite")
    parser.add_argument("--worker-nice", type=int, default=10, help="COSMO_WORKER_NICE")
    parser.add_argument("--stream-seconds", type=float, default=40.0, help="model s streaming")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
