"""Webhook delivery: the outbox is sent, signed, retried, recorded and replayable.

A local receiver (tests/fakes/webhook_receiver.py) plays the agent's endpoint; the clock is
injected, so a five-attempt schedule that takes a minute in production runs in
milliseconds. Signatures are checked with the `standardwebhooks` reference library.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from standardwebhooks import Webhook

from bot.server import create_app
from core.db import Database
from core.db.ids import new_id
from core.db.models import AgentRow, PersonaRow, WebhookAttemptRow, WebhookDeliveryRow
from core.errors import Conflict, NotFound, ValidationFailed
from core.outputs.blobs import BlobDirectory
from core.outputs.port import NewEvent, NewOutput, NotificationStatus, OutputStore
from core.outputs.sql_store import SqlOutputStore
from core.secret_names import SecretNameRule
from core.webhooks.deliveries import DeliveryStatus
from core.webhooks.delivery import WebhookDispatcher, parse_retry_after
from core.webhooks.outbox import Outbox
from core.webhooks.policy import DeliveryPolicy, backoff_delay, equal_jitter
from core.webhooks.signing import generate_secret
from core.wiring import Container
from tests.conftest import AUTH, BACKENDS
from tests.fakes.webhook_receiver import Reply, WebhookReceiver, refusing_port

SECRET = generate_secret()
TENANT = "default"
TIMEOUT = 0.3  # the dispatcher's HTTP timeout here; `Reply.slow()` sleeps past it
POLICY = DeliveryPolicy(allow_insecure=True, timeout=TIMEOUT)


class Clock:
    """Starts a second ahead of real time (rows written now are due) and moves on command."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def to(self, when: datetime) -> None:
        self.now = max(self.now, when)


def no_jitter(delay: float) -> float:
    return delay


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outputs(db: Database, tmp_path: Path) -> SqlOutputStore:
    return SqlOutputStore(db, BlobDirectory(tmp_path / "blobs"), Outbox(db))


@pytest.fixture
async def dispatchers(
    db: Database, clock: Clock, outputs: SqlOutputStore
) -> AsyncIterator[Callable[..., WebhookDispatcher]]:
    """Makes dispatchers for the test's database (closed afterwards)."""
    made: list[WebhookDispatcher] = []

    def make(**overrides: Any) -> WebhookDispatcher:
        options: dict[str, Any] = {
            "outputs": outputs,
            "policy": POLICY,
            "clock": clock,
            "jitter": no_jitter,
        }
        options.update(overrides)
        dispatcher = WebhookDispatcher(options.pop("db", db), **options)
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        await dispatcher.aclose()


def make_agent(
    db: Database,
    *,
    secret: str | None = SECRET,
    secret_env: str | None = None,
    tenant: str = TENANT,
) -> str:
    suffix = uuid.uuid4().hex[:8]
    with db.session() as s:
        persona = PersonaRow(id=new_id("per"), tenant_id=tenant, name=f"p-{suffix}", role="r")
        s.add(persona)
        s.flush()
        agent = AgentRow(
            id=new_id("agt"),
            tenant_id=tenant,
            name=f"a-{suffix}",
            persona_id=persona.id,
            webhook_secret=secret,
            webhook_secret_env=secret_env,
        )
        s.add(agent)
        return agent.id


def create_output(
    outputs: OutputStore, agent_id: str, url: str, *, tenant: str = TENANT, note: str = "hello"
) -> tuple[str, str]:
    """An output whose creation writes an `output.created` event; (output id, delivery id)."""
    output = outputs.create(
        NewOutput(
            id=new_id("out"),
            tenant_id=tenant,
            agent_id=agent_id,
            session_id="ses_1",
            skill="send_email",
            is_automatable=False,
            arguments={"to": "ana@example.com"},
            content="Dear Ana",
        ),
        events=[
            NewEvent(
                event_type="output.created",
                agent_id=agent_id,
                url=url,
                payload={"type": "output.created", "data": {"skill": "send_email", "note": note}},
            )
        ],
    )
    return output.id, delivery_of(outputs_db(outputs), output.id)


def outputs_db(outputs: OutputStore) -> Database:
    assert isinstance(outputs, SqlOutputStore)
    return outputs.db


def delivery_of(db: Database, output_id: str) -> str:
    with db.session() as s:
        found = s.scalars(
            select(WebhookDeliveryRow.id).where(WebhookDeliveryRow.output_id == output_id)
        ).all()
    assert len(found) == 1
    return found[0]


def add_events(db: Database, agent_id: str, url: str, count: int) -> list[str]:
    """Deliveries without outputs, straight into the outbox."""
    events = [
        NewEvent("agent.ping", agent_id, url, {"type": "agent.ping", "n": n}) for n in range(count)
    ]
    with db.session() as s:
        return Outbox(db).add_in(s, events, tenant_id=TENANT, output_id=None)


def row(db: Database, delivery_id: str) -> WebhookDeliveryRow:
    with db.session() as s:
        found = s.get(WebhookDeliveryRow, delivery_id)
        assert found is not None
        return found


def attempts_of(db: Database, delivery_id: str) -> list[WebhookAttemptRow]:
    with db.session() as s:
        return list(
            s.scalars(
                select(WebhookAttemptRow)
                .where(WebhookAttemptRow.delivery_id == delivery_id)
                .order_by(WebhookAttemptRow.attempt)
            )
        )


async def drain(dispatcher: WebhookDispatcher, clock: Clock, db: Database) -> int:
    """Run rounds, jumping the clock to each next due time, until nothing is pending."""
    sent = 0
    for _ in range(50):
        sent += await dispatcher.run_once()
        with db.session() as s:
            due = s.scalar(
                select(func.min(WebhookDeliveryRow.next_attempt_at)).where(
                    WebhookDeliveryRow.status == "pending"
                )
            )
        if due is None:
            return sent
        clock.to(due)
    raise AssertionError("deliveries still pending after 50 rounds")


def verified(request: Any, secret: str = SECRET) -> Any:
    return Webhook(secret).verify(request.body, request.headers)


# -- success ----------------------------------------------------------------------------


async def test_a_2xx_is_delivered_signed_and_marks_the_output_delivered(
    db, outputs, receiver, dispatchers
):
    agent = make_agent(db)
    output_id, delivery_id = create_output(outputs, agent, receiver.url)

    assert await dispatchers().run_once() == 1

    [request] = receiver.requests
    assert request.method == "POST"
    assert request.path == "/hook"
    assert verified(request)["data"]["note"] == "hello"
    assert request.webhook_id == delivery_id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "CosmoAgents-Webhooks/1.0"
    assert request.body == b'{"data":{"note":"hello","skill":"send_email"},"type":"output.created"}'
    delivered = row(db, delivery_id)
    assert (delivered.status, delivered.attempts, delivered.lease_owner) == ("delivered", 1, None)
    assert delivered.delivered_at is not None
    [attempt] = attempts_of(db, delivery_id)
    assert (attempt.attempt, attempt.status_code, attempt.error) == (1, 200, None)
    assert outputs.get(TENANT, output_id).notification_status is NotificationStatus.DELIVERED


async def test_nothing_is_sent_before_it_is_due_or_while_held(db, receiver, dispatchers, clock):
    agent = make_agent(db)
    [held] = Outbox(db).hold(
        [NewEvent("output.decided", agent, receiver.url, {"x": 1})],
        tenant_id=TENANT,
        output_id=None,
    )
    dispatcher = dispatchers()
    assert await dispatcher.run_once() == 0
    Outbox(db).release([held])
    clock.advance(1)
    assert await dispatcher.run_once() == 1
    assert receiver.hits_by_id() == {held: 1}


# -- failure and retry ------------------------------------------------------------------


async def test_five_failures_end_in_notification_failed(db, outputs, receiver, dispatchers, clock):
    # The backoff between them is the test clock's (see the next test), never a real wait.
    receiver.default = Reply.error(503)
    agent = make_agent(db)
    output_id, delivery_id = create_output(outputs, agent, receiver.url)

    assert await drain(dispatchers(), clock, db) == 5

    requests = receiver.requests
    assert len(requests) == 5
    assert {r.webhook_id for r in requests} == {delivery_id}
    # A fresh timestamp and signature per attempt, each valid on its own.
    assert len({r.headers["webhook-timestamp"] for r in requests}) == 5
    assert len({r.headers["webhook-signature"] for r in requests}) == 5
    for request in requests:
        verified(request)
    failed = row(db, delivery_id)
    assert (failed.status, failed.attempts, failed.last_status_code) == ("failed", 5, 503)
    assert [a.attempt for a in attempts_of(db, delivery_id)] == [1, 2, 3, 4, 5]
    assert outputs.get(TENANT, output_id).notification_status is NotificationStatus.FAILED


async def test_backoff_doubles_from_four_seconds_up_to_the_cap(db, receiver, dispatchers, clock):
    receiver.default = Reply.error(500)
    [delivery_id] = add_events(db, make_agent(db), receiver.url, 1)

    await drain(dispatchers(), clock, db)

    times = [a.created_at for a in attempts_of(db, delivery_id)]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert gaps == [4.0, 8.0, 16.0, 30.0]


async def test_the_policy_sets_the_backoff(db, receiver, dispatchers, clock):
    receiver.default = Reply.error(500)
    [delivery_id] = add_events(db, make_agent(db), receiver.url, 1)

    await drain(dispatchers(policy=replace(POLICY, backoff_base=1, backoff_cap=3)), clock, db)

    times = [a.created_at for a in attempts_of(db, delivery_id)]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(times)] == [1, 2, 3, 3]


async def test_jittered_delays_stay_between_half_and_all_of_the_backoff(
    db, receiver, dispatchers, clock
):
    receiver.default = Reply.error(500)
    ids = add_events(db, make_agent(db), receiver.url, 5)

    await drain(dispatchers(jitter=equal_jitter), clock, db)

    for delivery_id in ids:
        times = [a.created_at for a in attempts_of(db, delivery_id)]
        for n, (a, b) in enumerate(itertools.pairwise(times), start=1):
            full = backoff_delay(n)
            assert full / 2 <= (b - a).total_seconds() <= full


def test_the_schedule_and_jitter_bounds() -> None:
    assert [backoff_delay(n) for n in range(1, 7)] == [4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    samples = [equal_jitter(16.0) for _ in range(2000)]
    assert min(samples) >= 8.0
    assert max(samples) <= 16.0
    assert max(samples) - min(samples) > 6.0  # actually random, not a constant


def test_a_policy_leases_past_its_slowest_attempt_and_refuses_nonsense() -> None:
    # Three addresses' worth of timeouts per attempt, twice over, plus slack; 60 s at least.
    assert DeliveryPolicy().lease == timedelta(seconds=70)
    assert DeliveryPolicy(timeout=60).lease == timedelta(seconds=370)
    assert DeliveryPolicy(timeout=1).lease == timedelta(seconds=60)
    assert DeliveryPolicy(lease_seconds=5).lease == timedelta(seconds=5)
    with pytest.raises(ValueError, match="timeout, concurrency must be positive"):
        DeliveryPolicy(timeout=0, concurrency=-1)


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=20), usegmt=True), now) == 20
    assert parse_retry_after(format_datetime(now - timedelta(seconds=20), usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [("7", 7.0), ("120", 30.0), ("http-date+12", 12.0), ("nonsense", 4.0)],
)
async def test_retry_after_is_honoured_and_capped_at_thirty_seconds(
    db, receiver, dispatchers, clock, retry_after, expected
):
    if retry_after == "http-date+12":
        retry_after = format_datetime(clock.now + timedelta(seconds=12), usegmt=True)
    receiver.then(Reply.too_many(retry_after=retry_after))
    [delivery_id] = add_events(db, make_agent(db), receiver.url, 1)

    await dispatchers().run_once()

    pending = row(db, delivery_id)
    assert (pending.status, pending.last_status_code) == ("pending", 429)
    assert (pending.next_attempt_at - clock.now).total_seconds() == pytest.approx(expected, abs=1)


async def test_410_gone_stops_at_once(db, outputs, receiver, dispatchers, clock):
    receiver.default = Reply.gone()
    output_id, delivery_id = create_output(outputs, make_agent(db), receiver.url)

    assert await drain(dispatchers(), clock, db) == 1

    gone = row(db, delivery_id)
    assert (gone.status, gone.attempts, gone.last_status_code) == ("failed", 1, 410)
    assert "410 Gone" in (gone.last_error or "")
    assert outputs.get(TENANT, output_id).notification_status is NotificationStatus.FAILED


async def test_a_redirect_is_not_followed(db, receiver, dispatchers):
    receiver.then(Reply.redirect(location=receiver.url.replace("/hook", "/elsewhere")))
    [delivery_id] = add_events(db, make_agent(db), receiver.url, 1)

    await dispatchers().run_once()

    assert [r.path for r in receiver.requests] == ["/hook"]
    pending = row(db, delivery_id)
    assert (pending.status, pending.last_status_code) == ("pending", 302)
    assert "redirects are not followed" in (pending.last_error or "")


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply.down(), "receiver closed the connection"),
        (Reply.slow(2.0), "timed out"),
        (Reply.error(502), "receiver answered 502"),
    ],
    ids=["down", "slow", "5xx"],
)
async def test_a_misbehaving_receiver_is_retried_with_the_reason_recorded(
    db, receiver, dispatchers, reply, error
):
    receiver.then(reply)
    [delivery_id] = add_events(db, make_agent(db), receiver.url, 1)

    await dispatchers().run_once()

    [attempt] = attempts_of(db, delivery_id)
    assert error in (attempt.error or "")
    assert row(db, delivery_id).status == "pending"


async def test_connection_refused_is_retried(db, dispatchers):
    with refusing_port() as port:
        [delivery_id] = add_events(db, make_agent(db), f"http://127.0.0.1:{port}/hook", 1)
        await dispatchers().run_once()
    [attempt] = attempts_of(db, delivery_id)
    assert attempt.status_code is None
    assert "could not connect" in (attempt.error or "")


async def test_a_receiver_that_recovers_gets_the_event(db, outputs, receiver, dispatchers, clock):
    receiver.then(Reply.error(500), Reply.too_many(retry_after="2"), Reply.down())
    output_id, delivery_id = create_output(outputs, make_agent(db), receiver.url)

    assert await drain(dispatchers(), clock, db) == 4

    assert [a.status_code for a in attempts_of(db, delivery_id)] == [500, 429, None, 200]
    assert row(db, delivery_id).status == "delivered"
    assert outputs.get(TENANT, output_id).notification_status is NotificationStatus.DELIVERED


# -- secrets ----------------------------------------------------------------------------


async def test_the_secret_can_come_from_an_environment_variable(db, receiver, dispatchers):
    env_secret = generate_secret()
    agent = make_agent(db, secret=None, secret_env="HOOK_SECRET")
    [delivery_id] = add_events(db, agent, receiver.url, 1)

    await dispatchers(secrets={"HOOK_SECRET": env_secret}.get).run_once()

    [request] = receiver.requests
    assert verified(request, env_secret)
    assert row(db, delivery_id).status == "delivered"


async def test_a_missing_secret_fails_the_attempt_without_sending(db, receiver, dispatchers):
    agent = make_agent(db, secret=None, secret_env="HOOK_SECRET")
    [delivery_id] = add_events(db, agent, receiver.url, 1)

    await dispatchers(secrets=lambda _name: None).run_once()

    assert receiver.requests == []
    [attempt] = attempts_of(db, delivery_id)
    assert attempt.error == (
        "webhook secret environment variable HOOK_SECRET is not set on this server"
    )


async def test_a_reserved_secret_name_stored_before_the_rule_is_not_read(db, receiver, dispatchers):
    agent = make_agent(db, secret=None, secret_env="COSMO_SECRET_KEY")
    [delivery_id] = add_events(db, agent, receiver.url, 1)
    # As the composition root wires it: our own variables are never handed out.
    confined = SecretNameRule().confine({"COSMO_SECRET_KEY": generate_secret()}.get)

    await dispatchers(secrets=confined).run_once()

    assert receiver.requests == []
    [attempt] = attempts_of(db, delivery_id)
    assert attempt.error is not None
    assert attempt.error.startswith("COSMO_SECRET_KEY is reserved")


async def test_secrets_and_bodies_never_reach_the_log(db, receiver, dispatchers, clock, caplog):
    caplog.set_level(logging.DEBUG)
    receiver.then(Reply.error(500))
    agent = make_agent(db)
    with db.session() as s:
        events = [NewEvent("output.created", agent, receiver.url, {"card": "4111-SECRET-BODY"})]
        Outbox(db).add_in(s, events, tenant_id=TENANT, output_id=None)

    await drain(dispatchers(), clock, db)

    assert len(receiver.requests) == 2
    assert "4111-SECRET-BODY" not in caplog.text
    assert SECRET not in caplog.text
    assert SECRET.removeprefix("whsec_") not in caplog.text
    assert "attempt 1/5: pending - receiver answered 500" in caplog.text


# -- where we connect -------------------------------------------------------------------


async def test_a_url_that_turns_private_at_send_time_is_refused_without_connecting(db, dispatchers):
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as http:
        [delivery_id] = add_events(db, make_agent(db), "https://hooks.example.com/x", 1)
        dispatcher = dispatchers(
            http=http,
            policy=replace(POLICY, allow_insecure=False),
            resolver=lambda host, port: ["10.0.0.7"],
        )
        await dispatcher.run_once()

    assert sent == []
    [attempt] = attempts_of(db, delivery_id)
    assert attempt.error is not None
    assert attempt.error.startswith("URL refused at send time: hooks.example.com resolves to ")
    assert "private address" in attempt.error
    assert row(db, delivery_id).status == "pending"  # DNS may change back: retried


async def test_each_validated_address_is_tried_with_the_host_name_for_tls(db, dispatchers):
    v4, v6 = "93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.url.host == v4:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(204)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        url = "https://hooks.example.com:8443/in?x=1"
        [delivery_id] = add_events(db, make_agent(db), url, 1)
        dispatcher = dispatchers(
            http=http,
            policy=replace(POLICY, allow_insecure=False),
            resolver=lambda host, port: [v4, v6],
        )
        await dispatcher.run_once()

    assert [str(r.url) for r in sent] == [
        f"https://{v4}:8443/in?x=1",
        f"https://[{v6}]:8443/in?x=1",
    ]
    for request in sent:
        assert request.headers["host"] == "hooks.example.com:8443"
        assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert row(db, delivery_id).status == "delivered"


async def test_cloud_metadata_is_refused_even_in_insecure_mode(db, receiver, dispatchers):
    [delivery_id] = add_events(db, make_agent(db), receiver.url_for("hooks.test"), 1)
    await dispatchers(resolver=lambda host, port: ["169.254.169.254"]).run_once()
    assert receiver.requests == []
    assert "metadata" in (attempts_of(db, delivery_id)[0].error or "")


async def test_the_validated_address_is_used_with_the_original_host_header(
    db, receiver, dispatchers
):
    # `hooks.test` exists in no DNS: the request can only arrive by the resolver's answer.
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    [delivery_id] = add_events(db, make_agent(db), receiver.url_for("hooks.test"), 1)
    await dispatchers(resolver=resolver).run_once()

    [request] = receiver.requests
    assert request.headers["host"] == f"hooks.test:{receiver.port}"
    assert resolved == ["hooks.test"]
    assert row(db, delivery_id).status == "delivered"


def tls_files(tmp_path: Path, host: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throwaway CA and a certificate for `host`: (server context, client context)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Cosmo test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (tmp_path / "leaf.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    return server, client


async def test_https_checks_the_certificate_for_the_host_name_while_connecting_by_address(
    db, dispatchers, tmp_path
):
    server_ctx, client_ctx = tls_files(tmp_path, "hooks.test")
    agent = make_agent(db)
    with WebhookReceiver(ssl_context=server_ctx) as tls_receiver:
        [good] = add_events(db, agent, tls_receiver.url_for("hooks.test"), 1)
        async with httpx.AsyncClient(verify=client_ctx) as http:
            dispatcher = dispatchers(http=http, resolver=lambda host, port: ["127.0.0.1"])
            await dispatcher.run_once()
            # Same address, a name the certificate does not cover: refused by TLS.
            [bad] = add_events(db, agent, tls_receiver.url_for("other.test"), 1)
            await dispatcher.run_once()
        names = list(tls_receiver.server_names)
        requests = tls_receiver.requests
        port = tls_receiver.port

    assert row(db, good).status == "delivered"
    assert [r.headers["host"] for r in requests] == [f"hooks.test:{port}"]
    assert names[0] == "hooks.test"
    assert "other.test" in names  # SNI named the host, so the mismatch is the certificate's
    [attempt] = attempts_of(db, bad)
    assert "certificate" in (attempt.error or "").lower()


async def test_its_own_client_trusts_the_ca_bundle_the_operator_names(
    db, dispatchers, tmp_path, monkeypatch
):
    """Without a client given, deliveries trust what httpx would: certifi's bundle, or the
    operator's `SSL_CERT_FILE` (the shared context follows a change of it)."""
    server_ctx, _ = tls_files(tmp_path, "hooks.test")
    agent = make_agent(db)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with WebhookReceiver(ssl_context=server_ctx) as tls_receiver:
        url = tls_receiver.url_for("hooks.test")
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        [unknown_ca] = add_events(db, agent, url, 1)
        await dispatchers(resolver=lambda host, port: ["127.0.0.1"]).run_once()
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        [named_ca] = add_events(db, agent, url, 1)
        await dispatchers(resolver=lambda host, port: ["127.0.0.1"]).run_once()
        requests = tls_receiver.requests

    [refused] = attempts_of(db, unknown_ca)
    assert "certificate" in (refused.error or "").lower()
    assert row(db, named_ca).status == "delivered"
    assert len(requests) == 1


# -- durability and concurrency ---------------------------------------------------------


async def test_a_new_dispatcher_carries_on_from_the_stored_attempts(
    db, receiver, dispatchers, clock
):
    receiver.then(Reply.error(500), Reply.error(500))
    [delivery_id] = add_events(db, make_agent(db), receiver.url, 1)
    first = dispatchers(worker_id="before-restart")
    await first.run_once()
    await first.aclose()  # the process goes away

    after = dispatchers(worker_id="after-restart")
    assert await after.run_once() == 0  # attempt 2 is not due yet: the time is stored
    clock.advance(4)
    assert await after.run_once() == 1
    clock.advance(8)
    assert await after.run_once() == 1

    assert [a.status_code for a in attempts_of(db, delivery_id)] == [500, 500, 200]
    assert row(db, delivery_id).attempts == 3
    assert receiver.hits_by_id() == {delivery_id: 3}


class SimulatedCrash(BaseException):
    """The process dies: nothing after this line runs, not even `except Exception`."""


class CrashAfterSend(httpx.AsyncBaseTransport):
    """Sends for real, reads the answer, then 'crashes' before the caller can record it."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        raise SimulatedCrash

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_crash_between_send_and_record_resends_with_the_same_webhook_id(
    db, outputs, receiver, dispatchers, clock
):
    output_id, delivery_id = create_output(outputs, make_agent(db), receiver.url)
    async with httpx.AsyncClient(transport=CrashAfterSend()) as crashing:
        doomed = dispatchers(http=crashing, worker_id="doomed")
        with pytest.raises(SimulatedCrash):
            await doomed.run_once()
    assert len(receiver.requests) == 1
    leased = row(db, delivery_id)
    assert (leased.status, leased.attempts, leased.lease_owner) == ("pending", 0, "doomed")

    survivor = dispatchers(worker_id="survivor")
    assert await survivor.run_once() == 0  # the lease still holds
    clock.advance(doomed.policy.lease.total_seconds() + 1)
    assert await survivor.run_once() == 1

    first, second = receiver.requests
    assert first.webhook_id == second.webhook_id == delivery_id
    assert verified(second)
    assert [(a.attempt, a.status_code) for a in attempts_of(db, delivery_id)] == [(1, 200)]
    assert row(db, delivery_id).status == "delivered"
    assert outputs.get(TENANT, output_id).notification_status is NotificationStatus.DELIVERED


@pytest.mark.parametrize("real_db", BACKENDS, indirect=True)
async def test_two_dispatchers_racing_send_each_attempt_exactly_once(real_db):
    clock = Clock()
    with WebhookReceiver() as receiver:
        # Every event fails once, then succeeds: two attempts each, both raced for.
        receiver.respond_with(
            lambda r: Reply.error(500) if receiver.hits_by_id()[r.webhook_id] == 1 else Reply.ok()
        )
        ids = add_events(real_db, make_agent(real_db), receiver.url, 30)
        pair = [
            WebhookDispatcher(
                real_db,
                policy=DeliveryPolicy(allow_insecure=True),
                clock=clock,
                jitter=no_jitter,
                worker_id=name,
            )
            for name in ("a", "b")
        ]
        leased = 0
        for _ in range(3):
            leased += sum(await asyncio.gather(*(d.run_once(limit=100) for d in pair)))
            clock.advance(31)
        for dispatcher in pair:
            await dispatcher.aclose()
        hits = receiver.hits_by_id()

    assert leased == 60
    assert hits == dict.fromkeys(ids, 2)
    with real_db.session() as s:
        statuses = s.scalars(select(WebhookDeliveryRow.status)).all()
        attempts = s.execute(
            select(WebhookAttemptRow.delivery_id, func.count()).group_by(
                WebhookAttemptRow.delivery_id
            )
        ).all()
    assert set(statuses) == {"delivered"}
    assert sorted(n for _, n in attempts) == [2] * 30


# -- replay, list, held -----------------------------------------------------------------


async def test_replay_starts_a_new_cycle_with_the_same_webhook_id(
    db, outputs, receiver, dispatchers, clock
):
    receiver.default = Reply.error(500)
    output_id, delivery_id = create_output(outputs, make_agent(db), receiver.url)
    dispatcher = dispatchers()
    await drain(dispatcher, clock, db)
    assert outputs.get(TENANT, output_id).notification_status is NotificationStatus.FAILED

    receiver.default = Reply.ok()
    replayed = dispatcher.deliveries.replay(TENANT, delivery_id)
    assert (replayed.status, replayed.attempts) == (DeliveryStatus.PENDING, 0)
    assert outputs.get(TENANT, output_id).notification_status is NotificationStatus.PENDING
    with pytest.raises(Conflict, match="is pending"):
        dispatcher.deliveries.replay(TENANT, delivery_id)

    await drain(dispatcher, clock, db)

    assert {r.webhook_id for r in receiver.requests} == {delivery_id}
    assert [a.attempt for a in attempts_of(db, delivery_id)] == [1, 2, 3, 4, 5, 6]
    assert row(db, delivery_id).attempts == 1
    assert outputs.get(TENANT, output_id).notification_status is NotificationStatus.DELIVERED
    with pytest.raises(NotFound):
        dispatcher.deliveries.replay(TENANT, "msg_unknown")
    with pytest.raises(NotFound):
        dispatcher.deliveries.replay("other-tenant", delivery_id)


async def test_list_filters_by_status_and_output_and_pages_newest_first(
    db, outputs, receiver, dispatchers, clock
):
    agent = make_agent(db)
    receiver.then(Reply.gone())
    first_output, gone_id = create_output(outputs, agent, receiver.url)
    await dispatchers().run_once()
    created = [create_output(outputs, agent, receiver.url)[1] for _ in range(4)]
    other_tenant_agent = make_agent(db, tenant="t2")
    create_output(outputs, other_tenant_agent, receiver.url, tenant="t2")
    dispatcher = dispatchers()

    failed = dispatcher.deliveries.list(TENANT, status=DeliveryStatus.FAILED)
    assert [d.id for d in failed.items] == [gone_id]
    assert failed.items[0].history[0].status_code == 410
    assert [d.id for d in dispatcher.deliveries.list(TENANT, output_id=first_output).items] == [
        gone_id
    ]

    seen: list[str] = []
    cursor = None
    while True:
        page = dispatcher.deliveries.list(TENANT, cursor=cursor, limit=2)
        seen += [d.id for d in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [*reversed(created), gone_id]
    with pytest.raises(ValidationFailed):
        dispatcher.deliveries.list(TENANT, cursor="bm90LWEtY3Vyc29y")


async def test_held_rows_are_released_dropped_or_left_by_the_check(db, dispatchers, clock):
    agent = make_agent(db)
    outbox = Outbox(db)
    happened, did_not, unknown, young = (
        outbox.hold(
            [NewEvent("output.decided", agent, "http://x/", {})],
            tenant_id=TENANT,
            output_id=f"out_{n}",
        )[0]
        for n in range(4)
    )
    with db.session() as s:
        s.execute(
            update(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.id.in_([happened, did_not, unknown]))
            .values(created_at=clock.now - timedelta(minutes=10))
        )
    verdicts = {"out_0": True, "out_1": False, "out_2": None, "out_3": True}

    # Old enough: past the policy's `held_after`; `young` is not.
    policy = replace(POLICY, held_after=timedelta(minutes=5))
    sweep = await dispatchers(policy=policy).resolve_held(lambda r: verdicts[r.output_id])

    assert (sweep.released, sweep.dropped, sweep.left) == (1, 1, 1)
    assert row(db, happened).status == "pending"
    assert row(db, unknown).status == "held"
    assert row(db, young).status == "held"
    with db.session() as s:
        assert s.get(WebhookDeliveryRow, did_not) is None


# -- REST -------------------------------------------------------------------------------


@pytest.fixture
def api(container: Container) -> Iterator[TestClient]:
    # Background loops off: they would share the test's single connection with requests.
    app = create_app(container=container, background=False)
    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as client:
        yield client


def test_rest_lists_filters_shows_and_replays_deliveries(api, container, db):
    agent = make_agent(db)
    output_a, delivery_a = create_output(container.outputs, agent, "https://hooks.example.com/")
    _, delivery_b = create_output(container.outputs, agent, "https://hooks.example.com/")
    with db.session() as s:
        s.execute(
            update(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.id == delivery_a)
            .values(status="failed", attempts=5)
        )

    listed = api.get("/api/v1/webhook-deliveries")
    assert listed.status_code == 200
    assert [d["id"] for d in listed.json()["items"]] == [delivery_b, delivery_a]
    assert listed.json()["items"][0]["history"] == []
    assert "payload" not in listed.json()["items"][0]
    by_status = api.get("/api/v1/webhook-deliveries", params={"status": "failed"}).json()
    assert [d["id"] for d in by_status["items"]] == [delivery_a]
    by_output = api.get("/api/v1/webhook-deliveries", params={"output_id": output_a}).json()
    assert [d["id"] for d in by_output["items"]] == [delivery_a]

    shown = api.get(f"/api/v1/webhook-deliveries/{delivery_a}")
    assert shown.status_code == 200
    assert shown.json()["payload"]["type"] == "output.created"

    replayed = api.post(f"/api/v1/webhook-deliveries/{delivery_a}/replay")
    assert replayed.status_code == 202
    assert (replayed.json()["status"], replayed.json()["attempts"]) == ("pending", 0)
    again = api.post(f"/api/v1/webhook-deliveries/{delivery_a}/replay")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


def test_rest_errors_are_problems(api, container, db):
    missing = api.get("/api/v1/webhook-deliveries/msg_nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert api.post("/api/v1/webhook-deliveries/msg_nope/replay").status_code == 404
    bad_status = api.get("/api/v1/webhook-deliveries", params={"status": "lost"})
    assert bad_status.status_code == 422
    bad_cursor = api.get("/api/v1/webhook-deliveries", params={"cursor": "zzz"})
    assert bad_cursor.status_code == 422
    nul = api.get("/api/v1/webhook-deliveries", params={"output_id": "out\x00"})
    assert nul.status_code == 200
    unauthenticated = api.get("/api/v1/webhook-deliveries", headers={"Authorization": ""})
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["content-type"] == "application/problem+json"
    replay_anon = api.post(
        "/api/v1/webhook-deliveries/msg_nope/replay", headers={"Authorization": "Bearer x"}
    )
    assert replay_anon.status_code == 401


def test_rest_hides_other_tenants_deliveries(api, container, db):
    agent = make_agent(db, tenant="t2")
    _, delivery = create_output(container.outputs, agent, "https://hooks.example.com/", tenant="t2")
    assert api.get("/api/v1/webhook-deliveries").json()["items"] == []
    assert api.get(f"/api/v1/webhook-deliveries/{delivery}").status_code == 404
    theirs = api.get(f"/api/v1/webhook-deliveries/{delivery}", headers={"X-Cosmo-Tenant": "t2"})
    assert theirs.status_code == 200
