"""How fast our `/slack/events` acks while turns are running, against a bare Bolt app.

Two real uvicorn servers on loopback, each in its own process, in the same run:

* ours: `create_app(container=...)` on a temporary SQLite database, Slack pointed at the
  fake Slack Web API and Claude at the fake Messages API (both in this process);
* bare: Bolt's `AsyncApp` in FastAPI with an `app_mention` listener that does nothing.

First 50 mentions go to ours and each starts a turn whose model is slow (it waits before
the first token, then streams for seconds); once all 50 are at the model they are "in
flight". Then a load process (its own process, so it does not share a GIL with anything)
sends signed `app_mention` events from a bounded loop — a fixed number per window, a fixed
number in flight — alternating windows bare, ours, bare, ours. Every mention to ours is the
real path: guard, Bolt, turn recorded durably (deduplicated on `event_id`), turn scheduled;
those turns get a fast model answer, so the 50 slow ones stay the long-running work.

Also measured, for the 50 slow turns: from the moment the fake model writes its first text
delta to the moment the fake Slack receives the first `chat.update`/`chat.postMessage`
carrying that text (timestamps taken by the fakes).

Not a test: the figures depend on the machine.
Run: `.venv/bin/python bench/slack_ack.py [--requests 400] [--rounds 2] [--concurrency 8]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from tests.fakes.anthropic_api import FakeAnthropicAPI, RecordedRequest, Reply
from tests.fakes.slack_api import BOT_TOKEN, BOT_USER_ID, FakeSlackAPI
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
END = "[end]"
_SLOW = re.compile(r"slow-(\d+)")


# -- the two servers (child processes) ---------------------------------------------------------


def serve_ours(port: int, data_dir: str, slack_url: str, claude_url: str) -> None:
    import uvicorn

    from bot.server import create_app
    from core.config_document import parse_document
    from core.db import Database, upgrade
    from core.embeddings.hashing import HashingEmbedder
    from core.memory.local import LocalMemory
    from core.settings import Settings
    from core.wiring import build_container

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        COSMO_DATA_DIR=data_dir,
        COSMO_API_TOKEN="bench",
        COSMO_SECRET_KEY="bench-secret",
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack_url,
        ANTHROPIC_API_KEY="bench",
        ANTHROPIC_BASE_URL=claude_url,
    )
    upgrade(settings.resolved_database_url)
    db = Database.from_url(settings.resolved_database_url)
    container = build_container(settings, db=db, memory=LocalMemory(db, HashingEmbedder()))
    container.config.apply("default", parse_document(CONFIG), actor="bench")
    app = create_app(container=container)
    uvicorn.Server(_uvicorn_config(app, port)).run()


def serve_bare(port: int, slack_url: str) -> None:
    import uvicorn
    from fastapi import FastAPI, Request, Response
    from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
    from slack_bolt.async_app import AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    bolt = AsyncApp(
        client=AsyncWebClient(token=BOT_TOKEN, base_url=slack_url),
        signing_secret=SIGNING_SECRET,
    )

    @bolt.event("app_mention")
    async def nothing() -> None:
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
    """Answers ("run", url, texts, concurrency) with (latencies in ms, wall seconds)."""
    requests = SlackRequests(SIGNING_SECRET)
    while True:
        command = conn.recv()
        if command is None:
            return
        _, url, texts, concurrency = command
        signed = [requests.app_mention(f"<@{BOT_USER_ID}> {text}") for text in texts]
        conn.send(asyncio.run(_drive(url, signed, concurrency)))


async def _drive(url: str, signed: list[Any], concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    failures = 0
    queue = iter(signed)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def one_at_a_time() -> None:
            nonlocal failures
            for request in queue:
                started = time.perf_counter()
                response = await client.post(url, content=request.body, headers=request.headers)
                latencies.append((time.perf_counter() - started) * 1000)
                failures += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(one_at_a_time() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{failures} of {len(signed)} requests to {url} were not answered 200")
    return latencies, wall


# -- the fake model ----------------------------------------------------------------------------


class SlowModel:
    """Answers `slow-N` turns slowly and everything else at once. Sleeping here, then
    returning a reply with no further first-byte delay, makes `first_token[N]` the moment
    the fake starts writing the stream whose first text delta carries the marker."""

    def __init__(self, first_byte: float, stream_seconds: float, stop: threading.Event) -> None:
        self.first_byte = first_byte
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
        self.stop.wait(self.first_byte)
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def finished_slow_turns(slack: FakeSlackAPI) -> int:
    done = set()
    for call in slack.calls("chat.update") + slack.calls("chat.postMessage"):
        text = str(call.params.get("text", ""))
        found = _SLOW.search(text)
        if found and text.endswith(END):
            done.add(found.group(1))
    return len(done)


def first_slack_text(slack: FakeSlackAPI, first_token: dict[str, float]) -> list[float]:
    """Per slow turn: ms from the model's first text delta to the first Slack call with it."""
    seen: dict[str, float] = {}
    for call in slack.calls():
        if call.method not in ("chat.update", "chat.postMessage"):
            continue
        text = str(call.params.get("text", ""))
        for marker in first_token:
            if marker in text and marker not in seen:
                seen[marker] = call.at
    return [(seen[m] - first_token[m]) * 1000 for m in first_token if m in seen]


def run(args: argparse.Namespace) -> None:
    ctx = mp.get_context("spawn")
    stop = threading.Event()
    model = SlowModel(args.first_byte, args.stream_seconds, stop)
    children: list[Any] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeSlackAPI() as slack,
        FakeAnthropicAPI() as claude,
    ):
        claude.respond_with(model)
        ours_port, bare_port = free_port(), free_port()
        ours = f"http://127.0.0.1:{ours_port}"
        bare = f"http://127.0.0.1:{bare_port}"
        parent_end, child_end = ctx.Pipe()
        children = [
            ctx.Process(target=serve_ours, args=(ours_port, tmp, slack.base_url, claude.base_url)),
            ctx.Process(target=serve_bare, args=(bare_port, slack.base_url)),
            ctx.Process(target=load_worker, args=(child_end,)),
        ]
        try:
            for child in children:
                child.start()
            wait_until_up(ours + "/healthz")
            wait_until_up(bare + "/healthz")

            def load(url: str, texts: list[str], concurrency: int) -> tuple[list[float], float]:
                parent_end.send(("run", url + "/slack/events", texts, concurrency))
                result: tuple[list[float], float] = parent_end.recv()
                return result

            began = time.monotonic()
            for url in (bare, ours):  # warm up: connections, auth.test, first queries
                load(url, [f"warm {i}" for i in range(100)], args.concurrency)
            time.sleep(1.0)

            load(ours, [f"slow-{i:02d}" for i in range(IN_FLIGHT)], IN_FLIGHT)
            deadline = time.monotonic() + 30
            while len(model.arrived) < IN_FLIGHT and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(model.arrived) == IN_FLIGHT, f"only {len(model.arrived)} turns started"

            samples: dict[str, list[float]] = {"bare": [], "ours": []}
            walls: dict[str, float] = {"bare": 0.0, "ours": 0.0}
            in_flight: list[int] = []
            for round_no in range(args.rounds):
                for name, url in (("bare", bare), ("ours", ours)):
                    texts = [f"load {round_no} {name} {i}" for i in range(args.requests)]
                    if name == "ours":
                        in_flight.append(IN_FLIGHT - finished_slow_turns(slack))
                    latencies, wall = load(url, texts, args.concurrency)
                    if name == "ours":
                        in_flight.append(IN_FLIGHT - finished_slow_turns(slack))
                    samples[name].extend(latencies)
                    walls[name] += wall
            measured = time.monotonic()

            deadline = time.monotonic() + 60
            while finished_slow_turns(slack) < IN_FLIGHT and time.monotonic() < deadline:
                time.sleep(0.2)
            lag = first_slack_text(slack, model.first_token)
            finished = finished_slow_turns(slack)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                parent_end.send(None)
            for child in children:
                if child.pid is None:
                    continue  # never started
                if child.is_alive():
                    child.terminate()
                child.join(timeout=10)

    report(args, samples, walls, in_flight, lag, finished, measured - began)


def report(
    args: argparse.Namespace,
    samples: dict[str, list[float]],
    walls: dict[str, float],
    in_flight: list[int],
    lag: list[float],
    finished: int,
    seconds: float,
) -> None:
    n = args.requests * args.rounds
    rows = {
        name: (
            statistics.median(values),
            pct(values, 0.99),
            len(values) / walls[name],
        )
        for name, values in samples.items()
    }
    print(
        f"\n/slack/events ack over loopback HTTP: {n} signed app_mention events per server "
        f"({args.rounds} alternating windows of {args.requests}), {args.concurrency} in flight "
        f"from the load process; ours had {min(in_flight)}-{max(in_flight)} of {IN_FLIGHT} "
        f"slow turns in flight during its windows (model: {args.first_byte:g}s to first "
        f"token, then {args.stream_seconds:g}s of streaming)\n"
    )
    print(f"{'server':<26} {'p50 ms':>8} {'p99 ms':>8} {'events/s':>9}")
    for name, label in (("bare", "bare Bolt + FastAPI"), ("ours", "ours (turn recorded)")):
        p50, p99, rate = rows[name]
        print(f"{label:<26} {p50:>8.2f} {p99:>8.2f} {rate:>9.0f}")
    (b50, b99, brate), (o50, o99, orate) = rows["bare"], rows["ours"]
    print(f"{'ratio ours/bare':<26} {o50 / b50:>7.2f}x {o99 / b99:>7.2f}x {orate / brate:>8.2f}x")
    if lag:
        print(
            f"\nfirst model token -> first text at Slack ({len(lag)} of {IN_FLIGHT} slow "
            f"turns; {finished} finished): p50 {statistics.median(lag):.1f} ms, "
            f"p99 {pct(lag, 0.99):.1f} ms, max {max(lag):.1f} ms"
        )
    print(f"(measured phase: {seconds:.1f}s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=400, help="events per window")
    parser.add_argument("--rounds", type=int, default=2, help="windows per server")
    parser.add_argument("--concurrency", type=int, default=8, help="events in flight")
    parser.add_argument("--first-byte", type=float, default=2.5, help="model s to first token")
    parser.add_argument("--stream-seconds", type=float, default=6.0, help="model s streaming")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
