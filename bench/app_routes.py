"""What building the app and routing a request cost, against FastAPI's `include_router`, in
the same run.

`create_app` adds the routers' routes to the app as they are (`bot/api/routes/__init__.py`);
the baseline is the app `create_app` builds with the same routers added by `include_router`
instead, which FastAPI (0.165) wraps so that each app builds every route's context again on
its first request and walks the included routers on every request. Both on one container
over a temporary SQLite database, through Starlette's TestClient, alternating ours,
baseline, ours, baseline:

* an app's first request: `create_app` (or the baseline's build), then `GET /healthz`;
* routing: `GET /api/v1/jobs/{id}` without a key (the 401 answers before any store is read,
  so what differs is finding the route: the jobs routes come late in the list).

Median and p99 of each, and the ratio ours/baseline.

Not a test: the figures depend on the machine. Takes about half a minute.
Run: `.venv/bin/python bench/app_routes.py [--apps 30] [--requests 2000]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi import FastAPI
from fastapi.testclient import TestClient

from bench._support import migrated_settings, percentiles
from bot.server import create_app
from bot.server.app import ROUTERS
from core.wiring import Container, build_container


def included(container: Container) -> FastAPI:
    """The baseline: our app with the same routers added by FastAPI's `include_router`
    instead (everything else, middleware included, as `create_app` builds it)."""
    app = ours(container)
    shared = {id(route) for router in ROUTERS for route in router.routes}
    app.router.routes[:] = [r for r in app.router.routes if id(r) not in shared]
    for router in ROUTERS:
        app.include_router(router)
    return app


def ours(container: Container) -> FastAPI:
    return create_app(container=container, background=False)


def first_request(build: Callable[[Container], FastAPI], container: Container) -> float:
    started = time.perf_counter()
    app = build(container)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        return (time.perf_counter() - started) * 1000


def routed(build: Callable[[Container], FastAPI], container: Container, n: int) -> list[float]:
    with TestClient(build(container)) as client:
        client.get("/healthz")
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            status = client.get("/api/v1/jobs/job_123").status_code
            samples.append((time.perf_counter() - started) * 1000)
            assert status == 401, status
        return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--apps", type=int, default=30, help="apps built per kind")
    parser.add_argument("--requests", type=int, default=2000, help="routed requests per kind")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    kinds = {"ours": ours, "include_router": included}
    firsts: dict[str, list[float]] = {k: [] for k in kinds}
    routes: dict[str, list[float]] = {k: [] for k in kinds}
    with migrated_settings("cosmo-bench-routes-", COSMO_API_TOKEN="bench") as settings:
        container = build_container(settings)
        try:
            for build in kinds.values():  # warm up: imports, the first TestClient
                first_request(build, container)
            for _ in range(args.rounds):
                for name, build in kinds.items():
                    for _ in range(args.apps // args.rounds):
                        firsts[name].append(first_request(build, container))
                    routes[name] += routed(build, container, args.requests // args.rounds)
        finally:
            container.close()

    print(f"{len(ROUTERS)} routers; {args.apps} apps and {args.requests} requests per kind")
    print(f"{'':16} {'first request p50':>18} {'p99':>8} {'routed p50':>11} {'p99':>8}")
    for name in kinds:
        f50, f99 = percentiles(firsts[name])
        r50, r99 = percentiles(routes[name])
        print(f"{name:16} {f50:15.1f} ms {f99:5.1f} ms {r50:8.3f} ms {r99:5.3f} ms")
    ratio_first = statistics.median(firsts["ours"]) / statistics.median(firsts["include_router"])
    ratio_route = statistics.median(routes["ours"]) / statistics.median(routes["include_router"])
    print(f"ours/include_router: first request {ratio_first:.2f}x, routed {ratio_route:.2f}x")


if __name__ == "__main__":
    main()
