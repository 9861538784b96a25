"""When the PostgreSQL engine's database cannot be reached or cannot write: which errors
mean that, what the refused requests are told (STORAGE_UNAVAILABLE, PROTOCOL.md section 9),
and how a COMMIT cut while under way is settled.

**The errors.** A failover (Patroni promoting a standby), a lost quorum (Patroni demoting
the primary), a restart or a network cut all reach psycopg as one of these:
- the connection lost, or no connection to be had: `psycopg.OperationalError`, which also
  covers the server shutting down under the session (AdminShutdown 57P01, CrashShutdown
  57P02), refusing new sessions while it starts or stops (CannotConnectNow 57P03), and a
  multi-host DSN with `target_session_attrs=read-write` finding no primary;
- a session on a server that is read-only now (ReadOnlySqlTransaction 25006, an
  `InternalError`): a standby reached through a DSN without `target_session_attrs`.
A full disk (DiskFull 53100) is an `OperationalError` too, but it has its own answer
(STORAGE_FULL), so the writer tests for it first. The message a client reads names no host
or port (those are in the server's log).

**A COMMIT cut while under way.** When the primary dies, or is demoted, while the writer
waits for its COMMIT, the error cannot tell whether the batch was committed. Answering "may
or may not have been stored" would be honest but costly: a dispatch that landed would leave
its jobs `active` with no delivery until the next restart. So the writer notes each batch's
transaction id before COMMIT (`commit`, one short round trip more), and after such a break
asks the database, on a new connection (`landed`), which with a multi-host DSN and
`target_session_attrs=read-write` is the new primary after a failover:
- `pg_xact_status` says `committed`, or `aborted`; an id "in the future" was never seen by
  this server (its WAL did not reach the standby that was promoted): not committed;
- the question is asked in a transaction that takes an id of its own, so its COMMIT waits
  for synchronous replication like any other (with `synchronous_commit = on`): once it
  returns, a `committed` found is replicated as far as every acknowledged write is. Without
  that wait, an answer read on a primary about to be demoted could acknowledge a commit
  that the promoted standby never had.
While the database cannot be reached, or still runs the old session's transaction (`in
progress`: the old server still waits on it), the question is asked again after a pause,
for at most `IN_DOUBT_WAIT_S`; after that the batch is answered in doubt (COMMIT_IN_DOUBT).
"""

import time
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.errors

from overhop.errors import ErrorCode, RequestError

UNAVAILABLE: tuple[type[psycopg.Error], ...] = (psycopg.OperationalError,
                                                psycopg.errors.ReadOnlySqlTransaction)

NOT_WRITTEN = ("storage unavailable: the database cannot be reached or cannot write now; "
               "nothing was written, try again")
COMMIT_IN_DOUBT = ("storage unavailable: the connection to the database broke during the "
                   "commit; the write may or may not have been stored (as after a crash)")
NOT_READ = "storage unavailable: the database cannot be reached now; try again"

# Long enough for a Patroni failover with ttl 10 (measured 9.2 to 9.6 s on this kind of
# machine, design/scale-out.md) plus a connection: the writer holds every other write back
# meanwhile (they could not be written anyway), and a client that waited gets a plain answer.
IN_DOUBT_WAIT_S = 15.0
# Between two tries: a failover takes seconds, a tighter loop only adds connection attempts.
RETRY_PAUSE_S = 0.5

_ANSWERS = {"committed": True, "aborted": False}
_STATUS = "SELECT pg_xact_status(%s::xid8), pg_current_xact_id()"


def described(exc: BaseException) -> str:
    """The error's first line, for the server's log."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_refused() -> RequestError:
    """What a read that cannot be made answers (an ERR; the connection stays open)."""
    return RequestError(ErrorCode.STORAGE_UNAVAILABLE, NOT_READ)


class CommitInDoubt(Exception):
    """The connection broke while COMMIT of transaction `xid` was under way: the batch,
    whose outcomes were `outcomes`, may have landed."""

    def __init__(self, reason: str, xid: str, outcomes: list[Any]) -> None:
        super().__init__(reason)
        self.xid = xid
        self.outcomes = outcomes
        # Cluster mode: the queue epochs the writer holds if the batch landed (its claims
        # and releases with it), set by the writer as the batch fails.
        self.epochs: dict[str, int] | None = None


# What the writer answers STORAGE_UNAVAILABLE (a full disk, caught before, aside).
WRITE_UNAVAILABLE: tuple[type[Exception], ...] = (*UNAVAILABLE, CommitInDoubt)


def commit(conn: psycopg.Connection, outcomes: list[Any]) -> None:
    """COMMIT the transaction open on `conn`, whose operations had `outcomes`; raises
    CommitInDoubt if the connection broke while it was under way."""
    row = conn.execute("SELECT pg_current_xact_id_if_assigned()::text").fetchone()
    xid = None if row is None or row[0] is None else str(row[0])
    try:
        conn.commit()
    except UNAVAILABLE as exc:
        if not conn.broken or xid is None:
            raise  # the server answered, or nothing was written: nothing landed
        raise CommitInDoubt(described(exc), xid, outcomes) from exc


def landed(connect: Callable[[], psycopg.Connection], xid: str,
           retry_on: tuple[type[Exception], ...], wait_s: float = IN_DOUBT_WAIT_S
           ) -> bool | None:
    """Whether transaction `xid` committed: True, False, or None when the database could
    not say within `wait_s` (see the module). `connect` gives a connection (not in
    autocommit), making a new one when the last broke; `retry_on` are the errors of
    `connect`, besides the database's own unavailability, that mean "try again later"."""
    deadline = time.monotonic() + wait_s
    errors: tuple[type[Exception], ...] = (*UNAVAILABLE, *retry_on)
    while True:
        answer = _ask(connect, xid, errors)
        if answer is not None or time.monotonic() >= deadline:
            return answer
        time.sleep(RETRY_PAUSE_S)


def _ask(connect: Callable[[], psycopg.Connection], xid: str,
         errors: tuple[type[Exception], ...]) -> bool | None:
    """One try: True or False if the database knows, None if it cannot say yet."""
    try:
        conn = connect()
        try:
            row = conn.execute(_STATUS, (xid,)).fetchone()
        except psycopg.errors.InvalidParameterValue:  # "in the future": never seen here
            conn.rollback()
            return False
        conn.commit()  # waits for synchronous replication (see the module)
    except errors:
        return None  # no primary yet, or it cannot write: the caller asks again
    status = "" if row is None else str(row[0])
    return _ANSWERS.get(status)  # "in progress": the old session still runs it
