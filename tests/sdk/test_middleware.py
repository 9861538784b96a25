"""Middleware around each handler run, against a real server: the order of the layers,
user layers, and the built-in ones (timeout, retry, rate limit, failure logging)."""

import asyncio
import logging
import threading
from datetime import timedelta

import pytest
from overhop_client import (
    AsyncClient,
    CallNext,
    JobContext,
    JobFailedError,
    JobStatus,
    Layer,
    RateLimit,
    Retry,
    Timeout,
    Worker,
)
from overhop_client.middleware import StartWindow

from tests.sdk.harness import DEADLINE_S, running, wait_for_status


def recorder(name: str, trails: dict[str, list[str]]) -> Layer:
    """A layer noting, in its queue's trail, when it is entered and left; it wraps the
    result in `{name: result}`."""
    async def layer(ctx: JobContext, call_next: CallNext) -> object:
        trails[ctx.queue].append(f"{name}>")
        result = await call_next(ctx)
        trails[ctx.queue].append(f"<{name}")
        return {name: result}
    return layer


def test_layers_run_in_the_order_given_around_async_and_thread_handlers(url: str) -> None:
    trails: dict[str, list[str]] = {"async-mw": [], "thread-mw": []}
    threads: list[threading.Thread] = []

    async def main() -> None:
        outer, middle, inner = (recorder(name, trails) for name in ("outer", "middle", "inner"))
        app = Worker(url, middleware=[outer])
        assert app.use(middle) is middle

        @app.handler("async-mw", middleware=[inner])
        async def on_loop(ctx: JobContext) -> str:
            trails["async-mw"].append("handler")
            return "a"

        @app.handler("thread-mw", middleware=[inner])
        def in_thread(ctx: JobContext) -> str:
            threads.append(threading.current_thread())
            trails["thread-mw"].append("handler")
            return "t"

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("async-mw")
            await client.add_queue("thread-mw")
            async with running(app):
                assert await client.run("async-mw", timeout=DEADLINE_S) == {
                    "outer": {"middle": {"inner": "a"}}}
                assert await client.run("thread-mw", timeout=DEADLINE_S) == {
                    "outer": {"middle": {"inner": "t"}}}

    asyncio.run(main())
    for trail in trails.values():
        assert trail == ["outer>", "middle>", "inner>", "handler", "<inner", "<middle",
                         "<outer"]
    assert threads and threads[0] is not threading.main_thread()


def test_a_layer_may_turn_an_exception_into_a_result_or_refuse_to_run(url: str) -> None:
    async def main() -> None:
        async def fallback(ctx: JobContext, call_next: CallNext) -> object:
            try:
                return await call_next(ctx)
            except LookupError as exc:
                return f"fallback for {exc}"

        async def gate(ctx: JobContext, call_next: CallNext) -> object:
            if ctx.payload == "forbidden":
                raise PermissionError("not this one")
            return await call_next(ctx)

        app = Worker(url, middleware=[fallback, gate])

        @app.handler("mapped")
        async def handler(ctx: JobContext) -> str:
            raise KeyError(ctx.payload)

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("mapped", max_attempts=1)
            async with running(app):
                assert await client.run("mapped", "k", timeout=DEADLINE_S) == "fallback for 'k'"
                with pytest.raises(JobFailedError) as failed:
                    await client.run("mapped", "forbidden", timeout=DEADLINE_S)
                assert failed.value.error["message"] == "not this one"

    asyncio.run(main())


def test_timeout_layers_fail_the_run_with_timeout(url: str) -> None:
    async def main() -> None:
        app = Worker(url, middleware=[Timeout(timedelta(milliseconds=200))])

        @app.handler("slow-mw")
        async def slow(ctx: JobContext) -> None:
            await asyncio.sleep(DEADLINE_S)

        @app.handler("own-timeout", timeout=0.2)
        async def own(ctx: JobContext) -> None:
            raise TimeoutError("the handler's own timeout is a plain failure")

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("slow-mw", max_attempts=1)
            await client.add_queue("own-timeout", max_attempts=1)
            async with running(app):
                with pytest.raises(JobFailedError) as failed:
                    await client.run("slow-mw", timeout=DEADLINE_S)
                assert failed.value.error["message"] == "timeout"
                assert failed.value.error["details"] == "the handler ran longer than 0.2 s"
                with pytest.raises(JobFailedError) as own_failure:
                    await client.run("own-timeout", timeout=DEADLINE_S)
                assert own_failure.value.error["message"] == (
                    "the handler's own timeout is a plain failure")

    asyncio.run(main())


def test_retry_runs_the_handler_again_within_one_delivery(url: str) -> None:
    calls: dict[str, int] = {}

    async def main() -> None:
        def worth_it(ctx: JobContext, exc: Exception) -> bool:
            return "permanent" not in str(exc)

        app = Worker(url, middleware=[Retry(3, on=ConnectionError, backoff=0.01,
                                            when=worth_it)])

        @app.handler("flaky")
        async def flaky(ctx: JobContext) -> str:
            calls[ctx.payload] = calls.get(ctx.payload, 0) + 1
            if ctx.payload == "twice" and calls[ctx.payload] < 3:
                raise ConnectionError("transient")
            if ctx.payload == "always":
                raise ConnectionError("transient again")
            if ctx.payload == "permanent":
                raise ConnectionError("permanent")
            if ctx.payload == "other":
                raise ValueError("not retried")
            return "ok"

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("flaky", max_attempts=1)
            async with running(app):
                jid = await client.enqueue("flaky", "twice")
                job = await wait_for_status(client, jid, JobStatus.COMPLETED)
                assert job.result == "ok"
                assert [a.outcome for a in job.history] == ["completed"]  # one delivery
                for payload, message in (("always", "transient again"),
                                         ("permanent", "permanent"), ("other", "not retried")):
                    with pytest.raises(JobFailedError) as failed:
                        await client.run("flaky", payload, timeout=DEADLINE_S)
                    assert failed.value.error["message"] == message

    asyncio.run(main())
    assert calls == {"twice": 3, "always": 3, "permanent": 1, "other": 1}
    with pytest.raises(ValueError):
        Retry(0)


def test_start_window_allows_n_starts_per_period() -> None:
    window = StartWindow(2, 1.0)
    assert [window.reserve(10.0), window.reserve(10.0)] == [0.0, 0.0]
    assert window.reserve(10.0) == 1.0  # the third start waits for the first's period
    assert window.reserve(10.5) == 0.5  # the fourth for the second's
    assert window.reserve(13.0) == 0.0  # a quiet spell: at once again
    with pytest.raises(ValueError):
        StartWindow(0, 1.0)


def test_rate_limit_spaces_job_starts_across_the_worker(url: str) -> None:
    starts: list[float] = []
    period = 0.3

    async def main() -> None:
        app = Worker(url, concurrency=4, middleware=[RateLimit(2, per=period)])

        @app.handler("limited-a")
        async def a(ctx: JobContext) -> None:
            starts.append(asyncio.get_running_loop().time())

        @app.handler("limited-b")
        async def b(ctx: JobContext) -> None:
            starts.append(asyncio.get_running_loop().time())

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("limited-a")
            await client.add_queue("limited-b")
            async with running(app):
                await asyncio.gather(*(client.run(q, n, timeout=DEADLINE_S)
                                       for n in range(3) for q in ("limited-a", "limited-b")))

    asyncio.run(main())
    starts.sort()
    assert len(starts) == 6
    # No three starts within one period: each start is at least a period after the one
    # two before it (a lower bound, whatever the machine's speed).
    assert all(later - earlier >= period - 0.01
               for earlier, later in zip(starts, starts[2:], strict=False))


def test_a_failure_is_logged_once_whatever_the_layers(url: str,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    async def main() -> str:
        async def passes_through(ctx: JobContext, call_next: CallNext) -> object:
            return await call_next(ctx)

        app = Worker(url, middleware=[passes_through, passes_through])

        @app.handler("logged")
        def broken(ctx: JobContext) -> None:
            raise RuntimeError("broken handler")

        async with await AsyncClient.connect(url) as client:
            await client.add_queue("logged", max_attempts=1)
            async with running(app):
                with pytest.raises(JobFailedError) as failed:
                    await client.run("logged", timeout=DEADLINE_S)
                return failed.value.jid

    with caplog.at_level(logging.DEBUG, logger="overhop_client.worker"):
        jid = asyncio.run(main())
    failures = [r for r in caplog.records if r.getMessage().startswith("job_failed")]
    assert [r.levelno for r in failures] == [logging.WARNING, logging.DEBUG]
    assert failures[0].getMessage() == (
        f"job_failed jid={jid} attempt=1/1: RuntimeError: broken handler")
    assert "Traceback" in failures[1].getMessage()
