"""A commit whose connection broke while COMMIT was under way: did it land?

When the primary dies, or is demoted, while the writer waits for its COMMIT, the writer
cannot tell from the error whether the batch was committed. Answering "may or may not have
been stored" would be honest but costly: a dispatch that landed would leave its jobs
`active` with no delivery until the next restart. So the writer notes each batch's
transaction id before COMMIT (`transaction_id`, one short round trip), and after such a
break asks the database, on a new connection (`landed`), which with a multi-host DSN and
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
for at most `IN_DOUBT_WAIT_S`; after that the batch is answered in doubt.
"""

import time
from collections.abc import Callable

import psycopg
import psycopg.errors

from overhop.storage.postgres.unavailable import UNAVAILABLE

# Long enough for a Patroni failover with ttl 10 (measured 9.2 to 9.6 s on this kind of
# machine, design/scale-out.md) plus a connection: the writer holds every other write back
# meanwhile (they could not be written anyway), and a client that waited gets a plain answer.
IN_DOUBT_WAIT_S = 15.0
# Between two tries: a failover takes seconds, a tighter loop only adds connection attempts.
RETRY_PAUSE_S = 0.5

_ANSWERS = {"committed": True, "aborted": False}
_STATUS = "SELECT pg_xact_status(%s::xid8), pg_current_xact_id()"


def transaction_id(conn: psycopg.Connection) -> str | None:
    """The id of the transaction open on `conn`, or None when it wrote nothing (then a
    broken COMMIT loses nothing)."""
    row = conn.execute("SELECT pg_current_xact_id_if_assigned()::text").fetchone()
    return None if row is None or row[0] is None else str(row[0])


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
