"""The examples in clients/python/examples run against a real server."""

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from overhop_client import AsyncClient, Job, JobStatus

from tests.sdk.harness import DEADLINE_S, wait_for_job, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples"


@pytest.fixture
def workers(url: str) -> Iterator[list[subprocess.Popen[str]]]:
    started = [
        subprocess.Popen([sys.executable, str(EXAMPLES / name), "--url", url, *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, extra in (("worker.py", ["--fail-rate", "0.5"]), ("fanout_worker.py", []))
    ]
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_producer_worker_and_fanout_examples(url: str,
                                             workers: list[subprocess.Popen[str]]) -> None:
    async def subscribed() -> None:
        async with await AsyncClient.connect(url) as client:
            async def subscriptions() -> dict[str, int]:
                status = await client.status()
                return {q.info.name: q.subscriptions for q in status.queues}

            await wait_until(subscriptions,
                             lambda s: s.get("emails") == 1 and s.get("newsletters") == 1,
                             "example workers subscribed")

    asyncio.run(subscribed())
    producer = subprocess.run(
        [sys.executable, str(EXAMPLES / "producer.py"), "--url", url, "--count", "4",
         "--wait", str(DEADLINE_S)], capture_output=True, text=True, timeout=DEADLINE_S * 2)
    assert producer.returncode == 0, producer.stderr
    lines = producer.stdout.splitlines()
    assert sum(line.startswith("enqueued emails:") for line in lines) == 4
    finals = [line for line in lines if ": completed, result=" in line or ": failed after" in line]
    assert len(finals) == 4, producer.stdout

    async def newsletter() -> None:
        async with await AsyncClient.connect(url) as client:
            jid = await client.enqueue("newsletters", {"subject": "News",
                                                       "recipients": ["a@x.org", "b@x.org"]})
            job = await wait_for_job(client, jid, lambda j: j.status == JobStatus.COMPLETED)
            emails: list[Job] = []
            for email_jid in job.result:
                emails.append(await wait_for_job(
                    client, email_jid, lambda j: j.status in (JobStatus.COMPLETED,
                                                              JobStatus.FAILED)))
            assert sorted(e.payload["to"] for e in emails) == ["a@x.org", "b@x.org"]

    asyncio.run(newsletter())
    for process in workers:
        process.send_signal(signal.SIGTERM)
    for process in workers:
        assert process.wait(DEADLINE_S) == 0
    out = workers[0].communicate()[0]
    assert "{'to': 'user0@example.com', 'subject': 'Hello'}" in out


def test_tasks_example_routes_by_task_and_reports_an_unknown_one(url: str) -> None:
    worker = subprocess.Popen([sys.executable, str(EXAMPLES / "tasks.py"), "worker",
                               "--url", url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        async def subscribed() -> None:
            async with await AsyncClient.connect(url) as client:
                async def subscriptions() -> dict[str, int]:
                    status = await client.status()
                    return {q.info.name: q.subscriptions for q in status.queues}

                await wait_until(subscriptions, lambda s: s.get("accounts") == 1,
                                 "tasks example worker subscribed")

        asyncio.run(subscribed())
        producer = subprocess.run(
            [sys.executable, str(EXAMPLES / "tasks.py"), "produce", "--url", url, "--wait",
             str(DEADLINE_S)], capture_output=True, text=True, timeout=DEADLINE_S * 2)
        assert producer.returncode == 0, producer.stderr
        assert producer.stdout.splitlines() == [
            "welcome: {'greeted': 'Ada'}", "close: {'closed': 7}",
            "unknown task: no handler for task 'accounts.unknown' on queue 'accounts'"]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(DEADLINE_S) == 0
        out, err = worker.communicate()
        assert "accounts.welcome accounts:" in out and "accounts.close accounts:" in out
        assert "NoHandlerError: no handler for task 'accounts.unknown'" in err
        assert "Traceback" not in err
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
