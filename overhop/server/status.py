"""The STATUS report: application, memory, pools, storage and queues."""

import resource
from typing import Any

from overhop import __version__
from overhop.broker.runtime import QueueRuntime
from overhop.clock import now_ms, to_rfc3339
from overhop.model.jobs import JobStatus
from overhop.server.context import ServerContext
from overhop.server.views import queue_view
from overhop.session.states import SessionState
from overhop.wire.encoding import fitting_prefix


def rss_bytes() -> int:
    """Resident set size now, from /proc (Linux); the peak from getrusage elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def status_report(ctx: ServerContext) -> dict[str, Any]:
    broker = ctx.broker
    usage = await ctx.reads.usage()
    entries = [await _queue_entry(ctx, r) for r in list(broker.queues.values())]
    now = now_ms()
    anonymous = sum(1 for c in ctx.connections if c.session.state != SessionState.WORKER)
    # Each list gets a quarter of a frame, so the whole report always fits in one.
    budget = ctx.config.wire.max_envelope_size_bytes // 4
    queues, queues_cut = fitting_prefix(iter(entries), budget)
    workers, workers_cut = fitting_prefix(
        ({"wid": w.worker_id, "name": w.name, "state": w.state.value,
          "concurrency": w.concurrency, "registered_at": to_rfc3339(w.registered_at_ms),
          "last_seen_at": to_rfc3339(w.last_seen_ms), "metadata": w.metadata,
          "subscriptions": len(w.subscriptions), "deliveries": len(w.deliveries)}
         for w in broker.workers.values()), budget)
    return {
        "application": {
            "name": "overhop",
            "version": __version__,
            "pid": ctx.pid,
            "started_at": to_rfc3339(ctx.started_at_ms),
            "uptime_seconds": (now - ctx.started_at_ms) // 1000,
            "config_source": ctx.config_source,
        },
        "memory": {
            "rss_bytes": rss_bytes(),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        },
        "pools": {
            "connections": len(ctx.connections),
            "anonymous": anonymous,
            "workers": len(broker.workers),
            "subscriptions": sum(len(w.subscriptions) for w in broker.workers.values()),
            "deliveries": len(broker.deliveries),
            "deliveries_total": broker.dispatched_total,
            "connections_refused": ctx.connections_refused,
            "worker_list": workers,
            "worker_list_truncated": workers_cut,
        },
        "storage": {
            "engine": ctx.config.storage.engine,
            "path": usage.path,
            "file_bytes": usage.file_bytes,
            "map_size_bytes": usage.map_size_bytes,
            "map_used_bytes": usage.used_bytes,
            "max_map_size_bytes": ctx.config.storage.max_map_size_bytes,
            "sync": ctx.config.storage.sync,
            "commits": ctx.writer.commits,
            "operations": ctx.writer.operations,
            "space_low": ctx.writer.space_low,
            "write_failed": ctx.writer.failed,
        },
        "queues": queues,
        "queues_truncated": queues_cut,
        "cluster": None if ctx.cluster is None else {
            "node": ctx.cluster.node_id,
            "address": ctx.cluster.address,
            "nodes": len(ctx.cluster.nodes),
            "queues_owned": len(broker.queues),
        },
    }


async def _queue_entry(ctx: ServerContext, runtime: QueueRuntime) -> dict[str, Any]:
    entry = queue_view(runtime.record)
    if not runtime.record.is_system:
        counts = await ctx.reads.counts(runtime.record.name)
        entry["stats"] = {status.label: counts[status] for status in JobStatus}
    entry["subscriptions"] = len(runtime.subscriptions)
    entry["active_deliveries"] = runtime.active
    return entry
