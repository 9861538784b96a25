"""The self-debug walk: every client message type of the protocol, in an order a real
client would use them, each answer checked against what `protocol/PROTOCOL.md` says.

Two queues are used: the main one goes through pause, settings, enqueues of four jobs,
a delivery that completes (with ACK, JOBBEAT, JOBLOG), one that fails, is retried by the
server (a second QUEST, attempt 2), released (with `credit`: the RELEASE gives its credit
back, no CREDIT needed), failed for good and RETRYed, then delivered
again and CANCELled while it runs (an ABORT push; FAIL ends it cancelled), a delayed job
cancelled, the cancelled jobs removed with BULK, then a removal, a clear and an
obliteration; the scratch one is subscribed to and removed with RMQUEUE,
which ends that subscription with a SUBEND push. One request is
wrong on purpose (an ENQUEUE into a queue that does not exist) to see an ERR. A schedule
on the main queue is added, listed, paused, resumed and removed (schedule_steps.py). With a
`Login` (selfdebug/login.py), the walk starts with a SCRAM login and ends with the user
messages.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from overhop_client.messages import MessageType
from overhop_client.times import format_time

from selfdebug import checks
from selfdebug.login import Login, login_steps, user_steps
from selfdebug.schedule_steps import schedule_steps
from selfdebug.steps import State, Step

LIMIT_KEYS = ("heartbeat_interval_ms", "stale_after_ms", "ack_timeout_ms",
              "max_envelope_size_bytes", "max_job_payload_bytes", "max_result_bytes",
              "max_log_line_bytes")
STATUS_SECTIONS = ("application", "memory", "pools", "storage", "queues")
FIRST_PAYLOAD: dict[str, Any] = {"n": 1, "ratio": 0.5, "raw": b"\x00\x01", "tags": ["a", "b"]}
FAILING_PAYLOAD = "fail me"
TASK = "self_debug.first"  # the first job's task: stored, shown by JOB, carried in QUEST
RESULT = {"ok": True, "took_ms": 1.5}
PROGRESS = {"done": 0.5}
LOG_LINES = ["self-debug: started", "self-debug: half way"]
FAILURE = {"message": "self-debug: failing on purpose", "details": {"attempt": "any"}}
# A short retry interval, so the server's retry (a second QUEST) comes at once.
RETRY_INTERVAL_MS = 20
MAX_ATTEMPTS = 2
DELAY_MS = 3_600_000
CONCURRENCY = 10
RATE_LIMIT = 1000
RATE_WINDOW_MS = 1000
MISSING_QUEUE = "self-debug-no-such-queue"
CANCEL_REASON = "self-debug: cancelling on purpose"


def protocol_walk(queue: str = "self-debug", scratch: str = "self-debug-scratch",
                  login: Login | None = None) -> list[Step]:
    """The steps of the walk, using the queues `queue` and `scratch` (which must not exist).
    With `login` (a user the server has), the walk logs in first and walks the user
    messages before STATUS and GOODBYE; without, it expects an open server."""

    def q(state: State) -> dict[str, Any]:
        return {"q": queue}

    def delivery(state: State) -> dict[str, Any]:
        return {"did": state["did"], "jid": state["jid"]}

    def job(key: str) -> Any:
        return lambda state: {"jid": state[key]}

    # -- checks ----------------------------------------------------------------------

    def registered(state: State, p: dict[str, Any]) -> None:
        state["wid"] = checks.text(p, "wid")
        limits = checks.mapping(p, "limits")
        for key in LIMIT_KEYS:
            checks.integer(limits, key, low=1)

    def queue_created(key: str) -> Any:
        def check(state: State, p: dict[str, Any]) -> None:
            state[key] = checks.text(p, "qid")
        return check

    def queue_record(expected_state: str) -> Any:
        def check(state: State, p: dict[str, Any]) -> None:
            checks.equal(checks.text(p, "id"), state["qid"], "id")
            checks.equal(p.get("name"), queue, "name")
            checks.equal(p.get("state"), expected_state, "state")
            checks.equal(p.get("system"), False, "system")
            checks.time(p, "created_at")
            config = checks.mapping(p, "config")
            checks.equal(config.get("max_attempts"), MAX_ATTEMPTS, "config.max_attempts")
            checks.equal(config.get("retry_interval_ms"), RETRY_INTERVAL_MS,
                         "config.retry_interval_ms")
        return check

    def queue_list(state: State, p: dict[str, Any]) -> None:
        names = {record["name"] for record in checks.field(p, "queues")}
        missing = {queue, scratch, "_system"} - names
        if missing:
            raise checks.Mismatch(f"queues: {sorted(missing)} not listed (got {sorted(names)})")

    def settings_changed(state: State, p: dict[str, Any]) -> None:
        config = checks.mapping(p, "config")
        for key, value in (("concurrency_limit", CONCURRENCY), ("rate_limit", RATE_LIMIT),
                           ("rate_window_ms", RATE_WINDOW_MS), ("max_attempts", MAX_ATTEMPTS)):
            checks.equal(config.get(key), value, f"config.{key}")

    def enqueued(key: str) -> Any:
        def check(state: State, p: dict[str, Any]) -> None:
            jid = checks.text(p, "jid")
            if not jid.startswith(f"{queue}:"):
                raise checks.Mismatch(f"jid: expected '{queue}:<uuid>', got {jid!r}")
            state[key] = jid
        return check

    def job_record(key: str, status: str, **expected: Any) -> Any:
        def check(state: State, p: dict[str, Any]) -> None:
            checks.keys(p, "uuid", "jid", "queue_name", "payload", "status",
                        "execution_start_at", "max_attempts", "retry_interval_ms",
                        "lease_ms", "backoff", "overrides", "created_at", "finished_at",
                        "result", "history", "logs", "logs_dropped", "blocked_by", "runtime",
                        "task")
            checks.equal(p["jid"], state[key], "jid")
            checks.equal(p["queue_name"], queue, "queue_name")
            checks.equal(p["status"], status, "status")
            checks.time(p, "execution_start_at")
            for name, value in expected.items():
                checks.equal(p.get(name), value, name)
        return check

    def waiting_job(key: str, payload: Any, task: str | None = None) -> Any:
        return job_record(key, "waiting", payload=payload, task=task, max_attempts=MAX_ATTEMPTS,
                          overrides={}, history=[], logs=[], logs_dropped=0,
                          blocked_by={"reason": "no_worker_credit", "subscriptions": 0})

    def delayed_job(key: str, *, at_scheduled_time: bool) -> Any:
        base = job_record(key, "delayed")

        def check(state: State, p: dict[str, Any]) -> None:
            base(state, p)
            checks.equal(p.get("blocked_by"), {"reason": "scheduled",
                                               "until": p["execution_start_at"]},
                         "blocked_by")
            if at_scheduled_time:
                checks.equal(p["execution_start_at"], state["scheduled_at"],
                             "execution_start_at")
        return check

    def pong(state: State, p: dict[str, Any]) -> None:
        checks.time(p, "server_time")

    def missing_queue(state: State, p: dict[str, Any]) -> None:
        checks.equal(checks.text(p, "code"), "QUEUE_NOT_FOUND", "code")
        checks.text(p, "msg")

    def listed(state: State, p: dict[str, Any]) -> None:
        checks.equal(p.get("q"), queue, "q")
        checks.equal(p.get("status"), "waiting", "status")
        checks.equal(p.get("page"), 1, "page")
        checks.equal(p.get("truncated"), False, "truncated")
        checks.equal(p.get("next_after"), None, "next_after (no more jobs)")
        checks.integer(p, "page_size", low=1)
        jids = [record["jid"] for record in checks.field(p, "jobs")]
        checks.equal(jids, [state["jid_a"], state["jid_b"]], "jobs (oldest first)")

    def batch_enqueued(state: State, p: dict[str, Any]) -> None:
        jids = checks.field(p, "jids")
        checks.equal(type(jids) is list and len(jids) == 2, True, "two jids")
        checks.equal(jids == sorted(jids) and all(
            type(jid) is str and jid.startswith(f"{queue}:") for jid in jids), True,
            "jids of the queue, in creation order")

    def counted(state: State, p: dict[str, Any]) -> None:
        checks.equal(p.get("q"), queue, "q")
        checks.equal(checks.mapping(p, "stats"), {"new": 0, "waiting": 2, "delayed": 4,
                                                  "active": 0, "completed": 0, "failed": 0,
                                                  "cancelled": 0},
                     "stats")
        checks.equal(checks.field(p, "concurrency"), {"active": 0, "limit": CONCURRENCY},
                     "concurrency")
        checks.equal(checks.field(p, "rate"), {"limit": RATE_LIMIT, "window_ms": RATE_WINDOW_MS,
                                               "started_in_window": 0}, "rate")
        checks.equal(checks.field(p, "subscriptions"), 0, "subscriptions")
        checks.equal(checks.field(p, "credits"), 0, "credits")
        checks.equal(checks.field(p, "state"), "active", "state")
        checks.integer(p, "oldest_waiting_age_ms")

    def subscribed(state: State, p: dict[str, Any]) -> None:
        state["sid"] = checks.text(p, "sid")

    def quest(key: str, attempt: int, payload: Any, task: str | None = None) -> Any:
        def check(state: State, p: dict[str, Any]) -> None:
            state["did"] = checks.text(p, "did")
            checks.equal(p.get("sid"), state["sid"], "sid")
            checks.equal(p.get("jid"), state[key], "jid")
            checks.equal(p.get("q"), queue, "q")
            checks.equal(p.get("attempt"), attempt, "attempt")
            checks.equal(p.get("max_attempts"), MAX_ATTEMPTS, "max_attempts")
            checks.integer(p, "lease_ms", low=100)
            checks.integer(p, "ack_timeout_ms", low=100)
            checks.equal(checks.field(p, "job_payload"), payload, "job_payload")
            checks.equal(p.get("task"), task, "task")
            state["jid"] = state[key]
        return check

    def lease(state: State, p: dict[str, Any]) -> None:
        checks.time(p, "lease_expires_at")

    def logged(state: State, p: dict[str, Any]) -> None:
        checks.equal(p, {"logs": len(LOG_LINES), "logs_dropped": 0}, "payload")

    def completed_job(state: State, p: dict[str, Any]) -> None:
        job_record("jid_a", "completed", result=RESULT, blocked_by=None)(state, p)
        checks.time(p, "finished_at")
        checks.equal([entry.get("line") for entry in p["logs"]], LOG_LINES, "logs")
        for entry in p["logs"]:
            checks.time(entry, "at")
        history = p["history"]
        checks.equal([(h.get("attempt"), h.get("outcome"), h.get("counted")) for h in history],
                     [(1, "completed", True)], "history")

    def failed_with_retry(state: State, p: dict[str, Any]) -> None:
        checks.equal(p.get("status"), "delayed", "status")
        checks.equal(p.get("attempts_so_far"), 1, "attempts_so_far")
        checks.time(p, "retry_at")

    def failed_for_good(state: State, p: dict[str, Any]) -> None:
        checks.equal(p, {"status": "failed", "attempts_so_far": MAX_ATTEMPTS}, "payload")

    def retried_job(state: State, p: dict[str, Any]) -> None:
        job_record("jid_b", "waiting")(state, p)
        checks.equal([(h.get("attempt"), h.get("outcome"), h.get("counted"))
                      for h in p["history"]],
                     [(1, "failed", True), (2, "released", False), (2, "failed", True)],
                     "history")
        checks.equal(p["history"][0].get("error"), FAILURE, "history[0].error")
        checks.equal(p["runtime"].get("attempts_so_far"), 0, "runtime.attempts_so_far")

    def status_report(state: State, p: dict[str, Any]) -> None:
        checks.keys(p, *STATUS_SECTIONS)
        checks.equal(checks.mapping(p, "application").get("name"), "overhop",
                     "application.name")
        names = {record.get("name") for record in p["queues"]}
        if queue in names or scratch in names or "_system" not in names:
            raise checks.Mismatch(f"queues: expected _system without {queue} and {scratch}, "
                                  f"got {sorted(names)}")

    def schedule(state: State) -> dict[str, Any]:
        state["scheduled_at"] = format_time(datetime.now(UTC) + timedelta(hours=2))
        return {"q": queue, "scheduled_at": state["scheduled_at"]}

    def empty(state: State, p: dict[str, Any]) -> None:
        checks.empty(p)

    ok = MessageType.OK
    steps = [
        # Session (section 4).
        Step("HELLO", MessageType.HELLO, MessageType.HI, "1 HELLO: HI {}", check=empty),
        Step("REGISTER", MessageType.REGISTER, ok, "2 REGISTER: OK {wid, limits}",
             lambda state: {"name": "overhop-self-debug", "labels": {"tool": "self-debug"}},
             registered),
        Step("PING", MessageType.PING, MessageType.PONG, "3 PING: PONG {server_time}",
             check=pong),
        Step("ROUTES", MessageType.ROUTES, ok,
             "50 ROUTES: OK {node: nil, nodes: {}, queues: {}} outside cluster mode",
             check=lambda state, p: checks.equal(p, {"node": None, "nodes": {}, "queues": {}},
                                                 "routes")),
        # Queues.
        Step("ADDQUEUE", MessageType.ADDQUEUE, ok, "9 ADDQUEUE: OK {qid}",
             lambda state: {"name": queue, "config": {
                 "max_attempts": MAX_ATTEMPTS, "retry_interval_ms": RETRY_INTERVAL_MS}},
             queue_created("qid")),
        Step("ADDQUEUE (scratch queue, for RMQUEUE)", MessageType.ADDQUEUE, ok,
             "9 ADDQUEUE: OK {qid}", lambda state: {"name": scratch},
             queue_created("scratch_qid")),
        Step("QUEUE", MessageType.QUEUE, ok, "4 QUEUE: OK queue record (section 8)", q,
             queue_record("active")),
        Step("LSQUEUE", MessageType.LSQUEUE, ok, "5 LSQUEUE: OK {queues}", check=queue_list),
        Step("PAUSE", MessageType.PAUSE, ok, "12 PAUSE: OK {}", q, empty),
        Step("QUEUE (paused)", MessageType.QUEUE, ok, "12 PAUSE: state paused", q,
             queue_record("paused")),
        Step("RESUME", MessageType.RESUME, ok, "13 RESUME: OK {}", q, empty),
        Step("SETQUEUE", MessageType.SETQUEUE, ok, "26 SETQUEUE: OK {config} (all settings)",
             lambda state: {"q": queue, "config": {
                 "concurrency_limit": CONCURRENCY, "rate_limit": RATE_LIMIT,
                 "rate_window_ms": RATE_WINDOW_MS}}, settings_changed),
        # Jobs: each ENQUEUE followed by JOB on its jid.
        Step("ENQUEUE (a job to complete, with a task)", MessageType.ENQUEUE, ok,
             "14 ENQUEUE: OK {jid}",
             lambda state: {"q": queue, "job_payload": FIRST_PAYLOAD, "task": TASK},
             enqueued("jid_a")),
        Step("JOB (waiting, no worker yet)", MessageType.JOB, ok,
             "15 JOB: OK job record (section 8), its task, blocked_by no_worker_credit",
             job("jid_a"), waiting_job("jid_a", FIRST_PAYLOAD, TASK)),
        Step("ENQUEUE (a job to fail)", MessageType.ENQUEUE, ok, "14 ENQUEUE: OK {jid}",
             lambda state: {"q": queue, "job_payload": FAILING_PAYLOAD}, enqueued("jid_b")),
        Step("JOB (waiting)", MessageType.JOB, ok, "15 JOB: OK job record", job("jid_b"),
             waiting_job("jid_b", FAILING_PAYLOAD)),
        Step("ENQUEUE (delay_ms)", MessageType.ENQUEUE, ok, "14 ENQUEUE: OK {jid}",
             lambda state: {"q": queue, "delay_ms": DELAY_MS}, enqueued("jid_c")),
        Step("JOB (delayed, scheduled)", MessageType.JOB, ok,
             "15 JOB: delayed, blocked_by scheduled until its start", job("jid_c"),
             delayed_job("jid_c", at_scheduled_time=False)),
        Step("ENQUEUE (scheduled_at)", MessageType.ENQUEUE, ok, "14 ENQUEUE: OK {jid}",
             schedule, enqueued("jid_d")),
        Step("JOB (delayed until scheduled_at)", MessageType.JOB, ok,
             "15 JOB: execution_start_at = scheduled_at", job("jid_d"),
             delayed_job("jid_d", at_scheduled_time=True)),
        Step("ENQUEUE (into a missing queue: ERR)", MessageType.ENQUEUE, MessageType.ERR,
             "14 ENQUEUE: ERR QUEUE_NOT_FOUND", lambda state: {"q": MISSING_QUEUE},
             missing_queue),
        Step("ENQUEUEMANY (two delayed jobs, one commit)", MessageType.ENQUEUEMANY, ok,
             "30 ENQUEUEMANY: OK {jids}, in order",
             lambda state: {"q": queue, "jobs": [{"delay_ms": DELAY_MS}, {"delay_ms": DELAY_MS}]},
             batch_enqueued),
        Step("LSJOB", MessageType.LSJOB, ok, "17 LSJOB: OK {q, status, page, page_size, "
             "truncated, next_after, jobs}", lambda state: {"q": queue, "status": "waiting"},
             listed),
        Step("QSTATS", MessageType.QSTATS, ok, "18 QSTATS: OK {q, stats, concurrency, rate, "
             "subscriptions, credits, oldest_waiting_age_ms, state}", q, counted),
        *schedule_steps(queue),
        # Delivery (section 6).
        Step("SUBSCRIBE", MessageType.SUBSCRIBE, ok, "6 SUBSCRIBE: OK {sid}",
             lambda state: {"q": queue, "credits": 1}, subscribed),
        Step("QUEST (received)", None, MessageType.QUEST, "106 QUEST push, attempt 1",
             check=quest("jid_a", 1, FIRST_PAYLOAD, TASK)),
        Step("ACK", MessageType.ACK, ok, "19 ACK: OK {lease_expires_at}", delivery, lease),
        Step("JOBBEAT", MessageType.JOBBEAT, ok, "22 JOBBEAT: OK {lease_expires_at}",
             lambda state: {**delivery(state), "progress": PROGRESS}, lease),
        Step("JOBLOG", MessageType.JOBLOG, ok, "27 JOBLOG: OK {logs, logs_dropped}",
             lambda state: {**delivery(state), "lines": LOG_LINES}, logged),
        Step("COMPLETE", MessageType.COMPLETE, ok, "20 COMPLETE: OK {}",
             lambda state: {**delivery(state), "result": RESULT}, empty),
        Step("JOB (completed, with its log)", MessageType.JOB, ok,
             "15 JOB: completed, result, logs, history [completed, counted]", job("jid_a"),
             completed_job),
        Step("WATCH (the completed job)", MessageType.WATCH, ok, "40 WATCH: OK {}",
             job("jid_a"), empty),
        Step("RESULT (received)", None, MessageType.RESULT,
             "110 RESULT push {jid, status: completed, result}",
             check=lambda state, p: checks.equal(
                 p, {"jid": state["jid_a"], "status": "completed", "result": RESULT},
                 "payload")),
        Step("UNWATCH", MessageType.UNWATCH, ok, "41 UNWATCH: OK {}", job("jid_b"), empty),
        Step("CREDIT", MessageType.CREDIT, ok, "8 CREDIT: OK {}",
             lambda state: {"sid": state["sid"], "credits": 1}, empty),
        Step("QUEST (the job to fail)", None, MessageType.QUEST, "106 QUEST push, attempt 1",
             check=quest("jid_b", 1, FAILING_PAYLOAD)),
        Step("FAIL", MessageType.FAIL, ok, "21 FAIL: OK {status: delayed, attempts_so_far, "
             "retry_at}", lambda state: {**delivery(state), "error": FAILURE},
             failed_with_retry),
        Step("CREDIT (for the retry)", MessageType.CREDIT, ok, "8 CREDIT: OK {}",
             lambda state: {"sid": state["sid"], "credits": 1}, empty),
        Step("QUEST (the retry: attempt 2)", None, MessageType.QUEST,
             "106 QUEST push after the backoff, attempt 2",
             check=quest("jid_b", 2, FAILING_PAYLOAD)),
        # The RELEASE gives its credit back itself (`credit`: no CREDIT after it).
        Step("RELEASE (credit: true)", MessageType.RELEASE, ok, "25 RELEASE: OK {}",
             lambda state: {**delivery(state), "credit": True}, empty),
        Step("QUEST (released job again: still attempt 2)", None, MessageType.QUEST,
             "25 RELEASE uses no attempt; `credit` gave one credit back",
             check=quest("jid_b", 2, FAILING_PAYLOAD)),
        Step("FAIL (last attempt)", MessageType.FAIL, ok,
             "21 FAIL: OK {status: failed, attempts_so_far}",
             lambda state: {**delivery(state), "error": FAILURE}, failed_for_good),
        Step("RETRY", MessageType.RETRY, ok, "24 RETRY: OK {status: waiting}", job("jid_b"),
             lambda state, p: checks.equal(p, {"status": "waiting"}, "payload")),
        Step("JOB (retried, with its history)", MessageType.JOB, ok,
             "15 JOB: history entries with counted", job("jid_b"), retried_job),
        Step("CREDIT (for the job to cancel)", MessageType.CREDIT, ok, "8 CREDIT: OK {}",
             lambda state: {"sid": state["sid"], "credits": 1}, empty),
        Step("QUEST (the retried job: attempt 1)", None, MessageType.QUEST,
             "24 RETRY gives a fresh set of attempts", check=quest("jid_b", 1, FAILING_PAYLOAD)),
        Step("CANCEL (the active job)", MessageType.CANCEL, ok,
             "42 CANCEL: OK {status: active}, its worker is told",
             lambda state: {"jid": state["jid_b"], "reason": CANCEL_REASON},
             lambda state, p: checks.equal(p, {"status": "active"}, "payload")),
        Step("ABORT (received)", None, MessageType.ABORT, "111 ABORT push {jid, did, reason}",
             check=lambda state, p: checks.equal(p, {
                 "jid": state["jid_b"], "did": state["did"], "reason": CANCEL_REASON},
                 "payload")),
        Step("FAIL (after ABORT)", MessageType.FAIL, ok,
             "42 CANCEL: the attempt's end ends the job cancelled",
             lambda state: {**delivery(state), "error": {"message": "cancelled"}},
             lambda state, p: checks.equal(p, {"status": "cancelled", "attempts_so_far": 1},
                                           "payload")),
        Step("CANCEL (a delayed job)", MessageType.CANCEL, ok,
             "42 CANCEL: OK {status: cancelled} at once", job("jid_d"),
             lambda state, p: checks.equal(p, {"status": "cancelled"}, "payload")),
        Step("BULK (remove the cancelled jobs)", MessageType.BULK, ok,
             "43 BULK: OK {count, more}",
             lambda state: {"q": queue, "status": "cancelled", "action": "remove"},
             lambda state, p: checks.equal(p, {"count": 2, "more": False}, "payload")),
        Step("RMJOB", MessageType.RMJOB, ok, "16 RMJOB: OK {}", job("jid_c"), empty),
        Step("JOB (removed: OK {})", MessageType.JOB, ok, "15 JOB: OK {} when no such job",
             job("jid_c"), empty),
        Step("CLEARQUEUE", MessageType.CLEARQUEUE, ok,
             "28 CLEARQUEUE: OK {removed: {new, waiting, delayed}}", q,
             lambda state, p: checks.equal(p, {"removed": {"new": 0, "waiting": 0,
                                                           "delayed": 2}}, "payload")),
        Step("UNSUBSCRIBE", MessageType.UNSUBSCRIBE, ok, "7 UNSUBSCRIBE: OK {}",
             lambda state: {"sid": state["sid"]}, empty),
        Step("OBLITERATE", MessageType.OBLITERATE, ok, "29 OBLITERATE: OK {removed}",
             lambda state: {"q": queue, "force": False},
             lambda state, p: checks.equal(p, {"removed": 1}, "payload")),
        Step("QUEUE (obliterated: OK {})", MessageType.QUEUE, ok,
             "4 QUEUE: OK {} when no such queue", q, empty),
        Step("SUBSCRIBE (scratch queue, no credits)", MessageType.SUBSCRIBE, ok,
             "6 SUBSCRIBE: OK {sid}", lambda state: {"q": scratch, "credits": 0},
             lambda state, p: state.update(scratch_sid=checks.text(p, "sid"))),
        Step("RMQUEUE", MessageType.RMQUEUE, ok, "11 RMQUEUE: OK {}",
             lambda state: {"q": scratch}, empty),
        Step("SUBEND (its queue was removed)", None, MessageType.SUBEND,
             "108 SUBEND push {sid, q, reason: queue_removed}",
             check=lambda state, p: checks.equal(p, {
                 "sid": state["scratch_sid"], "q": scratch, "reason": "queue_removed"},
                 "payload")),
        Step("WORKERCTL (a report of itself)", MessageType.WORKERCTL, ok, "44 WORKERCTL: OK {}",
             lambda state: {"action": "report", "state": "running", "concurrency": 1}, empty),
        Step("WORKERCTL (concurrency, to itself by id)", MessageType.WORKERCTL, ok,
             "44 WORKERCTL: OK {workers: 1}",
             lambda state: {"worker": state["wid"], "action": "concurrency", "concurrency": 2},
             lambda state, p: checks.equal(p, {"workers": 1}, "payload")),
        Step("CONTROL (the command, pushed)", None, MessageType.CONTROL,
             "112 CONTROL push {action, concurrency}",
             check=lambda state, p: checks.equal(
                 p, {"action": "concurrency", "concurrency": 2}, "payload")),
        Step("WORKERCTL (no such worker: ERR)", MessageType.WORKERCTL, MessageType.ERR,
             "44 WORKERCTL: ERR WORKER_NOT_FOUND",
             lambda state: {"worker": "self-debug-nobody", "action": "quiet"},
             lambda state, p: checks.equal(p.get("code"), "WORKER_NOT_FOUND", "code")),
        Step("STATUS", MessageType.STATUS, ok,
             "10 STATUS: OK {application, memory, pools, storage, queues}",
             check=status_report),
        Step("GOODBYE", MessageType.GOODBYE, ok, "23 GOODBYE: OK {}, then the server closes",
             lambda state: {"reason": "self-debug done"}, empty, then_closed=True),
    ]
    if login is None:
        return steps
    return [*login_steps(login), *steps[1:-2], *user_steps(login), *steps[-2:]]
