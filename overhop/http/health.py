"""`/health` (the process answers) and `/ready` (it can take work): JSON, 200 or 503."""

from typing import Any

from aiohttp import web

from overhop import __version__
from overhop.http.keys import SOURCES
from overhop.http.sources import Sources


def readiness(sources: Sources) -> tuple[bool, dict[str, Any]]:
    """Whether new work would be accepted, and each check by name."""
    writer = sources.writer
    checks = {
        "writer_running": not writer.lost,
        "storage_ok": not writer.failed,
        "space_ok": not writer.space_low,
    }
    return all(checks.values()), checks


async def handle_health(request: web.Request) -> web.Response:
    sources = request.app[SOURCES]
    return web.json_response({"status": "alive", "version": __version__,
                              "uptime_seconds": round(sources.uptime_seconds(), 3)})


async def handle_ready(request: web.Request) -> web.Response:
    ready, checks = readiness(request.app[SOURCES])
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)
