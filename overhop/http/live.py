"""Live updates: server-sent event streams and the jobs-per-second history.

A stream sends a new snapshot only when it differs from the last one sent, and looks at
most once per `LIVE_INTERVAL_S` whatever the job rate. The overview snapshot is built once
per interval and shared by every open stream, so ten browsers cost what one does; a job's
stream reads that one job (one short read transaction) per interval. At most `MAX_STREAMS`
streams are open at once.
"""

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from overhop.http.sources import Sources
from overhop.http.views import dumps, job_detail, overview
from overhop.logs import get_logger

log = get_logger("overhop.http")

# Two updates a second: live to the eye, and a bound on what a page costs the loop.
LIVE_INTERVAL_S = 0.5
# Each stream holds a connection and wakes twice a second; a hundred is plenty for people.
MAX_STREAMS = 100
# The chart's resolution and span: one sample every 5 s, 60 samples (the last 5 minutes).
SAMPLE_INTERVAL_S = 5.0
SAMPLES_KEPT = 60


class RateHistory:
    """Jobs enqueued, completed and failed per second, per queue, over the last minutes,
    from the broker's counters sampled every `SAMPLE_INTERVAL_S`."""

    def __init__(self, sources: Sources) -> None:
        self._sources = sources
        self._last: dict[str, tuple[int, int, int]] = {}
        self._last_ms = 0
        self.points: dict[str, deque[tuple[int, float, float, float]]] = {}

    def sample(self) -> None:
        now = self._sources.clock()
        tally = self._sources.broker.tally
        elapsed = (now - self._last_ms) / 1000 if self._last_ms else 0.0
        current: dict[str, tuple[int, int, int]] = {}
        for name in self._sources.broker.queues:
            queue = tally.queues.get(name)
            counts = (0, 0, 0) if queue is None else (
                queue.enqueued, queue.ended.get("completed", 0), queue.ended.get("failed", 0))
            current[name] = counts
            before = self._last.get(name)
            if before is not None and elapsed > 0:
                rates = [max(0, c - b) / elapsed for c, b in zip(counts, before, strict=True)]
                points = self.points.setdefault(name, deque(maxlen=SAMPLES_KEPT))
                points.append((now, round(rates[0], 2), round(rates[1], 2), round(rates[2], 2)))
        for gone in set(self.points) - set(current):
            del self.points[gone]
        self._last, self._last_ms = current, now

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL_S)


class LiveHub:
    def __init__(self, sources: Sources, history: RateHistory) -> None:
        self._sources = sources
        self._history = history
        self._closing = asyncio.Event()
        self._cached: bytes = b""
        self._cached_at = -1.0
        self.streams = 0

    def close(self) -> None:
        """Shutdown: every open stream ends."""
        self._closing.set()

    async def overview_bytes(self) -> bytes:
        """The overview with its charts as JSON, rebuilt at most once per interval."""
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._cached_at >= LIVE_INTERVAL_S:
            snapshot = await overview(self._sources)
            snapshot["rates"] = {name: list(points)
                                 for name, points in self._history.points.items()}
            self._cached = dumps(snapshot).encode()
            self._cached_at = loop_now
        return self._cached

    async def stream(self, request: web.Request,
                     snapshot: Callable[[], Awaitable[bytes | None]]) -> web.StreamResponse:
        """Send `snapshot()` whenever it changes, until the browser or the server leaves;
        `None` from it ends the stream (what it showed is gone)."""
        if self.streams >= MAX_STREAMS or self._closing.is_set():
            raise web.HTTPServiceUnavailable(text="too many live streams")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        self.streams += 1
        closing = asyncio.ensure_future(self._closing.wait())
        last = b""
        try:
            while not closing.done():
                data = await snapshot()
                if data is None:
                    await response.write(b"event: gone\ndata: {}\n\n")
                    break
                if data != last:
                    await response.write(b"data: " + data + b"\n\n")
                    last = data
                await asyncio.wait({closing}, timeout=LIVE_INTERVAL_S)
        except ConnectionResetError:
            log.debug("live_stream_left", path=request.path)  # the browser went away
        finally:
            closing.cancel()
            self.streams -= 1
        return response

    async def job_bytes(self, job_id: str) -> bytes | None:
        job = await self._sources.reads.get_job(job_id)
        if job is None:
            return None
        detail: dict[str, Any] = await job_detail(self._sources, job)
        return dumps(detail).encode()
