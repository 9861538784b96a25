"""The writer process of the PostgreSQL engine: every write, one transaction per batch.

The server starts it like the LMDB writer (`python -m overhop.storage.postgres.writer_process
SOCKET_FD SETTINGS_JSON`, see `writer.py`) and speaks the same messages over the same socket
pair (`writer_messages.py`), so nothing on the server's side knows which engine writes.

A batch is every operation waiting, up to `max_batch`, in submission order, run through the
LMDB engine's own operation code (`operations/table.py`) over `PgStoreTxn`; the job records
the batch names are read first in one statement, its writes go out as one multi-row upsert
and one multi-row delete, then COMMIT. PostgreSQL has no point where a commit is readable
but not yet on disk, so with `synchronous_commit = on` (`storage.sync = true`) a commit is
visible and durable at once: the COMMIT message reports both, and no OK is sent before
PostgreSQL's COMMIT has returned. With `storage.sync = false` it runs with
`synchronous_commit = off`: a crash of the database server can undo the last fraction of a
second of acknowledged writes (at most three times `wal_writer_delay`).

In a cluster (settings `cluster`), every write for a queue is first checked against the
queue's owner row, in the same transaction (`fencing.py`): a broker that lost a queue never
writes for it again.

Failures: a refusal (`OverhopError`) comes before an operation writes anything, so it leaves
the batch clean. Any other exception rolls the batch back and runs it again one operation
per transaction, so only the culprit fails. A database that cannot be reached or cannot
write (`unavailable.py`: a failover, a lost quorum, a restart) fails the batch with
STORAGE_UNAVAILABLE and marks `write_failed` until a commit succeeds; the next batch
connects again (a read-only session is dropped too), and with a multi-host DSN and
`target_session_attrs=read-write` that finds the new primary. When the connection broke
while COMMIT was under way, the writer first finds out whether the batch landed
(`unavailable.py`, waiting up to `IN_DOUBT_WAIT_S` for a primary): if it did, its results are
reported as any commit's; if the database cannot say in time, the refusal says the write
may or may not have been stored (as after a crash). A full disk on the
database server (SQLSTATE 53100) refuses what grows the store with STORAGE_FULL and runs the
rest one by one.
"""

import json
import signal
import socket
import sys
import time
from collections import deque
from typing import Any

import psycopg
import psycopg.errors

from overhop.config.sections import JobsConfig
from overhop.errors import ErrorCode, OverhopError
from overhop.gc_tuning import tune_gc_for_serving
from overhop.logs import configure_logging, get_logger
from overhop.storage.operations.catalogue import OPERATION_BY_CODE
from overhop.storage.operations.table import APPLY
from overhop.storage.postgres.fencing import QueueFence
from overhop.storage.postgres.kv import PgKv
from overhop.storage.postgres.schema import NODE_WRITER_CLASS, WRITER_LOCK
from overhop.storage.postgres.txn import PgStoreTxn
from overhop.storage.postgres.unavailable import (
    COMMIT_IN_DOUBT,
    NOT_WRITTEN,
    WRITE_UNAVAILABLE,
    CommitInDoubt,
    commit,
    described,
    landed,
)
from overhop.storage.writer_messages import COMMIT, READY, STOPPED, Refusal, Stats
from overhop.storage.writer_process import Channel, gather_batch, refusal

log = get_logger("overhop.storage")

Request = list[Any]
Outcome = tuple[bool, Any]

_WRITE_FAILED: Refusal = (str(ErrorCode.STORAGE_UNAVAILABLE), NOT_WRITTEN, None)
_IN_DOUBT: Refusal = (str(ErrorCode.STORAGE_UNAVAILABLE), COMMIT_IN_DOUBT, None)
_FAILED: Refusal = (str(ErrorCode.INTERNAL), "operation failed", None)
# How long a new writer waits for the writer lock: a killed server's writer ends when it
# finds its socket closed, after at most the commit it was making.
WRITER_LOCK_WAIT = "10s"


class WriterLockedError(Exception):
    """Another overhop writer holds the database."""


def connect(dsn: str, *, sync: bool, node_id: str = "") -> psycopg.Connection:
    """A connection for writes, holding the writer lock (the node's, in a cluster),
    committing as `sync` asks."""
    conn = psycopg.connect(dsn, autocommit=True, application_name="overhop-writer")
    try:
        conn.execute(f"SET lock_timeout = '{WRITER_LOCK_WAIT}'")
        try:
            if node_id:
                conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))",
                             (NODE_WRITER_CLASS, node_id))
            else:
                conn.execute("SELECT pg_advisory_lock(%s)", (WRITER_LOCK,))
        except psycopg.errors.LockNotAvailable:
            raise WriterLockedError("another overhop writer holds this database") from None
        conn.execute("SET lock_timeout = 0")
        conn.execute(f"SET synchronous_commit = {'on' if sync else 'off'}")
        conn.autocommit = False
    except BaseException:
        conn.close()
        raise
    return conn


class PgBatchWriter:
    def __init__(self, dsn: str, conn: psycopg.Connection, channel: Channel, *, sync: bool,
                 max_batch: int, jobs: JobsConfig, fence: QueueFence | None = None) -> None:
        self._dsn = dsn
        self._fence = fence
        self._conn: psycopg.Connection | None = conn
        self._channel = channel
        self._sync = sync
        self._max_batch = max_batch
        self._jobs = jobs
        self._requests: deque[list[Request] | None] = deque()
        self._reported = 0  # operations ever reported (each durable when reported)
        self._commit_seconds: list[float] = []
        self.commits = 0
        self.operations = 0
        self.space_low = False
        self.failed = False

    def stats(self) -> Stats:
        commits, self._commit_seconds = self._commit_seconds, []
        # No map: the size stays 0, so the server never adopts one.
        return (self.commits, self.operations, self.space_low, self.failed, 0, commits, [])

    def run(self) -> None:
        requests = self._requests
        carry: list[Request] = []
        stopping = False
        while True:
            if not carry:
                while not requests:
                    requests.extend(self._channel.receive(wait=True))
                first = requests.popleft()
                if first is None:
                    return
                carry = first
            batch, carry, stopping = gather_batch(carry, requests, self._channel,
                                                  self._max_batch, stopping)
            self._commit_batch(batch)
            if stopping and not carry:
                return

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def _commit_batch(self, batch: list[Request]) -> None:
        started = time.perf_counter()
        try:
            outcomes = self._run_in_one_transaction(batch)
        except psycopg.errors.DiskFull:
            outcomes = self._after_disk_full(batch)
        except WRITE_UNAVAILABLE as exc:
            outcomes = self._write_failed(batch, exc)
        except Exception:
            outcomes = [self._run_alone(request) for request in batch]
        self._commit_seconds.append(time.perf_counter() - started)
        self.commits += 1
        self.operations += len(batch)
        self._reported += len(outcomes)
        results = [value if succeeded else None for succeeded, value in outcomes]
        refusals = [[index, *value] for index, (succeeded, value) in enumerate(outcomes)
                    if not succeeded]
        self._channel.send([COMMIT, results, refusals, self._reported, self.stats()])

    def _connection(self) -> psycopg.Connection:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._conn = None
            self._conn = conn = connect(self._dsn, sync=self._sync,
                                        node_id=self._fence.node_id if self._fence else "")
            log.info("storage_reconnected")
        return conn

    def _run_in_one_transaction(self, batch: list[Request]) -> list[Outcome]:
        conn = self._connection()
        jobs = self._jobs
        fence = self._fence
        epochs = None if fence is None else dict(fence.epochs)
        outcomes: list[Outcome] = []
        kv = PgKv(conn)
        try:
            txn = PgStoreTxn(kv)
            ops = [OPERATION_BY_CODE[wire[0]].from_wire(wire) for wire in batch]
            held = None if fence is None else fence.held(kv.cursor_of_transaction, ops)
            named = [job_id for op in ops
                     if isinstance(job_id := getattr(op, "job_id", None), str)]
            txn.prefetch_jobs(named)
            for wire, op in zip(batch, ops, strict=True):
                try:
                    if fence is None:
                        outcomes.append((True, APPLY[wire[0]](txn, op, jobs)))
                    else:
                        assert held is not None  # read with the fence
                        outcomes.append((True, fence.apply(txn, kv.cursor_of_transaction, op,
                                                           jobs, held)))
                except OverhopError as exc:
                    outcomes.append((False, refusal(exc)))
            txn.flush_counters()
            kv.flush()
            commit(conn, outcomes)
        except BaseException as exc:
            if fence is not None and epochs is not None:
                if isinstance(exc, CommitInDoubt):  # restored should the batch have landed
                    exc.epochs = fence.epochs
                fence.epochs = epochs  # the batch's claims and releases did not happen
            if not conn.closed:
                try:
                    conn.rollback()
                except psycopg.Error:
                    conn.close()
            raise
        self.failed = False
        if self.space_low and any(OPERATION_BY_CODE[wire[0]].grows for wire in batch):
            self.space_low = False  # what grows the store fits again
        return outcomes

    def _run_alone(self, request: Request) -> Outcome:
        kind = OPERATION_BY_CODE[request[0]]
        try:
            return self._run_in_one_transaction([request])[0]
        except psycopg.errors.DiskFull:
            self.space_low = True
            return False, _space_refusal(kind)
        except WRITE_UNAVAILABLE as exc:
            return self._write_failed([request], exc)[0]
        except Exception as exc:
            log.error("storage_operation_failed", operation=kind.__name__, error=repr(exc))
            return False, _FAILED

    def _write_failed(self, batch: list[Request], exc: Exception) -> list[Outcome]:
        refused = _WRITE_FAILED
        if isinstance(exc, CommitInDoubt):
            found = landed(self._connection, exc.xid, (WriterLockedError,))
            log.warning("storage_commit_in_doubt", error=str(exc), landed=found)
            if found:
                self.failed = False
                if self._fence is not None and exc.epochs is not None:
                    self._fence.epochs = exc.epochs
                return exc.outcomes
            refused = _WRITE_FAILED if found is False else _IN_DOUBT
        log.error("storage_write_failed", error=described(exc))
        self.failed = True
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction) and self._conn is not None:
            self._conn.close()  # a standby now: the next batch looks for the primary
        return [(False, refused)] * len(batch)

    def _after_disk_full(self, batch: list[Request]) -> list[Outcome]:
        """The database server's disk is full: refuse what grows the store, run the rest
        one by one as room allows."""
        log.error("storage_full")
        self.space_low = True
        outcomes: list[Outcome] = []
        for request in batch:
            kind = OPERATION_BY_CODE[request[0]]
            if kind.grows:
                outcomes.append((False, _space_refusal(kind)))
            else:
                outcomes.append(self._run_alone(request))
        return outcomes


def _space_refusal(kind: Any) -> Refusal:
    """STORAGE_FULL worded as the LMDB engine words it (`writer_space.py`)."""
    why = (" until space is freed" if kind.grows
           else ": even the space kept for such writes is used up")
    return str(ErrorCode.STORAGE_FULL), f"storage is full: {kind.subject} refused{why}", None


def main(argv: list[str]) -> int:
    """`python -m overhop.storage.postgres.writer_process SOCKET_FD SETTINGS_JSON`."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    channel = Channel(socket.socket(fileno=int(argv[0])))
    settings = json.loads(argv[1])
    configure_logging(settings["log_level"], settings["human_friendly"])
    cluster = settings.get("cluster")
    fence = None if cluster is None else QueueFence(cluster["node_id"], cluster["lease_ms"])
    try:
        conn = connect(settings["dsn"], sync=settings["sync"],
                       node_id="" if fence is None else fence.node_id)
    except (psycopg.Error, WriterLockedError) as exc:
        print(f"overhop writer: cannot open storage: {first_line(exc)}", file=sys.stderr)
        return 2
    writer = PgBatchWriter(settings["dsn"], conn, channel, sync=settings["sync"],
                           max_batch=settings["max_batch"],
                           jobs=JobsConfig(**settings["jobs"]), fence=fence)
    tune_gc_for_serving()
    channel.send([READY, writer.stats()])
    writer.run()
    channel.send([STOPPED, writer.stats()])
    writer.close()
    return 0


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
