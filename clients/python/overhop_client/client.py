"""`AsyncClient`: every protocol operation as an awaitable method with Pythonic arguments.

Each method builds the request payload, awaits `request` and shapes the reply into a typed
result. A new message type is one method calling `request` (and, if it answers with a
record, one `from_wire` in `results`). Replies may arrive out of order; many requests can
be in flight at once on one client (`asyncio.gather` them).

Deliveries (QUEST pushes) arrive as `Quest` objects on `quests`, an `asyncio.Queue`, or
through the `on_quest` callback given to `connect`. IDENT and pushes this client does not
use are ignored; BYE (the server is shutting down) is kept in `bye` and passed to
`on_bye`; SUBEND (a subscription ended because its queue was removed) is passed to
`on_subscription_end`; CONTROL (an admin's command to this worker) to `on_control`; ABORT (a
job this worker runs was cancelled) to `on_abort`.

Given several brokers' addresses (a cluster, PROTOCOL.md section 12), the client connects
to the first that answers and asks ROUTES; in a cluster, requests go through a `Cluster`
(`cluster.py`), which sends each to its queue's owner and follows QUEUE_MOVED. Given one
address, it talks to that broker alone, as to any single server, until a QUEUE_MOVED or a
SUBEND `queue_moved` says the broker is in a cluster.
"""

import asyncio
import os
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypedDict, Unpack

from overhop_client import tracing
from overhop_client.addresses import parse_brokers
from overhop_client.auth import DEFAULT_ITERATIONS, derive_credentials
from overhop_client.cluster import BrokerLost, Cluster
from overhop_client.codec import DEFAULT_MAX_FRAME_SIZE, check_value, parse_reply_str
from overhop_client.connection import Connection
from overhop_client.enqueue_fields import Enqueued, EnqueueOptions, JobFields, job_fields
from overhop_client.errors import ConnectionLost, QueueMovedError
from overhop_client.handshake import Dialer, Register, Session, password_from_env
from overhop_client.jobs import Job, JobPage, JobStatus
from overhop_client.messages import MessageType
from overhop_client.outcomes import Outcomes
from overhop_client.queue_settings import Backoff, QueueConfig, QueueSettings, settings_to_wire
from overhop_client.results import (
    DEFAULT_MAX_ENQUEUE_BATCH,
    QUEUE_MOVED_REASON,
    Abort,
    Bye,
    ClearedJobs,
    FailOutcome,
    LogTotals,
    Quest,
    QueueInfo,
    QueueStats,
    ServerLimits,
    ServerStatus,
    SubscriptionEnded,
    WorkerControl,
)
from overhop_client.schedules import MissedPolicy, ScheduleInfo, schedule_fields
from overhop_client.tasks import Destination, destination
from overhop_client.times import parse_time, to_ms

DEFAULT_URL = "127.0.0.1:9876"
# Connecting, HELLO and REGISTER are three round trips; 10 s covers a loaded network
# while a server that does not answer is still noticed quickly.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
# The server's bound on the lines one JOBLOG may carry; `log` splits longer batches.
MAX_LOG_LINES_PER_MESSAGE = 100

TlsOption = ssl.SSLContext | bool | None


def tls_context(tls: TlsOption, url_says_tls: bool) -> ssl.SSLContext | None:
    """The context to connect with: the one given, or with `True` (or an `overhops://`
    URL) the system's trust store (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured)."""
    if isinstance(tls, ssl.SSLContext):
        return tls
    if tls is True or (tls is None and url_says_tls):
        return ssl.create_default_context()
    return None


class UserInfo(TypedDict):
    """One user as USERLIST shows it."""

    name: str
    permissions: list[str]
    iterations: int
    created_at: str


def _delivery(quest: Quest) -> dict[str, object]:
    """The fields naming a delivery in ACK, JOBBEAT, JOBLOG, COMPLETE, FAIL and RELEASE."""
    return {"did": quest.did, "jid": quest.jid}


class AsyncClient:
    """A registered connection to an Overhop server, or to the brokers of a cluster.
    Create it with `AsyncClient.connect`."""

    def __init__(self, *, on_quest: Callable[[Quest], None] | None = None,
                 on_bye: Callable[[Bye], None] | None = None,
                 on_subscription_end: Callable[[SubscriptionEnded], None] | None = None,
                 on_control: Callable[[WorkerControl], None] | None = None,
                 on_abort: Callable[[Abort], None] | None = None,
                 on_broker_lost: Callable[[BrokerLost], None] | None = None) -> None:
        self._session: Session | None = None
        """The connection every request goes on, until the client knows a cluster."""
        self._cluster: Cluster | None = None
        """The connections to a cluster's brokers, once the client knows one."""
        self._dialer: Dialer | None = None
        self._seeds: tuple[str, ...] = ()
        self._on_broker_lost = on_broker_lost
        self._on_abort = on_abort
        self._on_quest = on_quest
        self._on_bye = on_bye
        self._on_subscription_end = on_subscription_end
        self._on_control = on_control
        self._outcomes = Outcomes()
        self.quests: asyncio.Queue[Quest] = asyncio.Queue()
        """Deliveries, when no `on_quest` callback was given."""
        self.bye: Bye | None = None
        """The server's BYE, once it said it is shutting down."""
        self.worker_id = ""
        """The id the server gave this connection at REGISTER (`wid`)."""
        self.limits: ServerLimits | None = None
        """The server's timings and size limits from REGISTER (None from a server that
        does not send them)."""
        self.user: str | None = None
        """The user this connection logged in as (None on an open server)."""

    @classmethod
    async def connect(cls, url: str | Sequence[str] = DEFAULT_URL, *, name: str | None = None,
                      labels: Mapping[str, str] | None = None,
                      on_quest: Callable[[Quest], None] | None = None,
                      on_bye: Callable[[Bye], None] | None = None,
                      on_subscription_end: Callable[[SubscriptionEnded], None] | None = None,
                      on_control: Callable[[WorkerControl], None] | None = None,
                      on_abort: Callable[[Abort], None] | None = None,
                      on_broker_lost: Callable[[BrokerLost], None] | None = None,
                      timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
                      max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
                      user: str | None = None, password: str | None = None,
                      tls: TlsOption = None) -> "AsyncClient":
        """Connect to `host:port`, `overhop://[user:password@]host:port` or `overhops://...`
        (TLS), log in if a user is given, then HELLO and REGISTER.

        Several brokers of a cluster: a list of such URLs, or one naming several hosts
        (`overhop://host1:9876,host2:9877`), all with the same login and TLS. They are
        tried in turn until one answers (`ServerUnreachable` naming each when none does;
        `timeout` applies to each), then asked ROUTES: requests go to each queue's owner,
        connecting to the others as needed. `on_broker_lost` is told when the connection
        to one broker of a cluster closes (`BrokerLost`: its address and the subscriptions
        that ended with it); the client carries on with the others.

        `name` and `labels` (short strings) are shown in the server's STATUS with this
        host's name and process id. The user and password come from the arguments, else
        the URL; the password last from `$OVERHOP_PASSWORD`. With a user, the server must
        prove it knows that user's keys (`AuthenticationError` otherwise); a wrong password
        raises `AuthFailedError`. `tls`: an `ssl.SSLContext` (for a private CA, or a client
        certificate, which logs in as the user its CN names), or True for the system's
        trust store, which `overhops://` also means.
        """
        brokers = parse_brokers(url)
        user = user if user is not None else brokers.user
        password = password_from_env(user, password if password is not None
                                     else brokers.password)
        register: Register = {"host": socket.gethostname()[:256], "pid": os.getpid()}
        if name is not None:
            register["name"] = name
        if labels is not None:
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
                raise TypeError("labels must map strings to strings")
            register["labels"] = dict(labels)
        client = cls(on_quest=on_quest, on_bye=on_bye,
                     on_subscription_end=on_subscription_end, on_control=on_control,
                     on_abort=on_abort, on_broker_lost=on_broker_lost)
        client._dialer = Dialer(register, user, password, tls_context(tls, brokers.tls),
                                max_frame_size, timeout)
        client._seeds = brokers.addresses
        session = await client._dialer.open_first(brokers.addresses, client._on_push)
        client._session = session
        client.worker_id, client.user, client.limits = (session.worker_id, session.user,
                                                        session.limits)
        if len(brokers.addresses) > 1:
            try:
                async with asyncio.timeout(timeout):
                    await client._ask_routes(session)
            except BaseException:
                await client.close()
                raise
        return client

    async def _ask_routes(self, session: Session) -> None:
        """ROUTES, after connecting to one of several brokers: in a cluster, requests go
        through a `Cluster` from now on; a broker outside one owns everything."""
        reply = await session.send(MessageType.ROUTES, {})
        if reply is None:
            raise ConnectionLost(f"the connection to {session.address} closed")
        if not reply.get("node"):
            return  # a broker outside a cluster: it owns everything
        self._cluster = self._new_cluster(session)
        self._cluster.learn_routes(reply, session)

    def _new_cluster(self, session: Session) -> Cluster:
        assert self._dialer is not None
        return Cluster(self._dialer, session, self._seeds or (session.address,),
                       self._on_push, self._on_broker_lost)

    def _joined_cluster(self) -> Cluster:
        """The broker said it is in a cluster (QUEUE_MOVED, SUBEND `queue_moved`): from now
        on requests go through a `Cluster`, which asks ROUTES first."""
        if self._cluster is None:
            self._cluster = self._new_cluster(self._require_session())
        return self._cluster

    # -- users (the `admin` verb on every queue) --------------------------------------

    async def add_user(self, name: str, password: str, permissions: Iterable[str] = (),
                       *, iterations: int = DEFAULT_ITERATIONS) -> UserInfo:
        """Create a user. The keys the server stores are derived here, so the password
        never leaves this process. `permissions`: `verb:pattern` strings such as
        `produce:emails`, `consume:billing-*`, `admin` (verbs: produce, consume, read,
        manage, admin; a pattern is a glob on queue names, `*` when left out)."""
        loop = asyncio.get_running_loop()
        keys = await loop.run_in_executor(None, derive_credentials, password, iterations)
        reply = await self.request(MessageType.USERADD, {
            "name": name, "salt": keys.salt, "iterations": keys.iterations,
            "stored_key": keys.stored_key, "server_key": keys.server_key,
            "permissions": list(permissions)})
        return _user_info(reply)

    async def users(self) -> list[UserInfo]:
        reply = await self.request(MessageType.USERLIST)
        return [_user_info(user) for user in reply.get("users") or ()]

    async def remove_user(self, name: str) -> None:
        """Remove a user; the server closes its connections."""
        await self.request(MessageType.USERRM, {"name": name})

    async def set_permissions(self, name: str, permissions: Iterable[str]) -> UserInfo:
        """Replace a user's permissions; live connections follow at their next request."""
        reply = await self.request(MessageType.USERPERMIT,
                                   {"name": name, "permissions": list(permissions)})
        return _user_info(reply)

    # -- plumbing --------------------------------------------------------------------

    async def request(self, message_type: MessageType | int,
                      payload: Mapping[str, object] | None = None) -> dict[str, Any]:
        """Send any message and return its reply's payload; an ERR raises its exception.

        The building block of every method below, and the way to use a message type this
        client has no method for yet. In a cluster it goes to the owner of the queue it
        acts on (see `cluster.py`).
        """
        payload = payload if payload is not None else {}
        if self._cluster is not None:
            return (await self._cluster.request(message_type, payload))[0]
        session = self._require_session()
        connection = session.connection
        try:
            # Within the server's bound on requests read ahead of their replies: beyond it
            # the server stops reading this connection until replies drain (section 4).
            async with session.in_flight:
                if not connection.writable:
                    await connection.wait_writable()
                return await connection.request(message_type, payload)
        except QueueMovedError as moved:
            # The broker is in a cluster, and another one owns the queue: nothing changed.
            cluster = self._joined_cluster()
            if moved.queue is not None:
                cluster.queue_moved(moved.queue, moved.owner)
        return (await cluster.request(message_type, payload))[0]

    async def request_everywhere(self, message_type: MessageType | int,
                                 payload: Mapping[str, object] | None = None
                                 ) -> list[dict[str, Any]]:
        """Send the message to every broker of the cluster (to the one broker otherwise);
        every reply. For what each broker answers about itself: STATUS (its queues,
        workers and connections), WORKERCTL (its workers)."""
        payload = payload if payload is not None else {}
        if self._cluster is not None:
            return await self._cluster.everywhere(message_type, payload)
        return [await self.request(message_type, payload)]

    @property
    def closed(self) -> bool:
        """True once closed; with one broker, also once its connection has closed (in a
        cluster the client connects again to the brokers it needs)."""
        if self._cluster is not None:
            return self._cluster.closed
        return self._session is None or self._session.closed

    async def wait_closed(self) -> None:
        """Return once the client is closed (see `closed`)."""
        while self._cluster is None:
            await self._require_session().connection.wait_closed()
            if self._cluster is None:
                return
        await self._cluster.wait_closed()

    async def close(self) -> None:
        """Close the connection (every connection, in a cluster) without GOODBYE; requests
        still waiting fail."""
        if self._cluster is not None:
            await self._cluster.close()
        elif self._session is not None:
            self._session.connection.close()
            await self._session.connection.wait_closed()

    @property
    def cluster(self) -> bool:
        """Whether the client talks to the brokers of a cluster (it asked ROUTES, or a
        broker answered QUEUE_MOVED or SUBEND `queue_moved`)."""
        return self._cluster is not None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def _require_session(self) -> Session:
        if self._session is None:
            raise RuntimeError("not connected: use `await AsyncClient.connect(url)`")
        return self._session

    @property
    def _connection(self) -> Connection | None:
        """The first broker's connection."""
        return self._session.connection if self._session is not None else None

    def _on_push(self, message_type: int, payload: dict[str, Any]) -> None:
        if message_type == MessageType.QUEST:
            quest = Quest.from_wire(payload)
            if self._on_quest is not None:
                self._on_quest(quest)
            else:
                self.quests.put_nowait(quest)
        elif message_type == MessageType.BYE:
            self._on_server_bye(Bye.from_wire(payload))
        elif message_type == MessageType.SUBEND:
            self._on_subend(SubscriptionEnded.from_wire(payload))
        elif message_type == MessageType.RESULT:
            if self._cluster is not None:
                self._cluster.watch_ended(str(payload.get("jid")))
            self._outcomes.arrived(payload)
        elif message_type == MessageType.CONTROL and self._on_control is not None:
            self._on_control(WorkerControl.from_wire(payload))
        elif message_type == MessageType.ABORT and self._on_abort is not None:
            self._on_abort(Abort.from_wire(payload))

    def _on_server_bye(self, bye: Bye) -> None:
        self.bye = bye
        # In a cluster one broker leaving moves its queues: its connection's end is told
        # by `on_broker_lost`, and the client goes on with the others.
        if self._on_bye is not None and self._cluster is None:
            self._on_bye(bye)

    def _on_subend(self, ended: SubscriptionEnded) -> None:
        if ended.reason == QUEUE_MOVED_REASON:
            self._joined_cluster().queue_moved(ended.queue, ended.owner)
        if self._cluster is not None:
            self._cluster.subscription_ended(ended.sid)
        if self._on_subscription_end is not None:
            self._on_subscription_end(ended)

    # -- server and queues -----------------------------------------------------------

    async def ping(self) -> datetime | None:
        """Round trip to the server; its clock."""
        return parse_time((await self.request(MessageType.PING)).get("server_time"))

    async def status(self) -> ServerStatus:
        return ServerStatus.from_wire(await self.request(MessageType.STATUS))

    async def queue(self, name: str) -> QueueInfo | None:
        """The queue named `name`, or None when there is none."""
        reply = await self.request(MessageType.QUEUE, {"q": name})
        return QueueInfo.from_wire(reply) if reply else None

    async def queues(self) -> list[QueueInfo]:
        """Every queue, system queues included."""
        reply = await self.request(MessageType.LSQUEUE)
        return [QueueInfo.from_wire(queue) for queue in reply.get("queues") or ()]

    async def add_queue(self, name: str, *, concurrency_limit: int | None = None,
                        allow_job_overrides: bool = True, max_attempts: int | None = None,
                        retry_interval: timedelta | None = None,
                        backoff: Backoff | str = Backoff.FIXED,
                        backoff_max: timedelta | None = None, backoff_jitter: bool = False,
                        lease: timedelta | None = None, rate_limit: int | None = None,
                        rate_window: timedelta | None = None,
                        keep_completed: int | None = None,
                        keep_completed_for: timedelta | None = None,
                        keep_failed: int | None = None,
                        keep_failed_for: timedelta | None = None,
                        group_concurrency_limit: int | None = None) -> str:
        """Create a queue; its id. Settings left None take the server's defaults.

        `concurrency_limit` caps the queue's jobs in flight across all workers;
        `allow_job_overrides=False` refuses per-job max_attempts/retry_interval/lease;
        `backoff` is how the retry interval grows (`fixed` or `exponential`, capped at
        `backoff_max`), `backoff_jitter` randomises half of each wait; `lease` is how long
        a worker may hold a job between heartbeats. `rate_limit` jobs at most start per
        `rate_window` (default one second). Retention: `keep_completed` /
        `keep_failed` keep at most that many finished jobs (the oldest are removed),
        `keep_completed_for` / `keep_failed_for` remove them once finished that long ago.
        `group_concurrency_limit` caps the active jobs of each group (ENQUEUE's `group`).
        """
        settings: dict[str, object] = {
            "allow_job_overrides": allow_job_overrides, "backoff": backoff,
            "backoff_jitter": backoff_jitter}
        for key, value in (("concurrency_limit", concurrency_limit),
                           ("max_attempts", max_attempts), ("retry_interval", retry_interval),
                           ("backoff_max", backoff_max), ("lease", lease),
                           ("rate_limit", rate_limit), ("rate_window", rate_window),
                           ("keep_completed", keep_completed),
                           ("keep_completed_for", keep_completed_for),
                           ("keep_failed", keep_failed), ("keep_failed_for", keep_failed_for),
                           ("group_concurrency_limit", group_concurrency_limit)):
            if value is not None:
                settings[key] = value
        reply = await self.request(MessageType.ADDQUEUE,
                                   {"name": name, "config": settings_to_wire(settings)})
        return parse_reply_str(reply, "qid")

    async def set_queue(self, name: str, **settings: Unpack[QueueSettings]) -> QueueConfig:
        """Change settings of a live queue; its whole configuration afterwards.

        Takes the keyword arguments of `add_queue`; only those given change, and `None`
        clears a setting (no limit, keep everything, or the server's default). Raised
        concurrency or rate limits dispatch at once; jobs follow the queue's new
        max_attempts, retry_interval and lease unless they were enqueued with their own.
        """
        if not settings:
            raise ValueError("set_queue needs at least one setting to change")
        reply = await self.request(MessageType.SETQUEUE,
                                   {"q": name, "config": settings_to_wire(settings)})
        return QueueConfig.from_wire(reply.get("config") or {})

    async def clear_queue(self, name: str) -> ClearedJobs:
        """Remove the queue's jobs that have not started (new, waiting and delayed); active
        and finished ones stay. What was removed, per status."""
        reply = await self.request(MessageType.CLEARQUEUE, {"q": name})
        return ClearedJobs.from_wire(reply.get("removed") or {})

    async def obliterate_queue(self, name: str, force: bool = False) -> int:
        """Remove the queue and every job in it; how many jobs were removed.

        Refused with `QueueHasActiveJobsError` while some of its jobs are out with workers,
        unless `force`: then their outcomes are refused when they come.
        """
        reply = await self.request(MessageType.OBLITERATE, {"q": name, "force": force})
        return int(reply.get("removed", 0))

    async def remove_queue(self, name: str) -> None:
        """Remove an empty queue (QUEUE_NOT_EMPTY while it holds jobs)."""
        await self.request(MessageType.RMQUEUE, {"q": name})

    async def pause(self, name: str) -> None:
        """Stop delivering the queue's jobs; enqueues are still accepted."""
        await self.request(MessageType.PAUSE, {"q": name})

    async def resume(self, name: str) -> None:
        await self.request(MessageType.RESUME, {"q": name})

    async def stats(self, queue: str) -> QueueStats:
        return QueueStats.from_wire(await self.request(MessageType.QSTATS, {"q": queue}))

    # -- schedules -------------------------------------------------------------------

    async def add_schedule(self, name: str, queue: str, cron: str, *,
                           timezone: str | None = None,
                           missed: MissedPolicy | str = MissedPolicy.SKIP,
                           payload: object = None, max_attempts: int | None = None,
                           retry_interval: timedelta | None = None,
                           lease: timedelta | None = None,
                           headers: dict[str, str] | None = None, task: str | None = None,
                           priority: int | None = None) -> ScheduleInfo:
        """Have the server enqueue a job into `queue` at each occurrence of `cron` (five
        fields, or six with seconds first) in `timezone` (an IANA name; UTC when None);
        replaces a schedule of the same name. `missed` says what happens at the server's
        start to occurrences that fell while it was down (`skip` or `once`). The job
        options are ENQUEUE's, `task` and `priority` included. The schedule, with its
        `next_run_at`."""
        job = job_fields(payload, {"max_attempts": max_attempts,
                                   "retry_interval": retry_interval, "lease": lease,
                                   "task": task, "priority": priority})
        if headers:
            job["headers"] = dict(headers)
        fields = schedule_fields(name, queue, cron, timezone=timezone, missed=missed, job=job)
        return ScheduleInfo.from_wire(await self.request(MessageType.ADDSCHEDULE, fields))

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule (those of queues this user may read), by name."""
        found: list[ScheduleInfo] = []
        after: str | None = None
        while True:
            reply = await self.request(MessageType.LSSCHEDULE,
                                       {} if after is None else {"after": after})
            found.extend(ScheduleInfo.from_wire(row) for row in reply.get("schedules") or ())
            after = reply.get("next_after")
            if not after:
                return found

    async def remove_schedule(self, name: str) -> None:
        await self.request(MessageType.RMSCHEDULE, {"name": name})

    async def pause_schedule(self, name: str) -> ScheduleInfo:
        return ScheduleInfo.from_wire(
            await self.request(MessageType.PAUSESCHEDULE, {"name": name}))

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """Fire again from now on; occurrences while paused are not back-filled."""
        return ScheduleInfo.from_wire(
            await self.request(MessageType.RESUMESCHEDULE, {"name": name}))

    # -- jobs ------------------------------------------------------------------------

    async def enqueue(self, queue: Destination, payload: object = None, *,
                      headers: Mapping[str, str] | None = None,
                      **options: Unpack[EnqueueOptions]) -> str:
        """Add a job; its id (`<queue>:<uuid>`), once the server has it on disk.

        `queue` is a queue's name, or a function registered with `@worker.task` (its queue,
        and its task name); `task` names the handler that runs the job (see `Task`).

        `payload`: any MessagePack-able value (None, bool, int, float, str, bytes, lists,
        maps with string keys). `run_at` (an aware datetime) or `delay` (counted by the
        server's clock from when it stores the job) schedule it. `priority` (1 to 9, 5 when
        not given): waiting jobs of a higher priority are dispatched first (see
        docs/scheduling.md for the fair share that keeps the others going). `headers`
        travel with the job to its worker; with `opentelemetry-api` installed the trace
        context is added (see `overhop_client.tracing`). `max_attempts`, `retry_interval`
        and `lease` override the queue's settings for this job.

        `unique_key`: while another job of the queue holds this key, nothing is added and
        the id returned is that job's (`enqueue_unique` also says whether it was a
        duplicate); `unique_for` says how long a job holds its key: until it `"start"`s,
        until it `"finish"`es (the default), or a `timedelta` from now. `group` (a tenant,
        a customer): the queue's `group_concurrency_limit` applies per group, and groups
        take turns (docs/scheduling.md).
        """
        return (await self.enqueue_unique(queue, payload, headers=headers, **options)).jid

    async def enqueue_unique(self, queue: Destination, payload: object = None, *,
                             headers: Mapping[str, str] | None = None,
                             **options: Unpack[EnqueueOptions]) -> Enqueued:
        """`enqueue`, telling also whether the job was a duplicate of the one holding its
        `unique_key` (then nothing was added, and `jid` is the holder's)."""
        queue, task = destination(queue, options.get("task"))
        fields = job_fields(payload, {**options, "task": task})
        with tracing.sending(queue, 1, headers) as traced:
            if traced.headers:
                fields["headers"] = traced.headers
            reply = await self.request(MessageType.ENQUEUE, {**fields, "q": queue})
            jid = parse_reply_str(reply, "jid")
            duplicate = reply.get("duplicate") is True
            if not duplicate:
                traced.sent([jid])
        return Enqueued(jid, duplicate)

    async def run(self, queue: Destination, payload: object = None, *,
                  timeout: float | None = None, **options: Unpack[EnqueueOptions]) -> Any:
        """Enqueue a job (with `enqueue`'s options; `queue` may be a task) and wait for its
        result (see `result`): one call, no polling."""
        queue, task = destination(queue, options.get("task"))
        fields = job_fields(payload, {**options, "task": task})
        reply = await self.request(MessageType.ENQUEUE, {**fields, "q": queue, "watch": True})
        return await self._wait_outcome(parse_reply_str(reply, "jid"), timeout)

    async def result(self, jid: str, *, timeout: float | None = None) -> Any:
        """The job's result once it has completed, told by the server (WATCH), no polling.

        Raises `JobFailedError` (with the error and every attempt) when it failed for good,
        `JobRemovedError` when it was removed first, and `TimeoutError` after `timeout`
        seconds, leaving the job as it is (running, or waiting to run)."""
        if not self._outcomes.future(jid).done():
            await self.request(MessageType.WATCH, {"jid": jid})
        return await self._wait_outcome(jid, timeout)

    async def _wait_outcome(self, jid: str, timeout: float | None) -> Any:
        self._require_session()
        outcome = self._outcomes.future(jid)
        closed = asyncio.ensure_future(self.wait_closed())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wait({outcome, closed}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            if not self.closed:
                await self.request(MessageType.UNWATCH, {"jid": jid})
            raise
        finally:
            closed.cancel()
            if not outcome.done():
                self._outcomes.forget(jid)
        if not outcome.done():
            raise ConnectionLost("the connection closed before the job's outcome came")
        self._outcomes.forget(jid)
        return outcome.result()

    async def enqueue_many(self, queue: Destination, payloads: Iterable[object], *,
                           headers: Mapping[str, str] | None = None,
                           **options: Unpack[EnqueueOptions]) -> list[str]:
        """Add one job per payload, all with the same options (and task: `queue` may be a
        `@worker.task` function); their ids, in order. A `unique_key` would make every job
        but the first a duplicate: give each its own with `enqueue`.

        Sent as ENQUEUEMANY requests of at most the server's `max_enqueue_batch` jobs,
        pipelined: each request is committed whole or not at all, so if one fails (its
        error is raised) the jobs of the others may still have been added. Every job
        carries `headers` and, when tracing, the context of one `send` span for the batch.
        """
        if options.get("unique_key") is not None:
            raise ValueError("enqueue_many takes no unique_key: one key would make every "
                             "job but the first a duplicate")
        queue, task = destination(queue, options.get("task"))
        job_options = job_fields(None, {**options, "task": task})
        payloads = list(payloads)
        with tracing.sending(queue, len(payloads), headers) as traced:
            if traced.headers:
                job_options["headers"] = traced.headers
            jobs: list[JobFields] = []
            for payload in payloads:
                job = job_options.copy()
                if payload is not None:
                    check_value(payload)
                    job["job_payload"] = payload
                jobs.append(job)
            size = self.limits.max_enqueue_batch if self.limits else DEFAULT_MAX_ENQUEUE_BATCH
            replies = await asyncio.gather(*(
                self.request(MessageType.ENQUEUEMANY,
                             {"q": queue, "jobs": jobs[start:start + size]})
                for start in range(0, len(jobs), size)))
        return [jid for reply in replies for jid in reply["jids"]]

    async def job(self, jid: str) -> Job | None:
        """The job with this id, or None when there is none."""
        reply = await self.request(MessageType.JOB, {"jid": jid})
        return Job.from_wire(reply) if reply else None

    async def jobs(self, queue: str, status: JobStatus | str, *, page: int = 1,
                   page_size: int | None = None, after: str | None = None,
                   task: str | None = None) -> JobPage:
        """One page of the queue's jobs in `status`, oldest first: page `page`, or, with
        `after` (a previous page's `next_after`), the jobs after that one, at any depth.

        With `task`, only that task's jobs, paged with `after` alone: the server reads a
        bounded number of jobs per page, so a page may hold fewer than `page_size` jobs
        (even none) while `next_after` says there is more to walk."""
        p: dict[str, object] = {"q": queue, "status": str(status), "page": page}
        if page_size is not None:
            p["page_size"] = page_size
        if after is not None:
            p["after"] = after
        if task is not None:
            p["task"] = task
        return JobPage.from_wire(await self.request(MessageType.LSJOB, p))

    async def remove_job(self, jid: str) -> None:
        """Delete a job that is not active (new, waiting, delayed or finished)."""
        await self.request(MessageType.RMJOB, {"jid": jid})

    async def retry_job(self, jid: str) -> JobStatus:
        """Put a failed job back with a fresh set of attempts; its new status."""
        return JobStatus((await self.request(MessageType.RETRY, {"jid": jid}))["status"])

    async def cancel(self, jid: str, reason: str | None = None) -> JobStatus:
        """Cancel a job that has not ended: a new, waiting or delayed one is `cancelled` at
        once (the returned status); an active one stays `active` until its worker stops
        (it is told), its lease ends or the server restarts, then ends `cancelled`. Never
        runs again. `JobStatusConflictError` for a completed or failed job."""
        p: dict[str, object] = {"jid": jid}
        if reason is not None:
            p["reason"] = reason
        return JobStatus((await self.request(MessageType.CANCEL, p))["status"])

    async def bulk(self, queue: str, status: JobStatus | str, action: str,
                   reason: str | None = None) -> int:
        """BULK `action` ("retry", "remove" or "cancel") on every job of `queue` in
        `status` that exists now, in bounded batches on the server; how many jobs it acted
        on. Sent again while the server says more remain past its per-request bound."""
        p: dict[str, object] = {"q": queue, "status": str(status), "action": action}
        if reason is not None:
            p["reason"] = reason
        total = 0
        while True:
            reply = await self.request(MessageType.BULK, p)
            total += int(reply.get("count", 0))
            if not reply.get("more"):
                return total

    async def retry_failed(self, queue: str) -> int:
        """Put every failed job of the queue back (as `retry_job`); how many."""
        return await self.bulk(queue, JobStatus.FAILED, "retry")

    async def remove_jobs(self, queue: str, status: JobStatus | str) -> int:
        """Remove every completed, failed or cancelled (`status`) job of the queue."""
        return await self.bulk(queue, status, "remove")

    async def cancel_waiting(self, queue: str, reason: str | None = None,
                             status: JobStatus | str = JobStatus.WAITING) -> int:
        """Cancel every waiting (or new, or delayed: `status`) job of the queue; how many.
        Active jobs are left alone: `cancel` them one by one."""
        return await self.bulk(queue, status, "cancel", reason)

    # -- deliveries ------------------------------------------------------------------

    async def subscribe(self, queue: str, credits: int = 0) -> str:
        """Ask for the queue's jobs, at most `credits` of them until `credit` gives more;
        the subscription id (`sid`)."""
        reply = await self.request(MessageType.SUBSCRIBE, {"q": queue, "credits": credits})
        return parse_reply_str(reply, "sid")

    async def unsubscribe(self, sid: str) -> None:
        await self.request(MessageType.UNSUBSCRIBE, {"sid": sid})

    async def credit(self, sid: str, credits: int) -> None:
        """Allow `credits` more deliveries on the subscription (an increment, > 0)."""
        await self.request(MessageType.CREDIT, {"sid": sid, "credits": credits})

    async def ack(self, delivery: Quest) -> datetime | None:
        """Confirm receipt; the lease starts. When the lease expires."""
        reply = await self.request(MessageType.ACK, _delivery(delivery))
        return parse_time(reply.get("lease_expires_at"))

    async def heartbeat(self, delivery: Quest, progress: object = None) -> datetime | None:
        """Extend the lease (JOBBEAT), optionally recording progress; when it now expires."""
        p = _delivery(delivery)
        if progress is not None:
            check_value(progress)
            p["progress"] = progress
        reply = await self.request(MessageType.JOBBEAT, p)
        return parse_time(reply.get("lease_expires_at"))

    async def log(self, delivery: Quest, *lines: str) -> LogTotals:
        """Append lines to the job's log on the server (JOBLOG; shown in `Job.logs`); the
        log's totals afterwards. Batches above the server's 100 lines per message are
        split. A line longer than the server's `max_log_line_bytes` raises ValueError."""
        if not lines:
            raise ValueError("log needs at least one line")
        limit = self.limits.max_log_line_bytes if self.limits is not None else None
        for line in lines:
            if not isinstance(line, str):
                raise TypeError(f"log lines must be str, not {type(line).__name__}")
            if limit is not None and len(line.encode()) > limit:
                raise ValueError(f"a log line is longer than the server's {limit} bytes")
        batches = [list(lines[start:start + MAX_LOG_LINES_PER_MESSAGE])
                   for start in range(0, len(lines), MAX_LOG_LINES_PER_MESSAGE)]
        # Pipelined: the server handles and commits them in the order they are sent.
        replies = await asyncio.gather(*(
            self.request(MessageType.JOBLOG, {**_delivery(delivery), "lines": batch})
            for batch in batches))
        last = replies[-1]
        return LogTotals(last.get("logs", 0), last.get("logs_dropped", 0))

    async def complete(self, delivery: Quest, result: object = None, *,
                       credit: bool = False) -> None:
        """The job succeeded; `result` is stored with it (RESULT_TOO_LARGE above the
        server's `jobs.max_result_bytes`).

        `credit=True` (also for `fail` and `release`): the server gives the subscription
        the job came on (`delivery.sid`) one credit back as it takes the outcome, at
        receipt, before the outcome is written: what `credit(delivery.sid, 1)` would do,
        without its request and reply, so the next job may come before this call returns.
        None is given if the outcome is refused (DELIVERY_STALE, RESULT_TOO_LARGE...) or
        that subscription has ended. An outcome refused STORAGE_FULL, STORAGE_UNAVAILABLE
        or INTERNAL was taken, only not written: it gave the credit, so send it again
        without `credit`."""
        p = _delivery(delivery)
        if result is not None:
            check_value(result)
            p["result"] = result
        if credit:
            p["credit"] = True
        await self.request(MessageType.COMPLETE, p)

    async def fail(self, delivery: Quest, message: str, details: object = None, *,
                   credit: bool = False) -> FailOutcome:
        """The attempt failed: the job is retried later (`delayed`) or, with no attempts
        left, `failed`. `credit=True`: give the subscription the job came on one credit
        back (see `complete`)."""
        error: dict[str, object] = {"message": message}
        if details is not None:
            check_value(details, depth=3)
            error["details"] = details
        p = {**_delivery(delivery), "error": error}
        if credit:
            p["credit"] = True
        reply = await self.request(MessageType.FAIL, p)
        return FailOutcome.from_wire(reply)

    async def release(self, delivery: Quest, *, credit: bool = False) -> None:
        """Give back a job not started: it waits again, no attempt used. `credit=True`:
        give the subscription the job came on one credit back (see `complete`)."""
        p = _delivery(delivery)
        if credit:
            p["credit"] = True
        await self.request(MessageType.RELEASE, p)

    # -- worker control --------------------------------------------------------------

    async def quiet_worker(self, worker: str) -> int:
        """Tell the workers with this id, or else this name, to take no new jobs and
        finish their running ones (needs `admin` on `*`); how many there were."""
        return await self._control_worker({"worker": worker, "action": "quiet"})

    async def stop_worker(self, worker: str, grace: timedelta | None = None) -> int:
        """Tell the workers with this id or name to give back unstarted jobs, let running
        ones finish within `grace` (None: the worker's own), and leave."""
        command: dict[str, object] = {"worker": worker, "action": "stop"}
        if grace is not None:
            command["grace_ms"] = to_ms(grace)
        return await self._control_worker(command)

    async def set_worker_concurrency(self, worker: str, concurrency: int) -> int:
        """Tell the workers with this id or name to run `concurrency` jobs at once per
        queue from now on."""
        return await self._control_worker({"worker": worker, "action": "concurrency",
                                           "concurrency": concurrency})

    async def _control_worker(self, command: dict[str, object]) -> int:
        reply = await self.request(MessageType.WORKERCTL, command)
        return int(reply.get("workers", 0))

    async def report_worker_state(self, state: str, concurrency: int | None = None) -> None:
        """Tell the server this connection's state ("running", "quiet", "stopping") and
        jobs at once per queue, which STATUS shows (the `Worker` runner does this)."""
        report: dict[str, object] = {"action": "report", "state": state}
        if concurrency is not None:
            report["concurrency"] = concurrency
        if self._cluster is not None:
            await self._cluster.broadcast(MessageType.WORKERCTL, report)  # each broker's STATUS
        else:
            await self.request(MessageType.WORKERCTL, report)

    async def goodbye(self, reason: str = "") -> None:
        """Say goodbye and wait for the server (every broker, in a cluster) to close the
        connection. Deliveries still held end as if the connection dropped."""
        payload = {"reason": reason} if reason else {}
        if self._cluster is not None:
            await self._cluster.goodbye(payload)
            return
        await self.request(MessageType.GOODBYE, payload)
        await self.wait_closed()


def _user_info(reply: Mapping[str, Any]) -> UserInfo:
    return UserInfo(name=str(reply.get("name", "")),
                    permissions=[str(p) for p in reply.get("permissions") or ()],
                    iterations=int(reply.get("iterations", 0)),
                    created_at=str(reply.get("created_at", "")))
