"""Delivering the outbox: lease due rows, sign, POST, record, retry with backoff.

`WebhookDispatcher` is the worker. Each round it leases due `pending` rows with one
conditional UPDATE per row (so two workers, or two replicas, never send the same attempt),
sends them concurrently, and records every attempt in the same transaction that moves the
row on and releases the lease. Nothing is kept in memory between rounds: the attempt count
and the next attempt time live in the row, so a restart carries on where it stopped.

Delivery is at-least-once. A worker that dies after sending but before recording leaves its
lease to expire; the row is then sent again with the same `webhook-id`, on which receivers
deduplicate.

Every send checks the URL again (`check_webhook_url`: DNS answers change) and connects to
the address that passed the check, with the original Host header and, for https, TLS
server name and certificate checks for the host name (so DNS rebinding cannot swap in a
private address between the check and the connection).

Listing, replaying and settling `held` rows live in `core.webhooks.deliveries`; the
dispatcher offers them too, for callers that hold only the worker.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ParamSpec, TypeVar

import httpx
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from core import metrics, tracing
from core.concurrency import Lane, run_sync
from core.db import Database
from core.db.ids import new_id
from core.db.models import AgentRow, WebhookAttemptRow, WebhookDeliveryRow
from core.errors import UnsafeWebhookUrl
from core.outputs.port import NotificationStatus, OutputStore
from core.secret_names import SecretNotAllowed
from core.tls import tls_context
from core.webhooks.deliveries import (
    DeliveryStatus,
    HeldCheck,
    HeldSweep,
    WebhookDeliveries,
    rowcount,
    set_notification,
)
from core.webhooks.policy import DeliveryPolicy, equal_jitter
from core.webhooks.signing import new_message_id, signed_headers
from core.webhooks.url_guard import ResolvedTarget, Resolver, check_webhook_url

log = logging.getLogger("cosmo.webhooks")

P = ParamSpec("P")
R = TypeVar("R")

USER_AGENT = "CosmoAgents-Webhooks/1.0"
#: Attempt rows keep this much of an error; enough to diagnose, not a log dump.
MAX_ERROR_CHARS = 500


# --- Schedule ------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def encode_body(payload: dict[str, Any]) -> bytes:
    """Compact, key-sorted JSON: the same payload always signs to the same bytes."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


# --- Sending -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """A leased row, with what sending needs. `secret` stays out of reprs and logs."""

    id: str
    tenant_id: str
    agent_id: str
    output_id: str | None
    event_type: str
    url: str
    payload: dict[str, Any] = field(repr=False)
    attempt: int  # the number this attempt will have in the current cycle
    sequence: int  # its number in the history, which runs on across replays
    max_attempts: int
    secret: str | None = field(repr=False)
    secret_problem: str | None = None
    traceparent: str | None = None


@dataclass(frozen=True)
class _Result:
    delivered: bool = False
    gone: bool = False
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    duration_ms: int = 0


TEST_EVENT = "webhook.test"


@dataclass(frozen=True)
class TestDelivery:
    """The outcome of one signed test event: the receiver's status, or why none came."""

    __test__ = False  # not a pytest test class

    delivered: bool
    status_code: int | None
    error: str | None
    duration_ms: int


class WebhookDispatcher:
    """The delivery worker. Safe to run in every replica at once.

    `policy` holds every number and switch (timeouts, concurrency, lease, backoff, the held
    sweep's age, database threads, insecure URLs). `http` is used as given (tests and
    benchmarks pass theirs); without one the dispatcher builds a client that keeps no idle
    connections, because connections are pooled by address and a connection whose TLS was
    verified for one host name must not carry a request for another host at the same
    address. Redirects are never followed either way. `clock` and `jitter` are injectable
    so a whole five-attempt schedule runs in milliseconds: delays are stored as
    `next_attempt_at`, never slept.
    """

    def __init__(
        self,
        db: Database,
        *,
        policy: DeliveryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
        secrets: Callable[[str], str | None] = lambda _name: None,
        outputs: OutputStore | None = None,
        clock: Callable[[], datetime] | None = None,
        jitter: Callable[[float], float] = equal_jitter,
        worker_id: str | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.db = db
        self.policy = policy = policy or DeliveryPolicy()
        self.outputs = outputs
        self.secrets = secrets
        self.clock = clock or (lambda: datetime.now(UTC))
        self.jitter = jitter
        self.worker_id = (
            worker_id or f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.resolver = resolver
        self.deliveries = WebhookDeliveries(db, outputs, clock=self.clock)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            follow_redirects=False,
            timeout=policy.timeout,
            limits=httpx.Limits(max_keepalive_connections=0),
            verify=tls_context(),
        )
        # Database work runs off the event loop, one statement batch at a time.
        self._db_lane = Lane(policy.db_threads)

    # -- lifecycle ------------------------------------------------------------------------

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def resolve_held(
        self, check: HeldCheck, *, older_than: timedelta | None = None
    ) -> HeldSweep:
        """Settle `held` rows older than `older_than` (the policy's `held_after`) by
        `check`, usually the output store's `held_check`."""
        older_than = self.policy.held_after if older_than is None else older_than
        return await self._in_db(self.deliveries.resolve_held, check, older_than=older_than)

    # -- one round ------------------------------------------------------------------------

    async def run_once(self, limit: int = 50) -> int:
        """Lease up to `limit` due deliveries, send them concurrently; the number leased."""
        jobs = await self._in_db(self._lease, self.clock(), limit)
        if not jobs:
            return 0
        gate = asyncio.Semaphore(self.policy.concurrency)

        async def one(job: _Job) -> None:
            async with gate:
                await self._deliver(job)

        await asyncio.gather(*(one(job) for job in jobs))
        return len(jobs)

    def _lease(self, now: datetime, limit: int) -> list[_Job]:
        row = WebhookDeliveryRow

        def due() -> Any:
            return and_(
                row.status == DeliveryStatus.PENDING.value,
                row.next_attempt_at <= now,
                or_(row.lease_until.is_(None), row.lease_until < now),
            )

        with self.db.session() as s:
            candidates = s.scalars(
                select(row.id).where(due()).order_by(row.next_attempt_at).limit(limit)
            ).all()
            leased: list[str] = []
            # Sorted, so workers racing in PostgreSQL lock rows in one order (no deadlock).
            for delivery_id in sorted(candidates):
                result = s.execute(
                    update(row)
                    .where(row.id == delivery_id, due())
                    .values(lease_owner=self.worker_id, lease_until=now + self.policy.lease)
                    .execution_options(synchronize_session=False)
                )
                if rowcount(result) == 1:
                    leased.append(delivery_id)
            if not leased:
                return []
            rows = list(s.scalars(select(row).where(row.id.in_(leased)).order_by(row.id)))
            # Attempt numbers in the history; stable while we hold the lease.
            last_sequence: dict[str, int] = {
                delivery_id: int(n or 0)
                for delivery_id, n in s.execute(
                    select(WebhookAttemptRow.delivery_id, func.max(WebhookAttemptRow.attempt))
                    .where(WebhookAttemptRow.delivery_id.in_(leased))
                    .group_by(WebhookAttemptRow.delivery_id)
                )
            }
            agents = {
                a.id: a
                for a in s.execute(
                    select(
                        AgentRow.id,
                        AgentRow.tenant_id,
                        AgentRow.webhook_secret,
                        AgentRow.webhook_secret_env,
                    ).where(AgentRow.id.in_(sorted({r.agent_id for r in rows})))
                )
            }
        jobs = []
        for r in rows:
            secret, problem = self._secret_for(r, agents.get(r.agent_id))
            jobs.append(
                _Job(
                    id=r.id,
                    tenant_id=r.tenant_id,
                    agent_id=r.agent_id,
                    output_id=r.output_id,
                    event_type=r.event_type,
                    url=r.url,
                    payload=r.payload,
                    attempt=r.attempts + 1,
                    sequence=last_sequence.get(r.id, 0) + 1,
                    max_attempts=r.max_attempts,
                    secret=secret,
                    secret_problem=problem,
                    traceparent=r.traceparent,
                )
            )
        return jobs

    def _secret_for(self, row: WebhookDeliveryRow, agent: Any) -> tuple[str | None, str | None]:
        """The agent's current secret, or why there is none (safe to record and log)."""
        if agent is None or agent.tenant_id != row.tenant_id:
            return None, f"agent {row.agent_id} no longer exists; nothing to sign with"
        if agent.webhook_secret:
            return str(agent.webhook_secret), None
        if agent.webhook_secret_env:
            try:
                value = self.secrets(agent.webhook_secret_env)
            except SecretNotAllowed as refused:  # a reserved name, stored before the rule
                return None, refused.detail
            if value:
                return value, None
            return None, (
                f"webhook secret environment variable {agent.webhook_secret_env} "
                "is not set on this server"
            )
        return None, f"agent {row.agent_id} has no webhook secret"

    async def send_test(
        self,
        tenant_id: str,
        url: str,
        *,
        agent_id: str | None,
        agent_name: str,
        secret_env: str | None = None,
    ) -> TestDelivery:
        """POST one signed `webhook.test` event to `url` now, through the same guard,
        signing and client as real deliveries; nothing is queued or recorded. The secret
        is read from `secret_env` (the operator's rule applies) or else is the stored
        agent's. For the "Send test event" button of the Slack agent form."""
        if secret_env:
            try:
                secret, problem = self.secrets(secret_env), None
            except SecretNotAllowed as refused:
                secret, problem = None, refused.detail
            if not secret and problem is None:
                problem = f"environment variable {secret_env} is not set on this server"
        else:
            secret, problem = await self._in_db(self._stored_secret, tenant_id, agent_id)
        msg_id = new_message_id()
        payload = {
            "type": TEST_EVENT,
            "timestamp": self.clock().isoformat(),
            "data": {"agentId": agent_id, "agentName": agent_name, "test": True},
        }
        job = _Job(
            id=msg_id,
            tenant_id=tenant_id,
            agent_id=agent_id or "",
            output_id=None,
            event_type=TEST_EVENT,
            url=url,
            payload=payload,
            attempt=1,
            sequence=1,
            max_attempts=1,
            secret=secret,
            secret_problem=problem,
        )
        result = await self._attempt(job)
        return TestDelivery(
            delivered=result.delivered,
            status_code=result.status_code,
            error=result.error,
            duration_ms=result.duration_ms,
        )

    def _stored_secret(self, tenant_id: str, agent_id: str | None) -> tuple[str | None, str | None]:
        if agent_id is None:
            return None, "name the environment variable that holds the webhook secret"
        with self.db.session() as s:
            agent = s.execute(
                select(
                    AgentRow.id,
                    AgentRow.tenant_id,
                    AgentRow.webhook_secret,
                    AgentRow.webhook_secret_env,
                ).where(AgentRow.id == agent_id, AgentRow.tenant_id == tenant_id)
            ).first()
        if agent is not None and agent.webhook_secret_env:
            try:
                value = self.secrets(agent.webhook_secret_env)
            except SecretNotAllowed as refused:
                return None, refused.detail
            if not value:
                return None, f"environment variable {agent.webhook_secret_env} is not set"
            return value, None
        if agent is not None and agent.webhook_secret:
            return str(agent.webhook_secret), None
        return None, "the agent has no webhook secret yet"

    async def _deliver(self, job: _Job) -> None:
        with tracing.span(
            f"webhook {job.event_type}",
            kind="client",
            parent=job.traceparent,
            attributes={
                "cosmo.webhook.id": job.id,
                "cosmo.webhook.event": job.event_type,
                "cosmo.webhook.attempt": job.attempt,
                "cosmo.output.id": job.output_id,
                "cosmo.tenant": job.tenant_id,
            },
        ) as span:
            await self._deliver_traced(job, span)

    async def _deliver_traced(self, job: _Job, span: tracing.Span) -> None:
        try:
            result = await self._attempt(job)
            final = await self._in_db(self._record, job, result, self.clock())
        except Exception as exc:  # never let one delivery stop the others
            log.error("webhook %s: attempt not recorded: %s", job.id, _describe(exc))
            span.fail(type(exc).__name__)
            return
        span.set(
            {
                "http.response.status_code": result.status_code,
                "cosmo.webhook.outcome": "delivered"
                if result.delivered
                else (final.value if final is not None else "retry"),
            }
        )
        if not result.delivered:
            span.fail("gone" if result.gone else "undelivered")
        if final is not None and job.output_id is not None:
            await self._in_db(set_notification, self.outputs, job.tenant_id, job.output_id, final)

    async def _attempt(self, job: _Job) -> _Result:
        started = time.perf_counter()

        def done(**kwargs: Any) -> _Result:
            elapsed = int((time.perf_counter() - started) * 1000)
            error = kwargs.pop("error", None)
            if error is not None:
                error = error[:MAX_ERROR_CHARS]
            return _Result(duration_ms=elapsed, error=error, **kwargs)

        if job.secret is None:
            return done(error=job.secret_problem or "no webhook secret")
        body = encode_body(job.payload)
        budget, timeout = self.policy.attempt_budget, self.policy.timeout
        try:
            async with asyncio.timeout(budget):
                target = await run_sync(
                    check_webhook_url,
                    job.url,
                    allow_insecure=self.policy.allow_insecure,
                    resolver=self.resolver,
                )
                headers = signed_headers(
                    job.secret, job.id, body, now=int(self.clock().timestamp())
                )
                headers["content-type"] = "application/json"
                headers["user-agent"] = USER_AGENT
                response = await self._post(target, headers, body)
        except UnsafeWebhookUrl as exc:
            return done(error=f"URL refused at send time: {exc.detail}")
        except ValueError as exc:  # a malformed secret; parse_secret never repeats it
            return done(error=f"cannot sign: {exc}")
        except TimeoutError:
            return done(error=f"no answer within {budget:g}s")
        except httpx.TimeoutException as exc:
            return done(error=f"timed out ({type(exc).__name__}) after {timeout:g}s")
        except httpx.HTTPError as exc:
            return done(error=_describe_http_error(exc))
        code = response.status_code
        if 200 <= code < 300:
            return done(delivered=True, status_code=code)
        if code == 410:
            return done(gone=True, status_code=code, error="receiver said 410 Gone; not retrying")
        if 300 <= code < 400:
            return done(
                status_code=code, error=f"receiver answered {code}; redirects are not followed"
            )
        retry_after = parse_retry_after(response.headers.get("retry-after"), self.clock())
        return done(status_code=code, error=f"receiver answered {code}", retry_after=retry_after)

    async def _post(
        self, target: ResolvedTarget, headers: dict[str, str], body: bytes
    ) -> httpx.Response:
        """POST to each validated address in turn until one accepts the connection."""
        headers = {**headers, "host": target.host_header}
        extensions: dict[str, Any] = {}
        if target.scheme == "https" and _is_name(target.host):
            extensions["sni_hostname"] = target.host
        last: httpx.ConnectError | None = None
        for address in target.addresses:
            literal = f"[{address}]" if ":" in address else address
            request = self._http.build_request(
                "POST",
                f"{target.scheme}://{literal}:{target.port}{target.target}",
                headers=headers,
                content=body,
                timeout=self.policy.timeout,
                extensions=extensions,
            )
            try:
                response = await self._http.send(request, stream=True, follow_redirects=False)
            except httpx.ConnectError as exc:
                last = exc
                continue
            await response.aclose()  # the status is all we need; never read a huge body
            return response
        assert last is not None  # check_webhook_url never returns an empty address list
        raise last

    def _record(self, job: _Job, result: _Result, now: datetime) -> NotificationStatus | None:
        """Record the attempt and move the row on, in one transaction; the final status."""
        if result.delivered:
            status, final = DeliveryStatus.DELIVERED, NotificationStatus.DELIVERED
        elif result.gone or job.attempt >= job.max_attempts:
            status, final = DeliveryStatus.FAILED, NotificationStatus.FAILED
        else:
            status, final = DeliveryStatus.PENDING, None
        next_at = now
        if status is DeliveryStatus.PENDING:
            delay = self.policy.retry_delay(job.attempt, result.retry_after, self.jitter)
            next_at = now + timedelta(seconds=delay)
        row = WebhookDeliveryRow
        with self.db.session() as s:
            result_ = s.execute(
                update(row)
                .where(
                    row.id == job.id,
                    row.lease_owner == self.worker_id,
                    row.status == DeliveryStatus.PENDING.value,
                    row.attempts == job.attempt - 1,
                )
                .values(
                    status=status.value,
                    attempts=job.attempt,
                    next_attempt_at=next_at,
                    last_attempt_at=now,
                    last_status_code=result.status_code,
                    last_error=result.error,
                    lease_owner=None,
                    lease_until=None,
                    delivered_at=now if result.delivered else None,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            if rowcount(result_) != 1:
                # Our lease expired and another worker took the row: it records its own.
                log.warning("webhook %s: lease lost before recording attempt", job.id)
                return None
            s.add(
                WebhookAttemptRow(
                    id=new_id("wha"),
                    delivery_id=job.id,
                    attempt=job.sequence,
                    status_code=result.status_code,
                    error=result.error,
                    duration_ms=result.duration_ms,
                    created_at=now,
                )
            )
        outcome = "retry" if status is DeliveryStatus.PENDING else status.value
        metrics.webhook_attempt(outcome, job.attempt)
        log.info(
            "webhook %s (%s, agent %s) attempt %d/%d: %s%s",
            job.id,
            job.event_type,
            job.agent_id,
            job.attempt,
            job.max_attempts,
            status.value,
            f" - {result.error}" if result.error else "",
        )
        return final

    async def _in_db(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._db_lane.run(fn, *args, **kwargs)


def _is_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def _describe_http_error(exc: httpx.HTTPError) -> str:
    """What went wrong on the wire, without the URL (its query may carry a token)."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect: {text}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"receiver closed the connection: {text}"
    return f"{type(exc).__name__}: {text}"


def _describe(exc: BaseException) -> str:
    """An error for the log. SQLAlchemy messages carry bound parameters (payloads): drop them."""
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        first = str(orig).splitlines()[0] if orig is not None and str(orig) else ""
        return f"{type(exc).__name__}({type(orig).__name__ if orig else ''}) {first}".strip()
    return f"{type(exc).__name__}: {exc}"
