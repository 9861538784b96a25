"""Where a request goes in a cluster: the queue it acts on, the queue's owner, and how long
to keep following a queue that moves. Pure: no sockets, no clock.

In a cluster (PROTOCOL.md section 12) every request that names a queue, a job, a delivery
or a schedule is answered by the queue's owner only; `queue_of` says which queue a request
acts on, from tables by message type. `RouteTable` holds each queue's owner as last heard
(from ROUTES, QUEUE_MOVED and SUBEND), `FollowBudget` bounds how a request follows a queue
that moves: at most `MAX_HOPS` owners, and while no broker holds the queue, waits of
`FIRST_WAIT_S` doubling to `MAX_WAIT_S` until `FOLLOW_DEADLINE_S` has passed.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from overhop_client.messages import MessageType

# Requests whose `q` is the queue they act on.
QUEUE_FIELD = frozenset({
    MessageType.QUEUE, MessageType.SUBSCRIBE, MessageType.ENQUEUE, MessageType.ENQUEUEMANY,
    MessageType.RMQUEUE, MessageType.PAUSE, MessageType.RESUME, MessageType.SETQUEUE,
    MessageType.CLEARQUEUE, MessageType.OBLITERATE, MessageType.QSTATS, MessageType.LSJOB,
    MessageType.BULK, MessageType.ADDSCHEDULE})
# Requests that act on the queue of their `jid` (a delivery's too). UNWATCH is not owner-
# only, but a watch lives where WATCH went, which is the owner.
JOB_FIELD = frozenset({
    MessageType.JOB, MessageType.RMJOB, MessageType.RETRY, MessageType.CANCEL,
    MessageType.WATCH, MessageType.UNWATCH, MessageType.ACK, MessageType.JOBBEAT,
    MessageType.JOBLOG, MessageType.COMPLETE, MessageType.FAIL, MessageType.RELEASE})
# Requests that act on the queue their schedule (`name`) fires into.
SCHEDULE_FIELD = frozenset({
    MessageType.RMSCHEDULE, MessageType.PAUSESCHEDULE, MessageType.RESUMESCHEDULE})
# Requests that name only a subscription (`sid`): they go where it was made.
SUBSCRIPTION_FIELD = frozenset({MessageType.CREDIT, MessageType.UNSUBSCRIBE})

# Owners a request follows at most: a queue moves seldom, so more hops than brokers in a
# usual cluster means routes going round, not a queue being handed on.
MAX_HOPS = 8
# While no broker holds a queue (from a broker's loss to the next one's takeover): ask
# again after 50 ms, doubling to 1 s, so a takeover is seen within a second of it.
FIRST_WAIT_S = 0.05
MAX_WAIT_S = 1.0
# The server's default `cluster.lease_ms` (10 s) plus two of its renewals (2 s each): a
# request made just as its queue's owner fails still reaches the next owner.
FOLLOW_DEADLINE_S = 15.0


def queue_of_job(jid: str) -> str:
    """A job id's queue: the part before its last ':'."""
    return jid.rpartition(":")[0]


def queue_of(message_type: int, payload: Mapping[str, Any],
             schedule_queues: Mapping[str, str]) -> str | None:
    """The queue the request acts on; None for a request any broker answers, and for a
    schedule this client has not seen (its QUEUE_MOVED then says where to go)."""
    if message_type in QUEUE_FIELD:
        queue = payload.get("q")
    elif message_type in JOB_FIELD:
        jid = payload.get("jid")
        queue = queue_of_job(jid) if isinstance(jid, str) else None
    elif message_type in SCHEDULE_FIELD:
        queue = schedule_queues.get(str(payload.get("name")))
    else:
        return None
    return queue if isinstance(queue, str) and queue else None


class RouteTable:
    """Each queue's owner as last heard, and the brokers of the cluster."""

    def __init__(self) -> None:
        self._owners: dict[str, str | None] = {}
        self.nodes: dict[str, str] = {}
        """Every live broker as ROUTES last told: node id -> `host:port`."""
        self.node_address: str | None = None
        """The address of the broker that answered the last ROUTES."""

    def owner(self, queue: str) -> str | None:
        """The queue's owner; None when not known, or when no broker holds it."""
        return self._owners.get(queue)

    def learn(self, queue: str, owner: str | None) -> None:
        """The queue's owner is `owner` now (None: no broker holds it at the moment)."""
        self._owners[queue] = owner

    def learn_routes(self, reply: Mapping[str, Any]) -> bool:
        """Replace the table with a ROUTES reply; whether the broker is in a cluster (a
        broker outside one answers `node` nil and owns everything)."""
        node = reply.get("node")
        nodes = reply.get("nodes")
        queues = reply.get("queues")
        self.nodes = {str(k): v for k, v in (nodes or {}).items() if isinstance(v, str)}
        self._owners = {str(k): v if isinstance(v, str) and v else None
                        for k, v in (queues or {}).items()}
        self.node_address = self.nodes.get(node) if isinstance(node, str) else None
        return isinstance(node, str) and bool(node)

    def forget(self, addresses: Iterable[str]) -> None:
        """The brokers at `addresses` are gone: their queues' owners are not known."""
        gone = set(addresses)
        for queue, owner in self._owners.items():
            if owner in gone:
                self._owners[queue] = None
        self.nodes = {node: address for node, address in self.nodes.items()
                      if address not in gone}


class FollowBudget:
    """How far one request may follow its queue: hops to owners, and waits while no broker
    holds the queue, within a deadline. Time is given, not read."""

    def __init__(self, now: float, deadline_s: float = FOLLOW_DEADLINE_S) -> None:
        self.hops_left = MAX_HOPS
        self.deadline = now + deadline_s
        self._wait = FIRST_WAIT_S

    def hop(self, now: float) -> bool:
        """Whether the request may go to one more owner."""
        self.hops_left -= 1
        return self.hops_left >= 0 and now < self.deadline

    def wait(self, now: float) -> float | None:
        """Seconds to wait before asking for the owner again; None once the deadline would
        pass (give up)."""
        wait = self._wait
        if now + wait >= self.deadline:
            return None
        self._wait = min(self._wait * 2, MAX_WAIT_S)
        return wait
