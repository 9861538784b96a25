"""Queue handlers: listing, adding, removing, pausing, settings, clearing, stats."""

from typing import TYPE_CHECKING, Any

from overhop.broker.explain import queue_dispatch_stats
from overhop.broker.runtime import QueueRuntime
from overhop.clock import now_ms
from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import JobStatus
from overhop.model.queues import QueueRecord, QueueState, parse_queue_config, parse_queue_name
from overhop.server.context import ServerContext
from overhop.server.status import status_report
from overhop.server.views import queue_view
from overhop.wire.encoding import fitting_prefix
from overhop.wire.payloads import (
    parse_int,
    parse_optional_map,
    parse_optional_str,
)

if TYPE_CHECKING:
    from overhop.cluster.member import ClusterMember
    from overhop.server.connection import Connection

from overhop.server.handlers.replies import EMPTY, Reply, empty, pending


def handle_queue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    name = parse_queue_name(p.get("q"))
    runtime = ctx.broker.queues.get(name)
    if runtime is None:
        ctx.broker.check_here(name)
        return EMPTY
    return queue_view(runtime.record)


def handle_lsqueue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    after = parse_optional_str(p, "after", max_length=128)
    limit = parse_int(p, "limit", low=1, high=100_000, default=100_000)
    if ctx.cluster is not None:
        return pending(ctx, _cluster_queues(ctx, ctx.cluster, after, limit))
    records = {name: runtime.record for name, runtime in ctx.broker.queues.items()}
    return _queue_page(ctx, records, after, limit, None)


async def _cluster_queues(ctx: ServerContext, member: "ClusterMember", after: str | None,
                          limit: int) -> dict[str, Any]:
    """Every queue of the cluster, each with its owner's address."""
    records = {record.name: record for record in await ctx.reads.load_queues()}
    for name, runtime in ctx.broker.queues.items():
        records[name] = runtime.record
    return _queue_page(ctx, records, after, limit, member.routes())


def _queue_page(ctx: ServerContext, records: dict[str, QueueRecord], after: str | None,
                limit: int, owners: dict[str, str | None] | None) -> dict[str, Any]:
    names = sorted(name for name in records if after is None or name > after)
    views = (queue_view(records[name]) if owners is None
             else {**queue_view(records[name]), "owner": owners.get(name)}
             for name in names[:limit])
    page, cut = fitting_prefix(views, ctx.config.wire.max_envelope_size_bytes // 2)
    more = cut or len(names) > limit
    return {"queues": page, "next_after": page[-1]["name"] if more else None}


def handle_addqueue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    name = parse_queue_name(p.get("name"), field="name")
    config = parse_queue_config(p.get("config"))
    return (ctx.broker.add_queue(name, config),
            lambda record: {"qid": record.queue_id})


def handle_status(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return pending(ctx, status_report(ctx))


def handle_rmqueue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return ctx.broker.remove_queue(parse_queue_name(p.get("q"))), empty


def handle_pause(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return (ctx.broker.set_queue_state(parse_queue_name(p.get("q")),
                                          QueueState.PAUSED), empty)


def handle_resume(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return (ctx.broker.set_queue_state(parse_queue_name(p.get("q")),
                                          QueueState.ACTIVE), empty)


def handle_qstats(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    queue_name = parse_queue_name(p.get("q"))
    runtime = ctx.broker.user_queue(queue_name)
    return pending(ctx, _qstats_reply(ctx, queue_name, runtime))


async def _qstats_reply(ctx: ServerContext, queue_name: str, runtime: QueueRuntime
                        ) -> dict[str, Any]:
    counts = await ctx.reads.counts(queue_name)
    return {
        "q": queue_name,
        "stats": {status.label: counts[status] for status in JobStatus},
        **await queue_dispatch_stats(ctx.broker, runtime, now_ms()),
    }


def handle_setqueue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    name = parse_queue_name(p.get("q"))
    changes = parse_optional_map(p, "config")
    if not changes:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, "'config' must name settings to change")
    parse_queue_config(changes)  # refuse a bad request before anything changes
    return (ctx.broker.change_settings(name, changes),
            lambda record: {"config": record.config.to_wire()})


def handle_clearqueue(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    name = parse_queue_name(p.get("q"))
    return (ctx.broker.clear_queue(name),
            lambda removed: {"removed": {s.label: n for s, n in removed.items()}})


def handle_obliterate(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    name = parse_queue_name(p.get("q"))
    force = p.get("force")
    if force is None:
        force = False
    if type(force) is not bool:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, "'force' must be a bool")
    return (ctx.broker.obliterate_queue(name, force),
            lambda removed: {"removed": removed})
