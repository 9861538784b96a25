"""The worker runner: handlers per queue, credits as concurrency, leases, shutdown, reconnect.

    app = Worker("127.0.0.1:9876", concurrency=4)

    @app.handler("emails", timeout=30)
    async def send_email(ctx: JobContext) -> dict:
        ...

    app.run()

How a job goes: the QUEST arrives; it is acknowledged at once (ACK) and heartbeats
(JOBBEAT) keep its lease every lease/3 (and at most a third of the server's
`stale_after`, which it announced at REGISTER, and `max_heartbeat_interval` apart, since
the server also declares a worker stale when it is silent too long) until its outcome is
sent. It starts when one of the queue's `concurrency` slots is free: async handlers run
on the loop, plain functions in a thread pool. A return value is sent with COMPLETE; an
exception with FAIL (its message, and the formatted traceback as details); a handler
still running after its `timeout` is FAILed with the message "timeout". Lines the
handler gives `ctx.log` go to the server in batches; the rest are sent and stored before
the outcome. An outcome the server could not write (STORAGE_FULL, INTERNAL: the delivery
is still ours) is sent again after 0.25, 0.5, 1, 2 and 4 s, heartbeats going on meanwhile;
after that the job is left to its lease, whose expiry retries it.

Credits: each subscription holds at most `concurrency + prefetch` jobs (the server's
credits plus jobs in hand); a CREDIT tops it up as jobs finish. With `prefetch` 0 (the
default) a job never waits locally.

Stopping (`stop()`, or SIGINT/SIGTERM under `run()`): unsubscribe, RELEASE the jobs
received but not started (no attempt used), wait for running ones up to `shutdown_grace`
(a second signal cuts it short), cancel what still runs, GOODBYE. When the server says BYE
the runner does the first two steps and lets running jobs finish, then reconnects. When a
connection drops, its jobs are void (the server has ended those deliveries): async
handlers are cancelled, and the runner reconnects with capped exponential backoff and
subscribes again. A plain function cannot be stopped from outside its thread: after a
timeout or a lost connection it runs on, and what it returns is dropped.

When the server ends a subscription because its queue was removed or obliterated (SUBEND),
the runner gives back the jobs of that queue not yet started, and checks with capped
exponential backoff (`reconnect_initial` to `reconnect_max`) whether the queue exists
again; once it does, it subscribes again. It never creates a queue that was removed
(`create_queues` applies when connecting); other queues go on meanwhile. A queue missing
when the runner first subscribes stops it with QueueNotFoundError (most likely a wrong
name); one missing at a reconnect is waited for in the same way as after SUBEND.
"""

import asyncio
import contextvars
import functools
import inspect
import logging
import signal
import traceback
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from overhop_client.client import DEFAULT_URL, AsyncClient
from overhop_client.context import JobContext
from overhop_client.errors import (
    ConnectionLost,
    InternalError,
    OverhopError,
    QueueExistsError,
    QueueNotFoundError,
    ResultTooLargeError,
    ShuttingDownError,
    StorageFullError,
    TooManyConnectionsError,
)
from overhop_client.reconnect import ReconnectBackoff
from overhop_client.results import Bye, Quest, ServerLimits, SubscriptionEnded

log = logging.getLogger("overhop_client.worker")

Handler = Callable[[JobContext], Any]
H = TypeVar("H", bound=Handler)
T = TypeVar("T")
Seconds = float | timedelta

TIMEOUT_MESSAGE = "timeout"
# Below the server's default `worker.stale_after_ms` (30 s) by a factor of three, so two
# lost heartbeats in a row still do not make a busy worker look dead.
DEFAULT_MAX_HEARTBEAT_INTERVAL_S = 10.0
# Long enough for most jobs to finish on a deploy, short enough for process supervisors'
# usual stop timeouts (systemd's default is 90 s).
DEFAULT_SHUTDOWN_GRACE_S = 30.0
DEFAULT_RECONNECT_INITIAL_S = 0.1
DEFAULT_RECONNECT_MAX_S = 30.0
# Errors on connecting that mean "try again later", not "misconfigured".
_RETRYABLE = (OSError, TimeoutError, ShuttingDownError, TooManyConnectionsError)
# Pauses before an outcome the server could not write is sent again (the delivery stays
# the worker's meanwhile): about 8 s in all, so a store freed by retention or an operator
# within that time loses no result; the lease covers what comes after.
OUTCOME_RESEND_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 4.0)


def _seconds(value: Seconds | None) -> float | None:
    return value.total_seconds() if isinstance(value, timedelta) else value


def _is_async(function: Handler) -> bool:
    # A plain async function, or an object whose `__call__` is async.
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        type(function).__call__)


@dataclass(eq=False)
class _Route:
    """One handler, and its queue's subscription on the current connection."""

    queue: str
    function: Handler
    is_async: bool
    timeout: float | None
    concurrency: int
    prefetch: int
    sid: str | None = None
    """The current subscription; None while not subscribed (also while stopping)."""
    granted: int = 0
    """Credits the server holds for the current subscription."""
    in_hand: int = 0
    running: int = 0
    waiting: deque["_Held"] = field(default_factory=deque)

    @property
    def capacity(self) -> int:
        return self.concurrency + self.prefetch


@dataclass(eq=False)
class _Held:
    """A job this worker holds: received, maybe running, outcome not yet sent."""

    quest: Quest
    route: _Route
    client: AsyncClient
    context: JobContext
    ack: "asyncio.Task[bool]"
    """The ACK in flight: True once the server accepted it."""
    beat: "asyncio.Task[None] | None" = None
    task: "asyncio.Task[None] | None" = None
    """What is being done with it, once decided: the handler run, or its RELEASE."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    completed: bool
    result: Any = None
    message: str = ""
    details: Any = None


class Worker:
    """Runs handlers for queues' jobs. See the module documentation for the job's life."""

    def __init__(self, url: str | Callable[[], str] = DEFAULT_URL, *, concurrency: int = 4,
                 prefetch: int = 0, name: str | None = None,
                 labels: dict[str, str] | None = None, create_queues: bool = False,
                 shutdown_grace: Seconds = DEFAULT_SHUTDOWN_GRACE_S,
                 reconnect_initial: Seconds = DEFAULT_RECONNECT_INITIAL_S,
                 reconnect_max: Seconds = DEFAULT_RECONNECT_MAX_S,
                 max_heartbeat_interval: Seconds = DEFAULT_MAX_HEARTBEAT_INTERVAL_S,
                 threads: int | None = None) -> None:
        """`url` may be a function returning the address, asked before each connection
        attempt (to follow a server that moved). `concurrency` and `prefetch` are per
        queue, the defaults for `handler`. `create_queues` creates missing queues with
        default settings instead of failing. `threads` sizes the pool for plain-function
        handlers (default: the sum of their queues' concurrency)."""
        if concurrency < 1 or prefetch < 0:
            raise ValueError("concurrency must be >= 1 and prefetch >= 0")
        self.url = url
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.name = name
        self.labels = labels
        self.create_queues = create_queues
        self.shutdown_grace = _seconds(shutdown_grace) or 0.0
        self.reconnect_initial = _seconds(reconnect_initial) or DEFAULT_RECONNECT_INITIAL_S
        self.reconnect_max = _seconds(reconnect_max) or DEFAULT_RECONNECT_MAX_S
        self.max_heartbeat_interval = (_seconds(max_heartbeat_interval)
                                       or DEFAULT_MAX_HEARTBEAT_INTERVAL_S)
        self.threads = threads
        self._routes: dict[str, _Route] = {}
        self._held: dict[str, _Held] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client: AsyncClient | None = None
        self._subscribed_once = False
        self._executor: ThreadPoolExecutor | None = None
        self._stop_requested: asyncio.Event | None = None
        self._force: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None

    # -- registration ----------------------------------------------------------------

    def handler(self, queue: str, *, timeout: Seconds | None = None,
                concurrency: int | None = None, prefetch: int | None = None
                ) -> Callable[[H], H]:
        """Register the decorated function for `queue`'s jobs. It gets a `JobContext`;
        what it returns is the job's result. `timeout` bounds one attempt."""

        def register(function: H) -> H:
            if queue in self._routes:
                raise ValueError(f"a handler for {queue!r} is already registered")
            route = _Route(queue, function, _is_async(function), _seconds(timeout),
                           concurrency or self.concurrency,
                           self.prefetch if prefetch is None else prefetch)
            if route.concurrency < 1 or route.prefetch < 0:
                raise ValueError("concurrency must be >= 1 and prefetch >= 0")
            self._routes[queue] = route
            return function

        return register

    @property
    def connected(self) -> bool:
        """True while connected and subscribed to every handler's queue."""
        return (self._client is not None and not self._client.closed
                and all(route.sid is not None for route in self._routes.values()))

    # -- running and stopping --------------------------------------------------------

    def run(self) -> None:
        """Run until SIGINT or SIGTERM, then stop gracefully (a second signal hurries)."""
        asyncio.run(self._run_until_signalled())

    async def _run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for signum in signals:
            loop.add_signal_handler(signum, self._on_signal)
        try:
            await self.run_async()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)

    def _on_signal(self) -> None:
        if self._stop_requested is None or self._force is None:
            return
        if self._stop_requested.is_set():
            log.warning("second_signal: cutting the shutdown grace short")
            self._force.set()
        else:
            log.info("signal_received: stopping")
            self._stop_requested.set()

    async def stop(self) -> None:
        """Stop gracefully and return once `run_async` has finished."""
        if self._stop_requested is None or self._stopped is None:
            return
        self._stop_requested.set()
        await self._stopped.wait()

    async def run_async(self) -> None:
        """Connect, subscribe and process jobs until `stop()`; reconnect when needed."""
        if not self._routes:
            raise RuntimeError("no handlers registered: use @worker.handler(queue)")
        if self._stopped is not None and not self._stopped.is_set():
            raise RuntimeError("this Worker is already running")
        self._stop_requested = asyncio.Event()
        self._force = asyncio.Event()
        self._stopped = asyncio.Event()
        self._subscribed_once = False
        threads = self.threads or sum(r.concurrency for r in self._routes.values()
                                      if not r.is_async) or 1
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="overhop-job")
        backoff = ReconnectBackoff(self.reconnect_initial, self.reconnect_max)
        try:
            while not self._stop_requested.is_set():
                try:
                    await self._serve(backoff)
                except _RETRYABLE as exc:
                    log.warning("connection_failed: %r", exc)
                else:
                    if self._stop_requested.is_set():
                        break
                    log.warning("connection_closed")
                # Also after a connection that worked: a server that accepts and then
                # drops connections at once must not be hammered.
                delay = backoff.next_delay()
                log.info("reconnecting_in %.2fs", delay)
                await self._wait_for_stop(delay)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._stopped.set()

    async def _wait_for_stop(self, seconds: float) -> None:
        assert self._stop_requested is not None
        try:
            await asyncio.wait_for(self._stop_requested.wait(), seconds)
        except TimeoutError:
            return

    async def _serve(self, backoff: ReconnectBackoff) -> None:
        """One connection: subscribe, process until it closes or a stop is requested."""
        assert self._stop_requested is not None
        url = self.url() if callable(self.url) else self.url
        client = await AsyncClient.connect(url, name=self.name, labels=self.labels,
                                           on_quest=self._on_quest, on_bye=self._on_bye,
                                           on_subscription_end=self._on_subscription_end)
        self._client = client
        try:
            for route in self._routes.values():
                try:
                    await self._subscribe(client, route)
                except QueueNotFoundError:
                    if not self._subscribed_once:
                        raise  # a queue missing from the start: most likely a wrong name
                    log.warning("queue_missing queue=%s: subscribing once it exists",
                                route.queue)
                    self._spawn(self._subscribe_when_back(client, route))
            self._subscribed_once = True
            backoff.reset()
            log.info("worker_ready wid=%s url=%s", client.worker_id, url)
            closed = asyncio.ensure_future(client.wait_closed())
            stop = asyncio.ensure_future(self._stop_requested.wait())
            await asyncio.wait({closed, stop}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            stop.cancel()
            if self._stop_requested.is_set() and not client.closed:
                await self._drain(client)
        finally:
            self._client = None
            self._abandon(client)
            await client.close()

    async def _subscribe(self, client: AsyncClient, route: _Route, *, create: bool = True
                         ) -> None:
        if create and self.create_queues and await client.queue(route.queue) is None:
            try:
                await client.add_queue(route.queue)
            except QueueExistsError:
                log.debug("queue_created_meanwhile queue=%s", route.queue)
        credits = max(0, route.capacity - route.in_hand)
        route.granted = credits
        route.sid = await client.subscribe(route.queue, credits)
        self._top_up(route)  # jobs may have finished while SUBSCRIBE was in flight

    async def _drain(self, client: AsyncClient) -> None:
        """Graceful stop: no new jobs, give back unstarted ones, let running ones end."""
        assert self._force is not None
        await self._quiesce(client)
        # Handlers running, and RELEASEs of jobs that came while unsubscribing.
        running = [held.task for held in self._held.values() if held.task is not None]
        if running:
            log.info("waiting_for_jobs count=%d grace=%.1fs", len(running), self.shutdown_grace)
            everything = asyncio.gather(*running, return_exceptions=True)
            force = asyncio.ensure_future(self._force.wait())
            await asyncio.wait({everything, force}, timeout=self.shutdown_grace,
                               return_when=asyncio.FIRST_COMPLETED)
            force.cancel()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        try:
            await client.goodbye("worker stopping")
        except (OverhopError, ConnectionLost) as exc:
            log.warning("goodbye_failed: %r", exc)

    async def _quiesce(self, client: AsyncClient) -> None:
        """Take no more jobs on this connection; RELEASE those received but not started."""
        subscribed = [(route, route.sid) for route in self._routes.values() if route.sid]
        for route, _ in subscribed:
            route.sid = None
        # QUESTs sent before an UNSUBSCRIBE precede its reply on the connection, so once
        # every reply is in, no QUEST of these subscriptions can still come.
        results = await asyncio.gather(*(client.unsubscribe(sid) for _, sid in subscribed),
                                       return_exceptions=True)
        for error in results:
            if isinstance(error, BaseException):
                log.warning("unsubscribe_failed: %r", error)
        unstarted = [held for route, _ in subscribed for held in route.waiting]
        for route, _ in subscribed:
            route.waiting.clear()
        await asyncio.gather(*(self._release(held) for held in unstarted))

    def _on_bye(self, bye: Bye) -> None:
        client = self._client
        log.info("server_bye reason=%s grace_ms=%d", bye.reason, bye.grace_ms)
        if client is not None:
            self._spawn(self._quiesce(client))

    def _on_subscription_end(self, ended: SubscriptionEnded) -> None:
        route = self._routes.get(ended.queue)
        client = self._client
        if route is None or client is None or route.sid != ended.sid:
            return
        log.warning("subscription_ended queue=%s reason=%s", ended.queue, ended.reason)
        route.sid = None
        route.granted = 0
        unstarted = list(route.waiting)
        route.waiting.clear()
        for held in unstarted:
            held.task = self._spawn(self._release(held))
        self._spawn(self._subscribe_when_back(client, route))

    async def _subscribe_when_back(self, client: AsyncClient, route: _Route) -> None:
        """After SUBEND, or a reconnect that found the queue gone: subscribe again once the
        queue exists again (never creating it)."""
        assert self._stop_requested is not None
        backoff = ReconnectBackoff(self.reconnect_initial, self.reconnect_max)
        while True:
            await self._wait_for_stop(backoff.next_delay())
            if (self._stop_requested.is_set() or client.closed or self._client is not client
                    or route.sid is not None):
                return
            try:
                if await client.queue(route.queue) is None:
                    continue
                await self._subscribe(client, route, create=False)
            except QueueNotFoundError:
                continue  # removed again between the two requests
            except ConnectionLost:
                return  # the reconnect subscribes
            log.info("subscribed_again queue=%s", route.queue)
            return

    def _abandon(self, client: AsyncClient) -> None:
        """The connection is gone and with it every delivery it carried."""
        for route in self._routes.values():
            route.sid = None
            route.granted = 0
        for held in list(self._held.values()):
            if held.client is not client:
                continue
            if held.task is not None:
                held.task.cancel()  # its own cleanup does the bookkeeping
            elif held in held.route.waiting:
                held.route.waiting.remove(held)
                self._finish(held)

    # -- one job ---------------------------------------------------------------------

    def _on_quest(self, quest: Quest) -> None:
        route = self._routes.get(quest.queue)
        client = self._client
        if route is None or client is None:
            log.warning("quest_without_handler queue=%s jid=%s", quest.queue, quest.jid)
            return
        route.granted -= 1
        route.in_hand += 1
        context = JobContext(quest, client, asyncio.get_running_loop())
        held = _Held(quest, route, client, context, self._spawn(self._ack(client, quest)))
        held.beat = self._spawn(self._beat(held))
        self._held[quest.did] = held
        if route.sid is None:  # stopping, or the server said BYE: not ours to start
            held.task = self._spawn(self._release(held))
            return
        route.waiting.append(held)
        self._start_waiting(route)

    def _start_waiting(self, route: _Route) -> None:
        while route.waiting and route.running < route.concurrency and route.sid is not None:
            held = route.waiting.popleft()
            route.running += 1
            held.task = self._spawn(self._execute(held))

    async def _execute(self, held: _Held) -> None:
        route = held.route
        try:
            outcome = await self._invoke(held)
            if await held.ack:
                await held.context.flush_logs()  # the log is complete before the outcome
                await self._report(held, outcome)
        except ConnectionLost:
            log.info("outcome_not_sent jid=%s: connection lost", held.quest.jid)
        except OverhopError as exc:
            log.warning("outcome_refused jid=%s: %s", held.quest.jid, exc)
        finally:
            held.context.close_logs()
            route.running -= 1
            self._finish(held)
            self._start_waiting(route)

    async def _invoke(self, held: _Held) -> _Outcome:
        route = held.route
        try:
            async with asyncio.timeout(route.timeout) as scope:
                if route.is_async:
                    result = await route.function(held.context)
                else:
                    assert self._executor is not None
                    call = functools.partial(contextvars.copy_context().run, route.function,
                                             held.context)
                    result = await asyncio.get_running_loop().run_in_executor(
                        self._executor, call)
        except TimeoutError as exc:
            if not scope.expired():
                return _failure(exc)
            log.warning("job_timed_out jid=%s after %ss", held.quest.jid, route.timeout)
            return _Outcome(False, message=TIMEOUT_MESSAGE,
                            details=f"the handler ran longer than {route.timeout} s")
        except Exception as exc:
            return _failure(exc)
        return _Outcome(True, result=result)

    async def _report(self, held: _Held, outcome: _Outcome) -> None:
        """Send the outcome; again, after a pause, while the server could not write it."""
        for delay in (*OUTCOME_RESEND_DELAYS_S, None):
            try:
                await self._send_outcome(held, outcome)
                return
            except (StorageFullError, InternalError) as exc:
                if delay is None:
                    raise
                log.warning("outcome_not_written jid=%s: %s; sending it again in %ss",
                            held.quest.jid, exc, delay)
                await asyncio.sleep(delay)

    async def _send_outcome(self, held: _Held, outcome: _Outcome) -> None:
        client, quest = held.client, held.quest
        if outcome.completed:
            try:
                await client.complete(quest, outcome.result)
                return
            except (TypeError, ValueError, ResultTooLargeError) as exc:
                outcome = _Outcome(False, message=f"the result cannot be stored: {exc}")
        await client.fail(quest, outcome.message, outcome.details)

    async def _ack(self, client: AsyncClient, quest: Quest) -> bool:
        """ACK; False when refused, which means the delivery is void (withdrawn)."""
        try:
            await client.ack(quest)
        except (OverhopError, ConnectionLost) as exc:
            log.warning("ack_refused jid=%s: %r", quest.jid, exc)
            return False
        return True

    def heartbeat_interval(self, quest: Quest, limits: ServerLimits | None) -> float:
        """Seconds between JOBBEATs for this job: a third of its lease and of the server's
        `stale_after` (so two lost beats in a row lose neither), and at most
        `max_heartbeat_interval`."""
        interval = min(quest.lease_ms / 3000, self.max_heartbeat_interval)
        if limits is not None:
            interval = min(interval, limits.stale_after.total_seconds() / 3)
        return interval

    async def _beat(self, held: _Held) -> None:
        interval = self.heartbeat_interval(held.quest, held.client.limits)
        while True:
            await asyncio.sleep(interval)
            try:
                await held.client.heartbeat(held.quest)
            except (OverhopError, ConnectionLost) as exc:
                log.info("heartbeat_stopped jid=%s: %r", held.quest.jid, exc)
                return

    async def _release(self, held: _Held) -> None:
        try:
            await held.client.release(held.quest)
        except (OverhopError, ConnectionLost) as exc:
            log.info("release_failed jid=%s: %r", held.quest.jid, exc)
        finally:
            self._finish(held)

    def _finish(self, held: _Held) -> None:
        if self._held.pop(held.quest.did, None) is None:
            return
        if held.beat is not None:
            held.beat.cancel()
        held.route.in_hand -= 1
        self._top_up(held.route)

    # -- credits ---------------------------------------------------------------------

    def _top_up(self, route: _Route) -> None:
        """Give the subscription credits back up to `concurrency + prefetch` in all."""
        client = self._client
        if route.sid is None or client is None or client.closed:
            return
        want = route.capacity - route.in_hand - route.granted
        if want > 0:
            route.granted += want
            self._spawn(self._credit(client, route.sid, want))

    async def _credit(self, client: AsyncClient, sid: str, credits: int) -> None:
        try:
            await client.credit(sid, credits)
        except (OverhopError, ConnectionLost) as exc:
            log.warning("credit_failed sid=%s: %r", sid, exc)

    def _spawn(self, coroutine: Coroutine[Any, Any, T]) -> "asyncio.Task[T]":
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: "asyncio.Task[Any]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker_task_failed", exc_info=task.exception())


def _failure(exc: BaseException) -> _Outcome:
    return _Outcome(False, message=str(exc) or type(exc).__name__,
                    details="".join(traceback.format_exception(exc)))
