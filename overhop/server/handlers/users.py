"""User administration: USERADD, USERLIST, USERRM, USERPERMIT (the `admin` verb on `*`).

The client derives the SCRAM keys (`overhop users add` does it from the password it
prompts for), so a password never crosses the wire, not even to the server. Each change
is written through the writer, then made in memory: it applies to the next login and to
every live connection's next request. A removed user's connections are closed; the first
user ends open access, so every connection without a user is closed then.
"""

import asyncio
from typing import TYPE_CHECKING, Any

from overhop.auth.permissions import parse_permissions
from overhop.auth.users import UserRecord, parse_credentials, parse_user_name
from overhop.clock import now_ms, to_rfc3339
from overhop.errors import ErrorCode, RequestError
from overhop.server.context import ServerContext
from overhop.server.handlers.replies import Reply, empty
from overhop.storage.operations.catalogue import AddUser, RemoveUser, SetUserPermissions
from overhop.storage.user_records import encode_user

if TYPE_CHECKING:
    from overhop.server.connection import Connection


def user_view(user: UserRecord) -> dict[str, Any]:
    return {"name": user.name, "permissions": sorted(str(p) for p in user.permissions),
            "iterations": user.credentials.iterations,
            "created_at": to_rfc3339(user.created_at_ms)}


def handle_useradd(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    name = parse_user_name(p.get("name"))
    credentials = parse_credentials(p.get("salt"), p.get("iterations"), p.get("stored_key"),
                                    p.get("server_key"))
    permissions = parse_permissions(p.get("permissions") or [])
    record = UserRecord(name, credentials, permissions, now_ms())

    async def add() -> UserRecord:
        await ctx.writer.submit(AddUser(encode_user(record), ctx.auth.secret)).durable
        first = ctx.auth.open_access
        ctx.auth.users[name] = record
        conn.log.info("user_added", name=name, permissions=sorted(map(str, permissions)))
        if first and not ctx.auth.open_access:
            _end_open_access(ctx, conn)
        return record

    return asyncio.ensure_future(add()), user_view


def _end_open_access(ctx: ServerContext, requester: "Connection") -> None:
    """The first user exists: connections without a user lose their rights. They are
    closed (the requester after its reply, which is on its way)."""
    closed = [other for other in ctx.connections if other.auth.user is None]
    for other in closed:
        if other is requester:
            close_after_reply(other)
        else:
            other.close()
    requester.log.warning("open_access_ended", connections_closed=len(closed))


def close_after_reply(conn: "Connection") -> None:
    """Close `conn` once the reply of the request being completed now has gone out.

    Called from the task whose result is that reply: the task's done callbacks (the
    connection's reply) are scheduled when the task returns, after this callback; this
    one then schedules the close behind them."""
    loop = asyncio.get_running_loop()
    loop.call_soon(loop.call_soon, conn.close)


def handle_userlist(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    return {"users": [user_view(user) for _, user in sorted(ctx.auth.users.items())]}


def handle_userrm(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    name = parse_user_name(p.get("name"))

    async def remove() -> None:
        await ctx.writer.submit(RemoveUser(name)).durable
        ctx.auth.users.pop(name, None)
        conn.log.info("user_removed", name=name)
        for other in list(ctx.connections):
            if other.auth.user == name:
                if other is conn:
                    close_after_reply(other)
                else:
                    other.log.info("connection_closed_user_removed")
                    other.close()

    return asyncio.ensure_future(remove()), empty


def handle_userpermit(ctx: ServerContext, conn: "Connection", p: dict[str, Any]) -> Reply:
    name = parse_user_name(p.get("name"))
    permissions = parse_permissions(p.get("permissions"))
    texts = sorted(str(permission) for permission in permissions)

    async def permit() -> UserRecord:
        await ctx.writer.submit(SetUserPermissions(name, texts)).durable
        current = ctx.auth.users.get(name)
        if current is None:  # removed meanwhile (its USERRM committed after this write)
            raise RequestError(ErrorCode.USER_NOT_FOUND, f"no user {name!r}")
        user = current.with_permissions(permissions)
        ctx.auth.users[name] = user
        conn.log.info("user_permissions_set", name=name, permissions=texts)
        return user

    return asyncio.ensure_future(permit()), user_view

