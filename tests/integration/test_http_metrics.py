"""`/metrics`, `/health` and `/ready` on a real server: status codes, JSON, and the
Prometheus text parsed by `prometheus_client.parser`."""

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from overhop_client import AsyncClient, Client, JobContext, Worker
from prometheus_client.parser import text_string_to_metric_families

from tests.sdk.harness import running, wait_until
from tests.support.http_client import request
from tests.support.server_process import ServerProcess


def scrape(server: ServerProcess) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of /metrics: name -> {sorted labels: value}."""
    reply = request(server.http_url + "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                sample.value)
    return samples


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def test_health_and_ready(server: ServerProcess) -> None:
    health = request(server.http_url + "/health")
    assert health.status == 200
    assert health.headers["content-type"].startswith("application/json")
    assert health.json()["status"] == "alive"
    ready = request(server.http_url + "/ready")
    assert ready.status == 200
    assert ready.json() == {"ready": True, "checks": {"writer_running": True,
                                                      "storage_ok": True, "space_ok": True}}


def test_metrics_count_jobs_attempts_and_workers(server: ServerProcess) -> None:
    url = f"127.0.0.1:{server.port}"

    async def scenario() -> None:
        async with await AsyncClient.connect(url) as client:
            await client.add_queue("mails", concurrency_limit=2, max_attempts=1)
            await client.add_queue("idle", rate_limit=10)
            for payload in ("ok", "ok", "bad"):
                await client.enqueue("mails", payload)
            await client.enqueue("idle", "waits")
            await client.pause("idle")
            worker = Worker(url, name="metrics-worker", concurrency=2)

            @worker.handler("mails")
            def handle(ctx: JobContext) -> str:
                if ctx.payload == "bad":
                    raise ValueError("bad payload")
                return "done"

            async with running(worker):
                async def finished() -> Any:
                    return (await client.stats("mails")).counts

                await wait_until(finished, lambda c: c.completed == 2 and c.failed == 1,
                                 "jobs finished")

    asyncio.run(scenario())
    samples = scrape(server)
    assert value(samples, "overhop_jobs", queue="mails", status="completed") == 2
    assert value(samples, "overhop_jobs", queue="mails", status="failed") == 1
    assert value(samples, "overhop_jobs", queue="idle", status="waiting") == 1
    assert value(samples, "overhop_jobs_enqueued_total", queue="mails") == 3
    assert value(samples, "overhop_attempts_ended_total", queue="mails",
                 outcome="completed") == 2
    assert value(samples, "overhop_attempts_ended_total", queue="mails", outcome="failed") == 1
    assert value(samples, "overhop_job_wait_seconds_count", queue="mails") == 3
    assert value(samples, "overhop_job_run_seconds_count", queue="mails") == 3
    assert value(samples, "overhop_job_run_seconds_bucket", queue="mails", le="+Inf") == 3
    assert value(samples, "overhop_queue_concurrency_limit", queue="mails") == 2
    assert value(samples, "overhop_queue_concurrency_in_use", queue="mails") == 0
    assert ("queue", "idle") not in {k[0] for k in samples["overhop_queue_concurrency_limit"]}
    assert value(samples, "overhop_queue_rate_limit", queue="idle") == 10
    assert value(samples, "overhop_queue_paused", queue="idle") == 1
    assert value(samples, "overhop_queue_paused", queue="mails") == 0
    assert value(samples, "overhop_queue_oldest_waiting_age_seconds", queue="idle") >= 0
    assert value(samples, "overhop_queue_oldest_waiting_age_seconds", queue="mails") == 0
    assert value(samples, "overhop_worker_jobs_total", worker="metrics-worker",
                 outcome="completed") == 2
    assert value(samples, "overhop_worker_jobs_total", worker="metrics-worker",
                 outcome="failed") == 1
    assert value(samples, "overhop_subscriptions", queue="mails") == 0  # the worker left
    assert value(samples, "overhop_workers") == 0
    assert value(samples, "overhop_connections") == 0
    for kind in ("map_size", "used", "file", "max"):
        assert value(samples, "overhop_storage_bytes", kind=kind) > 0
    assert value(samples, "overhop_commits_total") > 0
    assert value(samples, "overhop_commit_seconds_count") > 0
    assert "overhop_disk_sync_seconds_count" in samples
    assert value(samples, "overhop_storage_space_low") == 0
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "overhop_writer_process_resident_memory_bytes") > 0
    assert "_system" not in {dict(k).get("queue") for k in samples["overhop_jobs"]}


def test_metrics_see_live_workers_and_connections(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with await AsyncClient.connect(f"127.0.0.1:{server.port}", name="w1") as client:
            await client.add_queue("live")
            await client.subscribe("live", credits=3)
            samples = scrape(server)
            assert value(samples, "overhop_workers") == 1
            assert value(samples, "overhop_connections") == 1
            assert value(samples, "overhop_subscriptions", queue="live") == 1
            assert value(samples, "overhop_queue_credits", queue="live") == 3

    asyncio.run(scenario())


def test_ready_is_503_while_the_store_refuses_for_space(start_server) -> None:
    server = start_server("--storage.initial_map_size_bytes", "1048576",
                          "--storage.max_map_size_bytes", "4194304",
                          "--storage.reserved_headroom_bytes", "524288")

    async def fill() -> None:
        async with await AsyncClient.connect(f"127.0.0.1:{server.port}") as client:
            await client.add_queue("big")
            for _ in range(200):
                try:
                    await client.enqueue("big", {"blob": b"x" * 60_000})
                except Exception as exc:  # STORAGE_FULL: the store refuses new jobs now
                    assert type(exc).__name__ == "StorageFullError", exc
                    return
            raise AssertionError("the store never filled")

    asyncio.run(fill())
    ready = request(server.http_url + "/ready")
    assert ready.status == 503
    assert ready.json()["checks"]["space_ok"] is False
    assert request(server.http_url + "/health").status == 200
    assert value(scrape(server), "overhop_storage_space_low") == 1


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "overhop", "serve", "--server.host", "127.0.0.1",
         "--server.port", "0", "--storage.path", str(tmp_path / "data"), *args],
        capture_output=True, text=True, timeout=30, env={"HOME": str(tmp_path),
                                                         "PATH": "/usr/bin:/bin"})


def test_a_non_loopback_host_is_refused_unless_allowed(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--http.host", "0.0.0.0")
    assert done.returncode == 2
    assert "http.host '0.0.0.0' is not a loopback address" in done.stderr
    assert "http.allow_non_loopback" in done.stderr


def test_allowed_non_loopback_host_serves(start_server) -> None:
    server = start_server("--http.host", "0.0.0.0", "--http.allow_non_loopback", "true")
    assert request(server.http_url + "/health").status == 200


def test_disabled_http_starts_no_listener(start_server) -> None:
    server = start_server("--http.enabled", "false")
    assert server.http_port == 0
    assert server.events("http_started") == []


def test_a_taken_http_port_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve(tmp_path, "--http.port", str(port))
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} (http)" in done.stderr


def test_unknown_routes_are_404(server: ServerProcess) -> None:
    assert request(server.http_url + "/nope").status == 404
    assert request(server.http_url + "/metrics", method="POST", body={}).status == 405


def test_unsynced_commits_are_flushed_and_counted(start_server) -> None:
    """`storage.sync = false`: commits reach the disk by the periodic flush (now run by the
    writer's syncer thread), and each flush shows in the metrics. That writes no longer wait
    behind it is a latency matter: the benchmark's `latency_nosync` phase measures it."""
    server = start_server("--storage.sync", "false")

    async def scenario() -> float:
        async with await AsyncClient.connect(f"127.0.0.1:{server.port}") as client:
            await client.add_queue("nosync")
            for _ in range(40):
                await client.enqueue("nosync", {"n": 1})
                flushes = scrape(server).get("overhop_disk_sync_seconds_count", {})
                if flushes.get((), 0) >= 1:
                    return flushes[()]
                await asyncio.sleep(0.25)
            raise AssertionError("no flush within 10 s of unsynced commits")

    assert asyncio.run(scenario()) >= 1


def test_schedule_fires_are_counted(server: ServerProcess) -> None:
    with Client(f"127.0.0.1:{server.port}") as client:
        client.add_queue("ticks")
        client.add_schedule("tick", "ticks", "* * * * * *")
        client.add_schedule("yearly", "ticks", "0 0 1 1 *")
        deadline = time.monotonic() + 15
        while client.stats("ticks").counts.waiting < 2:
            assert time.monotonic() < deadline, "the schedule did not fire"
            time.sleep(0.05)
        client.pause_schedule("tick")
        fired = client.stats("ticks").counts.waiting
        samples = scrape(server)
        assert value(samples, "overhop_schedule_fires_total", schedule="tick") == fired
        assert value(samples, "overhop_jobs_enqueued_total", queue="ticks") == fired
        assert (("schedule", "yearly"),) not in samples["overhop_schedule_fires_total"]
        client.remove_schedule("tick")
        assert "overhop_schedule_fires_total" not in scrape(server)
