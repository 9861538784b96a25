"""Memory and boot time with a large store: a server fills one queue with `--jobs` waiting
jobs (ENQUEUEMANY of 100), is stopped, and is started again on the same storage `--boots`
times.

Reports, for the server and its writer process together: resident memory (VmRSS, and the
peak VmHWM) once the store is full, and after each boot; each boot's time from the
process start to `server_started` (listening) and to the first HELLO answered; and the
queue's waiting count after each boot, which must be every job enqueued (a boot that
reads less is a failure, not a figure).

    python benchmarks/bench_boot.py [--jobs 1000000] [--boots 3]

The issue's bounds (issue 19): at most 100 MB for the two processes with 1,000,000 jobs
stored, and a boot under 1 s. Boot reads no job: counters and the queue records only.
"""

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_broker import _admin, _produce, server_pids, start_server
from bench_client import connect

QUEUE = "backlog"
BATCH = 100
STOP_TIMEOUT_S = 60.0


def resident_mb(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM of the server and its writer process together, in MB."""
    now = peak = 0.0
    for each in server_pids(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                now += int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak += int(line.split()[1]) / 1024
    return round(now, 1), round(peak, 1)


async def _waiting(port: int) -> tuple[int, float]:
    """The queue's waiting count, and the seconds the first HELLO took to be answered."""
    started = time.perf_counter()
    conn = await connect(port, name="boot-check")
    hello_s = time.perf_counter() - started
    stats = (await conn.request(18, {"q": QUEUE}))["stats"]
    assert conn.transport is not None
    conn.transport.close()
    return int(stats["waiting"]), hello_s


def stop(process: "subprocess.Popen[str]") -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(STOP_TIMEOUT_S)


def boot(storage: Path, jobs: int) -> dict[str, Any]:
    started = time.perf_counter()
    process, port = start_server(storage)
    listening_s = time.perf_counter() - started
    try:
        waiting, hello_s = asyncio.run(_waiting(port))
        if waiting != jobs:
            raise RuntimeError(f"after boot {waiting} jobs wait, not {jobs}")
        rss, peak = resident_mb(process.pid)
    finally:
        stop(process)
    return {"listening_s": round(listening_s, 3),
            "first_hello_s": round(listening_s + hello_s, 3),
            "rss_mb": rss, "peak_rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--boots", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="overhop-boot-") as directory:
        storage = Path(directory) / "store"
        process, port = start_server(storage)
        try:
            asyncio.run(_admin(port, QUEUE))
            fill_s = asyncio.run(_produce(port, QUEUE, args.jobs, False, BATCH))
            filled_rss, filled_peak = resident_mb(process.pid)
        finally:
            stop(process)
        data_mb = sum(f.stat().st_size for f in storage.iterdir()) / 2**20
        boots = [boot(storage, args.jobs) for _ in range(args.boots)]
    print(json.dumps({
        "jobs": args.jobs,
        "fill_jobs_per_s": round(args.jobs / fill_s),
        "store_file_mb": round(data_mb, 1),
        "filled_rss_mb": filled_rss,
        "filled_peak_rss_mb": filled_peak,
        "boot_listening_s_median": statistics.median(b["listening_s"] for b in boots),
        "boot_first_hello_s_median": statistics.median(b["first_hello_s"] for b in boots),
        "boot_rss_mb_max": max(b["rss_mb"] for b in boots),
        "boots": boots,
    }, indent=2))


if __name__ == "__main__":
    main()
