"""A full file system, for real, under the writer process: writes that grow the store are
refused with STORAGE_FULL (not INTERNAL), each refusal names what was refused, the other
writes go on while the room left holds them, nothing is marked failed, and everything is
accepted again once there is room (the writer probes again every `space_probe_interval_s`).

Two ways to run out of room: a file size limit on the writer process (`prlimit`: EFBIG,
which LMDB reports as EIO for a write cut short), and a small tmpfs (ENOSPC; needs the
right to mount, skipped without it).
"""

import asyncio
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from overhop.config.sections import JobsConfig
from overhop.errors import ErrorCode, RequestError
from overhop.model.jobs import JobRecord, JobStatus
from overhop.model.queues import QueueConfig, QueueRecord, QueueState
from overhop.storage import operations as ops
from overhop.storage.store import Store
from overhop.storage.writer import Writer

# Small enough to fill in a second, far below the map's maximum (the map is not the limit).
ROOM_BYTES = 2 << 20
PAYLOAD = b"\xc5\xea\x60" + bytes(60_000)  # MessagePack bin 16 of 60,000 bytes
PROBE_INTERVAL_S = 0.2
# Bounds a failure only: the writer accepts new jobs again one probe after room is back.
RECOVERY_DEADLINE_S = 20.0


def _job(n: int, payload: bytes = PAYLOAD) -> JobRecord:
    return JobRecord(f"q:01234567-89ab-7def-8123-4567{n:08d}", "q", JobStatus.WAITING,
                     payload, 1, 1, None, None, None)


class FileSizeLimit:
    """Room ends at a file size limit set on the writer process alone."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "data"
        self._pid = 0

    def limit(self, pid: int, size: int) -> None:
        self._pid = pid
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

    def make_room(self) -> None:
        resource.prlimit(self._pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


class SmallTmpfs:
    """Room ends where a tmpfs of ROOM_BYTES ends (ENOSPC)."""

    def __init__(self, tmp_path: Path) -> None:
        self.mount_point = tmp_path / "tmpfs"
        self.mount_point.mkdir()
        self.path = self.mount_point / "data"
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={ROOM_BYTES}", "tmpfs",
             str(self.mount_point)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")

    def limit(self, pid: int, size: int) -> None:
        """The tmpfs is the limit already."""

    def make_room(self) -> None:
        subprocess.run(["mount", "-o", f"remount,size={ROOM_BYTES * 8}",
                        str(self.mount_point)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.mount_point)], check=False)


@pytest.fixture(params=["file_size_limit", "tmpfs"])
def room(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FileSizeLimit | SmallTmpfs]:
    if request.param == "file_size_limit":
        yield FileSizeLimit(tmp_path)
        return
    tmpfs = SmallTmpfs(tmp_path)
    try:
        yield tmpfs
    finally:
        tmpfs.unmount()


async def _refusal(durable: "asyncio.Future[Any]") -> RequestError | None:
    """The write's refusal, or None once it is durable."""
    try:
        await durable
    except RequestError as exc:
        return exc
    return None


def test_a_full_disk_refuses_growth_keeps_completions_and_recovers(
        room: FileSizeLimit | SmallTmpfs) -> None:
    store = Store(room.path, map_size=1 << 20, sync=True)

    async def run() -> None:
        writer = Writer(store, asyncio.get_running_loop(), sync=True, max_batch=64,
                        max_map_size=1 << 30, reserved_headroom=1 << 16, jobs=JobsConfig(),
                        space_probe_interval_s=PROBE_INTERVAL_S)
        await writer.start()
        try:
            assert writer.pid is not None
            await writer.submit(ops.AddQueue(
                QueueRecord("qid", "q", QueueState.ACTIVE, 0, QueueConfig()))).durable
            # Ten small jobs out to workers while there is room.
            for n in range(10):
                await writer.submit(ops.Enqueue(_job(n, b"\x01"))).durable
            taken = await writer.submit(ops.TakeWaiting(
                "q", [(f"d{n}", "w") for n in range(10)], 2, [], 0)).durable
            assert len(taken.jobs) == 10
            room.limit(writer.pid, ROOM_BYTES)

            n = accepted = 10
            refused = None
            while refused is None:
                assert n < 200, "the disk never filled"
                refused = await _refusal(writer.submit(ops.Enqueue(_job(n))).durable)
                accepted += refused is None
                n += 1
            assert refused.code == ErrorCode.STORAGE_FULL, refused
            assert str(refused) == "storage is full: new jobs are refused until space is freed"
            assert writer.space_low and not writer.failed

            # Completions go on while the room left holds them; the first that does not
            # fit is refused as what it is.
            completed = 0
            stopped = None
            for job in taken.jobs:
                assert job.delivery_id is not None
                stopped = await _refusal(writer.submit(ops.Complete(
                    job.job_id, job.delivery_id, None, 3, 10)).durable)
                if stopped is not None:
                    break
                completed += 1
            if stopped is not None:
                assert stopped.code == ErrorCode.STORAGE_FULL, stopped
                assert str(stopped).startswith("storage is full: completing a job is refused")
            assert completed >= 1
            assert not writer.failed

            room.make_room()
            deadline = time.monotonic() + RECOVERY_DEADLINE_S
            while await _refusal(writer.submit(ops.Enqueue(_job(n))).durable):
                assert time.monotonic() < deadline, "new jobs never accepted again"
                await asyncio.sleep(PROBE_INTERVAL_S / 2)  # the writer's probe interval
            accepted += 1
            assert not writer.space_low and not writer.failed
            counts = store.counts("q")  # nothing accepted was lost
            assert counts[JobStatus.COMPLETED] == completed
            assert sum(counts.values()) == accepted
        finally:
            await writer.stop()

    try:
        asyncio.run(run())
    finally:
        store.close()
