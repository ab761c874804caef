"""What the skill egress guard adds to one http skill call.

Against one local server, in the same run, one skill call at a time through the real
`HttpSkillExecutor` (templating, request, capped read):

* unguarded: a plain `httpx.AsyncClient` (what skills used before the guard; the baseline);
* guarded, address: `http://127.0.0.1:PORT/...` allowed by `COSMO_SKILL_ALLOW_HOSTS=127.0.0.0/8`
  (the check runs inline: nothing to resolve);
* guarded, name: `http://localhost:PORT/...` allowed as `localhost` (the system resolver runs
  in a worker thread, as for every named host).

Rounds are interleaved so drift on a shared machine hits every variant alike. Prints p50 and
p99 per call, the added p50/p99 against the baseline, and the ratio. Not a test.
Run: `.venv/bin/python bench/skill_guard.py [--calls 400] [--rounds 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from core.schemas.skill import HttpExecutor, SkillSpec
from core.skills.builtins import BuiltinCatalog
from core.skills.egress import SkillEgressGuard, SkillEgressPolicy
from core.skills.factory import SkillFactory
from core.skills.mcp_executor import McpPool
from core.skills.runtime import Skill, SkillContext

CTX = SkillContext("t", "agt_bench", "bench", "ses_bench", "U1", "Ada")


_BODY = b'{"name":"Ada Lovelace","title":"CTO"}'
_ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(_BODY)}\r\n\r\n".encode()
    + _BODY
)


def _serve_forever(sock: socket.socket) -> None:
    """A keep-alive HTTP/1.1 server: each answer is one write (no delayed-ACK stall)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(_ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run() -> None:
        server = await asyncio.start_server(serve, sock=sock)
        await server.serve_forever()

    asyncio.run(run())


def _local_server() -> tuple[BaseProcess, int]:
    """The server in its own process, so it never competes with the client for the GIL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    process = multiprocessing.get_context("fork").Process(
        target=_serve_forever, args=(sock,), daemon=True
    )
    process.start()
    return process, int(sock.getsockname()[1])


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _skill(client: httpx.AsyncClient, url: str) -> Skill:
    spec = SkillSpec(
        name="lookup_contact",
        description="Look up a contact.",
        input_schema={"type": "object", "properties": {"q": {"type": "string"}}},
        executor=HttpExecutor(url=url + "?q={{q}}", method="GET"),
    )
    return SkillFactory(BuiltinCatalog.default(), client, lambda _: None, McpPool()).build(spec)


async def _once(skill: Skill, n: int) -> float:
    started = time.perf_counter()
    result = await skill.execute({"q": f"ada-{n}"}, CTX)
    elapsed = (time.perf_counter() - started) * 1000
    assert not result.is_error, result.content
    return elapsed


async def _check_only(guard: SkillEgressGuard, url: str, calls: int) -> list[float]:
    """The guard alone (parse, resolve, judge): what it adds, without the network's noise."""
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await guard.acheck(url)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def main(calls: int, rounds: int) -> None:
    process, port = _local_server()
    policy = SkillEgressPolicy.build(
        allow_insecure=False,
        allow_hosts="127.0.0.0/8,localhost",
        server_port=1,  # not the bench server's port: that one the guard would refuse
        database_url=None,
    )
    guarded = SkillEgressGuard(policy).http_client()
    plain = httpx.AsyncClient(follow_redirects=False, timeout=30.0)
    variants = {
        "unguarded (baseline)": _skill(plain, f"http://127.0.0.1:{port}/contacts"),
        "guarded, address": _skill(guarded, f"http://127.0.0.1:{port}/contacts"),
        "guarded, name": _skill(guarded, f"http://localhost:{port}/contacts"),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for n in range(20):  # warm: connections, thread pool, resolver caches
        for skill in variants.values():
            await _once(skill, n)
    # Call by call, each variant in turn (rotating who goes first), so the load of a shared
    # machine falls on every variant alike.
    for n in range(calls * rounds):
        shift = n % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(await _once(variants[name], n))
    guard = SkillEgressGuard(policy)
    checks = {
        "check, address": await _check_only(guard, f"http://127.0.0.1:{port}/c?q=1", calls),
        "check, name": await _check_only(guard, f"http://localhost:{port}/c?q=1", calls),
    }
    await guarded.aclose()
    await plain.aclose()
    process.terminate()

    base = samples["unguarded (baseline)"]
    base50, base99 = statistics.median(base), _percentile(base, 99)
    print(f"{calls * rounds} sequential http skill calls per variant, local server")
    print(f"{'variant':<22} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} {'x p50':>6}")
    for name, values in samples.items():
        p50, p99 = statistics.median(values), _percentile(values, 99)
        print(
            f"{name:<22} {p50:>8.3f} {p99:>8.3f} {p50 - base50:>+8.3f} {p99 - base99:>+8.3f} "
            f"{p50 / base50:>6.2f}"
        )
    print(f"the guard's check alone, {calls} calls each (name: system resolver in a thread)")
    for name, values in checks.items():
        p50, p99 = statistics.median(values), _percentile(values, 99)
        print(f"{name:<22} {p50:>8.3f} {p99:>8.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
