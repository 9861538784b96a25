"""One client's connections to the brokers of a cluster, and the request that follows its
queue from broker to broker.

A `Cluster` keeps one `Session` per broker it has needed, opened lazily with the client's
`Dialer` (the same login and REGISTER everywhere), and a `RouteTable` learned from ROUTES,
QUEUE_MOVED and SUBEND. A request naming a queue, a job, a delivery or a schedule
(`routing.queue_of`) goes to the queue's owner when known, else to any broker. QUEUE_MOVED
(nothing changed) sends it on: to the `owner` it names, or, while no broker holds the
queue, after a wait to the owner a fresh ROUTES names, within `routing.FollowBudget`; past
it the QueueMovedError is raised. A request is sent again only then, or when its
connection had closed before it could be written; one that got any other answer, or whose
connection dropped after it was written (it may have taken effect), never is.

CREDIT and UNSUBSCRIBE go to the broker that made their subscription. When a broker's
connection closes, its queues' owners are forgotten, the next routed request asks ROUTES
again, and `on_broker_lost` is told which subscriptions ended with it. When every
connection is gone, the next request connects again to any broker known (those given,
then those ROUTES named). A watch (WATCH, or ENQUEUE's `watch`) lives on the connection
that made it: when that connection closes, or its queue is heard to have moved, the job is
watched again at its queue's owner, which pushes RESULT at once for a job that has ended.
"""

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from overhop_client.connection import PushHandler
from overhop_client.errors import ConnectionLost, OverhopError, QueueMovedError
from overhop_client.handshake import UNAVAILABLE, Dialer, Session
from overhop_client.messages import MessageType
from overhop_client.routing import (
    SCHEDULE_FIELD,
    SUBSCRIPTION_FIELD,
    FollowBudget,
    RouteTable,
    queue_of,
    queue_of_job,
)

log = logging.getLogger("overhop_client.cluster")
T = TypeVar("T")


@dataclass(frozen=True)
class BrokerLost:
    """The connection to one broker of a cluster closed (the broker stopped, or the
    network failed): the subscriptions made there (`sids`) have ended."""

    address: str
    sids: frozenset[str]


class Cluster:
    """The sessions of one client to the brokers of a cluster, and where requests go."""

    def __init__(self, dialer: Dialer, first: Session, seeds: Sequence[str],
                 on_push: PushHandler,
                 on_broker_lost: Callable[[BrokerLost], None] | None = None) -> None:
        self._dialer = dialer
        self._first = first
        self._seeds = list(seeds)
        self._on_push = on_push
        self._on_broker_lost = on_broker_lost
        self._sessions: dict[str, Session] = {}
        """Live sessions by address; a broker may be under two (dialled, advertised)."""
        self._opening: dict[str, asyncio.Future[Session]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self.routes = RouteTable()
        self._stale = True
        """The routes may be old (a broker was lost, or none were asked yet)."""
        self._refreshing: asyncio.Future[None] | None = None
        self._sids: dict[str, Session] = {}
        """Each live subscription's session."""
        self._watches: dict[str, Session] = {}
        """Each watched job's session."""
        self._schedule_queues: dict[str, str] = {}
        self.closed = False
        self._closed = asyncio.Event()
        self._adopt(first)

    # -- requests --------------------------------------------------------------------

    async def request(self, message_type: MessageType | int, payload: Mapping[str, Any]
                      ) -> tuple[dict[str, Any], Session]:
        """The reply, and the session that gave it (see the module documentation)."""
        if message_type in SUBSCRIPTION_FIELD:
            return await self._to_subscription(message_type, payload)
        queue = queue_of(message_type, payload, self._schedule_queues)
        loop = asyncio.get_running_loop()
        budget = FollowBudget(loop.time())
        while True:
            try:
                session = await self._session_for(queue)
            except UNAVAILABLE as exc:
                # The owner named is gone (the routes are old): ask again after a while.
                await self._wait_for_owner(budget, loop.time(), exc)
                continue
            try:
                reply = await session.send(message_type, payload)
            except QueueMovedError as moved:
                queue = await self._follow(moved, queue, budget, loop.time())
                if message_type in SCHEDULE_FIELD and queue is not None:
                    self._schedule_queues[str(payload.get("name"))] = queue
                continue
            if reply is None:  # closed before it was written: not sent, so send it on
                self._lost(session)
                continue
            self._learn_from(message_type, payload, reply, session)
            return reply, session

    async def _follow(self, moved: QueueMovedError, queue: str | None,
                      budget: FollowBudget, now: float) -> str | None:
        """Learn where the queue went (its name, which a schedule's request learns so);
        raise `moved` once the budget is spent."""
        queue = moved.queue or queue
        if queue is not None:
            self.queue_moved(queue, moved.owner)
        if moved.owner is None:
            await self._wait_for_owner(budget, now, moved)
        elif not budget.hop(now):
            raise moved
        log.debug("queue_moved queue=%s owner=%s", queue, moved.owner)
        return queue

    async def _wait_for_owner(self, budget: FollowBudget, now: float,
                              error: BaseException) -> None:
        """No broker holds the queue (or the one named cannot be reached): wait, then ask
        ROUTES again; raise `error` once the budget is spent."""
        wait = budget.wait(now)
        if wait is None:
            raise error
        await asyncio.sleep(wait)
        self._stale = True

    async def _to_subscription(self, message_type: MessageType | int,
                               payload: Mapping[str, Any]) -> tuple[dict[str, Any], Session]:
        sid = str(payload.get("sid"))
        # A subscription made before the client knew the cluster is the first broker's.
        session = self._sids.get(sid, self._first)
        if session.closed:
            raise ConnectionLost(f"the connection subscription {sid} was made on is gone")
        reply = await session.send(message_type, payload)
        if reply is None:
            raise ConnectionLost(f"the connection subscription {sid} was made on is gone")
        if message_type == MessageType.UNSUBSCRIBE:
            self._sids.pop(sid, None)
        return reply, session

    def _learn_from(self, message_type: MessageType | int, payload: Mapping[str, Any],
                    reply: Mapping[str, Any], session: Session) -> None:
        """What a successful reply tells about where things are."""
        if message_type == MessageType.SUBSCRIBE and isinstance(reply.get("sid"), str):
            self._sids[reply["sid"]] = session
        elif message_type == MessageType.WATCH or (
                message_type == MessageType.ENQUEUE and payload.get("watch")):
            self._watches[str(payload.get("jid") or reply.get("jid"))] = session
        elif message_type == MessageType.ENQUEUEMANY and payload.get("watch"):
            self._watches.update(dict.fromkeys(map(str, reply.get("jids") or ()), session))
        elif message_type == MessageType.UNWATCH:
            self._watches.pop(str(payload.get("jid")), None)
        elif message_type == MessageType.ADDQUEUE:
            # The broker that creates a queue owns it first.
            self.routes.learn(str(payload.get("name")), session.address)
        elif message_type == MessageType.ADDSCHEDULE:
            self._schedule_queues[str(payload.get("name"))] = str(payload.get("q"))
        elif message_type == MessageType.RMSCHEDULE:
            self._schedule_queues.pop(str(payload.get("name")), None)
        elif message_type == MessageType.LSSCHEDULE:
            for row in reply.get("schedules") or ():
                if isinstance(row, dict) and "name" in row and "q" in row:
                    self._schedule_queues[str(row["name"])] = str(row["q"])

    def subscription_ended(self, sid: str) -> None:
        """SUBEND: the server ended the subscription."""
        self._sids.pop(sid, None)

    def watch_ended(self, jid: str) -> None:
        """RESULT: the job's watch is over."""
        self._watches.pop(jid, None)

    def queue_moved(self, queue: str, owner: str | None) -> None:
        """The queue's owner is `owner` now (None: no broker holds it at the moment), as
        QUEUE_MOVED or SUBEND said."""
        self.routes.learn(queue, owner)
        self._watch_again()

    def _watch_again(self) -> None:
        """Watch again, at their queue's owner, the jobs watched on a connection that is
        gone or on a broker that no longer owns their queue."""
        for jid, session in list(self._watches.items()):
            owner = self.routes.owner(queue_of_job(jid))
            if session.closed or (owner is not None and self._sessions.get(owner) is not session):
                del self._watches[jid]
                self._spawn(self._watch(jid))

    async def _watch(self, jid: str) -> None:
        try:
            await self.request(MessageType.WATCH, {"jid": jid})
        except (OverhopError, ConnectionError) as exc:
            log.warning("watch_lost jid=%s: %r", jid, exc)

    # -- sessions --------------------------------------------------------------------

    @property
    def sessions(self) -> list[Session]:
        """The live sessions, each once."""
        return list({id(s): s for s in self._sessions.values() if not s.closed}.values())

    async def _session_for(self, queue: str | None) -> Session:
        if self._stale:
            await self.refresh()
        owner = self.routes.owner(queue) if queue is not None else None
        if owner is not None:
            return await self._open(owner)
        return await self.any_session()

    async def any_session(self) -> Session:
        """A live session; with none, the first broker known that answers."""
        for session in self._sessions.values():
            if not session.closed:
                return session
        known = dict.fromkeys([*self._seeds, *self.routes.nodes.values()])
        session = await self._dialer.open_first(list(known), self._on_push)
        self._adopt(session)
        self._stale = True
        return session

    async def _open(self, address: str) -> Session:
        session = self._sessions.get(address)
        if session is not None and not session.closed:
            return session
        opening = self._opening.get(address)
        if opening is None:
            opening = self._opening[address] = self._spawn(self._dial(address))
            opening.add_done_callback(lambda _: self._opening.pop(address, None))
        return await asyncio.shield(opening)

    async def _dial(self, address: str) -> Session:
        # Adopted here, not by the caller: a caller that stops waiting leaks nothing.
        session = await self._dialer.open(address, self._on_push)
        self._adopt(session)
        return session

    async def refresh(self) -> None:
        """Ask ROUTES (one request at a time, shared by whoever waits for it)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = self._spawn(self._ask_routes())
        await asyncio.shield(self._refreshing)

    async def _ask_routes(self) -> None:
        session = await self.any_session()
        reply = await session.send(MessageType.ROUTES, {})
        if reply is None:
            self._lost(session)
            raise ConnectionLost(f"the connection to {session.address} closed")
        self.learn_routes(reply, session)

    def learn_routes(self, reply: Mapping[str, Any], session: Session) -> bool:
        """Take a ROUTES reply `session` gave; whether its broker is in a cluster."""
        clustered = self.routes.learn_routes(reply)
        if self.routes.node_address is not None:
            # The broker answering is known by the address ROUTES gives it too.
            self._sessions.setdefault(self.routes.node_address, session)
        self._stale = False
        self._watch_again()
        return clustered

    def _adopt(self, session: Session) -> None:
        if self._sessions.get(session.address) is session:
            return
        self._sessions[session.address] = session
        self._spawn(self._until_closed(session))

    async def _until_closed(self, session: Session) -> None:
        await session.connection.wait_closed()
        self._lost(session)

    def _spawn(self, coroutine: Coroutine[Any, Any, T]) -> "asyncio.Task[T]":
        """Run in the background, referenced until it ends; its failure is only logged
        (whoever awaits it sees it too)."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: "asyncio.Future[Any]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("cluster_task_failed: %r", task.exception())

    def _lost(self, session: Session) -> None:
        """The session's connection closed: forget it and what went through it."""
        addresses = [address for address, s in self._sessions.items() if s is session]
        if not addresses:
            return
        for address in addresses:
            del self._sessions[address]
        self.routes.forget(addresses)
        self._stale = True
        sids = frozenset(sid for sid, s in self._sids.items() if s is session)
        for sid in sids:
            del self._sids[sid]
        if self.closed:
            return
        log.warning("broker_lost address=%s subscriptions=%d", session.address, len(sids))
        self._watch_again()
        if self._on_broker_lost is not None:
            self._on_broker_lost(BrokerLost(session.address, sids))

    async def broadcast(self, message_type: MessageType | int, payload: Mapping[str, Any]
                        ) -> None:
        """Send to every live session and wait for every reply (the first ERR raises)."""
        await asyncio.gather(*(session.send(message_type, payload)
                               for session in self.sessions))

    async def everywhere(self, message_type: MessageType | int, payload: Mapping[str, Any]
                         ) -> list[dict[str, Any]]:
        """Send to every live broker ROUTES names, connecting to those not reached yet;
        every reply, in the order of the brokers' node ids (the first ERR raises)."""
        await self.refresh()
        sessions = [await self._open(self.routes.nodes[node])
                    for node in sorted(self.routes.nodes)]
        replies = await asyncio.gather(*(session.send(message_type, payload)
                                          for session in sessions))
        for session, reply in zip(sessions, replies, strict=True):
            if reply is None:
                raise ConnectionLost(f"the connection to {session.address} closed")
        return [reply for reply in replies if reply is not None]

    async def goodbye(self, payload: Mapping[str, Any]) -> None:
        """GOODBYE to every broker, then close: each closes its connection after it."""
        self.closed = True
        try:
            await self.broadcast(MessageType.GOODBYE, payload)
        finally:
            await self.close()

    async def close(self) -> None:
        """Close every connection."""
        self.closed = True
        self._closed.set()
        sessions = self.sessions
        for session in sessions:
            session.connection.close()
        await asyncio.gather(*(s.connection.wait_closed() for s in sessions))
        for task in list(self._tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        """Return once `close` was called."""
        await self._closed.wait()
