"""ROUTES: which broker owns which queue (cluster mode, protocol section 12)."""

from typing import TYPE_CHECKING, Any

from overhop.server.context import ServerContext

if TYPE_CHECKING:
    from overhop.server.connection import Connection

from overhop.server.handlers.replies import Reply


def handle_routes(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    member = ctx.cluster
    if member is None:
        return {"node": None, "nodes": {}, "queues": {}}
    return {"node": member.node_id, "nodes": dict(member.nodes), "queues": member.routes()}
