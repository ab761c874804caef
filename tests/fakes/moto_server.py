"""A single-threaded moto server (S3 + DynamoDB over real HTTP) in a subprocess.

Why single-threaded: moto's in-process mock and its threaded server apply conditional
writes without a lock, so under concurrency several "first" writers can win and a race
test would blame our code for moto's race. One request at a time makes moto
linearizable; the code under test still sends real `ConditionExpression`s over HTTP.

    with MotoServer() as server:
        s3 = server.client("s3")

The child binds port 0 itself and prints the port it got (no free-port race), and exits
when its stdin closes, so it never outlives the test process, even after a `kill -9`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class MotoServer:
    """Start with `start()` (or `with`), stop with `stop()`; `reset()` forgets all state."""

    def __init__(self, host: str = "127.0.0.1", start_timeout: float = 30.0) -> None:
        self.host = host
        self.start_timeout = start_timeout
        self.port: int | None = None
        self._proc: subprocess.Popen[str] | None = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the moto server is not running")
        return f"http://{self.host}:{self.port}"

    def start(self) -> MotoServer:
        self._proc = subprocess.Popen(
            [sys.executable, "-u", __file__, self.host],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # the child prints its port once it listens
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"moto server did not start (said {line!r})")
        self.port = int(line)
        deadline = time.monotonic() + self.start_timeout
        while True:  # listening already; wait until moto answers, too
            try:
                httpx.get(f"{self.endpoint_url}/moto-api/data.json", timeout=2.0)
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the child's watchdog exits on EOF
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self.port = None

    def reset(self) -> None:
        """Forget every bucket, object and table (moto's own reset endpoint)."""
        httpx.post(f"{self.endpoint_url}/moto-api/reset", timeout=10.0).raise_for_status()

    def client(self, service: str, **config: Any) -> Any:
        """A boto3 client for this server; `config` goes to botocore's `Config`."""
        import boto3
        from botocore.config import Config

        if service == "s3":
            config.setdefault("signature_version", "s3v4")
            config.setdefault("s3", {"addressing_style": "path"})
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            config=Config(**config),
            **CREDENTIALS,
        )

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(host: str) -> None:
    """Child process: serve moto on an ephemeral port, one request at a time."""
    import os
    import threading

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    def exit_when_parent_goes() -> None:
        sys.stdin.read()
        os._exit(0)

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, 0, app, threaded=False, request_handler=MotoRequestHandler)
    threading.Thread(target=exit_when_parent_goes, daemon=True).start()
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1")
