"""Room to write, in the writer process: the map's growth, the reserved headroom, a full
file system, and when operations that grow the store are refused.

The map grows by itself: before each batch, if less than a quarter of the map (or less than
the reserved headroom) is free, the writer enlarges it (the server adopts the new size on
its next read). At the maximum size, once less than `reserved_headroom` is free, operations
that grow the store (`Operation.grows`: new queues, new jobs, log lines) are refused with
STORAGE_FULL while completing and removing jobs go on. LMDB reuses the pages that removals
free, but its high-water mark (all we can read) never goes down: so once refusing, the
writer lets growing operations try again every `probe_interval_s`, and a commit that runs
out of room refuses them again.

A full file system (ENOSPC, EFBIG past a file size limit, EDQUOT) is the same case with
another cause: growing operations are refused, the others go on while the room left holds
them, and growing operations are tried again every `probe_interval_s`; the first commit
that holds them again ends the refusal. LMDB reports a write cut short as EIO, which is how
a full disk usually reaches it: an EIO counts as a full disk when the file system, or the
process's file size limit, has less than `SHORT_WRITE_MARGIN` left.
"""

import errno
import os
import resource
import threading
import time
from typing import Any

import lmdb

from overhop.errors import ErrorCode
from overhop.logs import get_logger
from overhop.storage.store import Store
from overhop.storage.writer_messages import Refusal

log = get_logger("overhop.storage")

# How often growing operations are tried again once refused for lack of space: rare enough
# that a truly full store is not hammered, soon enough after a clear, retention or space
# freed on the disk.
SPACE_PROBE_INTERVAL_S = 10.0
# An EIO from a commit means a full disk when less than this is left: more than one write
# of a commit (LMDB writes at most 64 pages at a time, or one large record's pages).
SHORT_WRITE_MARGIN = 16 << 20
_NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class Space:
    def __init__(self, store: Store, *, max_map_size: int, reserved_headroom: int,
                 probe_interval_s: float = SPACE_PROBE_INTERVAL_S) -> None:
        self._store = store
        self._env = store.env
        self._max_map_size = max_map_size
        self._headroom = reserved_headroom
        self._probe_interval_s = probe_interval_s
        self._page_size: int = store.env.stat()["psize"]
        info = store.env.info()
        # Changed only by `grow`: kept here so that a report does not ask LMDB for it.
        self.map_size: int = info["map_size"]
        self._last_txnid: int = info["last_txnid"]
        self._used = (info["last_pgno"] + 1) * self._page_size
        # Refusing growing operations, since when, and why.
        self.low = False
        self._low_since = 0.0
        self._trust_high_water = True
        self._disk_full = False
        # The syncer's sync and a map resize never overlap.
        self._env_lock = threading.Lock()

    def before_batch(self) -> None:
        """Grow the map if it is getting full; decide whether growth is refused."""
        now = time.monotonic()
        if self._disk_full:
            if now - self._low_since > self._probe_interval_s:
                self._disk_full = False
                self.low = False  # try again: a commit out of room refuses growth anew
                log.info("storage_space_probe")
            return
        free = self.map_size - self._used
        if free < max(self.map_size // 4, self._headroom) and self.grow():
            return
        if free >= self._headroom:
            self.low = False
            self._trust_high_water = True
        elif self._trust_high_water:
            self.refuse_growth()
        elif self.low and now - self._low_since > self._probe_interval_s:
            self.low = False
            log.info("storage_space_probe")

    def after_batch(self) -> bool:
        """Whether the batch's commits wrote anything; notes how much of the map is used.
        The writer's one call to LMDB's `env.info()` per batch."""
        info = self._env.info()
        wrote = info["last_txnid"] != self._last_txnid
        self._last_txnid = info["last_txnid"]
        self._used = (info["last_pgno"] + 1) * self._page_size
        return wrote

    def refuse_growth(self) -> None:
        if not self.low:
            log.warning("storage_full", max_map_size=self._max_map_size,
                        headroom=self._headroom, disk_full=self._disk_full)
        self.low = True
        self._trust_high_water = False
        self._low_since = time.monotonic()

    def disk_full(self, exc: lmdb.Error) -> bool:
        """Whether this LMDB error means the file system had no room (and note it)."""
        code: Any = getattr(exc, "code", 0)
        full = code in _NO_SPACE or (code == errno.EIO and self._little_room_left())
        if full and not self._disk_full:
            log.warning("storage_disk_full", error=str(exc))
        self._disk_full = self._disk_full or full
        return full

    def _little_room_left(self) -> bool:
        path = self._store.path
        try:
            fs = os.statvfs(path)
            if fs.f_bavail * fs.f_frsize < SHORT_WRITE_MARGIN:
                return True
            limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
            return (limit != resource.RLIM_INFINITY
                    and os.path.getsize(path / "data.mdb") + SHORT_WRITE_MARGIN > limit)
        except OSError:
            return False

    def refusal(self, kind: Any) -> Refusal:
        """STORAGE_FULL, worded by what was refused (`kind` is the operation's class)."""
        why = (" until space is freed" if kind.grows
               else ": even the space kept for such writes is used up")
        return str(ErrorCode.STORAGE_FULL), f"storage is full: {kind.subject} refused{why}", None

    def grow(self) -> bool:
        """Double the map, up to its maximum (the writer has no transaction open here)."""
        current = self.map_size
        if current >= self._max_map_size:
            return False
        target = min(current * 2, self._max_map_size)
        with self._env_lock:
            self._env.set_mapsize(target)
        self.map_size = target
        log.info("storage_map_grown", map_size=target)
        return True

    def sync(self) -> None:
        """Sync the data file (the syncer thread's work)."""
        with self._env_lock:
            self._env.sync(True)
