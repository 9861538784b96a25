"""The worker's subscriptions on one run: subscribing, giving jobs back, and coming back.

On each connection every route subscribes (creating its queue first with
`create_queues`). When the server says BYE, or the runner stops, the runner quiesces:
it unsubscribes and gives back (RELEASE) the jobs received but not started. When the
server ends a subscription because its queue was removed or obliterated (SUBEND), or a
queue is missing at a reconnect, the route gives back its unstarted jobs and checks with
capped exponential backoff whether the queue exists again, to subscribe once it does; it
never creates a queue that was removed. A queue missing when the runner first subscribes
stops it with QueueNotFoundError (most likely a wrong name). A quiet worker (an admin's
`overhop worker quiet`) subscribes to nothing, also after a reconnect.
"""

import asyncio
import logging
from collections.abc import Callable, Mapping

from overhop_client.client import AsyncClient
from overhop_client.errors import (
    ConnectionLost,
    QueueExistsError,
    QueueNotFoundError,
    ShuttingDownError,
)
from overhop_client.reconnect import ReconnectBackoff
from overhop_client.results import Bye, SubscriptionEnded
from overhop_client.worker_deliveries import Deliveries
from overhop_client.worker_routes import Route, TaskSet

log = logging.getLogger("overhop_client.worker")


class Subscriptions:
    """The routes' subscriptions over the connections of one run of the worker."""

    def __init__(self, routes: Mapping[str, Route], deliveries: Deliveries, tasks: TaskSet,
                 stop_requested: asyncio.Event, *, create_queues: bool,
                 reconnect_initial: float, reconnect_max: float,
                 is_quiet: Callable[[], bool]) -> None:
        self._routes = routes
        self._deliveries = deliveries
        self._tasks = tasks
        self._stop_requested = stop_requested
        self._create_queues = create_queues
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        self._is_quiet = is_quiet
        self._subscribed_once = False

    async def wait_for_stop(self, seconds: float) -> None:
        """Return after `seconds`, or sooner when a stop is requested."""
        try:
            await asyncio.wait_for(self._stop_requested.wait(), seconds)
        except TimeoutError:
            return

    async def subscribe_all(self, client: AsyncClient) -> None:
        """Subscribe every route on a new connection (none while the worker is quiet)."""
        if self._is_quiet():
            return
        for route in self._routes.values():
            try:
                await self._subscribe(client, route)
            except QueueNotFoundError:
                if not self._subscribed_once:
                    raise  # a queue missing from the start: most likely a wrong name
                log.warning("queue_missing queue=%s: subscribing once it exists",
                            route.queue)
                self._tasks.spawn(self._subscribe_when_back(client, route))
        self._subscribed_once = True

    async def _subscribe(self, client: AsyncClient, route: Route, *, create: bool = True
                         ) -> None:
        if create and self._create_queues and await client.queue(route.queue) is None:
            try:
                await client.add_queue(route.queue)
            except QueueExistsError:
                log.debug("queue_created_meanwhile queue=%s", route.queue)
        credits = max(0, route.capacity - route.in_hand)
        route.granted = credits
        route.sid = await client.subscribe(route.queue, credits)
        self._deliveries.top_up(route)  # jobs may have finished while SUBSCRIBE was in flight

    async def quiesce(self, client: AsyncClient) -> None:
        """Take no more jobs on this connection; RELEASE those received but not started."""
        subscribed = [(route, route.sid) for route in self._routes.values() if route.sid]
        for route, _ in subscribed:
            route.sid = None
        # QUESTs sent before an UNSUBSCRIBE precede its reply on the connection, so once
        # every reply is in, no QUEST of these subscriptions can still come.
        results = await asyncio.gather(*(client.unsubscribe(sid) for _, sid in subscribed),
                                       return_exceptions=True)
        for error in results:
            if isinstance(error, (ConnectionLost, ShuttingDownError)):
                # The server is going away (a restart): its subscriptions end with it.
                log.debug("unsubscribe_skipped: %r", error)
            elif isinstance(error, BaseException):
                log.warning("unsubscribe_failed: %r", error)
        unstarted = [held for route, _ in subscribed for held in route.waiting]
        for route, _ in subscribed:
            route.waiting.clear()
        await asyncio.gather(*(self._deliveries.release(held) for held in unstarted))

    def on_bye(self, bye: Bye) -> None:
        client = self._deliveries.client
        log.info("server_bye reason=%s grace_ms=%d", bye.reason, bye.grace_ms)
        if client is not None:
            self._tasks.spawn(self.quiesce(client))

    def on_subscription_end(self, ended: SubscriptionEnded) -> None:
        route = self._routes.get(ended.queue)
        client = self._deliveries.client
        if route is None or client is None or route.sid != ended.sid:
            return
        log.warning("subscription_ended queue=%s reason=%s", ended.queue, ended.reason)
        route.sid = None
        route.granted = 0
        unstarted = list(route.waiting)
        route.waiting.clear()
        for held in unstarted:
            held.task = self._tasks.spawn(self._deliveries.release(held))
        self._tasks.spawn(self._subscribe_when_back(client, route))

    async def _subscribe_when_back(self, client: AsyncClient, route: Route) -> None:
        """After SUBEND, or a reconnect that found the queue gone: subscribe again once the
        queue exists again (never creating it)."""
        backoff = ReconnectBackoff(self._reconnect_initial, self._reconnect_max)
        while True:
            await self.wait_for_stop(backoff.next_delay())
            if (self._stop_requested.is_set() or self._is_quiet() or client.closed
                    or self._deliveries.client is not client or route.sid is not None):
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
