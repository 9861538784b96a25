"""Broker benchmark over real TCP on 127.0.0.1, against a server on temporary storage.

Reports: enqueue throughput (one connection, windowed), end-to-end throughput (a producer
and 4 workers with credits, every job acknowledged and completed, every OK synced), the
same two with the producer sending ENQUEUEMANY of 100 jobs instead of one ENQUEUE per job
(phases enqueue_many and e2e_many),
enqueue-to-QUEST latency p50/p99 at a steady low rate beside the disk's own fdatasync
p50/p99 measured during the same run, the same end-to-end run with a 100,000-job backlog
waiting in the store, the end-to-end run again while CLEARQUEUE removes that backlog, the
end-to-end run with a Prometheus-style scraper reading /metrics every second paired with
the same run without one (phase scrape, ABBA), and the server's CPU seconds and peak memory.
Phase `latency_nosync`: the latency phase against a second server with `storage.sync =
false`, whose periodic flush must not hold up the operations behind it (its p99 is the
figure to watch).
Phase `security` (bench_security.py): the cost of a connection's handshake open, with a
SCRAM login and with TLS too, and the end-to-end run over TLS with a login beside the same
run plain and open.

    python benchmarks/bench_broker.py [--jobs 50000] [--backlog 100000] [--rate 500]
        [--phases enqueue,e2e,enqueue_many,e2e_many,latency,latency_nosync,backlog,clear,
                  scrape,security]
        [--repeat 3]

Clients run in separate processes (producer, workers) so that the client side does not
share one core; the server runs as `python -m overhop serve`, with any extra arguments from
the environment variable OVERHOP_BENCH_SERVER_ARGS (e.g. "--storage.sync false" to see what
the two fdatasyncs of each LMDB commit cost). With OVERHOP_BENCH_PRIORITIES=1 each job
(one ENQUEUE per job) carries a priority, 1 to 9 in turn; with OVERHOP_BENCH_GROUPS=N,
a group, N groups in turn. All loops are bounded.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_client import connect

# Enough requests in flight to keep the group commit full without unbounded buffering.
WINDOW = 2048
# Jobs per ENQUEUEMANY in the bulk phases (the window then counts jobs, not requests).
BULK = 100
PHASE_TIMEOUT_S = 300.0
EXTRA_SERVER_ARGS: list[str] = os.environ.get("OVERHOP_BENCH_SERVER_ARGS", "").split()
# OVERHOP_BENCH_PRIORITIES=1: every job carries a priority, 1 to 9 in turn (the cost of
# priorities against the same run without).
PRIORITIES = os.environ.get("OVERHOP_BENCH_PRIORITIES") == "1"
# OVERHOP_BENCH_GROUPS=N: every job (one ENQUEUE per job) carries a group, N in turn (the
# cost of groups taking turns, issue 17).
GROUPS = int(os.environ.get("OVERHOP_BENCH_GROUPS", "0"))


# The scrape phase: how often the scraper reads /metrics (Prometheus' usual interval is
# 15-60 s; once a second is a heavy scraper).
SCRAPE_INTERVAL_S = 1.0
HTTP_PORTS: dict[int, int] = {}  # server pid -> its HTTP port


def start_server(storage: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "overhop", "serve", "--server.host", "127.0.0.1",
         "--server.port", "0", "--storage.path", str(storage), "--logging.level", "info",
         "--http.port", "0", *EXTRA_SERVER_ARGS, *extra],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        if '"http_started"' in line:
            HTTP_PORTS[process.pid] = json.loads(line)["port"]
        if '"server_started"' in line:
            port = json.loads(line)["port"]
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return process, port
    raise RuntimeError("server did not start")


def server_pids(pid: int) -> list[int]:
    """The server and its child processes (its writer process)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def cpu_seconds(pid: int) -> float:
    """CPU time of the server and its writer process together."""
    total = 0.0
    for each in server_pids(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of the server and its writer process together."""
    total = 0.0
    for each in server_pids(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


async def _admin(port: int, *queues: str) -> None:
    conn = await connect(port, name="admin")
    for queue in queues:
        await conn.request(9, {"name": queue})
    conn.transport.close()


async def _produce(port: int, queue: str, jobs: int, stamp: bool, batch: int = 1) -> float:
    """Enqueue `jobs` jobs: one ENQUEUE each, or, with `batch` > 1, ENQUEUEMANY of `batch`."""
    conn = await connect(port, name="producer")
    in_flight = asyncio.Semaphore(max(1, WINDOW // batch))
    done = asyncio.get_running_loop().create_future()
    remaining = [jobs]

    def on_ok(message: dict[str, Any]) -> None:
        if message["t"] != 101:
            raise RuntimeError(f"enqueue failed: {message['p']}")
        in_flight.release()
        remaining[0] -= len(message["p"]["jids"]) if batch > 1 else 1
        if remaining[0] == 0:
            done.set_result(None)

    started = time.perf_counter()
    for start in range(0, jobs, batch):
        await in_flight.acquire()
        if batch == 1:
            payload = {"n": start, "t": time.monotonic_ns()} if stamp else {"n": start}
            fields = {"q": queue, "job_payload": payload}
            if PRIORITIES:
                fields["priority"] = start % 9 + 1
            if GROUPS:
                fields["group"] = f"g{start % GROUPS}"
            conn.send(14, fields, on_reply=on_ok)
            continue
        conn.send(30, {"q": queue, "jobs": [
            {"job_payload": {"n": index, "t": time.monotonic_ns()} if stamp else {"n": index}}
            for index in range(start, min(start + batch, jobs))]}, on_reply=on_ok)
    await asyncio.wait_for(done, PHASE_TIMEOUT_S)
    elapsed = time.perf_counter() - started
    conn.transport.close()
    return elapsed


def producer_process(port: int, queue: str, jobs: int, stamp: bool, batch: int,
                     results: "multiprocessing.Queue[Any]") -> None:
    results.put(("producer", asyncio.run(_produce(port, queue, jobs, stamp, batch))))


async def _work(port: int, queue: str, jobs: int, workers: int, credits: int,
                measure_latency: bool) -> dict[str, Any]:
    completed = [0]
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    all_done = loop.create_future()
    first_quest: list[float] = []
    connections = []

    def make_handler(index: int) -> Any:
        pending_credit = [0]

        def on_complete(message: dict[str, Any]) -> None:
            if message["t"] != 101:
                raise RuntimeError(f"complete failed: {message['p']}")
            completed[0] += 1
            if completed[0] == jobs and not all_done.done():
                all_done.set_result(time.perf_counter())

        def on_push(message: dict[str, Any]) -> None:
            if message["t"] != 106:
                return
            if not first_quest:
                first_quest.append(time.perf_counter())
            p = message["p"]
            if measure_latency:
                latencies.append((time.monotonic_ns() - p["job_payload"]["t"]) / 1e6)
            conn = connections[index]
            ids = {"did": p["did"], "jid": p["jid"]}
            conn.send(19, ids, want_reply=False)
            conn.send(20, ids, on_reply=on_complete)
            pending_credit[0] += 1
            if pending_credit[0] >= credits // 4:
                conn.send(8, {"sid": sids[index], "credits": pending_credit[0]},
                          want_reply=False)
                pending_credit[0] = 0

        return on_push

    sids: list[str] = []
    for index in range(workers):
        conn = await connect(port, on_push=make_handler(index), name=f"worker-{index}")
        connections.append(conn)
    for conn in connections:
        sids.append((await conn.request(6, {"q": queue, "credits": credits}))["sid"])
    finished = await asyncio.wait_for(all_done, PHASE_TIMEOUT_S)
    errors = [e for conn in connections for e in conn.errors]
    for conn in connections:
        conn.transport.close()
    return {"first": first_quest[0] if first_quest else 0.0, "finished": finished,
            "latencies": latencies, "errors": errors}


def worker_process(port: int, queue: str, jobs: int, workers: int, credits: int,
                   measure_latency: bool, ready: Any, results: "multiprocessing.Queue[Any]"
                   ) -> None:
    async def run() -> dict[str, Any]:
        task = asyncio.ensure_future(_work(port, queue, jobs, workers, credits,
                                           measure_latency))
        await asyncio.sleep(0.3)  # benchmark set-up only: let the subscriptions land
        ready.set()
        return await task

    outcome = asyncio.run(run())
    outcome["wall"] = time.perf_counter()
    results.put(("workers", outcome))


def end_to_end(port: int, queue: str, jobs: int, workers: int = 4, credits: int = 256,
               batch: int = 1) -> float:
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Any] = ctx.Queue()
    ready = ctx.Event()
    worker = ctx.Process(target=worker_process,
                         args=(port, queue, jobs, workers, credits, False, ready, results))
    worker.start()
    ready.wait(PHASE_TIMEOUT_S)
    started = time.perf_counter()
    producer = ctx.Process(target=producer_process,
                           args=(port, queue, jobs, False, batch, results))
    producer.start()
    outcome: dict[str, Any] = {}
    for _ in range(2):
        kind, value = results.get(timeout=PHASE_TIMEOUT_S)
        if kind == "workers":
            outcome = value
    worker.join()
    producer.join()
    if outcome["errors"]:
        raise RuntimeError(f"worker errors: {outcome['errors'][:3]}")
    return jobs / (outcome["finished"] - started)


def latency_run(port: int, queue: str, rate: int, seconds: float, storage: Path
                ) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Any] = ctx.Queue()
    ready = ctx.Event()
    jobs = int(rate * seconds)
    worker = ctx.Process(target=worker_process,
                         args=(port, queue, jobs, 1, 4096, True, ready, results))
    worker.start()
    ready.wait(PHASE_TIMEOUT_S)
    sync_samples: list[float] = []
    stop = threading.Event()
    probe = threading.Thread(target=_sync_probe, args=(storage, sync_samples, stop))
    probe.start()

    async def paced() -> None:
        conn = await connect(port, name="paced-producer")
        interval = 1.0 / rate
        start = time.perf_counter()
        for index in range(jobs):
            delay = start + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            conn.send(14, {"q": queue, "job_payload": {"n": index, "t": time.monotonic_ns()}},
                      want_reply=False)
        await asyncio.sleep(0.5)
        conn.transport.close()

    asyncio.run(paced())
    _, outcome = results.get(timeout=PHASE_TIMEOUT_S)
    worker.join()
    stop.set()
    probe.join()
    latencies = sorted(outcome["latencies"])
    sync_sorted = sorted(sync_samples)
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "max_ms": latencies[-1],
        "disk_sync_p50_ms": statistics.median(sync_sorted) if sync_sorted else 0.0,
        "disk_sync_p99_ms": sync_sorted[int(len(sync_sorted) * 0.99) - 1] if sync_sorted else 0.0,
    }


def latency_nosync(storage: Path, rate: int, seconds: float, repeat: int
                   ) -> dict[str, Any]:
    """The latency phase on a server of its own with `storage.sync = false`."""
    server, port = start_server(storage, "--storage.sync", "false")
    try:
        asyncio.run(_admin(port, "lat"))
        runs = [latency_run(port, "lat", rate, seconds, storage) for _ in range(repeat)]
    finally:
        server.terminate()
        server.wait(60)
    report: dict[str, Any] = {key: round(statistics.median(run[key] for run in runs), 3)
                              for key in runs[0]}
    if repeat > 1:
        report["runs"] = [{k: round(v, 3) for k, v in run.items()} for run in runs]
    return report


def _sync_probe(storage: Path, samples: list[float], stop: threading.Event) -> None:
    """The disk's own commit cost: a 4 KiB write and fdatasync, 100 times a second."""
    path = storage.parent / "sync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    block = b"x" * 4096
    try:
        while not stop.wait(0.01):
            started = time.perf_counter()
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)


async def _fill_backlog(port: int, queue: str, jobs: int) -> None:
    await _produce(port, queue, jobs, False)


async def _clear(port: int, queue: str) -> tuple[float, dict[str, int]]:
    conn = await connect(port, name="clearer")
    started = time.perf_counter()
    reply = await conn.request(28, {"q": queue})
    conn.transport.close()
    return time.perf_counter() - started, reply["removed"]


def end_to_end_while_clearing(port: int, queue: str, backlog_queue: str, jobs: int
                              ) -> dict[str, Any]:
    """The end-to-end run, with CLEARQUEUE of the backlog queue started alongside it."""
    outcome: dict[str, Any] = {}

    def clear_in_thread() -> None:
        time.sleep(0.2)  # benchmark choreography: start the clear once dispatch is running
        outcome["clear_seconds"], outcome["cleared"] = asyncio.run(_clear(port, backlog_queue))

    clearer = threading.Thread(target=clear_in_thread)
    clearer.start()
    outcome["jobs_per_s"] = round(end_to_end(port, queue, jobs))
    clearer.join(PHASE_TIMEOUT_S)
    return outcome


def _timed_e2e(pid: int, port: int, queue: str, jobs: int, batch: int = 1
               ) -> tuple[int, float]:
    cpu0 = cpu_seconds(pid)
    rate = round(end_to_end(port, queue, jobs, batch=batch))
    return rate, round((cpu_seconds(pid) - cpu0) / jobs * 1e6, 1)


def backlog_pairs(empty_storage: Path, backlog_pid: int, backlog_port: int, jobs: int,
                  rounds: int) -> dict[str, Any]:
    """The e2e run on the server holding the backlog, paired with the same run on a second
    server whose store holds no backlog, alternating which goes first (ABBA), so that both
    see the same host conditions (the idle server of a pair uses no CPU meanwhile).

    Two pairs per round: `other_queue` runs on a queue of its own beside the backlog queue;
    `same_queue` runs on the backlog queue itself, so workers take the oldest of 100,000+
    waiting jobs while the producer adds more (the backlog stays the same size).
    """
    empty_server, empty_port = start_server(empty_storage)
    runs: dict[str, dict[str, list[tuple[int, float]]]] = {
        variant: {"empty": [], "with_backlog": []} for variant in ("other_queue", "same_queue")}
    try:
        asyncio.run(_admin(empty_port, "e2e_backlog", "backlog"))
        for index in range(max(rounds, 1)):
            for variant, queue in (("other_queue", "e2e_backlog"), ("same_queue", "backlog")):
                order = [("empty", empty_server.pid, empty_port),
                         ("with_backlog", backlog_pid, backlog_port)]
                if index % 2:
                    order.reverse()
                for side, pid, port in order:
                    runs[variant][side].append(_timed_e2e(pid, port, queue, jobs))
    finally:
        empty_server.terminate()
        empty_server.wait(60)
    report: dict[str, Any] = {}
    for variant, sides in runs.items():
        empty_rate = statistics.median(rate for rate, _ in sides["empty"])
        backlog_rate = statistics.median(rate for rate, _ in sides["with_backlog"])
        report[variant] = {
            "empty_jobs_per_s": round(empty_rate),
            "with_backlog_jobs_per_s": round(backlog_rate),
            "with_backlog_vs_empty": round(backlog_rate / empty_rate, 3),
            "empty_server_cpu_us_per_job": statistics.median(c for _, c in sides["empty"]),
            "with_backlog_server_cpu_us_per_job": statistics.median(
                c for _, c in sides["with_backlog"]),
            "runs": sides,
        }
    return report


def scrape_pairs(pid: int, port: int, jobs: int, rounds: int) -> dict[str, Any]:
    """The e2e run with a scraper reading /metrics every second, paired with the same run
    without one, on the same server, alternating which goes first (ABBA)."""
    url = f"http://127.0.0.1:{HTTP_PORTS[pid]}/metrics"
    sides: dict[str, list[tuple[int, float]]] = {"none": [], "scraper": []}
    scrapes = 0
    for index in range(max(rounds, 1)):
        order = ["none", "scraper"] if index % 2 == 0 else ["scraper", "none"]
        for side in order:
            stop = threading.Event()

            def scrape(stop: threading.Event = stop) -> None:
                nonlocal scrapes
                while not stop.wait(SCRAPE_INTERVAL_S):
                    with urllib.request.urlopen(url, timeout=10) as reply:
                        reply.read()
                    scrapes += 1

            scraper = threading.Thread(target=scrape, daemon=True)
            if side == "scraper":
                scraper.start()
            try:
                sides[side].append(_timed_e2e(pid, port, "e2e", jobs))
            finally:
                stop.set()
                if scraper.is_alive():
                    scraper.join(PHASE_TIMEOUT_S)
    none_rate = statistics.median(rate for rate, _ in sides["none"])
    scraper_rate = statistics.median(rate for rate, _ in sides["scraper"])
    ratios = [s[0] / n[0] for s, n in zip(sides["scraper"], sides["none"], strict=True)]
    return {"none_jobs_per_s": round(none_rate), "scraper_jobs_per_s": round(scraper_rate),
            "scraper_vs_none": round(scraper_rate / none_rate, 3),
            "median_paired_ratio": round(statistics.median(ratios), 3),
            "none_server_cpu_us_per_job": statistics.median(c for _, c in sides["none"]),
            "scraper_server_cpu_us_per_job": statistics.median(c for _, c in sides["scraper"]),
            "scrapes": scrapes, "runs": sides}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--phases", default="enqueue,e2e,latency,backlog,clear")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the e2e and latency phases, and the backlog pairs, this many "
                             "times; report medians (and every run): this host's disk and "
                             "CPU vary from run to run")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    with tempfile.TemporaryDirectory(prefix="overhop-bench-") as tmp:
        storage = Path(tmp) / "data"
        server, port = start_server(storage)
        report: dict[str, Any] = {}
        try:
            asyncio.run(_admin(port, "enq", "e2e", "lat", "backlog", "e2e_backlog",
                               "e2e_clear"))
            for phase, batch in (("enqueue", 1), ("enqueue_many", BULK)):
                if phase in phases:
                    cpu0 = cpu_seconds(server.pid)
                    elapsed = asyncio.run(_produce(port, "enq", args.jobs, False, batch))
                    report[f"{phase}_jobs_per_s"] = round(args.jobs / elapsed)
                    report[f"{phase}_server_cpu_us_per_job"] = round(
                        (cpu_seconds(server.pid) - cpu0) / args.jobs * 1e6, 1)
            for phase, batch in (("e2e", 1), ("e2e_many", BULK)):
                if phase not in phases:
                    continue
                rates: list[int] = []
                cpus: list[float] = []
                for _ in range(args.repeat):
                    rate, cpu = _timed_e2e(server.pid, port, "e2e", args.jobs, batch)
                    rates.append(rate)
                    cpus.append(cpu)
                report[f"{phase}_jobs_per_s"] = round(statistics.median(rates))
                report[f"{phase}_server_cpu_us_per_job"] = round(statistics.median(cpus), 1)
                if args.repeat > 1:
                    report[f"{phase}_runs"] = {"jobs_per_s": rates,
                                               "server_cpu_us_per_job": cpus}
            if "scrape" in phases:
                report["scrape_pairs"] = scrape_pairs(server.pid, port, args.jobs, args.repeat)
            if "latency" in phases:
                runs = [latency_run(port, "lat", args.rate, args.latency_seconds, storage)
                        for _ in range(args.repeat)]
                report["latency"] = {key: round(statistics.median(run[key] for run in runs), 3)
                                     for key in runs[0]}
                if args.repeat > 1:
                    report["latency_runs"] = [{k: round(v, 3) for k, v in run.items()}
                                              for run in runs]
            if "latency_nosync" in phases:
                report["latency_nosync"] = latency_nosync(Path(tmp) / "nosync", args.rate,
                                                          args.latency_seconds, args.repeat)
            if "backlog" in phases or "clear" in phases:
                asyncio.run(_fill_backlog(port, "backlog", args.backlog))
                report["backlog_waiting_jobs"] = args.backlog
            if "backlog" in phases:
                report["backlog_pairs"] = backlog_pairs(Path(tmp) / "empty", server.pid, port,
                                                        args.jobs, args.repeat)
            if "clear" in phases:
                report["e2e_while_clearing_backlog"] = end_to_end_while_clearing(
                    port, "e2e_clear", "backlog", args.jobs)
            if "security" in phases:
                from bench_security import security_report

                report["security"] = security_report(Path(tmp) / "security", args.jobs,
                                                     args.repeat)
            report["server_cpu_seconds_total"] = round(cpu_seconds(server.pid), 2)
            report["server_peak_rss_mb"] = round(peak_rss_mb(server.pid), 1)
        finally:
            server.terminate()
            server.wait(60)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
