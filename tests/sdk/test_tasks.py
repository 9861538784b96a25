"""Tasks in the SDK against a real server: several handlers per queue, routing by task,
a task without a handler, and enqueueing with the decorated function."""

import asyncio
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
from overhop_client import (
    AsyncClient,
    Client,
    JobContext,
    JobStatus,
    Task,
    TaskNameInvalidError,
    Worker,
)

from tests.sdk.harness import DEADLINE_S, running, wait_for_status, wait_until


def test_several_tasks_share_a_queue_and_each_job_runs_its_own(url: str) -> None:
    ran: dict[str, tuple[str, str | None, bool]] = {}
    loop_thread: list[threading.Thread] = []

    async def main() -> None:
        loop_thread.append(threading.current_thread())
        app = Worker(url, concurrency=2)

        @app.task("send_email", queue="mail", timeout=5)
        async def send_email(ctx: JobContext) -> str:
            ran[ctx.jid] = ("send_email", ctx.task, True)
            return f"sent to {ctx.payload}"

        @app.task("billing.invoice", queue="mail")
        def invoice(ctx: JobContext) -> int:  # a plain function: runs in a thread
            ran[ctx.jid] = ("invoice", ctx.task,
                            threading.current_thread() is loop_thread[0])
            return int(ctx.payload) * 10

        @app.handler("mail")
        async def anything_else(ctx: JobContext) -> str:
            ran[ctx.jid] = ("queue handler", ctx.task, True)
            return "fallback"

        assert isinstance(send_email, Task)
        assert (send_email.name, send_email.queue) == ("send_email", "mail")
        assert (invoice.name, invoice.queue, invoice.__name__) == (
            "billing.invoice", "mail", "invoice")

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("mail")
            async with running(app):
                email = await client.enqueue(send_email, "a@example.com")
                bill = await client.enqueue(invoice, 4)
                by_name = await client.enqueue("mail", 5, task="billing.invoice")
                plain = await client.enqueue("mail", None)
                other = await client.enqueue("mail", None, task="not_registered")
                results = {jid: (await wait_for_status(client, jid, JobStatus.COMPLETED))
                           for jid in (email, bill, by_name, plain, other)}
        assert results[email].result == "sent to a@example.com"
        assert results[email].task == "send_email"
        assert results[bill].result == 40 and results[by_name].result == 50
        assert ran[email] == ("send_email", "send_email", True)
        assert ran[bill] == ("invoice", "billing.invoice", False)
        assert ran[by_name][:2] == ("invoice", "billing.invoice")
        # The queue's own handler takes jobs without a task and tasks without a handler.
        assert ran[plain] == ("queue handler", None, True)
        assert ran[other] == ("queue handler", "not_registered", True)
        assert results[plain].result == results[other].result == "fallback"

    asyncio.run(main())


def test_a_task_without_a_handler_fails_clearly_and_the_worker_goes_on(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="overhop_client")

    async def main() -> None:
        app = Worker(url)

        @app.task("known", queue="strict")
        async def known(ctx: JobContext) -> str:
            return "done"

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("strict", max_attempts=1)
            async with running(app) as runner:
                unknown = await client.enqueue("strict", {"x": 1}, task="nobody.home")
                untasked = await client.enqueue("strict", 1)
                failed = await wait_for_status(client, unknown, JobStatus.FAILED)
                assert failed.history[-1].error_message == (
                    "no handler for task 'nobody.home' on queue 'strict'")
                nameless = await wait_for_status(client, untasked, JobStatus.FAILED)
                assert nameless.history[-1].error_message == (
                    "no handler for jobs without a task on queue 'strict'")
                # The worker is still up and runs the jobs it knows.
                later = await client.enqueue(known, None)
                assert (await wait_for_status(client, later, JobStatus.COMPLETED)
                        ).result == "done"
                assert not runner.done() and app.connected
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                    and unknown in r.getMessage()]
        assert len(warnings) == 1
        assert "no handler for task 'nobody.home' on queue 'strict'" in warnings[0].getMessage()

    asyncio.run(main())


def test_an_unhandled_task_is_retried_while_attempts_remain(url: str) -> None:
    """Another worker (a newer deployment) may know the task: the failure uses an attempt
    and the job is retried, so a worker that knows it can still run it."""

    async def main() -> None:
        old_app = Worker(url)

        @old_app.task("v1", queue="rolling")
        async def v1(ctx: JobContext) -> str:
            return "v1"

        new_app = Worker(url)

        @new_app.task("v2", queue="rolling")
        async def v2(ctx: JobContext) -> str:
            return "v2"

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("rolling", max_attempts=5,
                                   retry_interval=timedelta(milliseconds=10))
            async with running(old_app):
                jid = await client.enqueue("rolling", None, task="v2")

                async def attempts_used() -> int:
                    seen = await client.job(jid)
                    return 0 if seen is None else seen.attempts_so_far

                await wait_until(attempts_used, lambda n: n >= 1, "a failed attempt")
            async with running(new_app):
                done = await wait_for_status(client, jid, JobStatus.COMPLETED)
        assert done.result == "v2"
        assert done.history[0].error_message == "no handler for task 'v2' on queue 'rolling'"

    asyncio.run(main())


def test_enqueue_and_run_with_the_decorated_function(url: str) -> None:
    app = Worker(url)

    @app.task("square", queue="math")
    async def square(ctx: JobContext) -> int:
        return int(ctx.payload) ** 2

    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("math")
            async with running(app):
                assert await client.run(square, 7, timeout=DEADLINE_S) == 49
                jids = await client.enqueue_many(square, [2, 3])
                for jid, expected in zip(jids, (4, 9), strict=True):
                    job = await wait_for_status(client, jid, JobStatus.COMPLETED)
                    assert (job.task, job.result) == ("square", expected)
                await asyncio.to_thread(blocking_producer)
                page = await client.jobs("math", JobStatus.COMPLETED, task="square",
                                         page_size=100)
                assert page.task == "square" and len(page) == 5
                assert all(job.task == "square" for job in page)
                assert len(await client.jobs("math", JobStatus.COMPLETED,
                                             task="other")) == 0

    def blocking_producer() -> None:
        with Client(url) as client:
            jid = client.enqueue(square, 8)
            assert client.run(square, 9, timeout=DEADLINE_S) == 81
            assert client.result(jid, timeout=DEADLINE_S) == 64
            job = client.job(jid)
            assert job is not None and job.task == "square" and job.queue == "math"

    asyncio.run(main())


def test_registration_and_enqueue_refuse_what_cannot_work(url: str) -> None:
    app = Worker(url, concurrency=2)

    @app.task("a", queue="q1", concurrency=3)
    def a(ctx: JobContext) -> None:
        return None

    with pytest.raises(ValueError, match="invalid task name"):
        app.task("no spaces", queue="q1")
    with pytest.raises(ValueError, match="already has a handler"):
        app.task("a", queue="q1")(a.function)
    with pytest.raises(ValueError, match="concurrency 3"):
        app.task("b", queue="q1", concurrency=5)(a.function)
    app.task("b", queue="q1", concurrency=3)(a.function)  # repeating it is fine
    app.handler("q1")(a.function)
    with pytest.raises(ValueError, match="already registered"):
        app.handler("q1")(a.function)
    assert a(None) is None  # type: ignore[arg-type]  # still the function

    async def shout(ctx: JobContext) -> str:
        return str(ctx.payload).upper()

    # A task registered again (on a second worker) runs as the function it wraps.
    shout_task = Worker(url).task("shout", queue="q2")(shout)
    second = Worker(url)
    again = second.task("shout", queue="q2")(shout_task)
    assert again.function is shout

    async def main() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("q1")
            await client.add_queue("q2")
            async with running(second):
                assert await client.run(again, "x", timeout=DEADLINE_S) == "X"
            with pytest.raises(ValueError, match="not 'b'"):
                await client.enqueue(a, None, task="b")
            with pytest.raises(ValueError, match="invalid task name"):
                await client.enqueue("q1", None, task="bad name")
            # The server refuses a bad name on its own too (a client without the check).
            reply: Any = await client.request(14, {"q": "q1", "task": "bad name"})
            raise AssertionError(f"accepted: {reply}")

    with pytest.raises(TaskNameInvalidError, match="invalid task name 'bad name'"):
        asyncio.run(main())
