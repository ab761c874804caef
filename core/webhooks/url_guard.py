"""SSRF protection for webhook URLs, and for skill requests (`core.skills.egress`).

Agent authors type webhook URLs, and the server then POSTs to them from inside our
network. Without a guard, a URL is a way to reach the cloud metadata service, the
database, or anything else only the server can see. So a URL must be https and every
address its host resolves to must be public.

The check runs when a URL is saved and again before each send, because DNS answers
change. `check_webhook_url` returns the addresses it judged so the sender connects to
exactly those (DNS rebinding would otherwise swap in a private address between the
check and the connection). Addresses are judged after resolution, never as strings:
`0177.0.0.1`, `2130706433` and `0x7f.1` all reach 127.0.0.1.

IPv6 can carry an IPv4 address inside it (mapped, compatible, NAT64, 6to4, Teredo);
those are unwrapped and the IPv4 address is judged too, since that is where the
packets end up.

Skills reach outside through the same guard, with their own wording (`Wording`), plain
http allowed (`allow_http`), and the operator's exceptions (`exempt`): an address the
operator allowed for a host is not judged. Everything else is shared, so a form this
module learns to refuse is refused for webhooks and skills alike.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import SplitResult, urlsplit, urlunsplit

from core.errors import UnsafeWebhookUrl

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Matches the column the URL is stored in.
MAX_URL_LENGTH = 2_000

_DEFAULT_PORTS = {"https": 443, "http": 80}
_HOST_RE = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
# WHATWG URL parsing (and getaddrinfo) treats a host whose last label is a number as an
# IPv4 address, in octal, hex or shortened forms.
_NUMERIC_LABEL_RE = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")


@dataclass(frozen=True)
class Wording:
    """How refusals name what is checked, so each caller's messages say what they mean."""

    url: str = "webhook URL"
    rule: str = "webhooks may only be sent to public addresses"
    insecure_hint: str = "(allowed only when insecure webhooks are enabled for local development)"
    credentials_hint: str = "authenticate with the webhook signature instead"


WEBHOOK = Wording()

Exemption = Callable[[str, "IPAddress | None"], bool]
"""(host, address) -> True when the operator allowed that address for that host (an
address of None asks about the host name alone). Exempt addresses are not judged."""


class Resolver(Protocol):
    """Turns a host name into IP address strings; injected so tests need no DNS."""

    def __call__(self, host: str, port: int, /) -> Sequence[str]: ...


@dataclass(frozen=True)
class WebhookUrl:
    """A webhook URL that passed every check that needs no DNS.

    `host` is ASCII (IDNA-encoded) and unbracketed; `target` is the path and query to
    request, as the fragment never leaves the client.
    """

    url: str
    scheme: str
    host: str
    port: int
    target: str

    @property
    def host_header(self) -> str:
        """The Host header (and TLS server name, without port) when connecting by address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


@dataclass(frozen=True)
class ResolvedTarget(WebhookUrl):
    """A URL plus the addresses that were judged safe; connect to these and nothing else."""

    addresses: tuple[str, ...]


def system_resolver(host: str, port: int, /) -> list[str]:
    """The addresses the operating system would connect to (blocking: DNS, hosts file...)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]


def check_webhook_url_syntax(
    url: str,
    *,
    allow_insecure: bool,
    allow_http: bool | None = None,
    exempt: Exemption | None = None,
    wording: Wording = WEBHOOK,
) -> WebhookUrl:
    """Everything `check_webhook_url` checks except DNS, for validating config offline.

    IP literals are judged here already; host names are only judged once resolved.
    `allow_http` defaults to `allow_insecure`.
    """
    w = wording
    if allow_http is None:
        allow_http = allow_insecure
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl(f"{w.url} is longer than {MAX_URL_LENGTH} characters")
    # URL parsers disagree about whitespace, control characters and backslashes (Python
    # silently drops tabs; browsers read "\" as "/"): refuse rather than guess which
    # host the HTTP client will pick.
    if any(ch == " " or ch == "\\" or not ch.isprintable() for ch in url):
        raise UnsafeWebhookUrl(f"{w.url} contains whitespace, a backslash or a control character")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UnsafeWebhookUrl(f"{w.url} is not a valid URL: {exc}") from None

    scheme = parts.scheme.lower()
    if scheme == "http" and not allow_http:
        raise UnsafeWebhookUrl(f"{w.url} must use https, not http {w.insecure_hint}")
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeWebhookUrl(f"{w.url} must be an absolute https:// URL")
    if not parts.netloc:
        raise UnsafeWebhookUrl(f"{w.url} has no host")
    if "@" in parts.netloc:
        # Never echo the URL here: the part before "@" is someone's password.
        raise UnsafeWebhookUrl(
            f"{w.url} must not contain credentials (user:password@); {w.credentials_hint}"
        )

    host, literal = _parse_host(parts, w)
    try:
        explicit_port = parts.port
    except ValueError:
        raise UnsafeWebhookUrl(f"{w.url} has an invalid port") from None
    if explicit_port == 0:
        raise UnsafeWebhookUrl(f"{w.url} has an invalid port (0)")
    port = _DEFAULT_PORTS[scheme] if explicit_port is None else explicit_port

    if literal is not None:
        if exempt is None or not exempt(host, literal):
            _refuse_if_unsafe(literal, f"{w.url} points at {literal}", allow_insecure, w)
    elif (
        not allow_insecure
        and (host.rstrip(".") == "localhost" or host.rstrip(".").endswith(".localhost"))
        and (exempt is None or not exempt(host, None))
    ):
        # RFC 6761: these names always mean loopback; say so without waiting for DNS.
        raise UnsafeWebhookUrl(
            f"{host} always means this machine (loopback); {w.rule} {w.insecure_hint}"
        )

    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WebhookUrl(
        url=urlunsplit((scheme, parts.netloc, parts.path, parts.query, "")),
        scheme=scheme,
        host=host,
        port=port,
        target=target,
    )


def check_webhook_url(
    url: str,
    *,
    allow_insecure: bool,
    resolver: Resolver | None = None,
    allow_http: bool | None = None,
    exempt: Exemption | None = None,
    wording: Wording = WEBHOOK,
) -> ResolvedTarget:
    """Refuse `url` unless it is https and every address its host resolves to is public.

    `allow_insecure` (local development and tests only) also permits http, loopback and
    private addresses; cloud metadata, link-local, multicast and the like stay refused.
    The default resolver blocks, so async callers should run this in a worker thread.
    """
    parsed = check_webhook_url_syntax(
        url, allow_insecure=allow_insecure, allow_http=allow_http, exempt=exempt, wording=wording
    )
    literal = _ip_literal(parsed.host)
    if literal is not None:
        judged = [literal]  # already judged by the syntax check
    else:
        judged = []
        for ip in _resolve(parsed.host, parsed.port, resolver or system_resolver):
            if exempt is None or not exempt(parsed.host, ip):
                _refuse_if_unsafe(ip, f"{parsed.host} resolves to {ip}", allow_insecure, wording)
            judged.append(ip)
    # An IPv4-mapped address is its IPv4 address; connecting by the IPv4 form also works
    # on sockets that are IPv6-only.
    addresses = [
        str(ip.ipv4_mapped)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None
        else str(ip)
        for ip in judged
    ]
    return ResolvedTarget(
        url=parsed.url,
        scheme=parsed.scheme,
        host=parsed.host,
        port=parsed.port,
        target=parsed.target,
        addresses=tuple(dict.fromkeys(addresses)),
    )


def _parse_host(parts: SplitResult, w: Wording) -> tuple[str, IPAddress | None]:
    """The ASCII host name and, when the host is an IP literal, its address."""
    hostname = parts.hostname
    if not hostname:
        raise UnsafeWebhookUrl(f"{w.url} has no host")
    if parts.netloc.rpartition("@")[2].startswith("["):
        try:
            return hostname, ipaddress.IPv6Address(hostname.replace("%25", "%", 1))
        except ValueError:
            raise UnsafeWebhookUrl(f"{w.url} host [{hostname}] is not an IPv6 address") from None
    try:
        host = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UnsafeWebhookUrl(f"{w.url} host {hostname!r} is not a valid host name") from None
    if not _HOST_RE.fullmatch(host):
        raise UnsafeWebhookUrl(f"{w.url} host {hostname!r} is not a valid host name")
    bare = host.rstrip(".")
    if _NUMERIC_LABEL_RE.fullmatch(bare.rpartition(".")[2]):
        try:
            return bare, ipaddress.IPv4Address(bare)
        except ValueError:
            raise UnsafeWebhookUrl(
                f"{w.url} host {hostname!r} is an IPv4 address in a non-standard form "
                "(octal, hex or shortened); write it as four decimal numbers"
            ) from None
    return host, None


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    try:
        answers = list(resolver(host, port))
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UnsafeWebhookUrl(f"could not resolve {host}: {reason}") from None
    if not answers:
        raise UnsafeWebhookUrl(f"could not resolve {host}: no addresses")
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            addresses.append(ipaddress.ip_address(answer))
        except ValueError:
            raise UnsafeWebhookUrl(
                f"could not resolve {host}: the resolver returned {answer!r}, not an IP address"
            ) from None
    return addresses


def _refuse_if_unsafe(ip: IPAddress, subject: str, allow_insecure: bool, w: Wording) -> None:
    verdict = _judge(ip)
    if verdict is None or (allow_insecure and not verdict.always):
        return
    hint = "" if verdict.always else f" {w.insecure_hint}"
    raise UnsafeWebhookUrl(f"{subject}, {verdict.reason}; {w.rule}{hint}")


# --- Judging one address ------------------------------------------------------------


@dataclass(frozen=True)
class _Verdict:
    reason: str
    #: Refused even with allow_insecure: nothing a developer needs lives there.
    always: bool


@dataclass(frozen=True)
class _Rule:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    reason: str
    always: bool = True


def _rules(*rules: tuple[str, str] | tuple[str, str, bool]) -> tuple[_Rule, ...]:
    return tuple(_Rule(ipaddress.ip_network(r[0]), *r[1:]) for r in rules)


_METADATA = "the cloud metadata address"
# Ordered: the first match names the address, so specific entries come first. The
# lists are explicit rather than left to `ipaddress.is_global`, whose answers differ
# between Python patch releases and miss some ranges (CGNAT is neither private nor global).
_IPV4_RULES = _rules(
    ("169.254.169.254/32", _METADATA),
    ("169.254.170.2/32", "the AWS ECS task metadata address"),
    ("100.100.100.200/32", "the Alibaba Cloud metadata address"),
    ("192.0.0.192/32", "the Oracle Cloud metadata address"),
    ("168.63.129.16/32", "the Azure platform (WireServer) address"),
    ("0.0.0.0/32", "the unspecified address"),
    ("0.0.0.0/8", "a 'this network' address (0.0.0.0/8)"),
    ("127.0.0.0/8", "a loopback address", False),
    ("10.0.0.0/8", "a private address", False),
    ("172.16.0.0/12", "a private address", False),
    ("192.168.0.0/16", "a private address", False),
    ("100.64.0.0/10", "a carrier-grade NAT (shared) address"),
    ("169.254.0.0/16", "a link-local address"),
    ("192.0.0.0/24", "an IETF protocol assignment address"),
    ("192.0.2.0/24", "a documentation address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("192.88.99.0/24", "a deprecated 6to4 relay address"),
    ("224.0.0.0/4", "a multicast address"),
    ("255.255.255.255/32", "the broadcast address"),
    ("240.0.0.0/4", "a reserved address"),
)
_IPV6_RULES = _rules(
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address", False),
    ("fd00:ec2::254/128", _METADATA),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("2001::/32", "a Teredo tunnelling address"),
    ("2001:db8::/32", "a documentation address"),
    ("2001::/23", "an IETF protocol assignment address"),
    ("100::/64", "a discard-only address"),
    ("fc00::/7", "a private (unique local) address", False),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a deprecated site-local address"),
    ("ff00::/8", "a multicast address"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")


def _judge(ip: IPAddress) -> _Verdict | None:
    """Why `ip` must not be contacted, or None when it is public."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _judge_ipv4(ip)
    mapped = ip.ipv4_mapped
    if mapped is not None:
        # The same host as the IPv4 address, so exactly the same verdict.
        inner = _judge_ipv4(mapped)
        if inner is None:
            return None
        return _Verdict(f"an IPv4-mapped address of {mapped}, {inner.reason}", inner.always)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        kind, v4 = embedded
        inner = _judge_ipv4(v4)
        if inner is not None:
            # A tunnel to a private address is never what a developer means.
            return _Verdict(f"{kind} address embedding {v4}, {inner.reason}", always=True)
    for rule in _IPV6_RULES:
        if ip in rule.network:
            return _Verdict(rule.reason, rule.always)
    if embedded is not None and embedded[0] in ("an IPv4-compatible", "an IPv4-translated"):
        return _Verdict(f"{embedded[0]} address (deprecated)", always=True)
    if ip in _NAT64 or (ip in _GLOBAL_UNICAST and ip.is_global):
        return None
    return _Verdict("not a globally routable address", always=True)


def _judge_ipv4(ip: ipaddress.IPv4Address) -> _Verdict | None:
    for rule in _IPV4_RULES:
        if ip in rule.network:
            return _Verdict(rule.reason, rule.always)
    if not ip.is_global:
        return _Verdict("not a globally routable address", always=True)
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries, with the (article and) kind of carrier."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64:
        return "a NAT64", low32
    if ip.sixtofour is not None:
        return "a 6to4", ip.sixtofour
    if ip.teredo is not None:
        return "a Teredo", ip.teredo[1]  # the client: where the packets are delivered
    if ip in _IPV4_TRANSLATED:
        return "an IPv4-translated", low32
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are not IPv4 addresses
        return "an IPv4-compatible", low32
    return None


def check_webhook_url_when_saved(
    url: str, *, allow_insecure: bool, resolver: Resolver | None = None
) -> WebhookUrl:
    """The check an admin's save gets: everything `check_webhook_url` does, except that a
    name which does not resolve yet is accepted (a receiver being set up, DNS not yet
    propagated). A name that does resolve must resolve only to public addresses; every
    send checks again, so nothing unsafe is ever contacted either way."""
    parsed = check_webhook_url_syntax(url, allow_insecure=allow_insecure)
    resolve = resolver or system_resolver
    try:
        answers = list(resolve(parsed.host, parsed.port))
    except (OSError, UnicodeError):
        return parsed
    if answers:
        check_webhook_url(url, allow_insecure=allow_insecure, resolver=lambda _h, _p: answers)
    return parsed
