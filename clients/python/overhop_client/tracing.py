"""OpenTelemetry traces for jobs, when `opentelemetry-api` is installed (it is optional).

The producer opens a `send {queue}` PRODUCER span around ENQUEUE (or ENQUEUEMANY: one
span for the batch) and injects its context into the job's `headers` (W3C `traceparent`,
`tracestate`), which the server stores with the job and hands back in every QUEST. The
worker opens a `process {queue}` CONSUMER span around each run of a handler, *linked* to
that context (a link, not a parent: a job may run hours after it was enqueued, and every
retry is its own span), and current while the handler runs, so the handler's own spans
are its children. Attributes follow the OpenTelemetry messaging conventions
(`messaging.system = "overhop"`, `messaging.destination.name`, `messaging.operation.*`,
`messaging.message.id`), plus `overhop.attempt` and `overhop.delivery_id`.

Without `opentelemetry-api` nothing here does anything and no `headers` are sent; with
the API but no SDK configured, spans are no-ops and inject nothing, so no headers either.
"""

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError:  # optional: without it, jobs are simply not traced
    trace = None  # type: ignore[assignment]

SYSTEM = "overhop"
_TRACER_NAME = "overhop_client"


class Sending:
    """One traced ENQUEUE or ENQUEUEMANY: the headers to send, and the span to finish."""

    def __init__(self, span: Any = None, headers: dict[str, str] | None = None) -> None:
        self._span = span
        self.headers = headers

    def sent(self, job_ids: list[str]) -> None:
        if self._span is not None and len(job_ids) == 1:
            self._span.set_attribute("messaging.message.id", job_ids[0])


def _tracer() -> Any:
    from overhop_client import __version__
    return trace.get_tracer(_TRACER_NAME, __version__)


def enabled() -> bool:
    return trace is not None


def sending(queue: str, jobs: int, own_headers: Mapping[str, str] | None = None
            ) -> AbstractContextManager[Sending]:
    """The PRODUCER span of an enqueue of `jobs` jobs; its `headers` (the caller's own,
    with the trace context added) go with each job, None when there are none."""
    if trace is None:  # untraced: no span, and only the caller's own headers
        return nullcontext(Sending(None, dict(own_headers) if own_headers else None))
    return _traced_sending(queue, jobs, dict(own_headers or {}))


@contextmanager
def _traced_sending(queue: str, jobs: int, headers: dict[str, str]) -> Iterator[Sending]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM, "messaging.destination.name": queue,
        "messaging.operation.name": "send", "messaging.operation.type": "send"}
    if jobs != 1:
        attributes["messaging.batch.message_count"] = jobs
    with _tracer().start_as_current_span(f"send {queue}", kind=SpanKind.PRODUCER,
                                         attributes=attributes) as span:
        propagate.inject(headers)
        yield Sending(span, headers or None)


@contextmanager
def processing(queue: str, job_id: str, attempt: int, delivery_id: str,
               headers: Mapping[str, str] | None) -> Iterator[Any]:
    """The CONSUMER span around one run of a job's handler, linked to its producer's."""
    if trace is None:
        yield None
        return
    links = []
    if headers:
        producer = trace.get_current_span(propagate.extract(dict(headers))).get_span_context()
        if producer.is_valid:
            links.append(Link(producer))
    attributes = {
        "messaging.system": SYSTEM, "messaging.destination.name": queue,
        "messaging.operation.name": "process", "messaging.operation.type": "process",
        "messaging.message.id": job_id, "overhop.attempt": attempt,
        "overhop.delivery_id": delivery_id}
    with _tracer().start_as_current_span(f"process {queue}", kind=SpanKind.CONSUMER,
                                         links=links, attributes=attributes) as span:
        yield span


def failed(span: Any, error_type: str, message: str) -> None:
    """Mark the CONSUMER span of a run that failed (`error.type`, status ERROR)."""
    if span is not None:
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, message))
