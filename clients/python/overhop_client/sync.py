"""`Client`: a blocking facade over `AsyncClient` for producers in ordinary (threaded) apps.

One event loop runs in a background thread and owns the connection; every method submits
a coroutine to it with `asyncio.run_coroutine_threadsafe` and waits for the answer, so any
number of threads may share one `Client` and their requests are pipelined on its single
connection. If the connection drops, the call in flight raises `ConnectionLost` and the
next call connects again (a request is never re-sent on its own: an ENQUEUE may have been
committed before the connection dropped). Given several brokers of a cluster, requests go
to each queue's owner as `AsyncClient` sends them.
"""

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, Unpack

from overhop_client.client import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_URL,
    AsyncClient,
    TlsOption,
)
from overhop_client.enqueue_fields import EnqueueOptions
from overhop_client.tasks import Destination

P = ParamSpec("P")
T = TypeVar("T")
# A reply normally takes well under a millisecond; 30 s is for a server busy with a huge
# commit, while a hung call still fails instead of blocking its thread forever.
DEFAULT_CALL_TIMEOUT_S = 30.0


def _blocking(method: Callable[Concatenate[AsyncClient, P], Awaitable[T]]
              ) -> Callable[Concatenate["Client", P], T]:
    """The `AsyncClient` method as a blocking `Client` method with the same parameters."""

    @functools.wraps(method)
    def call(self: "Client", /, *args: P.args, **kwargs: P.kwargs) -> T:
        async def on_loop() -> T:
            return await method(await self._connected(), *args, **kwargs)

        return self._run(on_loop())

    return call


class Client:
    """A thread-safe, blocking Overhop client: enqueue, look up jobs, administer queues
    (create, change settings, pause, clear, obliterate).

    >>> with Client("127.0.0.1:9876") as client:
    ...     jid = client.enqueue("emails", {"to": "a@example.com"})
    """

    def __init__(self, url: str | Sequence[str] = DEFAULT_URL, *, name: str | None = None,
                 labels: Mapping[str, str] | None = None,
                 timeout: float = DEFAULT_CALL_TIMEOUT_S,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
                 user: str | None = None, password: str | None = None,
                 tls: TlsOption = None) -> None:
        """`url` (one broker, or several of a cluster), `user`, `password` and `tls` as for
        `AsyncClient.connect`."""
        self._url = url
        self._user = user
        self._password = password
        self._tls = tls
        self._name = name
        self._labels = labels
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._client: AsyncClient | None = None
        self._loop = asyncio.new_event_loop()
        self._lock = asyncio.Lock()
        self._thread = threading.Thread(target=self._loop.run_forever, name="overhop-client",
                                        daemon=True)
        self._thread.start()
        try:
            self._run(self._connected())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coroutine: Coroutine[Any, Any, T], *, bounded: bool = True) -> T:
        """Run on the client's loop; wait at most the call timeout when `bounded` (calls
        that take their own timeout, like `result`, are not)."""
        if self._loop.is_closed():
            coroutine.close()
            raise RuntimeError("this Client is closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(self._timeout if bounded else None)
        except TimeoutError:
            future.cancel()
            raise

    async def _connected(self) -> AsyncClient:
        """The live AsyncClient, connecting (again) first if there is none."""
        async with self._lock:
            if self._client is None or self._client.closed:
                self._client = await AsyncClient.connect(
                    self._url, name=self._name, labels=self._labels,
                    timeout=self._connect_timeout, tls=self._tls, user=self._user,
                    password=self._password)
            return self._client

    @property
    def worker_id(self) -> str:
        """The server's id for the current connection."""
        return self._client.worker_id if self._client is not None else ""

    ping = _blocking(AsyncClient.ping)
    status = _blocking(AsyncClient.status)
    queue = _blocking(AsyncClient.queue)
    queues = _blocking(AsyncClient.queues)
    add_queue = _blocking(AsyncClient.add_queue)
    remove_queue = _blocking(AsyncClient.remove_queue)
    pause = _blocking(AsyncClient.pause)
    resume = _blocking(AsyncClient.resume)
    set_queue = _blocking(AsyncClient.set_queue)
    clear_queue = _blocking(AsyncClient.clear_queue)
    obliterate_queue = _blocking(AsyncClient.obliterate_queue)
    stats = _blocking(AsyncClient.stats)
    enqueue = _blocking(AsyncClient.enqueue)
    enqueue_many = _blocking(AsyncClient.enqueue_many)
    enqueue_unique = _blocking(AsyncClient.enqueue_unique)
    job = _blocking(AsyncClient.job)
    jobs = _blocking(AsyncClient.jobs)
    remove_job = _blocking(AsyncClient.remove_job)
    retry_job = _blocking(AsyncClient.retry_job)
    cancel = _blocking(AsyncClient.cancel)
    retry_failed = _blocking(AsyncClient.retry_failed)
    remove_jobs = _blocking(AsyncClient.remove_jobs)
    cancel_waiting = _blocking(AsyncClient.cancel_waiting)
    add_user = _blocking(AsyncClient.add_user)
    users = _blocking(AsyncClient.users)
    remove_user = _blocking(AsyncClient.remove_user)
    set_permissions = _blocking(AsyncClient.set_permissions)
    add_schedule = _blocking(AsyncClient.add_schedule)
    schedules = _blocking(AsyncClient.schedules)
    remove_schedule = _blocking(AsyncClient.remove_schedule)
    pause_schedule = _blocking(AsyncClient.pause_schedule)
    resume_schedule = _blocking(AsyncClient.resume_schedule)

    def result(self, jid: str, *, timeout: float | None = None) -> Any:
        """`AsyncClient.result`, blocking: the job's result once it has completed; waits up
        to `timeout` seconds (None: until it ends), not the client's call timeout."""
        async def on_loop() -> Any:
            return await (await self._connected()).result(jid, timeout=timeout)

        return self._run(on_loop(), bounded=False)

    def run(self, queue: Destination, payload: object = None, *,
            timeout: float | None = None, **options: Unpack[EnqueueOptions]) -> Any:
        """`AsyncClient.run`, blocking: enqueue a job (`queue` may be a `@worker.task`
        function) and wait for its result."""
        async def on_loop() -> Any:
            client = await self._connected()
            return await client.run(queue, payload, timeout=timeout, **options)

        return self._run(on_loop(), bounded=False)

    def close(self) -> None:
        """Close the connection and stop the background thread. Idempotent."""
        if self._loop.is_closed():
            return
        if self._client is not None:
            self._run(self._client.close())
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
