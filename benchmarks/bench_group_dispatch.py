"""Dispatch cost against the number of groups (issue 17): flat from 1 to 100,000 groups.

    .venv/bin/python benchmarks/bench_group_dispatch.py [--groups 1,100,10000,100000]
                                                        [--dispatches 5000]

For each group count it fills a queue in a real LMDB store (a temporary directory, not
synced) with two waiting jobs per group (at least 10,000 jobs), then times the writer's
own dispatch (`apply_take_waiting`, the code the writer process runs for TakeWaiting) for
`--dispatches` jobs, 64 per transaction like a busy queue's batches, and prints the
microseconds per dispatched job. A plain queue (no groups) of the same size is the
baseline. Only the writer's work is timed: no sockets, no commits' syncs.
"""

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from overhop.config.sections import JobsConfig
from overhop.model.jobs import JobRecord, JobStatus
from overhop.model.queues import QueueConfig, QueueRecord, QueueState
from overhop.storage.operations.apply_jobs import apply_take_waiting
from overhop.storage.operations.catalogue import TakeWaiting
from overhop.storage.store import Store
from overhop.storage.store_txn import StoreTxn

BATCH = 64
FILL_BATCH = 5000
QUEUE = "bench"


def _uuid7(n: int) -> uuid.UUID:
    """A version-7 UUID whose time part is `n`: ids in creation order."""
    return uuid.UUID(int=(n << 80) | (7 << 76))


def fill(store: Store, groups: int, jobs: int) -> None:
    with store.env.begin(write=True) as txn:
        StoreTxn(store, txn).put_queue(QueueRecord("q1", QUEUE, QueueState.ACTIVE, 0,
                                                   QueueConfig()))
    for start in range(0, jobs, FILL_BATCH):
        with store.env.begin(write=True) as txn:
            store_txn = StoreTxn(store, txn)
            for n in range(start, min(start + FILL_BATCH, jobs)):
                store_txn.insert_job(JobRecord(
                    job_id=f"{QUEUE}:{_uuid7(n + 1)}", queue_name=QUEUE,
                    status=JobStatus.WAITING, payload=b"\x01", created_at_ms=0,
                    execution_start_at_ms=0, max_attempts=None, retry_interval_ms=None,
                    lease_ms=None, group=None if groups == 0 else f"tenant-{n % groups}"))
            store_txn.flush_counters()


def time_dispatch(store: Store, dispatches: int) -> float:
    jobs_config = JobsConfig()
    taken = 0
    elapsed = 0.0
    while taken < dispatches:
        assignments = [(f"d{taken + i}", "w") for i in range(BATCH)]
        with store.env.begin(write=True) as txn:
            store_txn = StoreTxn(store, txn)
            started = time.perf_counter()
            jobs, _, _ = apply_take_waiting(
                store_txn, TakeWaiting(QUEUE, assignments, 1, [], taken), jobs_config)
            store_txn.flush_counters()
            elapsed += time.perf_counter() - started
        if not jobs:
            raise RuntimeError("nothing left to dispatch")
        taken += len(jobs)
    return elapsed / taken * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="1,100,10000,100000")
    parser.add_argument("--dispatches", type=int, default=5000)
    args = parser.parse_args()
    counts = [0] + [int(n) for n in args.groups.split(",")]
    print("| groups | waiting jobs | µs per dispatched job |")
    print("|---|---|---|")
    for groups in counts:
        jobs = max(2 * groups, 10_000, args.dispatches)
        path = Path(tempfile.mkdtemp(prefix="overhop-bench-groups-"))
        try:
            store = Store(path, map_size=4 << 30, sync=False)
            fill(store, groups, jobs)
            cost = time_dispatch(store, args.dispatches)
            store.close()
        finally:
            shutil.rmtree(path)
        print(f"| {groups or 'none (plain)'} | {jobs:,} | {cost:.1f} |", flush=True)


if __name__ == "__main__":
    main()
