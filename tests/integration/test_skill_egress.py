"""What skills can reach: every http and mcp-http skill request goes through the webhook
address guard (core/skills/egress.py), and only the operator widens it.

The table of unsafe addresses (tests/address_table.py) runs against http skills, mcp-http
skills and webhook deliveries alike. DNS is faked with a resolver; the skills' inner
transports are `MockTransport`s that record what would have been sent, except where a real
local server shows a request really arriving (or not).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

from core.db import Database
from core.outputs.blobs import BlobDirectory
from core.outputs.sql_store import SqlOutputStore
from core.schemas.skill import HttpExecutor, McpExecutor, SkillSpec
from core.skills.builtins import BuiltinCatalog
from core.skills.egress import (
    GuardedTransport,
    GuardedTransport2,
    SkillEgressGuard,
    SkillEgressPolicy,
    parse_allow_hosts,
)
from core.skills.factory import SkillFactory
from core.skills.mcp_executor import McpPool
from core.skills.runtime import SkillConfigInvalid, SkillContext, SkillFailed
from core.webhooks.delivery import WebhookDispatcher
from core.webhooks.outbox import Outbox
from core.webhooks.policy import DeliveryPolicy
from tests.address_table import LITERAL_URLS, NON_STANDARD_NUMERIC_HOSTS, REFUSED
from tests.fakes.webhook_receiver import Reply, WebhookReceiver
from tests.integration.test_webhook_delivery import add_events, attempts_of, make_agent

CTX = SkillContext(
    tenant_id="default",
    agent_id="agt_1",
    agent_name="sales-bot",
    session_id="ses_1",
    user_id="U1",
    user_name="Ada",
)
HOST = "target.example"
OUR_PORT = 3999
DB_URL = "postgresql+psycopg://cosmo:pw@db.internal:5432/cosmo"


def resolver(answers: Mapping[str, Sequence[str]]) -> Callable[[str, int], Sequence[str]]:
    def resolve(host: str, port: int, /) -> Sequence[str]:
        if host not in answers:
            raise OSError(-2, "Name or service not known")
        return answers[host]

    return resolve


def guard(
    answers: Mapping[str, Sequence[str]] | None = None,
    *,
    allow_insecure: bool = False,
    allow_hosts: str = "",
    server_port: int = OUR_PORT,
    database_url: str | None = DB_URL,
) -> SkillEgressGuard:
    policy = SkillEgressPolicy.build(
        allow_insecure=allow_insecure,
        allow_hosts=allow_hosts,
        server_port=server_port,
        database_url=database_url,
    )
    return SkillEgressGuard(policy, resolver=resolver(answers or {}))


def spec(executor: HttpExecutor | McpExecutor, name: str = "crm_lookup") -> SkillSpec:
    return SkillSpec(
        name=name,
        description="Look something up.",
        input_schema={"type": "object", "properties": {}},
        executor=executor,
    )


class Senders:
    """Sends one request to `url` the way each sender does; returns the error it ended
    with (None if it went out) and records what reached the wire (`sent`)."""

    def __init__(self, db: Database, tmp_path: Path) -> None:
        self.db = db
        self.tmp_path = tmp_path
        self.sent: list[str] = []

    def _answer(self, request: Any) -> Any:
        self.sent.append(str(request.url))
        lib = httpx2 if isinstance(request, httpx2.Request) else httpx
        return lib.Response(200, json={"secret": "the target's answer"})

    async def http_skill(self, url: str, g: SkillEgressGuard) -> str | None:
        transport = GuardedTransport(g, transports=lambda: httpx.MockTransport(self._answer))
        async with httpx.AsyncClient(transport=transport) as client:
            factory = SkillFactory(BuiltinCatalog.default(), client, lambda _: None, McpPool())
            try:
                skill = factory.build(spec(HttpExecutor(url=url, method="GET")))
                result = await skill.execute({}, CTX)
            except (SkillFailed, SkillConfigInvalid) as exc:
                return exc.detail
        assert "the target's answer" in result.content
        return None

    async def mcp_http_skill(self, url: str, g: SkillEgressGuard) -> str | None:
        def client() -> httpx2.AsyncClient:
            inner = lambda: httpx2.MockTransport(self._answer)  # noqa: E731
            return httpx2.AsyncClient(transport=GuardedTransport2(g, transports=inner))

        pool = McpPool(http_client=client, connect_timeout_seconds=5)
        try:
            skill = SkillFactory(
                BuiltinCatalog.default(), httpx.AsyncClient(), lambda _: None, pool
            ).build(spec(McpExecutor(transport="http", url=url, tool="lookup")))
            await skill.execute({}, CTX)
        except SkillFailed as exc:
            # Our mock is no MCP server: a request that went out fails the handshake.
            return None if self.sent else exc.detail
        finally:
            await pool.aclose()
        return None

    async def webhook(self, url: str, g: SkillEgressGuard) -> str | None:
        outputs = SqlOutputStore(self.db, BlobDirectory(self.tmp_path / "blobs"), Outbox(self.db))
        [delivery_id] = add_events(self.db, make_agent(self.db), url, 1)
        async with httpx.AsyncClient(transport=httpx.MockTransport(self._answer)) as http:
            dispatcher = WebhookDispatcher(
                self.db,
                http=http,
                outputs=outputs,
                policy=DeliveryPolicy(allow_insecure=g.policy.allow_insecure),
                resolver=g.resolver,
            )
            try:
                await dispatcher.run_once()
            finally:
                await dispatcher.aclose()
        [attempt] = attempts_of(self.db, delivery_id)
        return None if attempt.error is None else attempt.error


SENDERS = ["http_skill", "mcp_http_skill", "webhook"]


@pytest.fixture
def senders(db: Database, tmp_path: Path) -> Senders:
    return Senders(db, tmp_path)


async def send(senders: Senders, sender: str, url: str, g: SkillEgressGuard) -> str | None:
    method: Callable[[str, SkillEgressGuard], Awaitable[str | None]] = getattr(senders, sender)
    return await method(url, g)


# --- the shared table ------------------------------------------------------------------------


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize(("address", "reason", "always"), REFUSED)
async def test_every_unsafe_address_is_refused_by_every_sender(
    senders: Senders, sender: str, address: str, reason: str, always: bool
) -> None:
    error = await send(senders, sender, f"https://{HOST}/x", guard({HOST: [address]}))
    assert senders.sent == []
    assert error is not None
    assert f"{HOST} resolves to {ipaddress.ip_address(address)}, " in error
    assert reason in error
    assert "public addresses" in error
    if sender == "webhook":
        assert error.startswith("URL refused at send time:")


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize(("address", "reason", "always"), REFUSED)
async def test_the_insecure_switch_opens_only_loopback_and_private_to_every_sender(
    senders: Senders, sender: str, address: str, reason: str, always: bool
) -> None:
    g = guard({HOST: [address]}, allow_insecure=True)
    error = await send(senders, sender, f"http://{HOST}:8080/x", g)
    if always:
        assert senders.sent == []
        assert error is not None and reason in error
    else:
        assert senders.sent, error
        assert senders.sent[0].startswith(f"http://{_literal(address)}:8080/")


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize(("url", "message"), LITERAL_URLS)
async def test_ip_literals_are_refused_by_every_sender(
    senders: Senders, sender: str, url: str, message: str
) -> None:
    error = await send(senders, sender, url, guard())
    assert senders.sent == []
    assert error is not None and message in error


@pytest.mark.parametrize("sender", ["http_skill", "mcp_http_skill"])
@pytest.mark.parametrize("host", NON_STANDARD_NUMERIC_HOSTS)
async def test_numeric_hosts_are_refused_by_skills_even_when_insecure(
    senders: Senders, sender: str, host: str
) -> None:
    for allow_insecure in (False, True):
        error = await send(
            senders, sender, f"http://{host}/x", guard(allow_insecure=allow_insecure)
        )
        assert senders.sent == []
        # httpx itself refuses four dotted numbers with a leading zero, before the guard.
        assert error is not None
        assert re.search("non-standard form|Invalid IPv4 address|InvalidURL", error)


def _literal(address: str) -> str:
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return f"[{ip}]" if ip.version == 6 else str(ip)


# --- DNS rebinding -----------------------------------------------------------------------------


class Rebinding:
    """Answers with a public address first, then with a private one (an attacker's DNS)."""

    def __init__(self, first: str, then: str) -> None:
        self.answers = [first, then]
        self.calls = 0

    def __call__(self, host: str, port: int, /) -> list[str]:
        self.calls += 1
        return [self.answers[min(self.calls, 2) - 1]]


async def test_a_rebinding_resolver_cannot_move_a_skill_request_to_a_private_address() -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"ok": True})

    dns = Rebinding("93.184.215.14", "10.0.0.7")
    g = SkillEgressGuard(SkillEgressPolicy(), resolver=dns)
    transport = GuardedTransport(g, transports=lambda: httpx.MockTransport(answer))
    async with httpx.AsyncClient(transport=transport) as client:
        factory = SkillFactory(BuiltinCatalog.default(), client, lambda _: None, McpPool())
        skill = factory.build(spec(HttpExecutor(url=f"https://{HOST}/contacts", method="GET")))

        await skill.execute({}, CTX)
        # The connection goes to the address that was checked, by address: nothing
        # resolves the name again between the check and the connection.
        [first] = sent
        assert first.url.host == "93.184.215.14"
        assert first.headers["host"] == HOST
        assert first.extensions["sni_hostname"] == HOST
        assert dns.calls == 1

        with pytest.raises(SkillFailed) as refused:
            await skill.execute({}, CTX)
    assert len(sent) == 1
    assert refused.value.detail == (
        f"crm_lookup: {HOST} resolves to 10.0.0.7, a private address; skills may only reach "
        "public addresses (an operator can allow an internal host or network with "
        "COSMO_SKILL_ALLOW_HOSTS)"
    )


async def test_a_rebinding_resolver_cannot_move_an_mcp_session_to_the_metadata_service() -> None:
    sent: list[str] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(str(request.url))
        return httpx2.Response(500)

    dns = Rebinding("93.184.215.14", "169.254.169.254")
    g = SkillEgressGuard(SkillEgressPolicy(), resolver=dns)

    def client() -> httpx2.AsyncClient:
        inner = lambda: httpx2.MockTransport(answer)  # noqa: E731
        return httpx2.AsyncClient(transport=GuardedTransport2(g, transports=inner))

    pool = McpPool(http_client=client, connect_timeout_seconds=5)
    factory = SkillFactory(BuiltinCatalog.default(), httpx.AsyncClient(), lambda _: None, pool)
    skill = factory.build(
        spec(McpExecutor(transport="http", url=f"https://{HOST}/mcp", tool="lookup"))
    )
    try:
        with pytest.raises(SkillFailed):
            await skill.execute({}, CTX)  # reaches the public address; not an MCP server
        with pytest.raises(
            SkillFailed, match=re.escape("169.254.169.254, the cloud metadata address")
        ):
            await skill.execute({}, CTX)
    finally:
        await pool.aclose()
    assert sent and all(url.startswith("https://93.184.215.14/") for url in sent)


# --- the operator's allow-list, and what it never opens ------------------------------------------


@pytest.fixture
def crm() -> Any:
    with WebhookReceiver(path="/contacts") as receiver:
        yield receiver


def real_client(g: SkillEgressGuard) -> httpx.AsyncClient:
    return g.http_client(timeout=5)


async def call(g: SkillEgressGuard, url: str) -> Any:
    async with real_client(g) as client:
        factory = SkillFactory(BuiltinCatalog.default(), client, lambda _: None, McpPool())
        return await factory.build(spec(HttpExecutor(url=url, method="GET"))).execute({}, CTX)


async def test_an_internal_host_is_refused_until_the_operator_allows_it(crm: Any) -> None:
    url = f"http://crm.corp:{crm.port}/contacts"
    answers = {"crm.corp": ["127.0.0.1"]}
    with pytest.raises(
        SkillFailed, match=re.escape("crm.corp resolves to 127.0.0.1, a loopback address")
    ):
        await call(guard(answers), url)
    assert crm.requests == []

    for allowed in ("crm.corp", "*.corp", "127.0.0.0/8", "127.0.0.1"):
        result = await call(guard(answers, allow_hosts=f"other.example, {allowed}"), url)
        assert not result.is_error
    assert len(crm.requests) == 4
    assert {r.headers["host"] for r in crm.requests} == {f"crm.corp:{crm.port}"}


async def test_an_allowed_network_does_not_open_other_private_addresses(crm: Any) -> None:
    g = guard({"crm.corp": ["127.0.0.1"], "hr.corp": ["10.9.9.9"]}, allow_hosts="127.0.0.0/8")
    assert not (await call(g, f"http://crm.corp:{crm.port}/contacts")).is_error
    with pytest.raises(
        SkillFailed, match=re.escape("hr.corp resolves to 10.9.9.9, a private address")
    ):
        await call(g, "http://hr.corp/")


@pytest.mark.parametrize("allow_insecure", [False, True])
async def test_our_own_port_is_never_reachable_even_when_allowed(
    crm: Any, allow_insecure: bool
) -> None:
    # The fake CRM's port plays our listening port: were the guard to let the call
    # through, the receiver would see it.
    answers = {"crm.corp": ["127.0.0.1"], "localhost": ["127.0.0.1", "::1"]}
    g = guard(
        answers,
        allow_insecure=allow_insecure,
        allow_hosts="crm.corp,localhost,127.0.0.0/8,::1",
        server_port=crm.port,
    )
    for url in (
        f"http://crm.corp:{crm.port}/contacts",
        f"http://127.0.0.1:{crm.port}/contacts",
        f"http://127.0.0.2:{crm.port}/contacts",
        f"http://localhost:{crm.port}/contacts",
        f"http://[::ffff:127.0.0.1]:{crm.port}/contacts",
    ):
        with pytest.raises(SkillFailed, match="this Cosmo server's own port; skills may never"):
            await call(g, url)
    assert crm.requests == []


@pytest.mark.parametrize("allow_insecure", [False, True])
async def test_the_database_is_never_reachable_even_when_allowed(
    crm: Any, allow_insecure: bool
) -> None:
    answers = {"db.internal": ["127.0.0.1"], "alias.corp": ["127.0.0.1"]}
    g = guard(
        answers,
        allow_insecure=allow_insecure,
        allow_hosts="db.internal,alias.corp,127.0.0.0/8",
        database_url=f"postgresql+psycopg://cosmo:pw@db.internal:{crm.port}/cosmo",
    )
    for url in (
        f"http://db.internal:{crm.port}/",
        f"http://alias.corp:{crm.port}/",  # another name for the same address
        f"http://127.0.0.1:{crm.port}/",  # the database is local: every local address
    ):
        with pytest.raises(SkillFailed, match="is the database; skills may never reach it"):
            await call(g, url)
    assert crm.requests == []


async def test_a_redirect_is_not_followed_and_its_target_not_read(crm: Any) -> None:
    crm.then(Reply.redirect("http://169.254.169.254/latest/meta-data/"))
    g = guard({"crm.corp": ["127.0.0.1"]}, allow_hosts="crm.corp")
    result = await call(g, f"http://crm.corp:{crm.port}/contacts")
    assert result.is_error
    assert "redirects are not followed" in result.content
    assert len(crm.requests) == 1


def test_a_bad_allow_list_entry_is_named() -> None:
    with pytest.raises(ValueError, match="'crm corp' is neither a host name"):
        parse_allow_hosts("10.0.0.0/8, crm corp")
    names, networks = parse_allow_hosts(" CRM.corp. , *.intranet.example,10.20.0.0/16,[fd00::1]")
    assert names == ("crm.corp", "*.intranet.example")
    assert [str(n) for n in networks] == ["10.20.0.0/16", "fd00::1/128"]


async def test_a_refusal_is_logged_without_path_or_query(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SkillFailed) as refused:
        await call(guard(), "http://10.0.0.5/contacts?token=s3cret-value")
    text = " ".join(r.getMessage() for r in caplog.records if r.name == "cosmo.skills.egress")
    assert "refused" in text and "10.0.0.5" in text
    assert "s3cret" not in text and "/contacts" not in text
    assert "s3cret" not in refused.value.detail


async def test_our_public_url_is_never_reachable_by_name() -> None:
    policy = SkillEgressPolicy.build(
        allow_insecure=False,
        allow_hosts="",
        server_port=OUR_PORT,
        database_url=None,
        public_url="https://cosmo.example.com",
    )
    g = SkillEgressGuard(policy, resolver=resolver({"cosmo.example.com": ["93.184.215.14"]}))
    with pytest.raises(SkillFailed, match="is this server's public URL; skills may never"):
        g.check("https://cosmo.example.com/api/v1/outputs/out_1/approve")
    assert g.check("https://cosmo.example.com:8443/x").addresses == ("93.184.215.14",)


def test_a_bad_allow_list_stops_the_server_at_startup(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from tests.conftest import make_settings

    with pytest.raises(ValidationError, match="'crm corp' is neither a host name"):
        make_settings(tmp_path, COSMO_SKILL_ALLOW_HOSTS="crm corp")
