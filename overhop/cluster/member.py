"""This broker as a member of a cluster: every `cluster.renew_ms` it renews its own row and
its queues' leases, reads who is live and who owns what, and claims or hands over queues so
that they stay spread over the live brokers (`assignment.spread`).

All of it is on the database's clock and tables (`overhop_nodes`, `overhop_owners`), over
one async connection of its own. Writes for a queue are fenced by the writer, not here
(storage/postgres/fencing.py): this loop only decides what to claim and what to let go, so
a round that runs late or fails costs time, never correctness.

- A queue whose lease the renewal did not extend was taken by another broker: it is let go
  at once (its subscriptions end with SUBEND `queue_moved`).
- When renewals fail (the database unreachable) for longer than a lease, every queue is let
  go: other brokers may own them by now. They are claimed again once the database answers.
- Users are read again each round: one added or changed at another broker is known here
  within a round (a connection logged in keeps the permissions it logged in with).
- A stopping broker hands every queue over and marks itself gone, so the others take its
  queues on their next round instead of after a lease.
"""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import psycopg

from overhop.broker.service import Broker
from overhop.cluster.assignment import spread
from overhop.config.sections import ClusterConfig
from overhop.errors import OverhopError
from overhop.logs import get_logger

log = get_logger("overhop.cluster")

_HEARTBEAT = ("INSERT INTO overhop_nodes (node_id, address, lease_until) "
              "VALUES (%s, %s, now() + %s * interval '1 millisecond') "
              "ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, "
              "lease_until = excluded.lease_until")
_RENEW = ("UPDATE overhop_owners SET lease_until = now() + %s * interval '1 millisecond' "
          "WHERE owner = %s RETURNING queue")
_LIVE_NODES = "SELECT node_id, address FROM overhop_nodes WHERE lease_until > now()"
_OWNERS = "SELECT queue, owner, lease_until > now() FROM overhop_owners WHERE owner IS NOT NULL"
# Every queue's name: the keys of the `queues` space (schema.Space.QUEUES).
_QUEUES = "SELECT convert_from(key, 'UTF8') FROM overhop_kv WHERE space = 1"
_LEAVE = "UPDATE overhop_nodes SET lease_until = now() WHERE node_id = %s"


class ClusterMember:
    def __init__(self, cluster: ClusterConfig, address: str, dsn: str, broker: Broker,
                 refresh: Callable[[], Awaitable[None]] | None = None) -> None:
        self.node_id = cluster.node_id
        # Run each round after the rest: what other brokers may have changed (the users).
        self._refresh = refresh
        self.address = address
        self._lease_ms = cluster.lease_ms
        self._renew_s = cluster.renew_ms / 1000
        self._dsn = dsn
        self._broker = broker
        self._conn: psycopg.AsyncConnection | None = None
        # What the last round saw: live brokers (node id -> address), every queue's owner's
        # address (None: no broker holds it now).
        self.nodes: dict[str, str] = {}
        self.owners: dict[str, str | None] = {}
        self._held: set[str] = set()  # queues the last renewal extended (or claimed since)
        self._stable: set[str] = set()  # brokers live in the last round too
        self._renewed_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The first round (this broker takes its share before it serves), then the loop."""
        await self._round_logged()
        self._task = asyncio.create_task(self._run(), name="cluster")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._renew_s)
            await self._round_logged()

    async def _round_logged(self) -> None:
        try:
            await self.round()
        except OverhopError as exc:  # a claim, a hand-over or a read refused (the database
            # unavailable, the writer failing): the next round tries again
            log.error("cluster_round_failed", code=str(exc.code), error=exc.message)
        except Exception:  # a bug: its traceback, and the next round still runs
            log.exception("cluster_round_failed")

    async def round(self) -> None:
        started = time.monotonic()
        try:
            renewed, live, rows, names = await self._renew_and_read()
        except psycopg.Error as exc:
            self._unreachable(exc, started)
            return
        self._renewed_at = started
        broker = self._broker
        for name in self._held - renewed:
            if name in broker.queues:
                owner, live_lease = rows.get(name, (None, False))
                broker.let_go_queue(name, live.get(owner or "") if live_lease else None)
        self._held = renewed
        self.nodes = live
        self.owners = {name: (live.get(owner) if owner and live_lease else None)
                       for name, (owner, live_lease) in rows.items() if name in names}
        for name in names:
            self.owners.setdefault(name, None)
        broker.route_elsewhere(self.owners)
        plan = await asyncio.to_thread(spread, names, sorted(live))
        await self._claim(plan, rows, renewed)
        await self._hand_over(plan)
        self._stable = set(live)
        if self._refresh is not None:
            await self._refresh()

    def routes(self) -> dict[str, str | None]:
        """Every queue's owner's address as this broker knows it: its own queues (added
        since the last round too) here, the others as the last round saw them."""
        owners = dict(self.owners)
        for name in self._broker.queues:
            owners[name] = self.address
        return owners

    async def _renew_and_read(self) -> tuple[set[str], dict[str, str],
                                             dict[str, tuple[str | None, bool]], set[str]]:
        conn = await self._connection()
        async with conn.transaction():
            await conn.execute(_HEARTBEAT, (self.node_id, self.address, self._lease_ms))
            renewed = {row[0] async for row in await conn.execute(
                _RENEW, (self._lease_ms, self.node_id))}
        live = {node: address async for node, address in await conn.execute(_LIVE_NODES)}
        rows = {queue: (owner, bool(live_lease))
                async for queue, owner, live_lease in await conn.execute(_OWNERS)}
        names = {row[0] async for row in await conn.execute(_QUEUES)}
        return renewed, live, rows, names

    async def _claim(self, plan: dict[str, str], rows: dict[str, tuple[str | None, bool]],
                     renewed: set[str]) -> None:
        """Claim the queues given to this broker that no live broker holds, and take again
        any the database says this broker holds but it does not serve (a take that failed,
        or queues let go while the database was out of reach): a claim of its own queue
        moves the epoch on, so nothing written before counts."""
        queues = self._broker.queues
        wanted = [name for name, node in plan.items()
                  if node == self.node_id and name not in queues
                  and (rows.get(name, (None, False))[0] in (None, self.node_id)
                       or not rows[name][1])]
        wanted += [name for name in renewed if name not in queues and name not in wanted]
        if not wanted:
            return
        claimed = await asyncio.gather(*(self._broker.claim_queue(name) for name in wanted),
                                       return_exceptions=True)
        for name, outcome in zip(wanted, claimed, strict=True):
            if outcome is True:  # taken: out of `elsewhere` already
                self._held.add(name)
            elif isinstance(outcome, BaseException):
                log.error("queue_claim_failed", queue=name, error=str(outcome))

    async def _hand_over(self, plan: dict[str, str]) -> None:
        """Hand over the queues given to another broker that was live last round too (so a
        broker seen once, perhaps about to go, is not handed anything)."""
        moving = {name: self.nodes[node] for name, node in plan.items()
                  if node != self.node_id and node in self._stable and node in self.nodes
                  and name in self._broker.queues and name in self._held}
        if not moving:
            return
        await asyncio.gather(*(self._broker.hand_over_queue(name, owner)
                               for name, owner in moving.items()))
        for name, owner in moving.items():  # routed to `owner` by the hand-over itself
            self._held.discard(name)
            self.owners[name] = owner

    def _unreachable(self, exc: psycopg.Error, started: float) -> None:
        text = str(exc).strip()
        log.error("cluster_round_failed", error=text.splitlines()[0] if text else repr(exc))
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None
        if started - self._renewed_at > self._lease_ms / 1000:
            for name in list(self._broker.queues):
                self._broker.let_go_queue(name, None)
            self._held.clear()

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, application_name="overhop-cluster",
                connect_timeout=max(1, int(self._renew_s)))
        return self._conn

    async def stop(self) -> None:
        """Leave: hand every queue over and mark this broker gone."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        names = list(self._broker.queues)
        await asyncio.gather(*(self._broker.hand_over_queue(name, None) for name in names),
                             return_exceptions=True)
        try:
            conn = await self._connection()
            await conn.execute(_LEAVE, (self.node_id,))
            await conn.close()
        except psycopg.Error as exc:
            log.warning("cluster_leave_failed", error=str(exc).strip()[:200])
        log.info("cluster_left", node=self.node_id, queues=len(names))
