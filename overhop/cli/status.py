"""`overhop status`: the server's version, uptime, memory, storage and connected workers."""

import click
from overhop_client import MessageType, ServerStatus

from overhop.cli.render import emit_json, fields, table
from overhop.cli.session import call, common


def render_status(status: ServerStatus) -> str:
    """The server's summary as `key  value` fields, then its workers as a table."""
    storage = status.storage
    application = status.raw.get("application") or {}
    summary = fields([
        ("version", status.version), ("pid", status.pid), ("started", status.started_at),
        ("uptime", f"{status.uptime.total_seconds():.0f}s"),
        ("config", status.config_source or application.get("config_source")),
        ("memory (rss)", f"{status.rss_bytes} bytes"), ("connections", status.connections),
        ("workers", len(status.workers)), ("deliveries", status.deliveries),
        ("queues", len(status.queues)), ("storage", storage.get("path")),
        ("storage used", f"{storage.get('map_used_bytes', 0)} bytes of the map's "
                         f"{storage.get('map_size_bytes', 0)} (grows up to "
                         f"{storage.get('max_map_size_bytes', 0)})"),
        ("space low", storage.get("space_low")),
    ])
    workers = table(["WORKER", "NAME", "STATE", "CONCURRENCY", "HOST", "PID",
                     "SUBSCRIPTIONS", "DELIVERIES", "LAST SEEN"],
                    [[w.worker_id, w.metadata.get("name"), w.state, w.concurrency,
                      w.metadata.get("host"), w.metadata.get("pid"), w.subscriptions,
                      w.deliveries, w.last_seen_at]
                     for w in status.workers])
    return f"{summary}\n\n{workers}"


@click.command("status")
@common
def status_command(url: str, as_json: bool) -> None:
    """The server's version, uptime, memory, storage and connected workers."""
    raw = call(url, lambda client: client.request(MessageType.STATUS))
    if as_json:
        emit_json(raw)
    else:
        click.echo(render_status(ServerStatus.from_wire(raw)))
