"""Slack Web API calls per turn, 429s under 50 concurrent turns in one workspace, and
first-token-to-Slack latency: the `chat.update` reply against native streaming.

In this process: our app (the real Bolt app and the job worker, as the Slack end-to-end tests
run it) on a temporary SQLite database, the fake Slack Web API with Slack's per-method tiers
switched on (`FakeSlackAPI.enforce_tiers`: chat.update 50/min, appendStream 100/min, posting
1/s per channel), and the fake Messages API. Each mode answers `--turns` mentions spread over
`--channels` channels of one workspace at once; each answer streams for `--stream-seconds`
(so the edit path edits its message about once a second), then:

* calls/turn: every Web API call the turns made, divided by the turns (chat.* and
  agents.sessions.* separately);
* 429s: the rate-limited answers the fake gave; a failed call is one that still ended in an
  error after its retries (as the app logged it), and a complete reply is a thread whose
  answer reached Slack in full;
* first token to Slack, p50: from the moment the fake model starts writing a turn's stream to
  the first Slack call carrying its text (both clocks in this process), measured on turns run
  one at a time (under the 50-turn load it measures the queue, not the path).

Not a test: the figures depend on the machine. Takes about two minutes.
Run: `.venv/bin/python bench/slack_stream.py [--turns 50] [--channels 10]`.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slack_sdk.errors import SlackApiError

from bot.slack.app import web_client
from bot.worker import build_worker
from core.db import Database, upgrade
from tests.fakes.anthropic_api import RecordedRequest, Reply
from tests.fakes.slack_api import BOT_TOKEN, BOT_USER_ID
from tests.slack_support import SlackApp, portal_of, slack_app, slack_of

CONFIG = """
apiVersion: cosmo/v1
personas: [{name: helper, role: Assistant}]
agents:
  - name: helper
    persona: helper
"""
_MARK = re.compile(r"\[t-(\d+)\]")


class Model:
    """Answers turn N with `[t-N] word...`, streamed over `seconds`; notes when each
    answer's stream starts."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.first_token: dict[str, float] = {}

    def __call__(self, request: RecordedRequest) -> Reply:
        found = _MARK.search(request.last_user_text())
        marker = found.group(0) if found else "[t-?]"
        chunks = 20
        text = f"{marker} " + " ".join(f"word{i:02d}" for i in range(chunks * 2))
        with self.lock:
            self.first_token.setdefault(marker, time.time())
        return Reply.text(text).with_options(
            chunk_size=max(8, len(text) // chunks),
            first_byte_delay=0,
            delta_delay=self.seconds / chunks,
        )


def first_text_latencies(app: SlackApp, model: Model) -> list[float]:
    seen: dict[str, float] = {}
    for call in app.slack.calls():
        if not call.ok or not call.method.startswith("chat."):
            continue
        text = str(call.params.get("text") or call.params.get("markdown_text") or "")
        for marker in model.first_token:
            if marker in text and marker not in seen:
                seen[marker] = call.at
    return [(seen[m] - t) * 1000 for m, t in model.first_token.items() if m in seen]


class SlackFailures(logging.Handler):
    """Counts what the app logged about Slack calls that failed for good (after retries)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, SlackApiError):
            self.count += 1


def run_jobs(app: SlackApp, limit: float = 900.0) -> None:
    """`SlackApp.run_jobs` with room for the old path's minutes of waiting."""
    slack = slack_of(app.client)
    worker = build_worker(app.container, slack)
    portal = portal_of(app.client)
    while True:
        portal.call(slack.runtime.drain)
        ran = portal.call(lambda: worker.run_until_idle(limit_seconds=limit))
        if not ran and not slack.runtime.tasks:
            return


MODES = {
    "before": (False, False),
    "chat.update": (False, True),
    "stream": (True, True),
}
"""name -> (streaming, limiter). `before` is main's client: no shared limiter, the SDK's
429 retry handler (3 retries) per call."""


def run_mode(mode: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    streaming, limited = MODES[mode]
    url = f"sqlite:///{tmp / mode}.db"
    upgrade(url)
    db = Database.from_url(url)
    settings = {
        "COSMO_SLACK_STREAMING": streaming,
        "COSMO_WORKER_CONCURRENCY": args.turns,
        "COSMO_AGENT_CONCURRENCY": args.turns,
    }
    data = tmp / f"data-{mode}"
    with slack_app(db, data, CONFIG, **settings) as app:
        if not limited:
            runtime = slack_of(app.client).runtime
            runtime.clients.default_client = web_client(BOT_TOKEN, app.slack.base_url)
        model = Model(args.stream_seconds)
        app.claude.respond_with(model)
        # Latency first, one turn at a time, tiers off.
        for i in range(args.latency_turns):
            request = app.requests.app_mention(f"<@{BOT_USER_ID}> [t-{1000 + i}]")
            app.send(request)
            app.run_jobs()
        latency = first_text_latencies(app, model)
        app.slack.reset()
        model.first_token.clear()

        app.slack.enforce_tiers()
        failures = SlackFailures()
        logging.getLogger("cosmo").addHandler(failures)
        started = time.monotonic()
        for i in range(args.turns):
            channel = f"C0BENCH{i % args.channels:03d}"
            app.send(app.requests.app_mention(f"<@{BOT_USER_ID}> [t-{i}]", channel=channel))
        run_jobs(app)
        wall = time.monotonic() - started
        calls = [c for c in app.slack.calls() if c.method not in ("auth.test", "users.info")]
        methods = Counter(c.method for c in calls)
        chat = sum(n for m, n in methods.items() if m.startswith("chat."))
        status = sum(n for m, n in methods.items() if m.startswith(("agents.", "assistant.")))
        logging.getLogger("cosmo").removeHandler(failures)
        failed = [c for c in calls if not c.ok and c.status != 429]
        replies = [
            m
            for channel in {f"C0BENCH{i % args.channels:03d}" for i in range(args.turns)}
            for m in app.slack.messages_in(channel)
            if m.user == BOT_USER_ID and "word39" in m.text
        ]
        return {
            "mode": mode,
            "wall_s": wall,
            "chat_per_turn": chat / args.turns,
            "status_per_turn": status / args.turns,
            "rate_limited": len(app.slack.rate_limited()),
            "rate_limited_by_method": Counter(c.method for c in app.slack.rate_limited()),
            "failed": len(failed) + failures.count,
            "complete_replies": len(replies),
            "methods": dict(methods),
            "first_token_p50_ms": statistics.median(latency) if latency else float("nan"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--stream-seconds", type=float, default=3.0)
    parser.add_argument("--latency-turns", type=int, default=15)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_mode(mode, args, Path(tmp)) for mode in args.modes]
    print(
        f"{args.turns} concurrent turns over {args.channels} channels of one workspace, "
        f"answers streamed over {args.stream_seconds:.0f} s, Slack's tiers on:"
    )
    for r in results:
        print(
            f"  {r['mode']:>11}: chat.* calls/turn {r['chat_per_turn']:.2f} "
            f"(+ {r['status_per_turn']:.2f} status), 429s {r['rate_limited']} "
            f"{dict(r['rate_limited_by_method'])}, failed calls {r['failed']}, "
            f"complete replies {r['complete_replies']}/{args.turns}, "
            f"wall {r['wall_s']:.1f} s; first token to Slack p50 "
            f"{r['first_token_p50_ms']:.0f} ms ({args.latency_turns} turns, one at a time)"
        )
        print(f"               calls: {r['methods']}")


if __name__ == "__main__":
    main()
