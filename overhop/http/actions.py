"""The dashboard's actions: POST only, each guarded, confirmed in the page, and logged.

A request is taken only when it carries the page's CSRF token (a random value made at
start and written into every page, which another site's page cannot read), comes from
this origin (`Origin` and `Sec-Fetch-Site`, when the browser sends them), and sends JSON
(which a cross-site form cannot). With `http.read_only` every action is refused. Each
action is one of the broker's own verbs, as the wire handlers call them, and is logged as
`dashboard_action`.
"""

import hmac
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from overhop.errors import ErrorCode, RequestError
from overhop.http.keys import CSRF, SOURCES
from overhop.http.sources import Sources
from overhop.logs import get_logger
from overhop.model.jobs import JobStatus
from overhop.model.queues import QueueState

log = get_logger("overhop.http")
CSRF_HEADER = "X-Overhop-CSRF"
# "Retry all failed" moves at most this many jobs per click, a batch at a time, so one
# click cannot queue an unbounded amount of writes; click again for more.
RETRY_ALL_MAX = 10_000
RETRY_BATCH = 200

_NOT_FOUND = {ErrorCode.QUEUE_NOT_FOUND, ErrorCode.JOB_NOT_FOUND}
_BAD_INPUT = {ErrorCode.INVALID_PAYLOAD, ErrorCode.QUEUE_SYSTEM, ErrorCode.QUEUE_NAME_INVALID}

Action = Callable[[Sources, web.Request, dict[str, Any]], Awaitable[dict[str, Any]]]


def refusal(request: web.Request) -> str | None:
    """Why this POST may not act, or None."""
    if request.app[SOURCES].config.http.read_only:
        return "the dashboard is read-only (http.read_only)"
    token = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(token.encode(), request.app[CSRF].encode()):
        return "missing or wrong CSRF token"
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return "cross-site request"
    origin = request.headers.get("Origin")
    if origin is not None and origin.split("://", 1)[-1] != request.host:
        return "cross-origin request"
    if request.content_type != "application/json":
        return "actions take application/json"
    return None


def action(name: str, run: Action) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler for one action: guard, parse, run, log, answer JSON."""

    async def handle(request: web.Request) -> web.Response:
        target = dict(request.match_info)
        why = refusal(request)
        if why is not None:
            log.warning("dashboard_action_refused", action=name, reason=why,
                        remote=request.remote, **target)
            return web.json_response({"error": "FORBIDDEN", "message": why}, status=403)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.json_response({"error": "INVALID_PAYLOAD",
                                      "message": "the body must be a JSON object"}, status=400)
        try:
            outcome = await run(request.app[SOURCES], request, body)
        except RequestError as exc:
            status = 404 if exc.code in _NOT_FOUND else 400 if exc.code in _BAD_INPUT else 409
            log.info("dashboard_action", action=name, outcome=exc.code.value,
                     remote=request.remote, **target)
            return web.json_response({"error": exc.code.value, "message": exc.message},
                                     status=status)
        log.info("dashboard_action", action=name, outcome="ok", remote=request.remote,
                 **target, **{k: v for k, v in outcome.items() if isinstance(v, int)})
        return web.json_response({"ok": True, **outcome})

    return handle


async def pause(sources: Sources, request: web.Request, body: dict[str, Any]
                ) -> dict[str, Any]:
    record = await sources.broker.set_queue_state(request.match_info["name"], QueueState.PAUSED)
    return {"message": f"queue {record.name} paused", "state": record.state.value}


async def resume(sources: Sources, request: web.Request, body: dict[str, Any]
                 ) -> dict[str, Any]:
    record = await sources.broker.set_queue_state(request.match_info["name"], QueueState.ACTIVE)
    return {"message": f"queue {record.name} resumed", "state": record.state.value}


async def clear(sources: Sources, request: web.Request, body: dict[str, Any]
                ) -> dict[str, Any]:
    removed = await sources.broker.clear_queue(request.match_info["name"])
    total = sum(removed.values())
    return {"message": f"{total} jobs removed", "removed": total}


async def change_settings(sources: Sources, request: web.Request, body: dict[str, Any]
                          ) -> dict[str, Any]:
    changes = body.get("changes")
    if not isinstance(changes, dict) or not changes:
        raise RequestError(ErrorCode.INVALID_PAYLOAD, "'changes' must be a non-empty object")
    record = await sources.broker.change_settings(request.match_info["name"], changes)
    return {"message": f"settings of {record.name} changed", "config": record.config.to_wire()}


async def retry_failed(sources: Sources, request: web.Request, body: dict[str, Any]
                       ) -> dict[str, Any]:
    """Every failed job of the queue back to waiting, oldest first, in batches."""
    name = request.match_info["name"]
    sources.broker.user_queue(name)
    retried = refused = 0
    after: bytes | None = None
    while retried + refused < RETRY_ALL_MAX:
        limit = min(RETRY_BATCH, RETRY_ALL_MAX - retried - refused)
        jobs, _, more = await sources.reads.list_jobs(name, JobStatus.FAILED, 0, limit,
                                                      1 << 30, after)
        if not jobs:
            break
        futures = [sources.broker.retry_job(job.job_id) for job in jobs]
        for future in futures:
            try:
                await future
                retried += 1
            except RequestError:  # it moved on meanwhile (removed, retried elsewhere)
                refused += 1
        after = uuid.UUID(jobs[-1].uuid).bytes
        if not more:
            break
    return {"message": f"{retried} failed jobs retried", "retried": retried,
            "skipped": refused}


async def retry_job(sources: Sources, request: web.Request, body: dict[str, Any]
                    ) -> dict[str, Any]:
    job = await sources.broker.retry_job(request.match_info["jid"])
    return {"message": f"job retried: {job.status.label}", "status": job.status.label}


async def remove_job(sources: Sources, request: web.Request, body: dict[str, Any]
                     ) -> dict[str, Any]:
    await sources.broker.remove_job(request.match_info["jid"])
    return {"message": "job removed"}


def install(app: web.Application) -> None:
    for path, name, run in (
        ("/api/queues/{name}/pause", "pause", pause),
        ("/api/queues/{name}/resume", "resume", resume),
        ("/api/queues/{name}/clear", "clear", clear),
        ("/api/queues/{name}/settings", "change_settings", change_settings),
        ("/api/queues/{name}/retry-failed", "retry_failed", retry_failed),
        ("/api/jobs/{jid}/retry", "retry_job", retry_job),
        ("/api/jobs/{jid}/remove", "remove_job", remove_job),
    ):
        app.router.add_post(path, action(name, run))
