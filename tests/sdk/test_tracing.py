"""Traces from producer to worker: ENQUEUE carries the trace context in `headers`, the
server stores it and returns it in QUEST, the worker's `process` span links to the
producer's `send` span. Without `opentelemetry-api`, nothing is traced and no headers
are sent."""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once
from overhop_client import AsyncClient, InvalidPayloadError, JobContext, Worker, tracing

from tests.sdk.harness import running, wait_until
from tests.support.http_client import request
from tests.support.server_process import ServerProcess


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """A tracer provider that keeps finished spans in memory, for this test only (the
    global provider can be set once per process: the test resets it, as OpenTelemetry's
    own test utilities do)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def test_process_span_links_to_the_send_span(server: ServerProcess, url: str,
                                             spans: InMemorySpanExporter) -> None:
    async def scenario() -> tuple[str, str]:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("mails", max_attempts=1)
            ok = await client.enqueue("mails", "ok", headers={"tenant": "acme"})
            bad = await client.enqueue("mails", "bad")
            worker = Worker(url, name="traced")

            @worker.handler("mails")
            def handle(ctx: JobContext) -> str:
                with trace.get_tracer("test").start_as_current_span("render"):
                    if ctx.payload == "bad":
                        raise ValueError("cannot render")
                return "sent"

            async with running(worker):
                async def finished() -> Any:
                    return (await client.stats("mails")).counts

                await wait_until(finished, lambda c: c.completed == 1 and c.failed == 1,
                                 "both jobs ended")
            return ok, bad

    ok, bad = asyncio.run(scenario())
    sends = {span.attributes["messaging.message.id"]: span for span in named(spans, "send mails")}
    assert set(sends) == {ok, bad}
    send = sends[ok]
    assert send.kind == SpanKind.PRODUCER
    assert send.attributes["messaging.system"] == "overhop"
    assert send.attributes["messaging.destination.name"] == "mails"
    assert send.attributes["messaging.operation.type"] == "send"

    processes = {span.attributes["messaging.message.id"]: span
                 for span in named(spans, "process mails")}
    process = processes[ok]
    assert process.kind == SpanKind.CONSUMER
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["overhop.attempt"] == 1
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert process.links[0].context.trace_id == send.context.trace_id
    assert process.status.status_code != StatusCode.ERROR
    renders = named(spans, "render")
    assert {span.parent.span_id for span in renders} == {
        processes[ok].context.span_id, processes[bad].context.span_id}
    failed = processes[bad]
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "ValueError"

    stored = request(f"{server.http_url}/api/jobs/{ok}").json()["headers"]
    assert stored["tenant"] == "acme"
    assert stored["traceparent"].split("-")[2] == format(send.context.span_id, "016x")


def test_quest_carries_the_headers(url: str, spans: InMemorySpanExporter) -> None:
    async def scenario() -> None:
        quests: asyncio.Queue[Any] = asyncio.Queue()
        async with await AsyncClient.connect(url, on_quest=quests.put_nowait) as client:
            await client.add_queue("mails")
            jids = await client.enqueue_many("mails", ["a", "b"])
            await client.subscribe("mails", credits=2)
            got = [await asyncio.wait_for(quests.get(), 10) for _ in jids]
        (send,) = named(spans, "send mails")
        assert send.attributes["messaging.batch.message_count"] == 2
        for quest in got:
            assert quest.headers is not None
            assert quest.headers["traceparent"].split("-")[1] == format(
                send.context.trace_id, "032x")

    asyncio.run(scenario())


def test_without_opentelemetry_nothing_is_sent(server: ServerProcess, url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "trace", None)

    async def scenario() -> None:
        quests: asyncio.Queue[Any] = asyncio.Queue()
        async with await AsyncClient.connect(url, on_quest=quests.put_nowait) as client:
            await client.add_queue("mails")
            jid = await client.enqueue("mails", "a")
            await client.subscribe("mails", credits=1)
            quest = await asyncio.wait_for(quests.get(), 10)
            assert quest.headers is None
            assert request(f"{server.http_url}/api/jobs/{jid}").json()["headers"] == {}
            with tracing.processing("mails", jid, 1, quest.did, None) as span:
                assert span is None

    asyncio.run(scenario())


def test_the_server_checks_headers(url: str) -> None:
    async def scenario() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("mails")
            for headers in ({"n": 1}, ["x"], {"big": "x" * 5000}):
                with pytest.raises(InvalidPayloadError, match="headers"):
                    await client.request(14, {"q": "mails", "headers": headers})
            reply = await client.request(14, {"q": "mails", "headers": {}})
            assert (await client.request(15, {"jid": reply["jid"]}))["headers"] == {}

    asyncio.run(scenario())
