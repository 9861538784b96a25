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
its futures at the durable point, so no OK ever depends on a commit that a power loss could
undo; `on_visible` callbacks run at the visible point (dispatch uses it to send a QUEST one
sync earlier: see docs/storage.md for what a power loss in between means).

Messages, each a 4-byte big-endian length and a pickle:
- server to writer: a list of `(operation, args, grows)`, in submission order, or `None`
  (finish what was sent, then stop);
- writer to server: `("ready", stats)`, `("commit", outcomes, durable, stats)` after each
  commit (an outcome per operation, in order, and how many operations ever sent are durable
  now), `("durable", durable, failure, stats)` after the syncer's sync, and
  `("stopped", stats)`. An outcome is `(True, result)` or `(False, (code, message,
  details))`; stats are `(commits, operations, space_low, failed, map_size, commit_seconds,
  sync_seconds)`, the last two the durations measured since the previous message.

An operation is a module-level function `operation(txn, *args)` (see `operations.py`).
Contract: it raises `OverhopError` only before it writes anything, so a refused operation
leaves the batch's transaction clean. Any other exception aborts the batch, which is then
retried one operation per transaction so that only the culprit fails.

The map grows by itself: before each batch, if less than a quarter of the map (or less than
the reserved headroom) is free, the writer enlarges it (the server adopts the new size on
its next read). At the maximum size, once less than `reserved_headroom` is free, operations
marked `grows` (new queues and jobs) are refused with STORAGE_FULL while completing and
removing jobs go on. LMDB reuses the pages that removals free, but its high-water mark (all
we can read) never goes down: so once refusing, the writer lets growing operations try
again every `SPACE_PROBE_INTERVAL_S`, and a commit that runs out of room refuses them again.

The process ignores SIGINT, SIGTERM and SIGHUP (a Ctrl-C or a service manager signals the
whole group; the server then stops it in order). The writer thread itself reads the
socket, between commits; when it finds the server gone without asking it to stop, it exits
at once, like a process killed (at most the commit it was making lands first, as if the
server had died a moment later).
"""

import json
import os
import pickle
import queue
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import lmdb

from overhop.errors import ErrorCode, OverhopError
from overhop.gc_tuning import tune_gc_for_serving
from overhop.logs import configure_logging, get_logger
from overhop.storage.store import Store, StoreTxn

log = get_logger("overhop.storage")

FRAME_HEADER = struct.Struct(">I")
# In `storage.sync = false` mode the data still reaches the OS at every commit (safe against a
# process crash); an explicit sync this often bounds what a power loss can take.
UNSYNCED_FLUSH_INTERVAL_S = 1.0
# How often new jobs are tried again once the map is full at its maximum size: rare enough
# that a truly full store is not hammered, soon enough after a clear or retention.
SPACE_PROBE_INTERVAL_S = 10.0
# What one receive from the server asks for: below malloc's mmap threshold, so a receive
# does not map and unmap memory.
RECEIVE_BYTES = 1 << 16

Request = tuple[Any, tuple[Any, ...], bool]  # (operation, args, grows)
Refusal = tuple[str, str, Any]  # (error code, message, details)
Outcome = tuple[bool, Any]  # (True, result) or (False, Refusal)
Stats = tuple[int, int, bool, bool, int, list[float], list[float]]
_STOP = object()


def encode_frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return FRAME_HEADER.pack(len(data)) + data


def decode_frames(buffer: bytearray) -> list[Any]:
    """The whole messages at the start of `buffer`, removed from it."""
    messages = []
    offset = 0
    size = len(buffer)
    while size - offset >= FRAME_HEADER.size:
        (length,) = FRAME_HEADER.unpack_from(buffer, offset)
        end = offset + FRAME_HEADER.size + length
        if end > size:
            break
        messages.append(pickle.loads(buffer[offset + FRAME_HEADER.size:end]))
        offset = end
    del buffer[:offset]
    return messages


def refusal(exc: OverhopError) -> Refusal:
    return str(exc.code), exc.message, exc.details


def _storage_full() -> Refusal:
    return (str(ErrorCode.STORAGE_FULL),
            "storage is full: new jobs and queues are refused", None)


class BatchWriter:
    def __init__(self, store: Store, channel: "_Channel", *, sync: bool, max_batch: int,
                 max_map_size: int, reserved_headroom: int) -> None:
        self._store = store
        self._channel = channel
        self._send = channel.send
        self._sync = sync
        self._max_batch = max_batch
        self._max_map_size = max_map_size
        # Changed only by `_grow`: kept here so that a report does not ask LMDB for it.
        self._map_size: int = store.env.info()["map_size"]
        self._headroom = reserved_headroom
        # Requests received and not yet taken into a batch; None is the server's stop.
        self._requests: deque[list[Request] | None] = deque()
        self._last_flush = time.monotonic()
        self._unsynced = False
        self.space_low = False
        self._space_low_since = 0.0
        self._trust_high_water = True
        # Operations ever reported (`_appended`) and those durable (`_claimed`); shared with
        # the syncer thread, only under `_durable_lock`, which also keeps messages in order.
        self._appended = 0
        self._claimed = 0
        self._durable_lock = threading.Lock()
        # The syncer's sync and a map resize never overlap.
        self._env_lock = threading.Lock()
        self._sync_requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._syncer = threading.Thread(target=self._run_syncer, name="overhop-syncer",
                                        daemon=True)
        self.commits = 0
        self.operations = 0
        self.failed = False
        # Seconds of each commit and each explicit sync not yet reported (for the metrics
        # page); changed only under `_durable_lock` once the syncer runs.
        self._commit_seconds: list[float] = []
        self._sync_seconds: list[float] = []

    def stats(self) -> Stats:
        commits, syncs = self._commit_seconds, self._sync_seconds
        self._commit_seconds, self._sync_seconds = [], []
        return (self.commits, self.operations, self.space_low, self.failed, self._map_size,
                commits, syncs)

    def run(self) -> None:
        """Commit batches until the server asks to stop; then make everything durable."""
        if self._sync:
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
            batch = carry
            if not stopping:
                requests.extend(self._channel.receive(wait=False))
            while len(batch) < self._max_batch and requests and not stopping:
                item = requests.popleft()
                if item is None:
                    stopping = True
                    break
                batch = batch + item
            carry = batch[self._max_batch:]
            self._commit_batch(batch[: self._max_batch])
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
                self._flush_unsynced()
        return requests.popleft()

    def _commit_batch(self, batch: list[Request]) -> None:
        self._ensure_space()
        env = self._store.env
        last_txn = env.info()["last_txnid"]
        started = time.perf_counter()
        try:
            outcomes = self._run_in_one_transaction(batch)
        except lmdb.MapFullError:
            outcomes = self._after_map_full(batch)
        except lmdb.Error as exc:
            log.error("storage_write_failed", error=str(exc))
            self.failed = True
            failure = (str(ErrorCode.INTERNAL), "storage write failed", None)
            outcomes = [(False, failure)] * len(batch)
        except Exception:
            outcomes = [self._run_alone(request) for request in batch]
        seconds = time.perf_counter() - started
        self.commits += 1
        self.operations += len(batch)
        if not self._sync:
            self._unsynced = True
            if time.monotonic() - self._last_flush > UNSYNCED_FLUSH_INTERVAL_S:
                self._flush_unsynced()
            with self._durable_lock:
                self._commit_seconds.append(seconds)
                self._appended += len(outcomes)
                self._claimed = self._appended
                self._send(("commit", outcomes, self._claimed, self.stats()))
            return
        # A commit that wrote pages synced the file, and with it the meta pages of the
        # commits before it: those are durable now. (A commit that wrote nothing synced
        # nothing.)
        wrote = env.info()["last_txnid"] != last_txn
        with self._durable_lock:
            self._commit_seconds.append(seconds)
            if wrote:
                self._claimed = self._appended
            self._appended += len(outcomes)
            self._send(("commit", outcomes, self._claimed, self.stats()))

    def _make_durable(self) -> None:
        """Sync the meta pages of the commits made so far, then report them durable."""
        with self._durable_lock:
            upto = self._appended
            if upto == self._claimed:
                return
        failure = None
        started = time.perf_counter()
        try:
            with self._env_lock:
                self._store.env.sync(True)
        except lmdb.Error as exc:
            log.error("storage_sync_failed", error=str(exc))
            self.failed = True
            failure = (str(ErrorCode.INTERNAL), "storage sync failed", None)
        with self._durable_lock:
            self._sync_seconds.append(time.perf_counter() - started)
            if upto > self._claimed:
                self._claimed = upto
                self._send(("durable", upto, failure, self.stats()))

    def _run_syncer(self) -> None:
        """The syncer thread: on request, sync what is committed but not yet durable.

        LMDB's sync is one `fdatasync` of the data file, safe while the writer thread runs
        its next transaction; it covers every meta page written before it starts.
        """
        while True:
            if self._sync_requests.get() is _STOP:
                return
            while not self._sync_requests.empty():  # requests made meanwhile: one sync
                if self._sync_requests.get() is _STOP:
                    self._make_durable()
                    return
            self._make_durable()

    def _finish(self) -> None:
        """The writer stops: everything committed becomes durable, the syncer ends."""
        self._make_durable()
        self._flush_unsynced()
        if self._syncer.is_alive():
            self._sync_requests.put(_STOP)
            self._syncer.join()

    def _flush_unsynced(self) -> None:
        """`storage.sync = false`: push commits to disk at most a second after they happen,
        and when the writer stops."""
        if self._unsynced:
            started = time.perf_counter()
            self._store.env.sync(True)
            with self._durable_lock:
                self._sync_seconds.append(time.perf_counter() - started)
            self._unsynced = False
        self._last_flush = time.monotonic()

    def _run_in_one_transaction(self, batch: list[Request]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        txn = self._store.env.begin(write=True)
        try:
            store_txn = StoreTxn(self._store, txn)
            for operation, args, grows in batch:
                if grows and self.space_low:
                    outcomes.append((False, _storage_full()))
                    continue
                try:
                    outcomes.append((True, operation(store_txn, *args)))
                except OverhopError as exc:
                    outcomes.append((False, refusal(exc)))
            store_txn.flush_counters()
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        return outcomes

    def _run_alone(self, request: Request) -> Outcome:
        try:
            return self._run_in_one_transaction([request])[0]
        except lmdb.MapFullError:
            return False, _storage_full()
        except Exception as exc:
            log.error("storage_operation_failed", operation=request[0].__name__,
                      error=repr(exc))
            return False, (str(ErrorCode.INTERNAL), "operation failed", None)

    def _after_map_full(self, batch: list[Request]) -> list[Outcome]:
        if self._grow():
            return self._run_in_one_transaction(batch)
        self._refuse_growth()
        outcomes: list[Outcome] = []
        for request in batch:
            if request[2]:
                outcomes.append((False, _storage_full()))
            else:
                outcomes.append(self._run_alone(request))
        return outcomes

    def _ensure_space(self) -> None:
        map_size, used = self._store.map_use()
        free = map_size - used
        if free < max(map_size // 4, self._headroom) and self._grow():
            return
        if free >= self._headroom:
            self.space_low = False
            self._trust_high_water = True
        elif self._trust_high_water:
            self._refuse_growth()
        elif self.space_low and time.monotonic() - self._space_low_since > SPACE_PROBE_INTERVAL_S:
            self.space_low = False  # try again: a commit out of room refuses growth anew
            log.info("storage_space_probe")

    def _refuse_growth(self) -> None:
        if not self.space_low:
            log.warning("storage_full", max_map_size=self._max_map_size,
                        headroom=self._headroom)
        self.space_low = True
        self._trust_high_water = False
        self._space_low_since = time.monotonic()

    def _grow(self) -> bool:
        """Double the map, up to its maximum (this thread has no transaction open here)."""
        current = self._map_size
        if current >= self._max_map_size:
            return False
        target = min(current * 2, self._max_map_size)
        with self._env_lock:
            self._store.env.set_mapsize(target)
        self._map_size = target
        log.info("storage_map_grown", map_size=target)
        return True


class _Channel:
    """The socket to the server: whole messages out, from either thread, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._buffer = bytearray()

    def send(self, message: Any) -> None:
        frame = encode_frame(message)
        with self._lock:
            try:
                self._sock.sendall(frame)
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
        self._buffer += data
        try:
            return decode_frames(self._buffer)
        except Exception:
            log.exception("storage_writer_bad_request")
            os._exit(1)


def main(argv: list[str]) -> int:
    """`python -m overhop.storage.writer_process SOCKET_FD SETTINGS_JSON`."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    channel = _Channel(socket.socket(fileno=int(argv[0])))
    settings = json.loads(argv[1])
    configure_logging(settings["log_level"], settings["human_friendly"])
    try:
        store = Store(Path(settings["path"]), map_size=settings["map_size"],
                      sync=settings["sync"], owner=False)
    except lmdb.Error as exc:
        print(f"overhop writer: cannot open storage: {exc}", file=sys.stderr)
        return 2
    writer = BatchWriter(store, channel, sync=settings["sync"],
                         max_batch=settings["max_batch"],
                         max_map_size=settings["max_map_size"],
                         reserved_headroom=settings["reserved_headroom"])
    tune_gc_for_serving()
    channel.send(("ready", writer.stats()))
    writer.run()
    channel.send(("stopped", writer.stats()))
    store.env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
