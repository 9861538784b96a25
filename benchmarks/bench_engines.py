"""The same broker runs on both storage engines: LMDB (the default) and PostgreSQL.

    .venv/bin/python benchmarks/bench_engines.py [--rounds 3] [--jobs 20000]

Starts a throwaway PostgreSQL server (initdb in a temporary directory, fsync on, 127.0.0.1
only; as the `postgres` user when run as root) and stops it at the end. Each round runs
`bench_broker.py --phases e2e,enqueue` once per engine, alternating, each on a fresh
store (a new LMDB directory, a new database), and prints jobs/s and the server's CPU per
job (server and writer processes) per round, then the medians and the ratio of the medians.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support.postgres import PostgresServer  # noqa: E402

FIGURES = ("e2e_jobs_per_s", "e2e_server_cpu_us_per_job", "enqueue_jobs_per_s",
           "enqueue_server_cpu_us_per_job")


def run_broker_bench(jobs: int, server_args: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_broker.py"), "--phases",
         "e2e,enqueue", "--jobs", str(jobs)],
        env={**os.environ, "OVERHOP_BENCH_SERVER_ARGS": server_args},
        capture_output=True, text=True, check=True, timeout=900)
    report = json.loads(result.stdout[result.stdout.index("{"):])
    return {name: float(report[name]) for name in FIGURES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20_000)
    args = parser.parse_args()
    postgres = PostgresServer().start()
    runs: dict[str, list[dict[str, float]]] = {"lmdb": [], "postgres": []}
    try:
        for round_number in range(1, args.rounds + 1):
            for engine in ("lmdb", "postgres"):
                server_args = ("" if engine == "lmdb" else
                               f"--storage.engine postgres --storage.postgres.dsn "
                               f"{postgres.new_database()}")
                figures = run_broker_bench(args.jobs, server_args)
                runs[engine].append(figures)
                print(f"round {round_number} {engine:8} " + " ".join(
                    f"{name}={value:,.1f}" for name, value in figures.items()), flush=True)
    finally:
        postgres.stop()
    print("| figure | LMDB | PostgreSQL | PostgreSQL / LMDB |")
    print("|---|---|---|---|")
    for name in FIGURES:
        lmdb = statistics.median(run[name] for run in runs["lmdb"])
        pg = statistics.median(run[name] for run in runs["postgres"])
        print(f"| {name} | {lmdb:,.1f} | {pg:,.1f} | {pg / lmdb:.2f} |")


if __name__ == "__main__":
    main()
