"""The worker runner: handlers per queue, credits as concurrency, leases, shutdown, reconnect.

    app = Worker("127.0.0.1:9876", concurrency=4)

    @app.handler("emails", timeout=30)
    async def send_email(ctx: JobContext) -> dict:
        ...

    @app.task("resize_image", queue="images")   # several tasks may share a queue
    async def resize_image(ctx: JobContext) -> None:
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
the outcome. An outcome the server could not write (STORAGE_FULL, STORAGE_UNAVAILABLE,
INTERNAL: the delivery is still ours) is sent again after 0.25, 0.5, 1, 2, 4 and 8 s,
heartbeats going on meanwhile; after that the job is left to its lease, whose expiry
retries it.

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

Given several brokers of a cluster, the runner subscribes to each queue at its owner and
follows the queues as they move (`worker_subscriptions`); a broker that stops or fails
ends only its own subscriptions, and the jobs running go on, their outcomes re-attached at
the new owner (`worker_deliveries`).

When the server ends a subscription because its queue was removed or obliterated (SUBEND),
the runner gives back the jobs of that queue not yet started, and checks with capped
exponential backoff (`reconnect_initial` to `reconnect_max`) whether the queue exists
again; once it does, it subscribes again. It never creates a queue that was removed
(`create_queues` applies when connecting); other queues go on meanwhile. A queue missing
when the runner first subscribes stops it with QueueNotFoundError (most likely a wrong
name); one missing at a reconnect is waited for in the same way as after SUBEND.

Every run of a handler goes through middleware layers (`overhop_client.middleware`): the
worker's (`middleware=`, `use`), the handler's own, its timeout. An admin can make a
running worker go quiet (no new jobs, running ones finish, still connected), stop (as
`stop()`, with the admin's grace) or change its concurrency live (CONTROL pushes); the
worker reports its state and concurrency to the server, which STATUS shows.

This module holds `Worker`, its settings and its connection loop; the rest is beside it:
`worker_deliveries` (the jobs held and their credits), `worker_outcomes` (running a
handler through its layers and reporting its outcome), `worker_subscriptions`
(subscribing, SUBEND, BYE), `worker_routes` (what is kept per handler and per job) and
`worker_control` (the state reported to the server).
"""

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TypeVar

from overhop_client.addresses import redact_urls
from overhop_client.client import DEFAULT_URL, AsyncClient, TlsOption
from overhop_client.context import JobContext
from overhop_client.errors import (
    ConnectionLost,
    OverhopError,
    ShuttingDownError,
    TooManyConnectionsError,
)
from overhop_client.middleware import Layer
from overhop_client.reconnect import ReconnectBackoff
from overhop_client.results import ControlAction, Quest, ServerLimits, WorkerControl
from overhop_client.tasks import Task, check_task_name
from overhop_client.worker_control import WorkerState, pool_size, report_state
from overhop_client.worker_deliveries import Deliveries
from overhop_client.worker_routes import Handler, Handling, Route, TaskSet
from overhop_client.worker_subscriptions import Subscriptions

log = logging.getLogger("overhop_client.worker")

H = TypeVar("H", bound=Handler)
R = TypeVar("R")
L = TypeVar("L", bound=Layer)
Seconds = float | timedelta
Urls = str | Sequence[str]

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


def _seconds(value: Seconds | None) -> float | None:
    return value.total_seconds() if isinstance(value, timedelta) else value


class Worker:
    """Runs handlers for queues' jobs. See the module documentation for the job's life."""

    def __init__(self, url: Urls | Callable[[], Urls] = DEFAULT_URL, *, concurrency: int = 4,
                 prefetch: int = 0, name: str | None = None,
                 labels: dict[str, str] | None = None, create_queues: bool = False,
                 shutdown_grace: Seconds = DEFAULT_SHUTDOWN_GRACE_S,
                 reconnect_initial: Seconds = DEFAULT_RECONNECT_INITIAL_S,
                 reconnect_max: Seconds = DEFAULT_RECONNECT_MAX_S,
                 max_heartbeat_interval: Seconds = DEFAULT_MAX_HEARTBEAT_INTERVAL_S,
                 threads: int | None = None, tls: TlsOption = None,
                 middleware: Iterable[Layer] = ()) -> None:
        """`url` may name several brokers of a cluster (as `AsyncClient.connect` takes
        them), or be a function returning the address(es), asked before each connection
        attempt (to follow a server that moved). `concurrency` and `prefetch` are per
        queue, the defaults for `handler`. `create_queues` creates missing queues with
        default settings instead of failing. `threads` sizes the pool for plain-function
        handlers (default: the sum of their queues' concurrency). `tls`: as for
        `AsyncClient.connect` (a user and password go in the URL or `$OVERHOP_PASSWORD`).
        `middleware`: layers around every handler run, the first outermost (see
        `overhop_client.middleware`); `use` adds more."""
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
        self.tls = tls
        self._routes: dict[str, Route] = {}
        self._tasks = TaskSet()
        self._deliveries = Deliveries(self._routes, self._tasks, self.heartbeat_interval)
        self._middleware: list[Layer] = list(middleware)
        self._deliveries.middleware = self._middleware
        self.state = WorkerState.RUNNING
        """Running, quiet (no new jobs) or stopping; what the server's STATUS shows."""
        self._subscriptions: Subscriptions | None = None
        self._pool_size = 0
        self._stop_grace: float | None = None
        """The grace an admin's stop gave (None: `shutdown_grace`)."""
        self._stop_requested: asyncio.Event | None = None
        self._force: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None

    # -- registration ----------------------------------------------------------------

    def handler(self, queue: str, *, timeout: Seconds | None = None,
                concurrency: int | None = None, prefetch: int | None = None,
                middleware: Iterable[Layer] = ()) -> Callable[[H], H]:
        """Register the decorated function for `queue`'s jobs: those without a task, and
        those whose task has no handler of its own (see `task`). It gets a `JobContext`;
        what it returns is the job's result. `timeout` bounds one run of the handler;
        `middleware`: this handler's own layers, inside the worker's. `concurrency` and
        `prefetch` are the queue's (see `task`)."""

        def register(function: H) -> H:
            route = self._route(queue, concurrency, prefetch)
            if route.own is not None:
                raise ValueError(f"a handler for {queue!r} is already registered")
            route.own = Handling(function, _seconds(timeout), tuple(middleware))
            return function

        return register

    def task(self, name: str, *, queue: str, timeout: Seconds | None = None,
             concurrency: int | None = None, prefetch: int | None = None,
             middleware: Iterable[Layer] = ()
             ) -> Callable[[Callable[[JobContext], R]], Task[[JobContext], R]]:
        """Register the decorated function for the jobs of task `name` on `queue`; several
        tasks may share a queue (and its subscription). It gets a `JobContext`; what it
        returns is the job's result; `timeout` bounds one run of the handler, `middleware`
        are its own layers (inside the worker's). The result is a `Task`:
        the function, still callable, which `enqueue(task, payload)` sends to its queue
        with its name. A job whose task has no handler here runs `queue`'s own handler
        (`handler`), if any, else fails with "no handler for task ..." (and is retried
        while attempts remain). `concurrency` and `prefetch` are per queue: give them on
        a queue's first registration; a later one may repeat them, not change them."""
        check_task_name(name)

        def register(function: Callable[[JobContext], R]) -> Task[[JobContext], R]:
            route = self._route(queue, concurrency, prefetch)
            if name in route.tasks:
                raise ValueError(f"task {name!r} already has a handler on queue {queue!r}")
            plain = function.function if isinstance(function, Task) else function
            route.tasks[name] = Handling(plain, _seconds(timeout), tuple(middleware))
            return Task(plain, name, queue)

        return register

    def _route(self, queue: str, concurrency: int | None, prefetch: int | None) -> Route:
        """The queue's route, made on its first registration with these settings."""
        route = self._routes.get(queue)
        if route is None:
            route = Route(queue, None, concurrency or self.concurrency,
                          self.prefetch if prefetch is None else prefetch)
            if route.concurrency < 1 or route.prefetch < 0:
                raise ValueError("concurrency must be >= 1 and prefetch >= 0")
            self._routes[queue] = route
        elif concurrency not in (None, route.concurrency) or prefetch not in (
                None, route.prefetch):
            raise ValueError(
                f"queue {queue!r} already runs with concurrency {route.concurrency} and "
                f"prefetch {route.prefetch}: set them on its first registration only")
        return route

    def use(self, layer: L) -> L:
        """Add a layer around every handler run, inside those given before (usable as a
        decorator). Takes effect for runs that start after it."""
        self._middleware.append(layer)
        return layer

    def set_concurrency(self, concurrency: int) -> None:
        """Every handler's queue runs up to `concurrency` jobs at once (as `overhop worker
        --concurrency` sets it); before `run`, it replaces the registered values. While
        running (an admin's `overhop worker concurrency`, say), waiting jobs start or
        more are asked for at once, fewer run as running ones end, and the server is told."""
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.concurrency = concurrency
        for route in self._routes.values():
            route.concurrency = concurrency
        if self._stopped is None or self._stopped.is_set():
            return
        if pool_size(self._routes.values(), self.threads) != self._pool_size:
            old = self._deliveries.executor
            self._deliveries.executor = self._new_pool()
            if old is not None:
                old.shutdown(wait=False)  # its running jobs finish there
        for route in self._routes.values():
            self._deliveries.resized(route)
        log.info("concurrency_changed concurrency=%d", concurrency)
        self._tasks.spawn(self._report_state())

    def _new_pool(self) -> ThreadPoolExecutor:
        """The thread pool for plain-function handlers, sized for their concurrency."""
        self._pool_size = pool_size(self._routes.values(), self.threads)
        return ThreadPoolExecutor(self._pool_size, thread_name_prefix="overhop-job")

    async def quiet(self) -> None:
        """Take no new jobs (unsubscribe, give back those not started) and let running ones
        finish; stay connected until `stop`. Also what an admin's `overhop worker quiet`
        does. A quiet worker stays quiet across reconnects."""
        if self.state is not WorkerState.RUNNING:
            return
        self.state = WorkerState.QUIET
        log.info("worker_quiet")
        client, subscriptions = self._deliveries.client, self._subscriptions
        if client is not None and subscriptions is not None:
            await subscriptions.quiesce(client)
            await self._report_state()

    def _on_control(self, control: WorkerControl) -> None:
        """An admin's command (a CONTROL push)."""
        log.info("control_received action=%s", control.action)
        if control.action is ControlAction.QUIET:
            self._tasks.spawn(self.quiet())
        elif control.action is ControlAction.CONCURRENCY and control.concurrency is not None:
            self.set_concurrency(control.concurrency)
        elif control.action is ControlAction.STOP and self._stop_requested is not None:
            if control.grace is not None:
                self._stop_grace = control.grace.total_seconds()
            self._stop_requested.set()

    async def _report_state(self) -> None:
        await report_state(self._deliveries.client, self.state, self._routes.values())

    @property
    def connected(self) -> bool:
        """True while connected and subscribed to every handler's queue."""
        client = self._deliveries.client
        return (client is not None and not client.closed
                and all(route.sid is not None for route in self._routes.values()))

    def heartbeat_interval(self, quest: Quest, limits: ServerLimits | None) -> float:
        """Seconds between JOBBEATs for this job: a third of its lease and of the server's
        `stale_after` (so two lost beats in a row lose neither), and at most
        `max_heartbeat_interval`."""
        interval = min(quest.lease_ms / 3000, self.max_heartbeat_interval)
        if limits is not None:
            interval = min(interval, limits.stale_after.total_seconds() / 3)
        return interval

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
            raise RuntimeError("no handlers registered: use @worker.handler(queue) or "
                               "@worker.task(name, queue=queue)")
        if self._stopped is not None and not self._stopped.is_set():
            raise RuntimeError("this Worker is already running")
        stop_requested = self._stop_requested = asyncio.Event()
        self._force = asyncio.Event()
        stopped = self._stopped = asyncio.Event()
        self.state, self._stop_grace = WorkerState.RUNNING, None
        subscriptions = self._subscriptions = Subscriptions(
            self._routes, self._deliveries, self._tasks, stop_requested,
            create_queues=self.create_queues, reconnect_initial=self.reconnect_initial,
            reconnect_max=self.reconnect_max, is_quiet=self._is_quiet)
        self._deliveries.executor = self._new_pool()
        backoff = ReconnectBackoff(self.reconnect_initial, self.reconnect_max)
        try:
            while not stop_requested.is_set():
                try:
                    await self._serve(subscriptions, backoff)
                except _RETRYABLE as exc:
                    log.warning("connection_failed: %r", exc)
                else:
                    if stop_requested.is_set():
                        break
                    log.warning("connection_closed")
                # Also after a connection that worked: a server that accepts and then
                # drops connections at once must not be hammered.
                delay = backoff.next_delay()
                log.info("reconnecting_in %.2fs", delay)
                await subscriptions.wait_for_stop(delay)
        finally:
            if self._deliveries.executor is not None:
                self._deliveries.executor.shutdown(wait=False, cancel_futures=True)
            self._subscriptions = None
            stopped.set()

    def _is_quiet(self) -> bool:
        return self.state is not WorkerState.RUNNING

    async def _serve(self, subscriptions: Subscriptions, backoff: ReconnectBackoff) -> None:
        """One connection: subscribe, process until it closes or a stop is requested."""
        assert self._stop_requested is not None
        url = self.url() if callable(self.url) else self.url
        client = await AsyncClient.connect(url, name=self.name, labels=self.labels,
                                           on_quest=self._deliveries.on_quest,
                                           on_bye=subscriptions.on_bye,
                                           on_subscription_end=subscriptions.on_subscription_end,
                                           on_control=self._on_control,
                                           on_abort=self._deliveries.on_abort,
                                           on_broker_lost=subscriptions.on_broker_lost,
                                           tls=self.tls)
        self._deliveries.client = client
        try:
            await subscriptions.subscribe_all(client)
            await self._report_state()
            backoff.reset()
            log.info("worker_ready wid=%s url=%s", client.worker_id, redact_urls(url))
            closed = asyncio.ensure_future(client.wait_closed())
            stop = asyncio.ensure_future(self._stop_requested.wait())
            await asyncio.wait({closed, stop}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            stop.cancel()
            if self._stop_requested.is_set() and not client.closed:
                await self._drain(client, subscriptions)
        finally:
            self._deliveries.client = None
            self._deliveries.abandon(client)
            await client.close()

    async def _drain(self, client: AsyncClient, subscriptions: Subscriptions) -> None:
        """Graceful stop: no new jobs, give back unstarted ones, let running ones end."""
        assert self._force is not None
        self.state = WorkerState.STOPPING
        await asyncio.gather(subscriptions.quiesce(client), self._report_state())
        # Handlers running, and RELEASEs of jobs that came while unsubscribing.
        running = self._deliveries.running()
        grace = self.shutdown_grace if self._stop_grace is None else self._stop_grace
        if running:
            log.info("waiting_for_jobs count=%d grace=%.1fs", len(running), grace)
            everything = asyncio.ensure_future(_settled(running))
            force = asyncio.ensure_future(self._force.wait())
            await asyncio.wait({everything, force}, timeout=grace,
                               return_when=asyncio.FIRST_COMPLETED)
            force.cancel()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        try:
            await client.goodbye("worker stopping")
        except (OverhopError, ConnectionLost) as exc:
            log.warning("goodbye_failed: %r", exc)


async def _settled(tasks: "Iterable[asyncio.Task[None]]") -> None:
    """Return once every task has ended, however it ended."""
    await asyncio.gather(*tasks, return_exceptions=True)
