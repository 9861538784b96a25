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

In a cluster each route subscribes at its queue's owner (the client routes SUBSCRIBE
there). When the queue moves (SUBEND `queue_moved`) or the connection to its broker is
lost (`on_broker_lost`), the route gives back its unstarted jobs and subscribes at the new
owner, trying again with capped exponential backoff while no broker holds the queue; its
running jobs go on, and their outcomes reach the new owner through the client's routing.
The new subscription's credits are the route's free slots only, so a move never lets more
jobs run at once.
"""

import asyncio
import logging
from collections.abc import Callable, Mapping

from overhop_client.client import AsyncClient
from overhop_client.cluster import BrokerLost
from overhop_client.errors import (
    ConnectionLost,
    QueueExistsError,
    QueueMovedError,
    QueueNotFoundError,
    ShuttingDownError,
)
from overhop_client.reconnect import ReconnectBackoff
from overhop_client.results import QUEUE_MOVED_REASON, Bye, SubscriptionEnded
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
        self._placing: set[str] = set()
        """Queues whose route is being subscribed at its new owner."""

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
            except (QueueMovedError, OSError) as exc:
                if not client.cluster:
                    raise
                log.warning("owner_not_found queue=%s: %r", route.queue, exc)
                self._tasks.spawn(self._subscribe_at_owner(client, route))
        self._subscribed_once = True

    async def _subscribe(self, client: AsyncClient, route: Route, *, create: bool = True
                         ) -> None:
        if create and self._create_queues and await client.queue(route.queue) is None:
            try:
                await client.add_queue(route.queue)
            except QueueExistsError:
                log.debug("queue_created_meanwhile queue=%s", route.queue)
        self._deliveries.recount(route)
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
        self._end_subscription(route)
        if ended.reason == QUEUE_MOVED_REASON:
            self._tasks.spawn(self._subscribe_at_owner(client, route))
        else:
            self._tasks.spawn(self._subscribe_when_back(client, route))

    def on_broker_lost(self, lost: BrokerLost) -> None:
        """The connection to one broker of a cluster closed: subscribe its routes at their
        queues' new owners."""
        client = self._deliveries.client
        for route in self._routes.values():
            if client is not None and route.sid is not None and route.sid in lost.sids:
                log.warning("subscription_lost queue=%s broker=%s", route.queue, lost.address)
                self._end_subscription(route)
                self._tasks.spawn(self._subscribe_at_owner(client, route))

    def _end_subscription(self, route: Route) -> None:
        """The route's subscription is over: give back the jobs not started."""
        route.sid = None
        route.granted = 0
        unstarted = list(route.waiting)
        route.waiting.clear()
        for held in unstarted:
            held.task = self._tasks.spawn(self._deliveries.release(held))

    def _gone(self, client: AsyncClient, route: Route) -> bool:
        """Whether a route's subscribing loop should end: stopping, quiet, on another
        connection, or subscribed already."""
        return (self._stop_requested.is_set() or self._is_quiet() or client.closed
                or self._deliveries.client is not client or route.sid is not None)

    async def _subscribe_at_owner(self, client: AsyncClient, route: Route) -> None:
        """In a cluster, after the queue moved or its broker was lost: subscribe at the
        owner the client finds, again with backoff while there is none."""
        if route.queue in self._placing:
            return
        self._placing.add(route.queue)
        try:
            backoff = ReconnectBackoff(self._reconnect_initial, self._reconnect_max)
            while not self._gone(client, route):
                try:
                    await self._subscribe(client, route, create=False)
                except QueueNotFoundError:
                    self._tasks.spawn(self._subscribe_when_back(client, route))
                    return
                except (QueueMovedError, OSError) as exc:
                    log.info("owner_not_found queue=%s: %r", route.queue, exc)
                    await self.wait_for_stop(backoff.next_delay())
                    continue
                log.info("subscribed_at_owner queue=%s", route.queue)
                return
        finally:
            self._placing.discard(route.queue)

    async def _subscribe_when_back(self, client: AsyncClient, route: Route) -> None:
        """After SUBEND, or a reconnect that found the queue gone: subscribe again once the
        queue exists again (never creating it)."""
        backoff = ReconnectBackoff(self._reconnect_initial, self._reconnect_max)
        while True:
            await self.wait_for_stop(backoff.next_delay())
            if self._gone(client, route):
                return
            try:
                if await client.queue(route.queue) is None:
                    continue
                await self._subscribe(client, route, create=False)
            except QueueNotFoundError:
                continue  # removed again between the two requests
            except QueueMovedError:
                continue  # a cluster's queue between owners
            except ConnectionError:
                if client.cluster:
                    continue  # one broker lost: the client finds the others
                return  # the reconnect subscribes
            log.info("subscribed_again queue=%s", route.queue)
            return
