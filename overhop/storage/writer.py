"""The single writer thread: every write transaction, folded into group commits.

LMDB binds a write transaction to the thread that began it, and a synced commit costs
about half a millisecond whatever it holds, so one thread owns all writes: it takes every
operation waiting in its queue (up to `max_batch`), runs them in one transaction, commits
(the sync happens here, off the event loop), and only then resolves their futures on the
loop. Writes that arrive while a commit is in flight form the next batch.

One disk sync per commit: the environment is opened with LMDB's NOMETASYNC, so a commit
syncs its data pages and then writes its meta page (the page that makes it current)
without syncing it. The meta page reaches the disk with the next commit's data sync, or,
when the writer has nothing else to do, with an explicit sync run by a second thread (the
syncer), so that work arriving meanwhile never waits behind that sync. A commit is therefore
*visible* when `commit()` returns (readers see it, and it survives the process being
killed, since the OS holds every page) and *durable* one sync later. Futures resolve at the
durable point: no OK ever depends on a commit that a power loss could undo. An operation may
also carry an `on_visible` callback, called on the loop at the visible point: dispatch uses
it to send a QUEST one sync earlier (see docs/storage.md for what a power loss in between
means).

An operation is a function of a `StoreTxn`. Contract: it raises `OverhopError` only before
it writes anything, so a refused operation leaves the batch's transaction clean. Any other
exception aborts the batch, which is then retried one operation per transaction so that
only the culprit fails.

The map grows by itself: before each batch, if less than a quarter of the map (or less
than the reserved headroom) is free, the
writer asks the event loop thread to enlarge it (LMDB allows that only while this process
has no transaction open, which on the loop thread is true between callbacks). At the
maximum size, once less than `reserved_headroom` is free, operations marked `grows` (new
queues and jobs) are refused with STORAGE_FULL while completing and removing jobs go on.
LMDB reuses the pages that removals free, but its high-water mark (all we can read) never
goes down: so once refusing, the writer lets growing operations try again every
`SPACE_PROBE_INTERVAL_S`, and a commit that runs out of room refuses them again.
"""

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import lmdb

from overhop.logs import get_logger
from overhop.storage.store import Store, StoreTxn
from overhop.wire.errors import ErrorCode, OverhopError, RequestError

T = TypeVar("T")
Operation = Callable[[StoreTxn], Any]
log = get_logger("overhop.storage")

_STOP = object()
# In `storage.sync = false` mode the data still reaches the OS at every commit (safe against a
# process crash); an explicit sync this often bounds what a power loss can take.
UNSYNCED_FLUSH_INTERVAL_S = 1.0
# How often new jobs are tried again once the map is full at its maximum size: rare enough
# that a truly full store is not hammered, soon enough after a clear or retention.
SPACE_PROBE_INTERVAL_S = 10.0


VisibleCallback = Callable[[bool, Any], None]
# (future, succeeded, result or exception)
Outcome = tuple[asyncio.Future[Any], bool, Any]


class _Pending:
    __slots__ = ("future", "grows", "on_visible", "operation")

    def __init__(self, operation: Operation, future: asyncio.Future[Any], grows: bool,
                 on_visible: VisibleCallback | None) -> None:
        self.operation = operation
        self.future = future
        self.grows = grows
        self.on_visible = on_visible


class Writer:
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop, *, sync: bool,
                 max_batch: int, max_map_size: int, reserved_headroom: int) -> None:
        self._store = store
        self._loop = loop
        self._sync = sync
        self._max_batch = max_batch
        self._max_map_size = max_map_size
        self._headroom = reserved_headroom
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._staged: list[_Pending] = []
        self._thread = threading.Thread(target=self._run, name="overhop-writer", daemon=True)
        self._last_flush = time.monotonic()
        self._unsynced = False
        self.space_low = False
        self._space_low_since = 0.0
        self._trust_high_water = True
        # Outcomes of visible commits waiting for their meta pages to be synced, oldest
        # first; `_appended` counts every outcome ever added, `_claimed` every one removed.
        # Shared with the syncer thread: only under `_durable_lock`.
        self._not_durable: list[Outcome] = []
        self._appended = 0
        self._claimed = 0
        self._durable_lock = threading.Lock()
        self._sync_requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._syncer = threading.Thread(target=self._run_syncer, name="overhop-syncer",
                                        daemon=True)
        self.commits = 0
        self.operations = 0
        self.failed = False

    def start(self) -> None:
        if self._sync:
            self._syncer.start()
        self._thread.start()

    def submit(self, operation: Callable[[StoreTxn], T], *, grows: bool = False,
               on_visible: VisibleCallback | None = None) -> asyncio.Future[T]:
        """Queue an operation; its future resolves after the commit holding it is durable.

        `on_visible(succeeded, result_or_exception)`, if given, is called on the loop as
        soon as the commit is visible (one disk sync earlier), or when the operation fails.

        Operations submitted during one turn of the event loop are handed to the writer
        thread together at the end of that turn: one wake-up of the thread per turn rather
        than per operation, which keeps the two threads from trading the GIL per request.
        """
        future: asyncio.Future[T] = self._loop.create_future()
        if not self._staged:
            self._loop.call_soon(self._hand_over)
        self._staged.append(_Pending(operation, future, grows, on_visible))
        return future

    def _hand_over(self) -> None:
        if self._staged:
            self._inbox.put(self._staged)
            self._staged = []

    async def stop(self) -> None:
        """Finish every operation already submitted, then end the thread."""
        self._hand_over()
        self._inbox.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        inbox = self._inbox
        carry: list[_Pending] = []
        stopping = False
        while True:
            if not carry:
                first = self._next_work()
                if first is _STOP:
                    self._finish()
                    return
                carry = first
            batch = carry
            while len(batch) < self._max_batch and not stopping:
                try:
                    item = inbox.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch = batch + item
            carry = batch[self._max_batch:]
            self._commit_batch(batch[: self._max_batch])
            if stopping and not carry:
                self._finish()
                return

    def _next_work(self) -> Any:
        """The next operations. With none waiting and a commit not yet durable, the syncer
        thread syncs it meanwhile, so that new work never waits behind that sync."""
        inbox = self._inbox
        if self._sync:
            with self._durable_lock:
                not_durable = self._appended > self._claimed
            if not_durable:
                try:
                    return inbox.get_nowait()
                except queue.Empty:
                    self._sync_requests.put(True)
            return inbox.get()
        while True:
            try:
                return inbox.get(timeout=UNSYNCED_FLUSH_INTERVAL_S)
            except queue.Empty:
                self._flush_unsynced()

    def _commit_batch(self, batch: list[_Pending]) -> None:
        self._ensure_space()
        env = self._store.env
        last_txn = env.info()["last_txnid"]
        try:
            outcomes = self._run_in_one_transaction(batch)
        except lmdb.MapFullError:
            outcomes = self._after_map_full(batch)
        except lmdb.Error as exc:
            log.critical("storage_write_failed", error=str(exc))
            self.failed = True
            failure = RequestError(ErrorCode.INTERNAL, "storage write failed")
            outcomes = [(pending.future, False, failure) for pending in batch]
        except Exception:
            outcomes = [self._run_alone(pending) for pending in batch]
        self.commits += 1
        self.operations += len(batch)
        visible = [(pending.on_visible, outcome[1], outcome[2])
                   for pending, outcome in zip(batch, outcomes, strict=True)
                   if pending.on_visible is not None]
        if not self._sync:
            self._unsynced = True
            if time.monotonic() - self._last_flush > UNSYNCED_FLUSH_INTERVAL_S:
                self._flush_unsynced()
            self._deliver(visible, outcomes)
            return
        # A commit that wrote pages synced the file, and with it the meta pages of the
        # commits before it: those are durable now. (A commit that wrote nothing synced
        # nothing.)
        wrote = env.info()["last_txnid"] != last_txn
        with self._durable_lock:
            self._claim(self._appended if wrote else self._claimed, visible)
            self._not_durable.extend(outcomes)
            self._appended += len(outcomes)

    def _claim(self, upto: int, visible: list[tuple[VisibleCallback, bool, Any]],
               failure: RequestError | None = None) -> None:
        """Resolve the outcomes appended before `upto` that are still waiting, in order
        (callers hold `_durable_lock`, so the writer and the syncer deliver in order)."""
        count = max(0, upto - self._claimed)
        durable = self._not_durable[:count]
        del self._not_durable[:count]
        self._claimed += count
        if failure is not None:
            durable = [(future, False, failure) for future, _, _ in durable]
        self._deliver(visible, durable)

    def _make_durable(self) -> None:
        """Sync the meta pages of the commits made so far, then resolve their futures."""
        with self._durable_lock:
            upto = self._appended
            if upto == self._claimed:
                return
        failure = None
        try:
            self._store.env.sync(True)
        except lmdb.Error as exc:
            log.critical("storage_sync_failed", error=str(exc))
            self.failed = True
            failure = RequestError(ErrorCode.INTERNAL, "storage sync failed")
        with self._durable_lock:
            self._claim(upto, [], failure)

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
            self._store.env.sync(True)
            self._unsynced = False
        self._last_flush = time.monotonic()

    def _run_in_one_transaction(self, batch: list[_Pending]
                                ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        txn = self._store.env.begin(write=True)
        try:
            store_txn = StoreTxn(self._store, txn)
            for pending in batch:
                if pending.grows and self.space_low:
                    outcomes.append((pending.future, False, _storage_full()))
                    continue
                try:
                    outcomes.append((pending.future, True, pending.operation(store_txn)))
                except OverhopError as exc:
                    outcomes.append((pending.future, False, exc))
            store_txn.flush_counters()
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        return outcomes

    def _run_alone(self, pending: _Pending) -> Outcome:
        try:
            return self._run_in_one_transaction([pending])[0]
        except lmdb.MapFullError:
            return pending.future, False, _storage_full()
        except Exception as exc:
            log.error("storage_operation_failed", error=repr(exc))
            return pending.future, False, RequestError(ErrorCode.INTERNAL, "operation failed")

    def _after_map_full(self, batch: list[_Pending]
                        ) -> list[Outcome]:
        if self._grow():
            return self._run_in_one_transaction(batch)
        self._refuse_growth()
        outcomes = []
        for pending in batch:
            if pending.grows:
                outcomes.append((pending.future, False, _storage_full()))
            else:
                outcomes.append(self._run_alone(pending))
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
        current = self._store.env.info()["map_size"]
        if current >= self._max_map_size:
            return False
        target = min(current * 2, self._max_map_size)
        done = threading.Event()

        def resize() -> None:
            try:
                self._store.env.set_mapsize(target)
            finally:
                done.set()

        if self._loop.is_closed() or not self._loop.is_running():
            resize()
        else:
            self._loop.call_soon_threadsafe(resize)
            done.wait()
        log.info("storage_map_grown", map_size=target)
        return True

    def _deliver(self, visible: list[tuple[VisibleCallback, bool, Any]],
                 durable: list[Outcome]) -> None:
        if (visible or durable) and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_resolve_all, visible, durable)


def _storage_full() -> RequestError:
    return RequestError(ErrorCode.STORAGE_FULL, "storage is full: new jobs and queues are refused")


def _resolve_all(visible: list[tuple[VisibleCallback, bool, Any]],
                 durable: list[Outcome]) -> None:
    for future, succeeded, value in durable:
        if future.cancelled():
            continue
        if succeeded:
            future.set_result(value)
        else:
            future.set_exception(value)
    for callback, succeeded, value in visible:
        try:
            callback(succeeded, value)
        except Exception:
            log.exception("visible_callback_failed")
