"""Traces of a turn's path through our processes, as OpenTelemetry spans when the
`cosmo-agents[otel]` extra is installed and `bot.telemetry` switched it on, and nothing at
all otherwise: every call here is then a no-op that imports nothing.

Work crosses processes (Slack's ack in `cosmo serve`, the turn in a `cosmo worker`, the
decision in a later HTTP request, the webhook from whichever worker leases it), so a span's
context travels as a W3C `traceparent` string: in a job's payload (`core.jobs.queue`), on
an output and on an outbox row, and a later span names it as its `parent` or in `links`.

Span attributes carry ids, names of agents, skills and models, counts and outcomes; never
message text, prompts, arguments or secrets.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

Kind = Literal["internal", "server", "client", "producer", "consumer"]
AttributeValue = str | bool | int | float | Sequence[str]

#: The key a job's payload carries its enqueuer's trace context under.
PAYLOAD_KEY = "traceparent"


class Span:
    """An open span as callers see it: add attributes, record a failure."""

    __slots__ = ("_span",)

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set(self, attributes: Mapping[str, AttributeValue | None]) -> None:
        """Set attributes (None values are left out)."""
        if self._span is not None:
            self._span.set_attributes(_clean(attributes))

    def rename(self, name: str) -> None:
        """Name the span once more is known (an HTTP route once it is matched)."""
        if self._span is not None:
            self._span.update_name(name)

    def fail(self, error_type: str, description: str | None = None) -> None:
        """Mark the span as an error of `error_type` (a class name or an outcome, no text
        a user wrote)."""
        if self._span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("error.type", error_type)
        self._span.set_status(Status(StatusCode.ERROR, description))

    @property
    def traceparent(self) -> str | None:
        return _format(self._span.get_span_context()) if self._span is not None else None


NO_SPAN = Span()
_tracer: Any = None


def install(provider: Any) -> None:
    """Trace through `provider` (an SDK `TracerProvider`). `bot.telemetry` calls this at
    process start; tests install one with an in-memory exporter. We keep the provider to
    ourselves instead of setting OpenTelemetry's global one, so libraries that trace on
    their own (the anthropic SDK does) add no second copy of our spans."""
    global _tracer
    _tracer = provider.get_tracer("cosmo-agents")


def uninstall() -> None:
    global _tracer
    _tracer = None


def enabled() -> bool:
    return _tracer is not None


@contextmanager
def span(
    name: str,
    *,
    kind: Kind = "internal",
    parent: str | None = None,
    links: Sequence[str | None] = (),
    link_current: bool = False,
    attributes: Mapping[str, AttributeValue | None] | None = None,
) -> Iterator[Span]:
    """Open a span for the block and make it current (spans opened inside are its
    children, jobs enqueued inside carry it). `parent` continues a stored `traceparent`
    instead of the current span; `link_current` then links the span that was current (the
    request that made a decision links to the turn it decides on)."""
    if _tracer is None:
        yield NO_SPAN
        return
    from opentelemetry import trace

    context = None
    found = [c for c in (_parse(t) for t in links) if c is not None]
    stored = _parse(parent)
    if stored is not None:
        if link_current:
            here = trace.get_current_span().get_span_context()
            if here.is_valid:
                found.append(here)
        context = trace.set_span_in_context(trace.NonRecordingSpan(stored))
    with _tracer.start_as_current_span(
        name,
        context=context,
        kind=_KINDS[kind](),
        attributes=_clean(attributes or {}),
        links=[trace.Link(c) for c in found],
    ) as current:
        yield Span(current)


def current() -> Span:
    """The current span (to add attributes to it), or a no-op one."""
    if _tracer is None:
        return NO_SPAN
    from opentelemetry import trace

    found = trace.get_current_span()
    return Span(found) if found.get_span_context().is_valid else NO_SPAN


def traceparent() -> str | None:
    """The current span's context as a W3C `traceparent`, to store with work that another
    process (or a later request) continues; None when not tracing."""
    return current().traceparent


def with_trace(payload: Mapping[str, Any]) -> dict[str, Any]:
    """`payload` with the current trace context added under `PAYLOAD_KEY` (when tracing
    and it does not carry one already)."""
    here = traceparent()
    if here is None or PAYLOAD_KEY in payload:
        return dict(payload)
    return {**payload, PAYLOAD_KEY: here}


# -- W3C trace context ----------------------------------------------------------------------


def _format(context: Any) -> str | None:
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _parse(value: str | None) -> Any:
    """A stored `traceparent` as a remote span context; None for anything malformed (a
    payload is stored data: a bad value must not stop the work it came with)."""
    if not value or not isinstance(value, str):
        return None
    parts = value.strip().split("-")
    if len(parts) != 4 or parts[0] != "00":
        return None
    _version, trace_hex, span_hex, flags_hex = parts
    if (len(trace_hex), len(span_hex), len(flags_hex)) != (32, 16, 2):
        return None
    try:
        trace_id, span_id, flags = int(trace_hex, 16), int(span_hex, 16), int(flags_hex, 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    from opentelemetry.trace import SpanContext, TraceFlags

    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 1))


def _clean(attributes: Mapping[str, AttributeValue | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        out[key] = list(value) if isinstance(value, list | tuple) else value
    return out


def _kind_of(name: str) -> Any:
    def get() -> Any:
        from opentelemetry.trace import SpanKind

        return getattr(SpanKind, name)

    return get


_KINDS = {k: _kind_of(k.upper()) for k in ("internal", "server", "client", "producer", "consumer")}
