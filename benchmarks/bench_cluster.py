"""Cluster mode on PostgreSQL: one broker against three, the same work spread over queues.

    .venv/bin/python benchmarks/bench_cluster.py [--rounds 2] [--jobs 10000] [--queues 3]

Starts a throwaway PostgreSQL server (tests/support/postgres.py: initdb in a temporary
directory, fsync on, 127.0.0.1 only) and stops it at the end. Each round runs, on a fresh
database each:

- **one**: one broker in cluster mode owning every queue;
- **three**: three brokers, the queues spread one per broker (waited for).

In both, every queue gets its own producer process and worker process at once
(`bench_broker.end_to_end`: 4 worker connections with credits, every job acknowledged and
completed, every OK after COMMIT), each talking to the queue's owner. Printed per round: the
jobs/s of each queue and their sum, and the brokers' CPU per job (server and writer
processes); then the medians and the ratio three / one. On a 2-core machine the brokers,
their writers, PostgreSQL and the clients share two cores, so the ratio says how much of a
broker's own cost spreads, not what three machines would do.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import psycopg  # noqa: E402
from bench_broker import _admin, cpu_seconds, end_to_end  # noqa: E402

from tests.support.postgres import PostgresServer  # noqa: E402

LEASE_MS = 10_000
RENEW_MS = 500
START_TIMEOUT_S = 60.0


def start_broker(dsn: str, node_id: str, root: Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "overhop", "serve", "--server.host", "127.0.0.1",
         "--server.port", "0", "--storage.path", str(root / node_id), "--http.port", "0",
         "--logging.level", "info", "--storage.engine", "postgres",
         "--storage.postgres.dsn", dsn, "--cluster.node_id", node_id,
         "--cluster.lease_ms", str(LEASE_MS), "--cluster.renew_ms", str(RENEW_MS)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if '"server_started"' in line:
            port = int(json.loads(line)["port"])
            threading.Thread(target=lambda: [None for _ in process.stderr or []],
                             daemon=True).start()  # keep draining the log
            return process, port
    raise RuntimeError(f"broker {node_id} did not start")


def owners(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT queue, owner FROM overhop_owners "
                            "WHERE owner IS NOT NULL AND lease_until > now()").fetchall()
    return {queue: owner for queue, owner in rows}


def wait_spread(dsn: str, queues: list[str], nodes: list[str]) -> dict[str, str]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        held = owners(dsn)
        placed = [held.get(name) for name in queues]
        if None not in placed and len(set(placed)) == min(len(nodes), len(queues)):
            return {name: held[name] for name in queues}
        time.sleep(0.1)
    raise RuntimeError(f"queues never spread: {owners(dsn)}")


def run_round(postgres: PostgresServer, brokers: int, queue_count: int, jobs: int
              ) -> dict[str, float]:
    dsn = postgres.new_database()
    nodes = [f"n{i}" for i in range(brokers)]
    queues = [f"bench{i}" for i in range(queue_count)]
    with tempfile.TemporaryDirectory() as tmp:
        started = {node: start_broker(dsn, node, Path(tmp)) for node in nodes}
        try:
            import asyncio
            asyncio.run(_admin(started[nodes[0]][1], *queues))
            placed = wait_spread(dsn, queues, nodes)
            pids = [process.pid for process, _ in started.values()]
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
            rates: dict[str, float] = {}

            def run(name: str) -> None:
                rates[name] = end_to_end(started[placed[name]][1], name, jobs)

            threads = [threading.Thread(target=run, args=(name,)) for name in queues]
            wall = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - wall
            cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        finally:
            for process, _ in started.values():
                process.terminate()
            for process, _ in started.values():
                process.wait(60)
    if len(rates) != len(queues):
        raise RuntimeError("a queue's run failed")
    return {"jobs_per_s": sum(rates.values()),
            "wall_jobs_per_s": jobs * len(queues) / wall,
            "broker_cpu_us_per_job": cpu / (jobs * len(queues)) * 1e6,
            **{f"{name}_jobs_per_s": rate for name, rate in rates.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per queue")
    parser.add_argument("--queues", type=int, default=3)
    args = parser.parse_args()
    postgres = PostgresServer().start()
    runs: dict[int, list[dict[str, float]]] = {1: [], 3: []}
    try:
        for round_number in range(1, args.rounds + 1):
            for brokers in (1, 3):
                figures = run_round(postgres, brokers, args.queues, args.jobs)
                runs[brokers].append(figures)
                print(f"round {round_number} brokers={brokers} " + " ".join(
                    f"{name}={value:,.1f}" for name, value in figures.items()), flush=True)
    finally:
        postgres.stop()
    print("| figure | one broker | three brokers | three / one |")
    print("|---|---|---|---|")
    for name in ("jobs_per_s", "wall_jobs_per_s", "broker_cpu_us_per_job"):
        one = statistics.median(run[name] for run in runs[1])
        three = statistics.median(run[name] for run in runs[3])
        print(f"| {name} | {one:,.1f} | {three:,.1f} | {three / one:.2f} |")


if __name__ == "__main__":
    main()
