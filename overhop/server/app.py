"""Boot and shutdown: open the store, start the writer, load the broker, serve, stop.

Shutdown order (SIGINT, SIGTERM, or SIGHUP: the terminal went away): stop accepting; send
BYE to every connection; wait up to `shutdown.grace_ms` for the outcomes of jobs in flight;
give back what is still out; close the connections; let the writer finish every write
already submitted; close the store; exit 0.

If the writer process dies (it crashed or was killed), the server can no longer change
anything: at once it closes the listener and stops reading every connection (nothing more
is taken in, so nothing more is answered), then takes the shutdown path without the grace
period (no outcome could be written) and exits 1, for a supervisor to restart it.
"""

import asyncio
import signal
import sys
import time
from pathlib import Path

import uvloop

from overhop import __version__
from overhop.broker.service import Broker
from overhop.clock import now_ms
from overhop.config.loading import LoadedConfig
from overhop.config.schema import Config
from overhop.gc_tuning import tune_gc_for_serving
from overhop.http.listener import HttpStartError, start_http
from overhop.http.sources import Sources
from overhop.logs import get_logger
from overhop.model.jobs import AttemptOutcome
from overhop.server.authentication import AuthService, exposure_refusal, new_secret
from overhop.server.connection import Connection
from overhop.server.context import ServerContext
from overhop.server.heartbeat import run_heartbeat
from overhop.server.tls import TlsError, tls_for
from overhop.session.states import SessionLimits
from overhop.storage.engines import open_engine
from overhop.storage.store import Store, StoreOpenError
from overhop.storage.writer import Writer, WriterStartError
from overhop.wire.messages import MessageType

log = get_logger("overhop.server")
# How often shutdown looks whether the jobs in flight have ended during the grace period.
GRACE_POLL_S = 0.02
# Each starts the graceful shutdown. SIGHUP too: a server started from a terminal that
# closes (an ssh session ending) stops as with Ctrl-C rather than dying mid-write; there is
# no configuration reload to give it instead.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def session_limits(config: Config) -> SessionLimits:
    session = config.wire.session
    return SessionLimits(
        unhelloed_max_lifetime_ms=session.unhelloed_max_lifetime_seconds * 1000,
        helloed_unregistered_max_lifetime_ms=session.helloed_unregistered_max_lifetime_seconds
        * 1000,
        ident_register_timeout_ms=session.ident_register_timeout_seconds * 1000,
    )


def run_server(loaded: LoadedConfig, storage_path: Path | None = None) -> int:
    """Serve until SIGINT, SIGTERM or SIGHUP; the process exit status."""
    tune_gc_for_serving()
    return uvloop.run(serve(loaded, storage_path))


async def serve(loaded: LoadedConfig, storage_path: Path | None = None,
                stop: asyncio.Event | None = None,
                started: "asyncio.Future[tuple[str, int]] | None" = None) -> int:
    config = loaded.config
    loop = asyncio.get_running_loop()
    own_signals = stop is None
    if stop is None:
        # Installed first: a signal during boot or right after `server_started` must take the
        # graceful path, not kill the process.
        stop = asyncio.Event()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop.set)
    path = storage_path or Path(config.storage.resolved_path())
    try:
        store, reads = await open_engine(config.storage, path, config.cluster.node_id)
    except StoreOpenError as exc:
        print(f"overhop: {exc}", file=sys.stderr)
        return 2
    serving: list[tuple[ServerContext, asyncio.Server]] = []

    def writer_lost() -> None:
        for ctx_, server_ in serving:
            halt(ctx_, server_)
        stop.set()

    writer = Writer(store, loop, sync=config.storage.sync,
                    max_batch=config.storage.max_batch_operations,
                    max_map_size=config.storage.max_map_size_bytes,
                    reserved_headroom=config.storage.reserved_headroom_bytes,
                    jobs=config.jobs, on_lost=writer_lost,
                    cluster_lease_ms=config.cluster.lease_ms)
    try:
        await writer.start()
    except WriterStartError as exc:
        print(f"overhop: {exc}", file=sys.stderr)
        await reads.close()
        return 2
    broker = Broker(config, reads, writer, now_ms)
    boot_started = time.perf_counter()
    await broker.boot()
    ctx = ServerContext(config, reads, writer, broker, session_limits(config), now_ms(),
                        loaded.source)
    users, secret = await reads.load_users()
    if secret is None:  # stored with the first user: a server without users writes nothing
        secret = new_secret()
    ctx.auth = AuthService(config, users, secret)
    tls = None
    refusal = exposure_refusal(config, ctx.auth)
    try:
        tls = tls_for(config.server.tls)
    except TlsError as exc:
        refusal = str(exc)
    if refusal is not None:
        print(f"overhop: {refusal}", file=sys.stderr)
        await writer.stop()
        await reads.close()
        return 2
    try:
        server = await loop.create_server(
            (lambda: Connection(ctx)) if tls is None else tls.acceptor(lambda: Connection(ctx)),
            config.server.host, config.server.port, reuse_address=True, backlog=1024)
    except OSError as exc:
        print(f"overhop: cannot listen on {config.server.host}:{config.server.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        await writer.stop()
        await reads.close()
        return 2
    try:
        http = await start_http(Sources(config, broker, reads, writer, ctx.connections,
                                        ctx.started_at_ms, now_ms))
    except HttpStartError as exc:
        print(f"overhop: {exc}", file=sys.stderr)
        server.close()
        await writer.stop()
        await reads.close()
        return 2
    serving.append((ctx, server))
    if writer.lost:  # lost while booting
        halt(ctx, server)
    host, port = server.sockets[0].getsockname()[:2]
    if config.cluster.node_id:
        # Imported here: psycopg (about 0.13 s to import) only when a cluster is configured.
        from overhop.cluster.member import ClusterMember

        ctx.cluster = ClusterMember(config.cluster, config.cluster.advertise or f"{host}:{port}",
                                    config.storage.postgres.dsn, broker,
                                    refresh=lambda: reload_users(ctx))
        await ctx.cluster.start()
    if tls is not None and own_signals:
        loop.add_signal_handler(signal.SIGUSR1, tls.reload)
    log.info("server_started", version=__version__, host=host, port=port,
             tls=tls is not None, users=len(ctx.auth.users), open_access=ctx.auth.open_access,
             storage_engine=config.storage.engine,
             storage_path=str(path) if isinstance(store, Store) else store.described,
             writer_pid=writer.pid, config_source=loaded.source, queues=len(broker.queues),
             stale_readers_cleared=getattr(store, "stale_readers_cleared", 0),
             migrated_index_entries=getattr(store, "migrated_entries", 0),
             boot_ms=round((time.perf_counter() - boot_started) * 1000, 1))
    if started is not None:
        started.set_result((host, port))
    heartbeat = asyncio.create_task(run_heartbeat(ctx), name="heartbeat")
    await stop.wait()
    log.info("server_stopping")
    if http is not None:
        await http.stop()
    await shutdown(ctx, server, heartbeat)
    log.info("server_stopped")
    return 1 if writer.lost else 0


async def reload_users(ctx: ServerContext) -> None:
    """Cluster mode: the users as stored, which other brokers may have changed."""
    users, secret = await ctx.reads.load_users()
    ctx.auth.users = {user.name: user for user in users}
    if secret is not None:
        ctx.auth.secret = secret


def halt(ctx: ServerContext, server: asyncio.Server) -> None:
    """Take nothing more in: the writer is lost, so no request can be carried out."""
    if ctx.halted:
        return
    ctx.halted = True
    ctx.shutting_down = True
    server.close()
    for conn in list(ctx.connections):
        conn.halt()
    log.error("server_halted", reason="storage writer lost")


async def shutdown(ctx: ServerContext, server: asyncio.Server,
                   heartbeat: "asyncio.Task[None]") -> None:
    ctx.shutting_down = True
    server.close()
    ctx.broker.stop_dispatch()
    grace_ms = 0 if ctx.halted else ctx.config.shutdown.grace_ms
    for conn in list(ctx.connections):
        conn.push(MessageType.BYE, {"reason": "server_shutdown", "grace_ms": grace_ms})
    deadline = time.monotonic() + grace_ms / 1000
    while (ctx.broker.deliveries or not ctx.broker.quiet()) and time.monotonic() < deadline:
        await asyncio.sleep(GRACE_POLL_S)
    while not ctx.broker.quiet():  # a dispatch commit must land before its jobs go back
        await asyncio.sleep(GRACE_POLL_S)
    ctx.broker.end_all_deliveries(AttemptOutcome.SERVER_SHUTDOWN)
    heartbeat.cancel()
    if ctx.cluster is not None and not ctx.halted:
        await ctx.cluster.stop()  # the others take this broker's queues at once
    for conn in list(ctx.connections):
        conn.close()
    await ctx.writer.stop()
    await ctx.reads.close()
