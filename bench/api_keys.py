"""What a tenant key costs per request, against the root key, in the same run.

A tenant key is looked up on every request (one primary-key read, one SHA-256), so that
revoking it takes effect at once; the root key is a constant-time compare in memory. Measured
on a temporary SQLite database through the real app (`create_app`, Starlette's TestClient), on
`GET /api/v1/personas` with five personas, alternating rounds root, key, root, key:

* per request: median and p99 latency for each, and the ratio key/root;
* the lookup alone: `ApiKeys.authenticate` median and p99.

Not a test: the figures depend on the machine. Takes about half a minute.
Run: `.venv/bin/python bench/api_keys.py [--requests 1000]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient

from bench._support import migrated_settings, percentiles
from bot.server import create_app
from core.keys.roles import Role
from core.keys.service import KeySpec
from core.wiring import build_container

ROOT = "bench-root-token"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000, help="per kind of key")
    args = parser.parse_args()
    with migrated_settings(
        "cosmo-bench-keys-", COSMO_API_TOKEN=ROOT, COSMO_SECRET_KEY="bench"
    ) as settings:
        container = build_container(settings)
        for n in range(5):
            container.personas.create("default", _persona(n))
        for n in range(50):  # a tenant with many keys; the lookup is by primary key
            container.keys.create(
                "default", KeySpec(name=f"k{n}", role=Role.READER), created_by="b"
            )
        _, key = container.keys.create(
            "default", KeySpec(name="bench", role=Role.READER), created_by="b"
        )
        app = create_app(container=container, background=False)
        timings: dict[str, list[float]] = {"root": [], "key": []}
        with TestClient(app) as client:
            headers = {"root": ROOT, "key": key}
            for label in headers:  # warm up
                for _ in range(50):
                    client.get(
                        "/api/v1/personas", headers={"Authorization": f"Bearer {headers[label]}"}
                    )
            rounds = 4
            for _ in range(rounds):
                for label, token in headers.items():
                    auth = {"Authorization": f"Bearer {token}"}
                    for _ in range(args.requests // rounds):
                        start = time.perf_counter()
                        r = client.get("/api/v1/personas", headers=auth)
                        timings[label].append(time.perf_counter() - start)
                        assert r.status_code == 200, r.text
            lookups = []
            for _ in range(args.requests):
                start = time.perf_counter()
                assert container.keys.authenticate(key) is not None
                lookups.append(time.perf_counter() - start)
        container.close()
    root_p50, root_p99 = percentiles(timings["root"])
    key_p50, key_p99 = percentiles(timings["key"])
    look_p50, look_p99 = percentiles(lookups)
    n = len(timings["root"])
    print(f"GET /api/v1/personas, {n} requests each (SQLite, TestClient)")
    print(f"  root key   p50 {root_p50 * 1000:.2f} ms  p99 {root_p99 * 1000:.2f} ms")
    print(f"  tenant key p50 {key_p50 * 1000:.2f} ms  p99 {key_p99 * 1000:.2f} ms")
    print(f"  ratio key/root p50 {key_p50 / root_p50:.2f}  p99 {key_p99 / root_p99:.2f}")
    print(f"ApiKeys.authenticate alone: p50 {look_p50 * 1000:.3f} ms  p99 {look_p99 * 1000:.3f} ms")


def _persona(n: int):
    from core.schemas.persona import PersonaSpec

    return PersonaSpec(name=f"p{n}", role="Sales assistant")


if __name__ == "__main__":
    main()
