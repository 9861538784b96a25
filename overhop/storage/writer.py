"""The server's side of the writer process: submit operations, get their two signals.

All writes run in a child process (`writer_process.py`, which explains batching, group
commit and the visible and durable points). `submit(op)` queues one operation of the
closed table (`operations/catalogue.py`) and returns its `Write`. The operations submitted
during one turn of the event loop go to the writer together, as one message, at the end of
that turn. While the writer is busy with a commit, at most one such message waits behind
it: later operations gather here and go as one message when that commit is reported, so
each commit costs about one message each way whatever the load.

A `Write` has two futures, each resolved with the operation's result, or failed with its
refusal or the reason it was not written:
- `visible`: as soon as the commit holding it is visible (readers see it, a crash of
  either process keeps it; one disk sync before durable), or as soon as it is refused;
- `durable`: once that commit is durable (what an OK waits for).
The writer resolves them in commit order, and within a commit every visible future before
any durable one. `visible` is made on first access, so that it costs nothing when nobody
asks: access it in the same turn of the loop as `submit` (a later access still gets a
future, resolved already if the outcome is known). When a `visible` future was asked for,
the failure set on `durable` is marked retrieved: a caller who acts on the visible point
alone is not told "exception was never retrieved".

A caller on the loop's thread that only reacts to a signal (the broker's bookkeeping, not a
reply) can instead give a callback, `when_visible` or `when_durable`, called with
`(result, None)` or `(None, failure)` directly as the writer's message is read, in the order
the futures resolve, without a future or a turn of the loop for each (one that raises is
logged, and the others still run). Register it in the same turn as `submit`.

If the writer process ends without being asked to (it crashed, or was killed), every
write in flight fails with INTERNAL, saying its outcome is unknown (it may or may not have
been stored), and every later one with INTERNAL saying nothing was written; `failed` and
`lost` turn true, and `on_lost` is called: the server then shuts down, since it can no
longer change anything.
"""

import asyncio
import dataclasses
import json
import os
import site
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from overhop.config.sections import JobsConfig
from overhop.errors import ErrorCode, RequestError
from overhop.logs import current_settings, get_logger
from overhop.observability.tally import StorageTimings
from overhop.storage.operations.base import Operation
from overhop.storage.store import Store
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
from overhop.storage.writer_space import SPACE_PROBE_INTERVAL_S

if TYPE_CHECKING:
    from overhop.storage.postgres.store import PgStore

T = TypeVar("T")
log = get_logger("overhop.storage")
# The directory that holds the `overhop` package, for the child's import path.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
LOST_IN_FLIGHT = "the storage writer process stopped; this write may or may not have been stored"
LOST_BEFORE = "the storage writer process has stopped; nothing was written"
STOPPING = "the storage writer is stopping with the server; nothing was written"


class WriterStartError(Exception):
    """The writer process could not start; str() is one line saying why."""


class Write(Generic[T]):
    """One submitted operation and its two signals (see the module docstring)."""

    __slots__ = ("_decode", "_loop", "_on_durable", "_on_visible", "_outcome", "_visible",
                 "durable")

    def __init__(self, loop: asyncio.AbstractEventLoop, decode: Callable[[Any], T]) -> None:
        self._loop = loop
        self._decode = decode
        self._visible: asyncio.Future[T] | None = None
        self._on_visible: Signal | None = None
        self._on_durable: Signal | None = None
        # None until known; then (True, result) or (False, RequestError).
        self._outcome: tuple[bool, Any] | None = None
        self.durable: asyncio.Future[T] = loop.create_future()

    @property
    def visible(self) -> "asyncio.Future[T]":
        if self._visible is None:
            self._visible = self._loop.create_future()
            if self._outcome is not None:
                _settle(self._visible, self._outcome)
        return self._visible

    def when_visible(self, callback: "Signal") -> None:
        """Call `callback(result, failure)` at the visible point (module docstring)."""
        self._on_visible = callback
        if self._outcome is not None:
            self._loop.call_soon(_signal, callback, self._outcome)

    def when_durable(self, callback: "Signal") -> None:
        """Call `callback(result, failure)` at the durable point (module docstring)."""
        self._on_durable = callback

    def _known(self, outcome: tuple[bool, Any]) -> None:
        """The visible point: the outcome is known."""
        self._outcome = outcome
        if self._visible is not None:
            _settle(self._visible, outcome)
        if self._on_visible is not None:
            _signal(self._on_visible, outcome)

    def _make_durable(self, failure: RequestError | None) -> None:
        durable = self.durable
        outcome = self._outcome if failure is None else (False, failure)
        assert outcome is not None
        if self._on_durable is not None:
            _signal(self._on_durable, outcome)
        if durable.done():  # cancelled by its caller
            return
        _settle(durable, outcome)
        if not outcome[0] and (self._visible is not None or self._on_visible is not None):
            durable.exception()  # the visible signal carries the failure to its caller

    def _fail(self, failure: RequestError) -> None:
        """No outcome will come: both signals fail."""
        if self._outcome is None:
            self._known((False, failure))
        self._make_durable(failure)


# The decoder of results that travel as they are: skipped on the hot path.
_as_sent = Operation.decode_result
# A callback given to `when_visible` or `when_durable`: called with (result, None) or
# (None, failure).
Signal = Callable[[Any, RequestError | None], None]


def _signal(callback: Signal, outcome: tuple[bool, Any]) -> None:
    try:
        if outcome[0]:
            callback(outcome[1], None)
        else:
            callback(None, outcome[1])
    except Exception:  # as the loop does with a future's callback: logged, the rest go on
        log.exception("write_callback_failed")


def _settle(future: "asyncio.Future[Any]", outcome: tuple[bool, Any]) -> None:
    if future.done():
        return
    if outcome[0]:
        future.set_result(outcome[1])
    else:
        future.set_exception(outcome[1])


class Writer(asyncio.Protocol):
    def __init__(self, store: "Store | PgStore", loop: asyncio.AbstractEventLoop, *, sync: bool,
                 max_batch: int, max_map_size: int, reserved_headroom: int,
                 jobs: JobsConfig, on_lost: Callable[[], None] | None = None,
                 space_probe_interval_s: float = SPACE_PROBE_INTERVAL_S,
                 cluster_lease_ms: int = 0) -> None:
        self._store = store
        self._loop = loop
        jobs_settings = dataclasses.asdict(jobs)
        self._settings: dict[str, Any]
        if not isinstance(store, Store):
            # The same messages from a writer of PostgreSQL batches (postgres/writer_process).
            self._module = "overhop.storage.postgres.writer_process"
            self._settings = {"dsn": store.dsn, "sync": sync, "max_batch": max_batch,
                              "map_size": 0, "jobs": jobs_settings}
            if store.node_id:
                self._settings["cluster"] = {"node_id": store.node_id,
                                             "lease_ms": cluster_lease_ms}
        else:
            self._module = "overhop.storage.writer_process"
            self._settings = {"path": str(store.path.resolve()),
                              "map_size": store.env.info()["map_size"], "sync": sync,
                              "max_batch": max_batch, "max_map_size": max_map_size,
                              "reserved_headroom": reserved_headroom,
                              "space_probe_interval_s": space_probe_interval_s,
                              "jobs": jobs_settings}
        self._on_lost = on_lost
        # Cluster mode: a write refused because another broker owns its queue now; the
        # broker lets the queue go and answers with its owner's address (or None).
        self.on_queue_moved: Callable[[str], str | None] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._unpacker = unpacker()
        self._pack = packer().pack
        self._staged: list[list[Any]] = []
        # Submitted, outcome not yet known (sent or staged); then known, not yet durable.
        # Both in submission order.
        self._awaiting_outcome: deque[Write[Any]] = deque()
        self._awaiting_durable: deque[Write[Any]] = deque()
        self._durable = 0  # operations ever resolved at the durable point
        # Operations sent whose commit is not yet reported, and whether a message was sent
        # while the writer held some (it waits in the writer's inbox).
        self._held = 0
        self._message_waiting = False
        self._stopping = False  # the stop message is sent: nothing more goes to the writer
        self._ready: asyncio.Future[None] = loop.create_future()
        self._ended: asyncio.Future[None] = loop.create_future()
        self._map_size = self._settings["map_size"]
        self.commits = 0
        self.operations = 0
        self.timings = StorageTimings()  # commit and sync durations, for the metrics page
        self.space_low = False
        self.failed = False
        self.lost = False

    async def start(self) -> None:
        """Start the writer process and wait until it has opened the store."""
        ours, theirs = socket.socketpair()
        level, human_friendly = current_settings()
        settings = {**self._settings, "log_level": level, "human_friendly": human_friendly}
        inherited = [theirs.fileno()]
        if isinstance(self._store, Store) and self._store.lock_fd >= 0:
            inherited.append(self._store.lock_fd)  # the lock holds until both processes end
        try:
            self._process = subprocess.Popen(
                # -P: the current directory is not put on the child's path, so it imports
                # the code this server runs, whatever directory the server was started in.
                [sys.executable, "-P", "-m", self._module,
                 str(theirs.fileno()), json.dumps(settings)],
                pass_fds=inherited, stdin=subprocess.DEVNULL, env=_child_environment())
        finally:
            theirs.close()
        await self._loop.create_unix_connection(lambda: self, sock=ours)
        try:
            await self._ready
        except RequestError:
            code = await self._loop.run_in_executor(None, self._process.wait)
            raise WriterStartError(f"the storage writer process exited with status {code}"
                                   ) from None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def submit(self, op: Operation[T]) -> Write[T]:
        """Queue `op`; its `Write` signals when it is visible and when it is durable.

        Refused with STORAGE_FULL when space is low if the operation `grows` the store."""
        write: Write[T] = Write(self._loop, op.decode_result)
        if self.lost or self._stopping:
            reason = LOST_BEFORE if self.lost else STOPPING
            self._loop.call_soon(write._fail, _error_lost(reason))
            return write
        if not self._staged:
            self._loop.call_soon(self._hand_over)
        self._staged.append(op.to_wire())
        self._awaiting_outcome.append(write)
        return write

    def _hand_over(self, *, force: bool = False) -> None:
        if (not self._staged or self._transport is None or self.lost or self._stopping
                or (self._held and self._message_waiting and not force)):
            return
        self._message_waiting = self._held > 0
        self._held += len(self._staged)
        self._transport.write(self._pack(self._staged))
        self._staged = []

    async def stop(self) -> None:
        """Have everything submitted so far written, resolve every future, and end the
        writer process. Operations submitted once stopping fail (nothing written)."""
        if self._process is None:
            return
        if not self.lost and not self._stopping and self._transport is not None:
            self._hand_over(force=True)  # even with a message waiting: the last one
            self._stopping = True
            self._transport.write(self._pack(None))
            await self._ended
            self._transport.close()
        self._fail_all(LOST_IN_FLIGHT)  # none should be left: the writer reports all
        await self._loop.run_in_executor(None, self._process.wait)

    # -- messages from the writer ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._hand_over()

    def data_received(self, data: bytes) -> None:
        self._unpacker.feed(data)
        for message in self._unpacker:
            self._take_stats(message[-1])
            kind = message[0]
            if kind == COMMIT:
                results = message[1]
                self._held -= len(results)
                self._message_waiting = False  # the writer takes it into its next batch
                self._on_commit(results, message[2], message[3])
                self._hand_over()
            elif kind == DURABLE:
                failure = None if message[2] is None else _error(message[2])
                self._resolve_durable(message[1], failure)
            elif kind == READY:
                self._ready.set_result(None)
            elif kind == STOPPED:
                self._ended.set_result(None)

    def _on_commit(self, results: list[Any], refusals: list[list[Any]], durable: int) -> None:
        # Earlier commits made durable by this one, then this commit's visible point, then
        # its durable point if it is durable already. (The hot path: calls kept few.)
        self._resolve_durable(min(durable, self._durable + len(self._awaiting_durable)), None)
        refused = {entry[0]: entry[1:] for entry in refusals}
        awaiting_outcome = self._awaiting_outcome
        awaiting_durable = self._awaiting_durable
        for index, result in enumerate(results):
            write = awaiting_outcome.popleft()
            if refused and index in refused:
                outcome: tuple[bool, Any] = (False, self._refusal(refused[index]))
            elif write._decode is _as_sent:
                outcome = (True, result)
            else:
                try:
                    outcome = (True, write._decode(result))
                except Exception as exc:  # a result this side cannot read: a bug
                    log.exception("storage_result_unreadable")
                    outcome = (False, RequestError(ErrorCode.INTERNAL, repr(exc)))
            write._outcome = outcome
            if write._visible is not None:
                _settle(write._visible, outcome)
            if write._on_visible is not None:
                _signal(write._on_visible, outcome)
            awaiting_durable.append(write)
        self._resolve_durable(durable, None)

    def _refusal(self, refusal: list[Any]) -> RequestError:
        error = _error(refusal)
        if error.code == ErrorCode.QUEUE_MOVED and self.on_queue_moved is not None:
            name = error.details["q"]
            error = RequestError(error.code, error.message,
                                 {"q": name, "owner": self.on_queue_moved(name)})
        return error

    def _resolve_durable(self, upto: int, failure: RequestError | None) -> None:
        awaiting = self._awaiting_durable
        while self._durable < upto:
            write = awaiting.popleft()
            self._durable += 1
            outcome = write._outcome
            if failure is None and outcome is not None and outcome[0]:
                if write._on_durable is not None:
                    _signal(write._on_durable, outcome)
                if not write.durable.done():
                    write.durable.set_result(outcome[1])
            else:
                write._make_durable(failure)

    def _take_stats(self, stats: Stats) -> None:
        (self.commits, self.operations, self.space_low, failed, map_size, commits,
         syncs) = stats
        if commits or syncs:
            self.timings.add(commits, syncs)
        self.failed = failed or self.lost
        if map_size != self._map_size:
            self._map_size = map_size
            if isinstance(self._store, Store):
                self._store.adopt_map_size()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ended.done():
            return
        self.lost = True
        self.failed = True
        self._ended.set_result(None)
        code = None if self._process is None else self._process.poll()
        if not self._ready.done():
            self._ready.set_exception(_error_lost(LOST_BEFORE))
            return
        log.error("storage_writer_lost", exit_code=code,
                  writes_failed=len(self._awaiting_outcome) + len(self._awaiting_durable))
        self._fail_all(LOST_IN_FLIGHT)
        if self._on_lost is not None:
            self._on_lost()

    def _fail_all(self, message: str) -> None:
        """Fail every write still waiting: those sent (or visible, not yet durable) with
        `message`; those never sent with LOST_BEFORE."""
        unsent = len(self._staged)
        self._staged = []
        in_flight = _error_lost(message)
        for write in self._awaiting_durable:
            write._fail(in_flight)
        sent = len(self._awaiting_outcome) - unsent
        for index, write in enumerate(self._awaiting_outcome):
            write._fail(in_flight if index < sent else _error_lost(LOST_BEFORE))
        self._awaiting_durable.clear()
        self._awaiting_outcome.clear()


def _child_environment() -> dict[str, str]:
    """The server's environment. When `overhop` is not installed in a site directory (run
    from a source checkout), its directory goes on PYTHONPATH so that the child imports the
    same code; an installed one is left alone (a site directory on PYTHONPATH would come
    before the standard library)."""
    env = dict(os.environ)
    site_dirs = {os.path.realpath(path)
                 for path in (*site.getsitepackages(), site.getusersitepackages())}
    if os.path.realpath(_PACKAGE_ROOT) not in site_dirs:
        env["PYTHONPATH"] = os.pathsep.join(
            path for path in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if path)
    return env


def _error(refusal: Refusal | list[Any]) -> RequestError:
    code, message, details = refusal
    return RequestError(ErrorCode(code), message, details)


def _error_lost(message: str) -> RequestError:
    return RequestError(ErrorCode.INTERNAL, message)
