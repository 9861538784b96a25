"""The writer process: every write transaction, folded into group commits.

The server starts this as a child process (`python -m overhop.storage.writer_process`) and
talks to it over a socket pair (`writer.py` is the server's side). Running writes in a
process of their own lets them use a second core: in one process, the event loop and the
writer took turns on one interpreter lock.

LMDB binds a write transaction to the thread that began it, and a synced commit costs about
half a millisecond whatever it holds, so one thread here owns all writes: it takes every
operation waiting (up to `max_batch`), runs them in one transaction, commits (the sync
happens here), and only then reports their outcomes. Operations that arrive while a commit
is in flight form the next batch.

One disk sync per commit: the environment is opened with LMDB's NOMETASYNC, so a commit
syncs its data pages and then writes its meta page (the page that makes it current)
without syncing it. The meta page reaches the disk with the next commit's data sync, or,
when there is nothing else to do, with an explicit sync run by a second thread (the
syncer), so that work arriving meanwhile never waits behind that sync. A commit is therefore
*visible* when `commit()` returns (readers see it, and it survives either process being
killed, since the OS holds every page) and *durable* one sync later. The server resolves
each write's `visible` signal at the first point and its `durable` one at the second (see
docs/storage.md for what a power loss in between means).

Messages, MessagePack both ways, nothing pickled (`writer_messages.py` has the details):
- server to writer: an array of operations `[code, field, ...]` in submission order (the
  closed table of `operations/catalogue.py`; records as their stored bytes), or nil:
  finish what was sent, then stop;
- writer to server: `[READY, stats]`; `[COMMIT, results, refusals, durable, stats]` after
  each commit (a result per operation, in its wire form, nil where refused; the refusals
  as `[index, code, message, details]`; how many operations ever sent are durable now);
  `[DURABLE, durable, failure, stats]` after the syncer's sync; `[STOPPED, stats]`.
  Stats are `[commits, operations, space_low, failed, map_size, commit_seconds,
  sync_seconds]`, the last two the durations measured since the previous message.

Each operation is applied through `operations/table.py`, with the `[jobs]` settings this
process got at start. Contract: an operation raises `OverhopError` only before it writes
anything, so a refused operation leaves the batch's transaction clean. Any other exception
aborts the batch, which is then retried one operation per transaction so that only the
culprit fails.

Space (`writer_space.py`): the map grows by itself; at its maximum size, or when the file
system is full, operations that grow the store are refused with STORAGE_FULL while
completing and removing jobs go on while room allows.

The process ignores SIGINT, SIGTERM and SIGHUP (a Ctrl-C or a service manager signals the
whole group; the server then stops it in order), and SIGXFSZ (a file size limit then shows
as a full disk instead of killing the writer). The writer thread itself reads the socket,
between commits; when it finds the server gone without asking it to stop, it exits at
once, like a process killed (at most the commit it was making lands first, as if the
server had died a moment later).
"""

import json
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import lmdb

from overhop.config.sections import JobsConfig
from overhop.errors import ErrorCode, OverhopError
from overhop.gc_tuning import tune_gc_for_serving
from overhop.logs import configure_logging, get_logger
from overhop.storage.group_index import KnownGroups
from overhop.storage.operations.catalogue import OPERATION_BY_CODE
from overhop.storage.operations.table import APPLY
from overhop.storage.store import Store
from overhop.storage.store_txn import StoreTxn
from overhop.storage.writer_messages import (
    COMMIT,
    DURABLE,
    READY,
    STOPPED,
    Refusal,
    Stats,
    packer,
    unpacker,
)
from overhop.storage.writer_space import Space

log = get_logger("overhop.storage")

# In `storage.sync = false` mode the data still reaches the OS at every commit (safe against a
# process crash); an explicit sync this often bounds what a power loss can take.
UNSYNCED_FLUSH_INTERVAL_S = 1.0
# What one receive from the server asks for: below malloc's mmap threshold, so a receive
# does not map and unmap memory.
RECEIVE_BYTES = 1 << 16

Request = list[Any]  # an operation on the wire: [code, field, ...]
Outcome = tuple[bool, Any]  # (True, result in wire form) or (False, Refusal)
_STOP = object()


def refusal(exc: OverhopError) -> Refusal:
    return str(exc.code), exc.message, exc.details


_WRITE_FAILED: Refusal = (str(ErrorCode.INTERNAL), "storage write failed", None)


class BatchWriter:
    def __init__(self, store: Store, channel: "Channel", *, sync: bool, max_batch: int,
                 space: Space, jobs: JobsConfig) -> None:
        self._store = store
        self._channel = channel
        self._send = channel.send
        self._sync = sync
        self._max_batch = max_batch
        self._space = space
        self._jobs = jobs
        # Group records as last committed, kept across transactions (group_index.py).
        self._known_groups: KnownGroups = {}
        # Requests received and not yet taken into a batch; None is the server's stop.
        self._requests: deque[list[Request] | None] = deque()
        self._last_flush = time.monotonic()
        self._unsynced = False
        # Operations ever reported (`_appended`) and those durable (`_claimed`); shared with
        # the syncer thread, only under `_durable_lock`, which also keeps messages in order.
        self._appended = 0
        self._claimed = 0
        self._durable_lock = threading.Lock()
        self._sync_requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._syncer = threading.Thread(target=self._run_syncer, name="overhop-syncer",
                                        daemon=True)
        self.commits = 0
        self.operations = 0
        # A write or sync failed for a reason other than space; cleared by the next commit
        # that succeeds (writes recover by themselves when the cause goes away).
        self.failed = False
        # Seconds of each commit and each explicit sync not yet reported (for the metrics
        # page); changed only under `_durable_lock` once the syncer runs.
        self._commit_seconds: list[float] = []
        self._sync_seconds: list[float] = []

    def stats(self) -> Stats:
        space = self._space
        commits, syncs = self._commit_seconds, self._sync_seconds
        self._commit_seconds, self._sync_seconds = [], []
        return (self.commits, self.operations, space.low, self.failed, space.map_size,
                commits, syncs)

    def run(self) -> None:
        """Commit batches until the server asks to stop; then make everything durable."""
        self._syncer.start()
        requests = self._requests
        carry: list[Request] = []
        stopping = False
        while True:
            if not carry:
                first = self._next_work()
                if first is None:
                    self._finish()
                    return
                carry = first
            batch, carry, stopping = gather_batch(carry, requests, self._channel,
                                                  self._max_batch, stopping)
            self._commit_batch(batch)
            if stopping and not carry:
                self._finish()
                return

    def _next_work(self) -> list[Request] | None:
        """The next operations (None: stop). With none waiting and a commit not yet
        durable, the syncer thread syncs it meanwhile, so that new work never waits behind
        that sync."""
        requests = self._requests
        if not requests and self._sync:
            requests.extend(self._channel.receive(wait=False))
            if not requests:
                with self._durable_lock:
                    if self._appended > self._claimed:
                        self._sync_requests.put(True)
        while not requests:
            timeout = None if self._sync else UNSYNCED_FLUSH_INTERVAL_S
            requests.extend(self._channel.receive(wait=True, timeout=timeout))
            if not requests:
                self._request_flush()
        return requests.popleft()

    def _commit_batch(self, batch: list[Request]) -> None:
        space = self._space
        space.before_batch()
        started = time.perf_counter()
        try:
            outcomes = self._run_in_one_transaction(batch)
        except lmdb.MapFullError:
            outcomes = self._after_no_room(batch, grown=space.grow())
        except lmdb.Error as exc:
            if space.disk_full(exc):
                outcomes = self._after_no_room(batch, grown=False)
            else:
                log.error("storage_write_failed", error=str(exc))
                self.failed = True
                outcomes = [(False, _WRITE_FAILED)] * len(batch)
        except Exception:
            outcomes = [self._run_alone(request) for request in batch]
        # The one look at LMDB's state per batch: did this batch write, and how full is it.
        wrote = space.after_batch()
        seconds = time.perf_counter() - started
        self.commits += 1
        self.operations += len(batch)
        if not self._sync:
            with self._durable_lock:
                self._unsynced = True
            if time.monotonic() - self._last_flush > UNSYNCED_FLUSH_INTERVAL_S:
                self._request_flush()
            with self._durable_lock:
                self._commit_seconds.append(seconds)
                self._appended += len(outcomes)
                self._claimed = self._appended
                self._report(outcomes)
            return
        # A commit that wrote pages synced the file, and with it the meta pages of the
        # commits before it: those are durable now. (A commit that wrote nothing synced
        # nothing.)
        with self._durable_lock:
            self._commit_seconds.append(seconds)
            if wrote:
                self._claimed = self._appended
            self._appended += len(outcomes)
            self._report(outcomes)

    def _report(self, outcomes: list[Outcome]) -> None:
        """The COMMIT message (under `_durable_lock`, so messages leave in order)."""
        results = [value if succeeded else None for succeeded, value in outcomes]
        refusals = [[index, *value] for index, (succeeded, value) in enumerate(outcomes)
                    if not succeeded]
        self._send([COMMIT, results, refusals, self._claimed, self.stats()])

    def _make_durable(self) -> None:
        """Sync the meta pages of the commits made so far, then report them durable."""
        with self._durable_lock:
            upto = self._appended
            if upto == self._claimed:
                return
        failure: Refusal | None = None
        started = time.perf_counter()
        try:
            self._space.sync()
        except lmdb.Error as exc:
            log.error("storage_sync_failed", error=str(exc))
            if self._space.disk_full(exc):
                failure = (str(ErrorCode.STORAGE_FULL),
                           "storage is full: the disk could not sync this write; it may or "
                           "may not have been stored", None)
            else:
                self.failed = True
                failure = (str(ErrorCode.INTERNAL), "storage sync failed", None)
        with self._durable_lock:
            self._sync_seconds.append(time.perf_counter() - started)
            if upto > self._claimed:
                self._claimed = upto
                self._send([DURABLE, upto, failure, self.stats()])

    def _run_syncer(self) -> None:
        """The syncer thread: on request, sync what is committed but not yet durable
        (`storage.sync = false`: flush what was committed since the last flush).

        LMDB's sync is one `fdatasync` of the data file, safe while the writer thread runs
        its next transaction; it covers every meta page written before it starts.
        """
        sync_once = self._make_durable if self._sync else self._flush_unsynced
        while True:
            if self._sync_requests.get() is _STOP:
                return
            while not self._sync_requests.empty():  # requests made meanwhile: one sync
                if self._sync_requests.get() is _STOP:
                    sync_once()
                    return
            sync_once()

    def _request_flush(self) -> None:
        """`storage.sync = false`: have the syncer thread flush the commits made since the
        last flush. The writer thread never waits for that flush: it took a whole disk
        sync, up to tens of milliseconds, from every operation queued behind it."""
        self._last_flush = time.monotonic()
        with self._durable_lock:
            if not self._unsynced:
                return
        self._sync_requests.put(True)

    def _finish(self) -> None:
        """The writer stops: everything committed becomes durable, the syncer ends."""
        self._make_durable()
        self._flush_unsynced()
        if self._syncer.is_alive():
            self._sync_requests.put(_STOP)
            self._syncer.join()

    def _flush_unsynced(self) -> None:
        """`storage.sync = false`: push commits to disk at most a second after they happen
        (in the syncer thread), and when the writer stops. The flag is cleared before the
        sync starts, so a commit made during the sync is flushed by the next one."""
        with self._durable_lock:
            if not self._unsynced:
                return
            self._unsynced = False
        started = time.perf_counter()
        self._store.env.sync(True)
        with self._durable_lock:
            self._sync_seconds.append(time.perf_counter() - started)

    def _run_in_one_transaction(self, batch: list[Request]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        refuse_growth = self._space.low
        jobs = self._jobs
        txn = self._store.env.begin(write=True)
        try:
            store_txn = StoreTxn(self._store, txn, self._known_groups)
            for wire in batch:
                code = wire[0]
                kind = OPERATION_BY_CODE[code]
                if refuse_growth and kind.grows:
                    outcomes.append((False, self._space.refusal(kind)))
                    continue
                try:
                    outcomes.append((True, APPLY[code](store_txn, kind.from_wire(wire), jobs)))
                except OverhopError as exc:
                    outcomes.append((False, refusal(exc)))
            store_txn.flush_counters()
            txn.commit()
        except BaseException:
            txn.abort()
            self._known_groups.clear()  # it may hold this transaction's changes
            raise
        self.failed = False
        return outcomes

    def _run_alone(self, request: Request) -> Outcome:
        kind = OPERATION_BY_CODE[request[0]]
        try:
            return self._run_in_one_transaction([request])[0]
        except lmdb.MapFullError:
            self._space.refuse_growth()
            return False, self._space.refusal(kind)
        except lmdb.Error as exc:
            if self._space.disk_full(exc):
                return False, self._space.refusal(kind)
            log.error("storage_write_failed", error=str(exc))
            self.failed = True
            return False, _WRITE_FAILED
        except Exception as exc:
            log.error("storage_operation_failed", operation=kind.__name__, error=repr(exc))
            return False, (str(ErrorCode.INTERNAL), "operation failed", None)

    def _after_no_room(self, batch: list[Request], *, grown: bool) -> list[Outcome]:
        """A commit ran out of room. With a grown map, run the batch again; else refuse
        what grows the store and run the rest one by one, each as room allows."""
        if grown:
            try:
                return self._run_in_one_transaction(batch)
            except lmdb.MapFullError:
                pass  # still too big for the grown map: as if it could not grow
            except lmdb.Error as exc:
                if not self._space.disk_full(exc):
                    log.error("storage_write_failed", error=str(exc))
                    self.failed = True
                    return [(False, _WRITE_FAILED)] * len(batch)
            except Exception:
                return [self._run_alone(request) for request in batch]
        self._space.refuse_growth()
        outcomes: list[Outcome] = []
        for request in batch:
            kind = OPERATION_BY_CODE[request[0]]
            if kind.grows:
                outcomes.append((False, self._space.refusal(kind)))
            else:
                outcomes.append(self._run_alone(request))
        return outcomes


def gather_batch(carry: list[Request], requests: "deque[list[Request] | None]",
                 channel: "Channel", max_batch: int, stopping: bool
                 ) -> tuple[list[Request], list[Request], bool]:
    """The next batch: `carry` (what the last batch left over, never empty) and the
    requests waiting, read from the socket without waiting, up to `max_batch` operations.
    Returns the batch, what is left over for the next one, and whether the server asked to
    stop (nil read: nothing after it is taken)."""
    batch = carry
    if not stopping:
        requests.extend(channel.receive(wait=False))
    while len(batch) < max_batch and requests and not stopping:
        item = requests.popleft()
        if item is None:
            stopping = True
            break
        batch = batch + item
    return batch[:max_batch], batch[max_batch:], stopping


class Channel:
    """The socket to the server: whole messages out, from either thread, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._unpacker = unpacker()
        self._pack = packer().pack  # used under `_lock` only

    def send(self, message: Any) -> None:
        with self._lock:
            try:
                self._sock.sendall(self._pack(message))
            except OSError:
                os._exit(1)  # the server is gone: end as it did

    def receive(self, *, wait: bool, timeout: float | None = None) -> list[Any]:
        """The requests the server has sent: those already arrived, or, with `wait`, the
        next ones (none if `timeout` seconds pass first). Called by the writer thread only."""
        if wait and timeout is not None:
            readable, _, _ = select.select([self._sock], [], [], timeout)
            if not readable:
                return []
        try:
            data = self._sock.recv(RECEIVE_BYTES, 0 if wait else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return []
        except OSError:  # ECONNRESET: the server died with our messages unread
            data = b""
        if not data:
            # The server went away without asking us to stop (it was killed): stop at once
            # too, as if killed with it. Nothing acknowledged depends on us now.
            os._exit(1)
        self._unpacker.feed(data)
        try:
            return list(self._unpacker)
        except Exception:
            log.exception("storage_writer_bad_request")
            os._exit(1)


def main(argv: list[str]) -> int:
    """`python -m overhop.storage.writer_process SOCKET_FD SETTINGS_JSON`."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    channel = Channel(socket.socket(fileno=int(argv[0])))
    settings = json.loads(argv[1])
    configure_logging(settings["log_level"], settings["human_friendly"])
    try:
        store = Store(Path(settings["path"]), map_size=settings["map_size"],
                      sync=settings["sync"], owner=False)
    except lmdb.Error as exc:
        print(f"overhop writer: cannot open storage: {exc}", file=sys.stderr)
        return 2
    space = Space(store, max_map_size=settings["max_map_size"],
                  reserved_headroom=settings["reserved_headroom"],
                  probe_interval_s=settings["space_probe_interval_s"])
    writer = BatchWriter(store, channel, sync=settings["sync"],
                         max_batch=settings["max_batch"], space=space,
                         jobs=JobsConfig(**settings["jobs"]))
    tune_gc_for_serving()
    channel.send([READY, writer.stats()])
    writer.run()
    channel.send([STOPPED, writer.stats()])
    store.env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
