"""What every handler shares: the reply types, and job ids and views."""

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from overhop.broker.explain import explain_job
from overhop.model.jobs import JobRecord
from overhop.server.context import ServerContext
from overhop.server.views import job_view
from overhop.wire.payloads import (
    parse_str,
)

if TYPE_CHECKING:
    from overhop.server.connection import Connection


Pending = tuple["asyncio.Future[Any]", Callable[[Any], dict[str, Any]]]


Reply = dict[str, Any] | Pending


Handler = Callable[[ServerContext, "Connection", dict[str, Any]], Reply]


EMPTY: dict[str, Any] = {}


def empty(_: Any) -> dict[str, Any]:
    return {}


def job_id(p: dict[str, Any]) -> str:
    return parse_str(p, "jid", max_length=200)


async def describe_job(ctx: ServerContext, job: JobRecord, now: int) -> dict[str, Any]:
    broker = ctx.broker
    explained = await explain_job(broker, job, now)
    delivery = broker.deliveries.get(job.delivery_id) if job.delivery_id else None
    return job_view(job, broker.policy(job), delivery, explained)


def pending(ctx: ServerContext, reading: "Coroutine[Any, Any, dict[str, Any]]") -> Reply:
    """A reply that needs storage reads: sent when `reading` returns it. On an engine whose
    reads answer at once (LMDB) it is run to its end here, so the reply is built now, as
    before reads were awaited (and counts against the connection's write buffer at once)."""
    if ctx.reads.immediate:
        try:
            reading.send(None)
        except StopIteration as done:
            return cast(dict[str, Any], done.value)
        reading.close()
        raise RuntimeError("a read of an immediate engine suspended")
    return asyncio.ensure_future(reading), _as_is


def _as_is(reply: dict[str, Any]) -> dict[str, Any]:
    return reply
