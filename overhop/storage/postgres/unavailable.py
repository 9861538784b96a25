"""The PostgreSQL engine's one answer when the database cannot be reached or cannot write:
STORAGE_UNAVAILABLE (PROTOCOL.md section 9).

A failover (Patroni promoting a standby), a lost quorum (Patroni demoting the primary), a
restart or a network cut all reach psycopg as one of these:
- the connection lost, or no connection to be had: `psycopg.OperationalError`, which also
  covers the server shutting down under the session (AdminShutdown 57P01, CrashShutdown
  57P02), refusing new sessions while it starts or stops (CannotConnectNow 57P03), and a
  multi-host DSN with `target_session_attrs=read-write` finding no primary;
- a session on a server that is read-only now (ReadOnlySqlTransaction 25006, an
  `InternalError`): a standby reached through a DSN without `target_session_attrs`.

A full disk (DiskFull 53100) is an `OperationalError` too, but it has its own answer
(STORAGE_FULL), so the writer tests for it first.

The message a client reads names no host or port (those are in the server's log): it says
whether the request may have taken effect. Only a write whose COMMIT was under way when the
connection broke may have; every other refused request did not.
"""

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


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached or cannot write (see the module), not a full disk."""
    return isinstance(exc, UNAVAILABLE) and not isinstance(exc, psycopg.errors.DiskFull)


def described(exc: BaseException) -> str:
    """The error's first line, for the server's log."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_refused() -> RequestError:
    """What a read that cannot be made answers (an ERR; the connection stays open)."""
    return RequestError(ErrorCode.STORAGE_UNAVAILABLE, NOT_READ)
