"""The jobs a worker holds, from their QUEST to their end, and the credits they free.

A job received is acknowledged at once (ACK) and kept alive by heartbeats (JOBBEAT) while
it waits for one of its route's `concurrency` slots and while it runs; it ends when its
outcome is sent, when it is given back (RELEASE), or with its connection. A job cancelled
on the server (ABORT) is marked on its context (`ctx.cancelled`); an async handler's task
is cancelled and the job answered with FAIL "cancelled" (the server ends it `cancelled`
whatever the answer); a job still waiting for a slot is given back.

**Credits.** A route holds at most `concurrency + prefetch` jobs: the server's credits
(`Route.granted`, as counted here) plus the jobs in hand (`Route.in_hand`). Each job that
ends gives its credit back, one of two ways:

- *With its outcome*, when the outcome goes on the subscription the job came on (the
  route's `sid` is still the QUEST's: not after a reconnect, a SUBEND or a cluster move,
  nor while the runner quiesces or stops) and the route would top up after it (not when
  its concurrency was lowered meanwhile). Its first COMPLETE, FAIL or RELEASE carries
  `credit: true`, and from that send the job is out of `in_hand` and its credit counts in
  `granted`: the server gives it as it takes the outcome, so the next QUEST may come
  before the outcome's OK. No CREDIT follows.
- *With CREDIT* (`top_up`) once the job has ended, in every other case.

A send again of an outcome (after STORAGE_FULL, STORAGE_UNAVAILABLE or INTERNAL, or a
cluster move) never carries the credit. (The client's own following of a queue that moved,
QUEUE_MOVED, sends the same frame to the new owner, `credit` included: that owner holds
the delivery only as one to re-attach, and gives no credit for it.) If the send that
carried it fails, the job is in hand again until it ends, and:

- STORAGE_FULL, STORAGE_UNAVAILABLE or INTERNAL: the server took the outcome and could not
  write it, so the credit was given; it stays counted in `granted`. While that outcome is
  sent again the server holds both the job and its credit, so the route may hold one job
  more than `concurrency + prefetch` (it waits for a slot);
- any other error (a refusal, a lost connection): no credit was given, or its
  subscription is gone; it is taken out of `granted`, and the job's end tops up with
  CREDIT as before.

When the route subscribes anew, jobs whose outcome carried their credit to the old
subscription and is still unanswered count in hand again (`recount`): that credit went
with it, and the new subscription's credits leave room for them should they be refused.

In a cluster, a job outlives the connection it came on: when its queue moves, or its
broker's connection is lost, it runs on, and its heartbeats and outcome go to the queue's
new owner (the client routes them), which re-attaches the delivery.
"""

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from overhop_client.client import AsyncClient
from overhop_client.context import JobContext
from overhop_client.errors import OverhopError
from overhop_client.middleware import Layer
from overhop_client.results import Abort, Quest, ServerLimits
from overhop_client.worker_outcomes import NOT_WRITTEN, Outcome, is_moving, report, run_handler
from overhop_client.worker_routes import Held, Route, TaskSet

log = logging.getLogger("overhop_client.worker")

HeartbeatInterval = Callable[[Quest, ServerLimits | None], float]
# FAIL's message for a job whose handler was stopped by ABORT.
CANCELLED_MESSAGE = "cancelled"


class Deliveries:
    """Every job held, by delivery id, and the connection new ones come on."""

    def __init__(self, routes: Mapping[str, Route], tasks: TaskSet,
                 heartbeat_interval: HeartbeatInterval) -> None:
        self.client: AsyncClient | None = None
        """The current connection; None between connections."""
        self.executor: ThreadPoolExecutor | None = None
        """The pool plain-function handlers run in, while the runner runs."""
        self.middleware: Sequence[Layer] = ()
        """The worker's layers around every handler run (`Worker(middleware=...)`)."""
        self._routes = routes
        self._tasks = tasks
        self._heartbeat_interval = heartbeat_interval
        self._held: dict[str, Held] = {}

    def running(self) -> "list[asyncio.Task[None]]":
        """What is being done with the jobs held: handler runs and RELEASEs."""
        return [held.task for held in self._held.values() if held.task is not None]

    def on_quest(self, quest: Quest) -> None:
        route = self._routes.get(quest.queue)
        client = self.client
        if route is None or client is None:
            log.warning("quest_without_handler queue=%s jid=%s", quest.queue, quest.jid)
            return
        route.granted -= 1
        route.in_hand += 1
        context = JobContext(quest, client, asyncio.get_running_loop())
        held = Held(quest, route, client, context, self._tasks.spawn(self._ack(client, quest)))
        held.beat = self._tasks.spawn(self._beat(held))
        self._held[quest.did] = held
        if route.sid is None:  # stopping, or the server said BYE: not ours to start
            held.task = self._tasks.spawn(self.release(held))
            return
        route.waiting.append(held)
        self._start_waiting(route)

    def resized(self, route: Route) -> None:
        """The route's concurrency changed: start what now fits, ask for what now may come."""
        self._start_waiting(route)
        self.top_up(route)

    def _start_waiting(self, route: Route) -> None:
        while route.waiting and route.running < route.concurrency and route.sid is not None:
            held = route.waiting.popleft()
            route.running += 1
            held.task = self._tasks.spawn(self._execute(held))

    def on_abort(self, abort: Abort) -> None:
        """ABORT: the job was cancelled on the server; stop it."""
        held = self._held.get(abort.did)
        if held is None:
            return  # its outcome went out already
        held.context.mark_cancelled(abort.reason)
        log.info("job_cancelled jid=%s reason=%s", abort.jid, abort.reason)
        if held in held.route.waiting:  # not started: give it back, it ends cancelled
            held.route.waiting.remove(held)
            held.task = self._tasks.spawn(self.release(held))
        elif (held.context.running is not None
              and held.route.handling(held.context.quest.task).async_function is not None):
            held.context.running.cancel()

    async def _run(self, held: Held) -> Outcome:
        """The handler's outcome; FAIL "cancelled" when ABORT cancelled its task."""
        task = asyncio.current_task()
        held.context.running = task
        try:
            return await run_handler(held.route, held.context, self.executor, self.middleware)
        except asyncio.CancelledError:
            if task is None or not held.context.cancelled or task.cancelling() > 1:
                raise  # the connection went, or the runner is stopping
            task.uncancel()
            return Outcome(False, message=CANCELLED_MESSAGE,
                           details=held.context.cancel_reason, error_type="cancelled")
        finally:
            held.context.running = None

    async def _execute(self, held: Held) -> None:
        route = held.route
        try:
            outcome = await self._run(held)
            if await held.ack:
                await held.context.flush_logs()  # the log is complete before the outcome
                credit = self._give_credit(held)
                await report(held.client, held.quest, outcome,
                             functools.partial(self._credit_refused, held) if credit else None)
        except ConnectionError:
            log.info("outcome_not_sent jid=%s: connection lost", held.quest.jid)
        except OverhopError as exc:
            log.warning("outcome_refused jid=%s: %s", held.quest.jid, exc)
        finally:
            held.context.close_logs()
            route.running -= 1
            self._finish(held)
            self._start_waiting(route)

    async def _ack(self, client: AsyncClient, quest: Quest) -> bool:
        """ACK; False when refused, which means the delivery is void (withdrawn)."""
        try:
            await client.ack(quest)
        except (OverhopError, ConnectionError) as exc:
            log.warning("ack_refused jid=%s: %r", quest.jid, exc)
            return False
        return True

    async def _beat(self, held: Held) -> None:
        interval = self._heartbeat_interval(held.quest, held.client.limits)
        while True:
            await asyncio.sleep(interval)
            try:
                await held.client.heartbeat(held.quest)
            except (OverhopError, ConnectionError) as exc:
                if is_moving(held.client, exc):
                    log.info("heartbeat_deferred jid=%s: %r", held.quest.jid, exc)
                    continue
                log.info("heartbeat_stopped jid=%s: %r", held.quest.jid, exc)
                return

    async def release(self, held: Held) -> None:
        """Give the job back (RELEASE): it waits again on the server, no attempt used."""
        credit = self._give_credit(held)
        try:
            await held.client.release(held.quest, credit=credit)
        except (OverhopError, ConnectionError) as exc:
            if credit:
                self._credit_refused(held, exc)
            log.info("release_failed jid=%s: %r", held.quest.jid, exc)
        finally:
            self._finish(held)

    def _finish(self, held: Held) -> None:
        if self._held.pop(held.quest.did, None) is None:
            return
        if held.beat is not None:
            held.beat.cancel()
        if not held.credit_given:  # else it left `in_hand` when its outcome went out
            held.route.in_hand -= 1
        self.top_up(held.route)

    def abandon(self, client: AsyncClient) -> None:
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

    # -- credits ---------------------------------------------------------------------

    def _give_credit(self, held: Held) -> bool:
        """Whether the job's outcome, about to go out for the first time, carries its
        credit back (`credit: true`); if so, that credit counts as given from now."""
        route = held.route
        if route.sid != held.quest.sid or route.capacity - route.in_hand + 1 <= route.granted:
            return False
        held.credit_given = True
        route.in_hand -= 1
        route.granted += 1
        return True

    def _credit_refused(self, held: Held, error: BaseException) -> None:
        """The send that carried the job's credit failed: the job is in hand again, and
        its credit given only if the server took the outcome (see the module's
        documentation)."""
        if not held.credit_given:
            return  # counted in hand again when its route subscribed anew (`recount`)
        route = held.route
        held.credit_given = False
        route.in_hand += 1
        if route.sid == held.quest.sid and not isinstance(error, NOT_WRITTEN):
            route.granted -= 1

    def recount(self, route: Route) -> None:
        """The route subscribes anew: jobs whose outcome carried their credit to an older
        subscription, not answered yet, count in hand again."""
        for held in self._held.values():
            if held.route is route and held.credit_given:
                held.credit_given = False
                route.in_hand += 1

    def top_up(self, route: Route) -> None:
        """Give the subscription credits back up to `concurrency + prefetch` in all."""
        client = self.client
        if route.sid is None or client is None or client.closed:
            return
        want = route.capacity - route.in_hand - route.granted
        if want > 0:
            route.granted += want
            self._tasks.spawn(self._credit(client, route.sid, want))

    async def _credit(self, client: AsyncClient, sid: str, credits: int) -> None:
        try:
            await client.credit(sid, credits)
        except (OverhopError, ConnectionError) as exc:
            log.warning("credit_failed sid=%s: %r", sid, exc)
