"""Keep-alive behind a load balancer, over a real `cosmo serve`.

uvicorn closes an idle keep-alive connection after 5 s unless told otherwise. A proxy whose
upstream idle timeout is longer (60 s is common) reuses such a connection just as the server
closes it, and answers 502. `COSMO_KEEP_ALIVE_SECONDS` (default 75) is handed to uvicorn.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.cosmo_process import cosmo, cosmo_serve, embedded_env

#: uvicorn's own default, which the old `cosmo serve` used.
UVICORN_DEFAULT_KEEP_ALIVE = 5


def _env(data: Path, **extra: str) -> dict[str, str]:
    return embedded_env(data, COSMO_API_TOKEN="keep-alive-token", **extra)


@contextmanager
def _connection(tmp_path: Path, **extra: str) -> Iterator[http.client.HTTPConnection]:
    env = _env(tmp_path / "data", **extra)
    cosmo(env, "db", "upgrade")
    with cosmo_serve(env, args=("--workers", "0")) as base:
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=15)
        try:
            conn.request("GET", "/healthz")
            first = conn.getresponse()
            first.read()
            assert first.status == 200 and not first.will_close
            yield conn
        finally:
            conn.close()


def test_an_idle_connection_outlives_uvicorns_default_so_a_proxy_can_reuse_it(
    tmp_path: Path,
) -> None:
    with _connection(tmp_path) as conn:
        sock = conn.sock
        # Idle past uvicorn's default, as a pooled upstream connection of a proxy would be.
        time.sleep(UVICORN_DEFAULT_KEEP_ALIVE + 1.5)
        conn.request("GET", "/healthz")  # a closed socket raises RemoteDisconnected here
        again = conn.getresponse()
        again.read()
        assert again.status == 200
        assert conn.sock is sock, "the request was sent on a new connection"


def test_the_server_closes_idle_connections_after_cosmo_keep_alive_seconds(
    tmp_path: Path,
) -> None:
    with _connection(tmp_path, COSMO_KEEP_ALIVE_SECONDS="1") as conn:
        assert conn.sock is not None
        conn.sock.settimeout(20)  # a bound on the wait, not a timing claim
        # The server ends the idle connection: the next read sees the end of the stream.
        assert conn.sock.recv(1) == b""
