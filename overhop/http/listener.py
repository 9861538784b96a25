"""The HTTP listener: an aiohttp application on the broker's event loop.

aiohttp because it is asyncio-native (it runs on the loop uvloop already drives, so pages
read broker state without locks or threads), mature and maintained, and gives both the
server and the streaming responses (server-sent events) the dashboard needs, with no
framework on top. Every handler only reads memory or runs short LMDB read transactions,
each bounded (a page of jobs, one job, the per-queue counters), so none holds the loop.

On the PostgreSQL engine a read can find the database unavailable (a failover): the page,
API call or scrape then answers 503 with the error (`unavailable_as_503`), not a 500 and a
logged traceback.
"""

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from overhop.errors import ErrorCode, RequestError
from overhop.http import dashboard
from overhop.http.health import handle_health, handle_ready
from overhop.http.keys import SOURCES
from overhop.http.metrics import CONTENT_TYPE, render_text, take_snapshot
from overhop.http.sources import Sources
from overhop.logs import get_logger

log = get_logger("overhop.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Streams (server-sent events) are told to end at shutdown; a second is enough for the
# rest of the requests in flight, which are all short reads.
SHUTDOWN_TIMEOUT_S = 1.0


async def handle_metrics(request: web.Request) -> web.Response:
    sources = request.app[SOURCES]
    snapshot = await take_snapshot(sources)  # on the loop: plain numbers, awaited reads
    body = await asyncio.to_thread(render_text, snapshot, sources.writer.pid)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


@web.middleware
async def unavailable_as_503(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as exc:
        if exc.code != ErrorCode.STORAGE_UNAVAILABLE:
            raise
        return web.json_response({"error": exc.code.value, "message": exc.message},
                                 status=503, headers={"Retry-After": "1"})


def build_app(sources: Sources) -> web.Application:
    # Actions send small JSON bodies.
    app = web.Application(client_max_size=256 * 1024, middlewares=[unavailable_as_503])
    app[SOURCES] = sources
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/health", handle_health)
    app.router.add_get("/ready", handle_ready)
    dashboard.install(app, sources)
    return app


class HttpListener:
    def __init__(self, sources: Sources) -> None:
        self._sources = sources
        self._app = build_app(sources)
        self._runner = web.AppRunner(self._app, access_log=None,
                                     shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        self.host = ""
        self.port = 0

    async def start(self) -> None:
        """Listen on http.host:http.port (OSError when that address cannot be had)."""
        config = self._sources.config.http
        await self._runner.setup()
        site = web.TCPSite(self._runner, config.host, config.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        self.host, self.port = self._runner.addresses[0][:2]
        log.info("http_started", host=self.host, port=self.port,
                 read_only=config.read_only)

    async def stop(self) -> None:
        dashboard.close(self._app)
        await self._runner.cleanup()
        log.info("http_stopped")


class HttpStartError(Exception):
    """The HTTP listener could not start; str() is one line saying why."""


async def start_http(sources: Sources) -> HttpListener | None:
    """The started listener, or None when `http.enabled` is false."""
    config = sources.config.http
    if not config.enabled:
        return None
    listener = HttpListener(sources)
    try:
        await listener.start()
    except OSError as exc:
        raise HttpStartError(f"cannot listen on {config.host}:{config.port} (http): "
                             f"{exc.strerror or exc}") from None
    return listener
