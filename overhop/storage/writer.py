"""The server's side of the writer process: submit write operations, await their commits.

All writes run in a child process (`writer_process.py`, which explains batching, group
commit and the visible and durable points). `submit(operation, *args)` queues one; the
operations submitted during one turn of the event loop go to the writer together, as one
message, at the end of that turn. While the writer is busy with a commit, at most one such
message waits behind it: later operations gather here and go as one message when that
commit is reported, so each commit costs about one message each way whatever the load.

Each operation's future resolves once the commit holding it is durable;
`on_visible(succeeded, result_or_exception)`, if given, is called on the loop as soon as
that commit is visible (one disk sync earlier), or when the operation fails.

If the writer process ends without being asked to (it crashed, or was killed), every write
in flight and every later one fails with INTERNAL, `failed` and `lost` turn true, and
`on_lost` is called: the server then shuts down, since it can no longer change anything.
"""

import asyncio
import json
import os
import site
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from overhop.errors import ErrorCode, RequestError
from overhop.logs import current_settings, get_logger
from overhop.observability.tally import StorageTimings
from overhop.storage.store import Store
from overhop.storage.writer_process import Refusal, Stats, decode_frames, encode_frame

T = TypeVar("T")
VisibleCallback = Callable[[bool, Any], None]
log = get_logger("overhop.storage")
# The directory that holds the `overhop` package, for the child's import path.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class WriterStartError(Exception):
    """The writer process could not start; str() is one line saying why."""


class _Pending:
    __slots__ = ("future", "on_visible", "succeeded", "value")

    def __init__(self, future: asyncio.Future[Any], on_visible: VisibleCallback | None) -> None:
        self.future = future
        self.on_visible = on_visible
        self.succeeded = False
        self.value: Any = None


class Writer(asyncio.Protocol):
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop, *, sync: bool,
                 max_batch: int, max_map_size: int, reserved_headroom: int,
                 on_lost: Callable[[], None] | None = None) -> None:
        self._store = store
        self._loop = loop
        self._settings = {"path": str(store.path.resolve()),
                          "map_size": store.env.info()["map_size"], "sync": sync,
                          "max_batch": max_batch, "max_map_size": max_map_size,
                          "reserved_headroom": reserved_headroom}
        self._on_lost = on_lost
        self._process: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._staged: list[tuple[Callable[..., Any], tuple[Any, ...], bool]] = []
        # Sent, outcome not yet known; then known, not yet durable. Both in submission order.
        self._awaiting_outcome: deque[_Pending] = deque()
        self._awaiting_durable: deque[_Pending] = deque()
        self._durable = 0  # operations ever resolved at the durable point
        # Operations sent whose commit is not yet reported, and whether a message was sent
        # while the writer held some (it waits in the writer's inbox).
        self._held = 0
        self._message_waiting = False
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
        if self._store.lock_fd >= 0:
            inherited.append(self._store.lock_fd)  # the lock holds until both processes end
        try:
            self._process = subprocess.Popen(
                # -P: the current directory is not put on the child's path, so it imports
                # the code this server runs, whatever directory the server was started in.
                [sys.executable, "-P", "-m", "overhop.storage.writer_process",
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

    def submit(self, operation: Callable[..., T], *args: Any, grows: bool = False,
               on_visible: VisibleCallback | None = None) -> asyncio.Future[T]:
        """Queue `operation(txn, *args)`; its future resolves once its commit is durable.

        `grows` marks operations that add data (refused with STORAGE_FULL when space is
        low). Operation, arguments and result cross to the writer process by pickle.
        """
        future: asyncio.Future[T] = self._loop.create_future()
        pending = _Pending(future, on_visible)
        if self.lost:
            self._loop.call_soon(_fail, pending, _lost_error())
            return future
        if not self._staged:
            self._loop.call_soon(self._hand_over)
        self._staged.append((operation, args, grows))
        self._awaiting_outcome.append(pending)
        return future

    def _hand_over(self) -> None:
        if (not self._staged or self._transport is None or self.lost
                or (self._held and self._message_waiting)):
            return
        self._message_waiting = self._held > 0
        self._held += len(self._staged)
        self._transport.write(encode_frame(self._staged))
        self._staged = []

    async def stop(self) -> None:
        """Finish every operation already submitted, then end the writer process."""
        if self._process is None:
            return
        if not self.lost and self._transport is not None:
            self._hand_over()
            self._transport.write(encode_frame(None))
            await self._ended
            self._transport.close()
        await self._loop.run_in_executor(None, self._process.wait)

    # -- messages from the writer ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._hand_over()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        for message in decode_frames(self._buffer):
            self._take_stats(message[-1])
            kind = message[0]
            if kind == "commit":
                self._held -= len(message[1])
                self._message_waiting = False  # the writer takes it into its next batch
                self._on_commit(message[1], message[2])
                self._hand_over()
            elif kind == "durable":
                failure = None if message[2] is None else _error(message[2])
                self._resolve_durable(message[1], failure)
            elif kind == "ready":
                self._ready.set_result(None)
            elif kind == "stopped":
                self._ended.set_result(None)

    def _on_commit(self, outcomes: list[tuple[bool, Any]], durable: int) -> None:
        visible = []
        for succeeded, value in outcomes:
            pending = self._awaiting_outcome.popleft()
            pending.succeeded = succeeded
            pending.value = value if succeeded else _error(value)
            self._awaiting_durable.append(pending)
            if pending.on_visible is not None:
                visible.append(pending)
        self._resolve_durable(durable, None)
        for pending in visible:
            _call_visible(pending, pending.succeeded, pending.value)

    def _resolve_durable(self, upto: int, failure: RequestError | None) -> None:
        while self._durable < upto:
            pending = self._awaiting_durable.popleft()
            self._durable += 1
            future = pending.future
            if future.cancelled():
                continue
            if failure is not None:
                future.set_exception(failure)
            elif pending.succeeded:
                future.set_result(pending.value)
            else:
                future.set_exception(pending.value)

    def _take_stats(self, stats: Stats) -> None:
        self.commits, self.operations, self.space_low, failed, map_size, commits, syncs = stats
        if commits or syncs:
            self.timings.add(commits, syncs)
        self.failed = self.failed or failed
        if map_size != self._map_size:
            self._map_size = map_size
            self._store.adopt_map_size()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ended.done():
            return
        self.lost = True
        self.failed = True
        self._ended.set_result(None)
        code = None if self._process is None else self._process.poll()
        failure = _lost_error()
        if not self._ready.done():
            self._ready.set_exception(failure)
            return
        log.error("storage_writer_lost", exit_code=code,
                     writes_failed=len(self._awaiting_outcome) + len(self._awaiting_durable))
        for pending in self._awaiting_durable:  # visible already: only the future is left
            if not pending.future.done():
                pending.future.set_exception(failure)
        for pending in self._awaiting_outcome:
            _fail(pending, failure)
        self._awaiting_durable.clear()
        self._awaiting_outcome.clear()
        self._staged = []
        if self._on_lost is not None:
            self._on_lost()


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


def _error(refusal: Refusal) -> RequestError:
    code, message, details = refusal
    return RequestError(ErrorCode(code), message, details)


def _lost_error() -> RequestError:
    return RequestError(ErrorCode.INTERNAL, "the storage writer process has stopped")


def _fail(pending: _Pending, failure: RequestError) -> None:
    if not pending.future.done():
        pending.future.set_exception(failure)
    if pending.on_visible is not None:
        _call_visible(pending, False, failure)


def _call_visible(pending: _Pending, succeeded: bool, value: Any) -> None:
    assert pending.on_visible is not None
    try:
        pending.on_visible(succeeded, value)
    except Exception:
        log.exception("visible_callback_failed")
