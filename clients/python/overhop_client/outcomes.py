"""Waiting for a job's final outcome without polling: WATCH and RESULT.

`Outcomes` keeps one future per job this connection waits for; the server pushes RESULT
once per watch and the future resolves with the job's result, or with `JobFailedError`,
`JobCancelledError` or `JobRemovedError`. A RESULT that arrives before anyone awaits it
(ENQUEUE's OK and the RESULT in one read) is kept in its future until `wait` takes it.
"""

import asyncio
from typing import Any

from overhop_client.jobs import JobAttempt


class JobFailedError(Exception):
    """The job failed for good: no attempt left, or a failure that needs no retry.

    `error` is the last attempt's error (`{message, details?}`, None when that attempt
    ended without one, e.g. its lease expired); `history` is every attempt."""

    def __init__(self, jid: str, attempts_so_far: int, error: dict[str, Any] | None,
                 history: list[JobAttempt]) -> None:
        message = (error or {}).get("message") or (
            history[-1].outcome if history else "failed")
        super().__init__(f"job {jid} failed after {attempts_so_far} attempt(s): {message}")
        self.jid = jid
        self.attempts_so_far = attempts_so_far
        self.error = error
        self.history = history


class JobRemovedError(Exception):
    """The job was removed (RMJOB, a cleared or obliterated queue) before it ended."""

    def __init__(self, jid: str) -> None:
        super().__init__(f"job {jid} was removed before it ended")
        self.jid = jid


class JobCancelledError(Exception):
    """The job was cancelled (CANCEL, or a BULK cancel) before it completed; `reason` says
    why, as the canceller gave it."""

    def __init__(self, jid: str, reason: str) -> None:
        super().__init__(f"job {jid} was cancelled: {reason}")
        self.jid = jid
        self.reason = reason


class Outcomes:
    """The futures of the jobs one connection watches."""

    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[Any]] = {}

    def future(self, jid: str) -> "asyncio.Future[Any]":
        """The job's outcome, to await; made on first use (by a waiter or a RESULT)."""
        found = self._futures.get(jid)
        if found is None:
            found = self._futures[jid] = asyncio.get_running_loop().create_future()
        return found

    def arrived(self, payload: dict[str, Any]) -> None:
        """A RESULT push."""
        jid = payload.get("jid")
        if not isinstance(jid, str):
            return
        future = self.future(jid)
        if future.done():
            return
        status = payload.get("status")
        if status == "completed":
            future.set_result(payload.get("result"))
        elif status == "failed":
            history = [JobAttempt.from_wire(entry) for entry in payload.get("history") or ()]
            future.set_exception(JobFailedError(jid, int(payload.get("attempts_so_far", 0)),
                                                payload.get("error"), history))
        elif status == "cancelled":
            future.set_exception(JobCancelledError(jid, str(payload.get("reason") or "")))
        else:
            future.set_exception(JobRemovedError(jid))

    def forget(self, jid: str) -> None:
        future = self._futures.pop(jid, None)
        if future is not None and future.done() and not future.cancelled():
            future.exception()  # seen: nobody will await it now

    def lost(self, error: BaseException) -> None:
        """The connection closed: every waiter gets `error` (the watches ended with it)."""
        for future in self._futures.values():
            if not future.done():
                future.set_exception(error)
        self._futures.clear()
