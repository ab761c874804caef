"""What skills may reach: the webhook address guard, plus the operator's exceptions.

A REST admin writes a skill's URL, the model fills its path, and the server sends the
request from inside our network. So every http and mcp-http skill request goes through
`core.webhooks.url_guard` (resolve; refuse loopback, private, link-local, metadata, CGNAT,
IPv4-in-IPv6 and numeric forms) and connects to the address that passed, never to a
second DNS answer. Redirects are not followed by our clients; the MCP SDK follows only
same-origin redirects, and each hop comes back through this guard.

Only the operator widens that, in the environment: `COSMO_SKILL_ALLOW_HOSTS` names
internal hosts and networks (an on-prem CRM), and `COSMO_WEBHOOK_ALLOW_INSECURE` is the
local-development switch shared with webhooks. Neither opens the *protected* endpoints:
this server's own port on any local address (a skill calling our REST API with a token
could approve its own outputs) and the database. Plain http is allowed, as skills have
always allowed it; the address, not the scheme, is what keeps internal systems internal.

`GuardedTransport` (httpx, for http skills) and `GuardedTransport2` (httpx2, which the MCP
SDK speaks) run the check per request. They keep one connection pool per host name: a
pool is keyed by address, and a TLS connection verified for one name must not carry a
request for another name that happens to share the address.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, cast

import httpx
import httpx2

from core.concurrency import run_sync
from core.errors import UnsafeWebhookUrl
from core.skills.runtime import SkillFailed
from core.tls import tls_context
from core.webhooks.url_guard import (
    IPAddress,
    ResolvedTarget,
    Resolver,
    Wording,
    check_webhook_url,
    system_resolver,
)

log = logging.getLogger("cosmo.skills.egress")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SKILL = Wording(
    url="skill URL",
    rule="skills may only reach public addresses",
    insecure_hint=(
        "(an operator can allow an internal host or network with COSMO_SKILL_ALLOW_HOSTS)"
    ),
    credentials_hint="put credentials in secret_headers instead",
)
_NEVER = (
    "skills may never reach it, whatever COSMO_SKILL_ALLOW_HOSTS or "
    "COSMO_WEBHOOK_ALLOW_INSECURE say"
)


class SkillDestinationRefused(SkillFailed):
    """A skill request the egress guard refused before connecting; the message says why."""

    title = "Skill destination refused"


# --- the operator's policy -----------------------------------------------------------------


def parse_allow_hosts(text: str) -> tuple[tuple[str, ...], tuple[IPNetwork, ...]]:
    """`COSMO_SKILL_ALLOW_HOSTS`: host names (`crm.corp`, `*.corp.example`) and networks
    (`10.20.0.0/16`, `10.20.0.7`, `fd00::/8`), comma-separated. Raises `ValueError`
    naming the entry that is neither."""
    names: list[str] = []
    networks: list[IPNetwork] = []
    for raw in text.split(","):
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        bare = entry[2:] if entry.startswith("*.") else entry
        labels = bare.split(".")
        if not all(label and all(c.isalnum() or c in "-_" for c in label) for label in labels):
            raise ValueError(
                f"COSMO_SKILL_ALLOW_HOSTS entry {raw.strip()!r} is neither a host name "
                "(crm.corp, *.corp.example) nor an address or network (10.20.0.0/16)"
            )
        names.append(entry)
    return tuple(names), tuple(networks)


@dataclass(frozen=True)
class ProtectedEndpoint:
    """A host:port no skill may reach. `local` also covers every address of this machine
    (a server listening on 0.0.0.0 answers on all of them); `host` is matched by name and
    by the addresses it resolves to."""

    what: str
    port: int
    host: str | None = None
    local: bool = False


@dataclass(frozen=True)
class SkillEgressPolicy:
    """What the operator lets skills reach (built from `Settings` by the wiring)."""

    allow_insecure: bool = False
    allow_names: tuple[str, ...] = ()
    allow_networks: tuple[IPNetwork, ...] = ()
    protected: tuple[ProtectedEndpoint, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        allow_insecure: bool,
        allow_hosts: str,
        server_port: int,
        database_url: str | None,
        public_url: str | None = None,
    ) -> SkillEgressPolicy:
        names, networks = parse_allow_hosts(allow_hosts)
        protected = [ProtectedEndpoint("this Cosmo server's own port", server_port, local=True)]
        db = database_endpoint(database_url)
        if db is not None:
            protected.append(db)
        if public_url:
            public = httpx.URL(public_url)
            if public.host:
                port = public.port or (443 if public.scheme == "https" else 80)
                protected.append(ProtectedEndpoint("this server's public URL", port, public.host))
        return cls(allow_insecure, names, networks, tuple(protected))

    def allows(self, host: str, ip: IPAddress | None) -> bool:
        """Whether the operator allowed `ip` (or, for None, any address) for `host`."""
        name = host.lower().rstrip(".")
        for allowed in self.allow_names:
            if name == allowed or (allowed.startswith("*.") and name.endswith(allowed[1:])):
                return True
        if ip is None:
            return False
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c in net for c in candidates for net in self.allow_networks)


def database_endpoint(database_url: str | None) -> ProtectedEndpoint | None:
    """The database's host:port from `DATABASE_URL`; None for SQLite or a Unix socket."""
    if not database_url:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(database_url)
    except ArgumentError:
        return None
    if not url.host:
        return None
    backend = url.get_backend_name()
    port = url.port or {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}.get(backend)
    if port is None:
        return None
    return ProtectedEndpoint("the database", port, url.host.strip("[]").lower())


def is_local_address(ip: IPAddress) -> bool:
    """Whether `ip` belongs to this machine: only then can a socket bind to it."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    family = socket.AF_INET6 if isinstance(ip, ipaddress.IPv6Address) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True


# --- the check -----------------------------------------------------------------------------


@dataclass
class SkillEgressGuard:
    """Checks skill URLs against the policy; `resolver` and `is_local` are injectable so
    tests need neither DNS nor particular interfaces."""

    policy: SkillEgressPolicy
    resolver: Resolver = system_resolver
    is_local: Callable[[IPAddress], bool] = is_local_address
    _protected_addresses: dict[str, frozenset[IPAddress]] = field(default_factory=dict)

    def check(self, url: str) -> ResolvedTarget:
        """The resolved target to connect to, or `SkillDestinationRefused` (blocking: DNS)."""
        try:
            target = check_webhook_url(
                url,
                allow_insecure=self.policy.allow_insecure,
                resolver=self.resolver,
                allow_http=True,
                exempt=self.policy.allows,
                wording=SKILL,
            )
        except UnsafeWebhookUrl as exc:
            raise SkillDestinationRefused(exc.detail) from None
        self._refuse_protected(target)
        return target

    async def acheck(self, url: str) -> ResolvedTarget:
        """`check` off the event loop, unless the host is an address (nothing to resolve)."""
        host = httpx.URL(url).host
        if _is_address(host):
            return self.check(url)
        return await run_sync(self.check, url)

    def _refuse_protected(self, target: ResolvedTarget) -> None:
        name = target.host.lower().rstrip(".")
        addresses = [ipaddress.ip_address(a) for a in target.addresses]
        for endpoint in self.policy.protected:
            if endpoint.port != target.port:
                continue
            known = self._addresses_of(endpoint)
            local = endpoint.local or any(self.is_local(ip) for ip in known)
            for ip in addresses:
                if name == endpoint.host or ip in known or (local and self.is_local(ip)):
                    shown = f"{target.host}:{target.port}"
                    if not _is_address(target.host):
                        shown += f" ({f'[{ip}]' if ip.version == 6 else ip}:{target.port})"
                    raise SkillDestinationRefused(f"{shown} is {endpoint.what}; {_NEVER}")

    def _addresses_of(self, endpoint: ProtectedEndpoint) -> frozenset[IPAddress]:
        """What a protected host resolves to; looked up once (the operator's own DNS)."""
        if endpoint.host is None:
            return frozenset()
        if _is_address(endpoint.host):
            return frozenset({ipaddress.ip_address(endpoint.host)})
        cached = self._protected_addresses.get(endpoint.host)
        if cached is not None:
            return cached
        try:
            found = frozenset(
                ipaddress.ip_address(a) for a in self.resolver(endpoint.host, endpoint.port)
            )
        except (OSError, UnicodeError, ValueError):
            return frozenset()  # matched by name only until it resolves
        mapped = {ip.ipv4_mapped for ip in found if ip.version == 6 and ip.ipv4_mapped}
        found = found | {ip for ip in mapped if ip is not None}
        self._protected_addresses[endpoint.host] = found
        return found

    # --- clients ---------------------------------------------------------------------------

    def http_client(self, *, timeout: float = 30.0) -> httpx.AsyncClient:
        """The client http skills send with. No environment proxies: a proxy would make
        the connection the guard checks (and it does not know about them)."""
        return httpx.AsyncClient(
            transport=GuardedTransport(self),
            follow_redirects=False,
            timeout=timeout,
            trust_env=False,
        )

    def mcp_http_client(self) -> httpx2.AsyncClient:
        """A client for one MCP streamable-HTTP connection (the SDK's default timeouts)."""
        return httpx2.AsyncClient(
            transport=GuardedTransport2(self),
            follow_redirects=False,
            timeout=httpx2.Timeout(30.0, read=300.0),
            trust_env=False,
        )


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --- transports ----------------------------------------------------------------------------


class _Router:
    """Checks a request's URL, then sends it to a checked address of its host, with the
    original Host header and TLS name. Written once for httpx and httpx2 (`lib`)."""

    def __init__(
        self, guard: SkillEgressGuard, lib: ModuleType, transports: Callable[[], Any] | None
    ) -> None:
        self.guard = guard
        self.lib = lib
        self.transports = transports or functools.partial(
            lib.AsyncHTTPTransport, verify=tls_context()
        )
        self.pools: dict[tuple[str, str, int], Any] = {}

    async def send(self, request: Any) -> Any:
        url = request.url
        try:
            target = await self.guard.acheck(str(url))
        except SkillDestinationRefused as exc:
            # Scheme, host and port only: the path and query may carry arguments or tokens.
            log.warning(
                "skill request to %s://%s refused: %s", url.scheme, url.netloc.decode(), exc.detail
            )
            raise
        key = (target.scheme, target.host, target.port)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = self.transports()
        extensions = dict(request.extensions)
        if target.scheme == "https" and not _is_address(target.host):
            extensions["sni_hostname"] = target.host
        last: Exception | None = None
        for address in target.addresses:
            routed = self.lib.Request(
                request.method,
                url.copy_with(host=address),
                headers=request.headers,
                stream=request.stream,
                extensions=extensions,
            )
            try:
                return await pool.handle_async_request(routed)
            except self.lib.ConnectError as exc:
                last = exc  # nothing was sent: the next checked address may answer
        assert last is not None  # a checked target always has an address
        raise last

    async def aclose(self) -> None:
        pools, self.pools = list(self.pools.values()), {}
        for pool in pools:
            await pool.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """The httpx transport of http skills: every request through `SkillEgressGuard`.
    `transports` makes the per-host inner transport (tests pass a `MockTransport`)."""

    def __init__(
        self,
        guard: SkillEgressGuard,
        transports: Callable[[], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        self._router = _Router(guard, httpx, transports)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return cast(httpx.Response, await self._router.send(request))

    async def aclose(self) -> None:
        await self._router.aclose()


class GuardedTransport2(httpx2.AsyncBaseTransport):
    """The same for httpx2, which the MCP SDK's streamable-HTTP client speaks."""

    def __init__(
        self,
        guard: SkillEgressGuard,
        transports: Callable[[], httpx2.AsyncBaseTransport] | None = None,
    ) -> None:
        self._router = _Router(guard, httpx2, transports)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return cast(httpx2.Response, await self._router.send(request))

    async def aclose(self) -> None:
        await self._router.aclose()
