"""SIGKILL in the middle of a run of jobs, restart on the same storage, finish the run.

Every job whose ENQUEUE was answered OK must end `completed` exactly once (one `completed`
entry in its history), whatever the crash cut short; a job that was out with a worker
when the server died shows the `server_restart` outcome (PROTOCOL.md section 6, "Server
restart"); and the counters agree.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.postgres import storage_engine  # noqa: F401  (both engines)
from tests.support.server_process import ServerProcess
from tests.support.shared_connection import SharedConnection

SUBSCRIBE, CREDIT, ADDQUEUE, ENQUEUE, JOB, QSTATS = 6, 8, 9, 14, 15, 18
ACK, COMPLETE = 19, 20
OK, QUEST = 101, 106

JOBS = 400
WORKERS = 4
CREDITS = 10
STATUSES = ("new", "waiting", "delayed", "active", "completed", "failed", "cancelled")
REPLY_TIMEOUT_S = 20.0
RUN_TIMEOUT_S = 90.0


@dataclass
class Run:
    """What the workers of one server process saw."""

    quests: dict[str, list[str]] = field(default_factory=dict)  # jid -> dids received

    def received(self, quest: dict[str, Any]) -> None:
        self.quests.setdefault(quest["jid"], []).append(quest["did"])
    complete_sent: dict[str, str] = field(default_factory=dict)  # jid -> did, no OK yet
    completed: dict[str, str] = field(default_factory=dict)  # jid -> did answered OK


async def work(port: int, name: str, run: Run, stop: Callable[[], bool],
               on_complete: Callable[[], None] = lambda: None) -> None:
    """One worker: ACK, COMPLETE, one credit back, job after job, until the connection
    closes or `stop()` says the run is over."""
    conn = await SharedConnection.open(port, name, run.received)
    await conn.ok(SUBSCRIBE, {"q": "crash", "credits": CREDITS})
    try:
        while not stop():
            quest = await conn.quests.get()
            if quest is None:
                return
            did, jid = quest["did"], quest["jid"]
            await conn.ok(ACK, {"did": did, "jid": jid})
            run.complete_sent[jid] = did
            await conn.ok(COMPLETE, {"did": did, "jid": jid, "result": {"by": name}})
            del run.complete_sent[jid]
            run.completed[jid] = did
            on_complete()
            await conn.ok(CREDIT, {"sid": quest["sid"], "credits": 1})
    except ConnectionError:
        return
    finally:
        await conn.close()


def test_sigkill_mid_run_loses_and_duplicates_nothing(
        start_server: Callable[..., ServerProcess]) -> None:
    first = start_server()

    async def before_crash() -> tuple[list[str], Run]:
        producer = await SharedConnection.open(first.port, "producer")
        await producer.ok(ADDQUEUE, {"name": "crash", "config": {"retry_interval_ms": 50}})
        replies = await asyncio.gather(*(
            producer.request(ENQUEUE, {"q": "crash", "job_payload": n}) for n in range(JOBS)))
        assert all(reply["t"] == OK for reply in replies), replies
        jids = [reply["p"]["jid"] for reply in replies]
        run = Run()
        killed = asyncio.Event()
        half = asyncio.Event()

        def on_complete() -> None:
            if len(run.completed) >= JOBS // 2:
                half.set()

        workers = [asyncio.create_task(work(first.port, f"w{n}", run, killed.is_set,
                                            on_complete))
                   for n in range(WORKERS)]
        halfway = asyncio.create_task(half.wait())
        done, _ = await asyncio.wait([halfway, *workers], timeout=RUN_TIMEOUT_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        assert done == {halfway}, [task.exception() for task in done if task is not halfway]
        first.kill()
        killed.set()
        await asyncio.gather(*workers)
        await producer.close()
        return jids, run

    jids, crashed = asyncio.run(before_crash())
    assert len(set(jids)) == JOBS
    assert JOBS // 2 <= len(crashed.completed) < JOBS
    assert first.events("server_stopped") == []
    second = start_server(storage="data")

    async def after_restart() -> None:
        run = Run()
        control = await SharedConnection.open(second.port, "control")
        finished = asyncio.Event()
        workers = [asyncio.create_task(work(second.port, f"v{n}", run, finished.is_set))
                   for n in range(WORKERS)]
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:  # each QSTATS reply awaited
            reply = await control.ok(QSTATS, {"q": "crash"})
            if reply["stats"]["completed"] == JOBS:
                break
            assert time.monotonic() < deadline, reply
        assert reply["stats"] == {**dict.fromkeys(STATUSES, 0), "completed": JOBS}
        finished.set()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

        records = await asyncio.gather(*(control.ok(JOB, {"jid": jid}) for jid in jids))
        restarted = 0
        for jid, record in zip(jids, records, strict=True):
            assert record.get("jid") == jid, (jid, record)  # no job lost
            assert record["status"] == "completed", record
            history = record["history"]
            outcomes = [entry["outcome"] for entry in history]
            assert outcomes.count("completed") == 1, record
            assert outcomes[-1] == "completed", record
            completion = history[-1]
            if "server_restart" in outcomes:
                restarted += 1
            if jid in crashed.completed:
                # Answered OK before the crash: done once, by that delivery, never redone.
                assert outcomes == ["completed"], record
                assert completion["delivery_id"] == crashed.completed[jid]
                assert jid not in run.quests
            elif jid in crashed.complete_sent:
                # COMPLETE sent, reply lost with the server: either committed by that
                # delivery, or the delivery was cut short and the job ran again.
                if completion["delivery_id"] == crashed.complete_sent[jid]:
                    assert outcomes == ["completed"], record
                else:
                    assert "server_restart" in outcomes, record
            elif jid in crashed.quests:
                # Out with a worker and never reported: the restart ended that attempt.
                entry = history[0]
                assert entry["outcome"] == "server_restart", record
                assert entry["delivery_id"] == crashed.quests[jid][-1]
                assert entry["counted"] is True
                assert completion["delivery_id"] in run.quests[jid]
            else:
                # Never seen before the crash: waiting, or dispatched without its QUEST
                # arriving; done after the restart.
                assert set(outcomes) <= {"server_restart", "completed"}, record
                assert completion["delivery_id"] in run.quests[jid]
        # Each worker held up to CREDITS jobs when the server died: they were recovered.
        in_flight = set(crashed.quests) - set(crashed.completed) - set(crashed.complete_sent)
        assert in_flight and restarted >= len(in_flight)
        await control.close()

    asyncio.run(after_restart())
