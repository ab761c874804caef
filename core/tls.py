"""The process's one TLS client context, shared by every HTTPS client Cosmo builds.

Left to itself httpx builds a context for each client and each connection pool, loading
the whole CA bundle every time: 25-28 ms of CPU on our 2-core machine, paid by every
container (the webhook and Claude clients), every host an http skill first reaches and
every file download from Slack. A context holds only what verification needs and is safe
to share between clients and threads, so it is built once, from the same trust httpx would
use: `SSL_CERT_FILE` or `SSL_CERT_DIR` when the operator sets one, else certifi's bundle.
A change to those variables (tests set them) builds a new one.

httpcore sets the context's ALPN to HTTP/1.1 on each connection; every client here speaks
HTTP/1.1 only, so sharing it changes nothing there.
"""

from __future__ import annotations

import os
import ssl
from functools import cache


def tls_context() -> ssl.SSLContext:
    """The shared verifying context for the trust the environment names now."""
    return _context(os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None)


@cache
def _context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    if capath:
        return ssl.create_default_context(capath=capath)
    import certifi  # httpx's own dependency: the bundle it would have loaded

    return ssl.create_default_context(cafile=certifi.where())
