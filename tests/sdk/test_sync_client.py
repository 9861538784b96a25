"""The blocking Client: shared by threads, reconnecting after the server restarts."""

import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from overhop_client import Client, Job, JobStatus, QueueExistsError

from tests.support.server_process import ServerProcess

THREADS = 8
JOBS_PER_THREAD = 50


def test_many_threads_share_one_client(url: str) -> None:
    with Client(url, name="web-app") as client:
        client.add_queue("web")
        start = threading.Barrier(THREADS)

        def produce(thread: int) -> list[tuple[str, Job | None]]:
            start.wait()
            jids = [client.enqueue("web", {"thread": thread, "n": n})
                    for n in range(JOBS_PER_THREAD)]
            return [(jid, client.job(jid)) for jid in jids]

        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(produce, range(THREADS)))

        jids = [jid for per_thread in results for jid, _ in per_thread]
        assert len(set(jids)) == THREADS * JOBS_PER_THREAD
        for thread, per_thread in enumerate(results):
            payloads = [job.payload if job else None for _, job in per_thread]
            assert payloads == [{"thread": thread, "n": n} for n in range(JOBS_PER_THREAD)]
        stats = client.stats("web")
        assert stats.counts.waiting == THREADS * JOBS_PER_THREAD
        assert [j.status for j in client.jobs("web", JobStatus.WAITING, page_size=3)] == [
            JobStatus.WAITING] * 3
        with pytest.raises(QueueExistsError):
            client.add_queue("web")
        assert client.ping() is not None
        assert {q.name for q in client.queues()} == {"_system", "web"}
        assert client.worker_id in {w.worker_id for w in client.status().workers}


def test_admin_calls_through_the_blocking_client(url: str) -> None:
    with Client(url) as client:
        client.add_queue("admin", max_attempts=4)
        queue = client.queue("admin")
        assert queue is not None and queue.config.max_attempts == 4
        client.pause("admin")
        jid = client.enqueue("admin", "payload")
        more = client.enqueue_many("admin", ["a", "b", "c"])
        assert client.stats("admin").counts.new == 4
        for each in more:
            client.remove_job(each)
        job = client.job(jid)
        assert job is not None and job.status == JobStatus.NEW and job.max_attempts == 4
        client.remove_job(jid)
        assert client.job(jid) is None
        client.resume("admin")
        client.remove_queue("admin")
        assert client.queue("admin") is None
    with pytest.raises(RuntimeError, match="closed"):
        client.ping()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_next_call_reconnects_after_a_server_restart(
        start_server: Callable[..., ServerProcess]) -> None:
    port = free_port()
    first = start_server("--server.port", str(port))
    with Client(f"127.0.0.1:{port}") as client:
        client.add_queue("durable")
        jid = client.enqueue("durable", {"kept": True})
        old_worker = client.worker_id
        first.stop()
        # Lost (the old connection) or refused (a new one): either way a ConnectionError.
        with pytest.raises(ConnectionError):
            client.job(jid)
        start_server("--server.port", str(port))
        job = client.job(jid)
        assert job is not None and job.payload == {"kept": True}
        assert client.worker_id != old_worker
