"""The dashboard's routes: pages, the JSON API it reads, live streams, actions, assets.

Pages: `/` (overview), `/queues/{name}`, `/jobs/{jid}`, `/workers`, `/schedules`. Reads:
`/api/overview`, `/api/queues/{name}/jobs?status=&after=&limit=`, `/api/jobs/{jid}`,
`/api/jobs/{jid}/payload` (the whole payload as a download), `/api/workers`,
`/api/schedules`. Live:
`/api/events` (the overview) and `/api/jobs/{jid}/events` (one job), as server-sent events.
Actions: see `overhop.http.actions`.
"""

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from overhop.errors import RequestError
from overhop.http import actions, pages
from overhop.http.keys import CSRF, SOURCES
from overhop.http.live import LiveHub, RateHistory
from overhop.http.sources import Sources
from overhop.http.views import (
    MAX_PAGE,
    PAGE_BYTES,
    dumps,
    job_detail,
    job_row,
    pretty_json,
    queue_summary,
    schedules,
    workers,
)
from overhop.model.jobs import STATUS_LABELS, JobStatus, uuid_of_job_id

STATIC = Path(__file__).resolve().parent / "static"
HUB = web.AppKey("hub", LiveHub)
HISTORY = web.AppKey("history", RateHistory)
# Rows a queue page shows when the URL names no limit.
DEFAULT_PAGE = 50


def _json(data: object) -> web.Response:
    return web.json_response(data, dumps=dumps, headers={"Cache-Control": "no-store"})


def _error(exc: RequestError, status: int) -> web.Response:
    return web.json_response({"error": exc.code.value, "message": exc.message}, status=status)


async def api_overview(request: web.Request) -> web.Response:
    return web.Response(body=await request.app[HUB].overview_bytes(),
                        content_type="application/json")


async def api_queue_jobs(request: web.Request) -> web.Response:
    """One page of a queue's jobs of one status, from `after` (a job id) at any depth."""
    sources = request.app[SOURCES]
    name = request.match_info["name"]
    try:
        runtime = sources.broker.user_queue(name)
    except RequestError as exc:
        return _error(exc, 404)
    status = request.query.get("status", "waiting")
    if status not in STATUS_LABELS:
        raise web.HTTPBadRequest(text=f"status must be one of {', '.join(STATUS_LABELS)}")
    try:
        limit = min(MAX_PAGE, max(1, int(request.query.get("limit", DEFAULT_PAGE))))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be a number") from None
    after = _after_bytes(request.query.get("after"), name)
    jobs, cut, more = await sources.reads.list_jobs(name, JobStatus.parse(status), 0, limit,
                                                    PAGE_BYTES, after)
    summary = await queue_summary(sources, runtime, sources.clock())
    return _json({"queue": summary, "status": status,
                  "limit": limit, "jobs": [job_row(job) for job in jobs], "cut": cut,
                  "next_after": jobs[-1].job_id if more and jobs else None})


def _after_bytes(after: str | None, queue_name: str) -> bytes | None:
    if not after:
        return None
    try:
        return uuid_of_job_id(after, queue_name)
    except ValueError:
        raise web.HTTPBadRequest(text=f"after must be a job id of queue {queue_name}") from None


async def api_job(request: web.Request) -> web.Response:
    sources = request.app[SOURCES]
    try:
        reading = sources.broker.job(request.match_info["jid"])
    except RequestError as exc:
        return _error(exc, 404)
    job = await reading
    if job is None:
        return web.json_response({"error": "JOB_NOT_FOUND", "message": "no such job"},
                                 status=404)
    return _json(await job_detail(sources, job))


async def api_job_payload(request: web.Request) -> web.Response:
    sources = request.app[SOURCES]
    try:
        reading = sources.broker.job(request.match_info["jid"])
    except RequestError as exc:
        return _error(exc, 404)
    job = await reading
    if job is None:
        raise web.HTTPNotFound(text="no such job")
    text = "null" if job.payload is None else pretty_json(job.payload)
    filename = job.job_id.replace(":", "_") + ".json"
    return web.Response(text=text, content_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})


async def api_workers(request: web.Request) -> web.Response:
    return _json(workers(request.app[SOURCES]))


async def api_schedules(request: web.Request) -> web.Response:
    return _json(schedules(request.app[SOURCES]))


async def no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def events_overview(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    return await hub.stream(request, hub.overview_bytes)


async def events_job(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    sources = request.app[SOURCES]
    job_id = request.match_info["jid"]
    try:
        sources.broker.check_job_readable(job_id)  # system queues' jobs are not shown
    except RequestError as exc:
        return _error(exc, 404)
    return await hub.stream(request, lambda: hub.job_bytes(job_id))


def install(app: web.Application, sources: Sources) -> None:
    history = RateHistory(sources)
    app[HISTORY] = history
    app[HUB] = LiveHub(sources, history)
    app[CSRF] = secrets.token_urlsafe(32)
    router = app.router
    router.add_get("/", pages.overview_page)
    router.add_get("/queues/{name}", pages.queue_page)
    router.add_get("/jobs/{jid}", pages.job_page)
    router.add_get("/workers", pages.workers_page)
    router.add_get("/schedules", pages.schedules_page)
    router.add_get("/api/overview", api_overview)
    router.add_get("/api/queues/{name}/jobs", api_queue_jobs)
    router.add_get("/api/jobs/{jid}", api_job)
    router.add_get("/api/jobs/{jid}/payload", api_job_payload)
    router.add_get("/api/workers", api_workers)
    router.add_get("/api/schedules", api_schedules)
    router.add_get("/api/events", events_overview)
    router.add_get("/api/jobs/{jid}/events", events_job)
    router.add_get("/favicon.ico", no_icon)
    router.add_static("/static", STATIC, append_version=False)
    actions.install(app)
    app.cleanup_ctx.append(_sampling)


async def _sampling(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[HISTORY].run(), name="http-rate-history")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def close(app: web.Application) -> None:
    """Shutdown: end the live streams so the listener can stop at once."""
    app[HUB].close()
