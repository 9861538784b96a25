"""Queue ownership in a cluster's writer: every write for a queue is fenced by the epoch
this broker holds it at (docs/cluster.md).

`overhop_owners` has one row per queue: its owner, an epoch that grows with every change of
owner, and when the owner's lease ends (the database's clock). The writer keeps the epoch of
each queue it claimed. Before a batch writes anything, one statement reads, with FOR SHARE,
the rows of the queues the batch acts on: a queue whose row names another owner or another
epoch is lost, and its writes are refused with QUEUE_MOVED before they touch anything. The
share lock holds until the batch commits, so a takeover (which updates the row) waits for
that commit and every commit after it sees the new epoch: a broker that was paused,
partitioned or slow can never write for a queue again once another has claimed it.

A claim succeeds when the row has no owner, its lease has ended, or it names this node
already (a restarted broker of the same node id: the node lock lets only one run).
"""

from typing import Any

import psycopg

from overhop.config.sections import JobsConfig
from overhop.errors import ErrorCode, RequestError
from overhop.logs import get_logger
from overhop.storage.operations.base import OperationCode
from overhop.storage.operations.queue_of import queue_of
from overhop.storage.operations.table import APPLY
from overhop.storage.records import encode_queue
from overhop.storage.store_txn import StoreTxn

log = get_logger("overhop.storage")

_HELD = ("SELECT queue, epoch FROM overhop_owners WHERE queue = ANY(%s) AND owner = %s "
         "FOR SHARE")
_CLAIM = ("INSERT INTO overhop_owners AS o (queue, owner, epoch, lease_until) "
          "VALUES (%s, %s, 1, now() + %s * interval '1 millisecond') "
          "ON CONFLICT (queue) DO UPDATE SET owner = excluded.owner, epoch = o.epoch + 1, "
          "lease_until = excluded.lease_until "
          "WHERE o.owner IS NULL OR o.owner = excluded.owner OR o.lease_until < now() "
          "RETURNING epoch")
_RELEASE = ("UPDATE overhop_owners SET owner = NULL, lease_until = now() "
            "WHERE queue = %s AND owner = %s AND epoch = %s")


def moved(queue_name: str) -> RequestError:
    """The refusal of a write for a queue this broker does not hold (the server adds the
    owner's address, which only it knows)."""
    return RequestError(ErrorCode.QUEUE_MOVED,
                        f"queue {queue_name!r} is owned by another broker",
                        {"q": queue_name, "owner": None})


class QueueFence:
    """The epochs of the queues this broker's writer holds, and the writes they allow."""

    def __init__(self, node_id: str, lease_ms: int) -> None:
        self.node_id = node_id
        self.lease_ms = lease_ms
        self.epochs: dict[str, int] = {}

    def held(self, cur: psycopg.Cursor[Any], ops: list[Any]) -> set[str]:
        """The queues the batch acts on that this broker still holds (share-locked until
        the commit); the ones it held but lost are forgotten."""
        mine = {name for op in ops if (name := queue_of(op)) is not None
                and name in self.epochs}
        if not mine:
            return set()
        rows = cur.execute(_HELD, (list(mine), self.node_id)).fetchall()
        held = {name for name, epoch in rows if self.epochs.get(name) == epoch}
        for name in mine - held:
            log.warning("queue_lost", queue=name, epoch=self.epochs.pop(name))
        return held

    def apply(self, txn: StoreTxn, cur: psycopg.Cursor[Any], op: Any, jobs: JobsConfig,
              held: set[str]) -> Any:
        """Run one operation of the batch as its queue's ownership allows."""
        code = op.code
        if code == OperationCode.CLAIM_QUEUE:
            if txn.get_queue(op.queue_name) is None or not self._claim(cur, op.queue_name):
                return None
            held.add(op.queue_name)
            record = txn.get_queue(op.queue_name)
            return None if record is None else encode_queue(record)
        if code == OperationCode.RELEASE_QUEUE:
            self._release(cur, op.queue_name)
            held.discard(op.queue_name)
            return None
        if code == OperationCode.ADD_QUEUE:
            name = op.record.name
            if txn.get_queue(name) is None:
                if not self._claim(cur, name):
                    raise RequestError(ErrorCode.QUEUE_EXISTS,
                                       f"queue {name!r} is being added by another broker")
                held.add(name)
            return APPLY[code](txn, op, jobs)
        name = queue_of(op)
        if name is not None and name not in held:
            raise moved(name)
        result = APPLY[code](txn, op, jobs)
        if code in (OperationCode.REMOVE_QUEUE, OperationCode.DELETE_EMPTY_QUEUE):
            assert name is not None
            self._release(cur, name)
            held.discard(name)
        return result

    def _claim(self, cur: psycopg.Cursor[Any], name: str) -> bool:
        row = cur.execute(_CLAIM, (name, self.node_id, self.lease_ms)).fetchone()
        if row is None:
            return False
        self.epochs[name] = row[0]
        log.info("queue_claimed", queue=name, epoch=row[0])
        return True

    def _release(self, cur: psycopg.Cursor[Any], name: str) -> None:
        epoch = self.epochs.pop(name, None)
        if epoch is not None:
            cur.execute(_RELEASE, (name, self.node_id, epoch))
            log.info("queue_released", queue=name, epoch=epoch)
