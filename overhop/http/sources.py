"""What the HTTP pages read, handed over by the server at start (no globals)."""

import os
import resource
from collections.abc import Callable, Sized
from dataclasses import dataclass, field

from overhop.broker.service import Broker
from overhop.config.schema import Config
from overhop.storage.reads import StoreReads
from overhop.storage.writer import Writer


@dataclass(eq=False)
class Sources:
    config: Config
    broker: Broker
    reads: StoreReads
    writer: Writer
    # The server's open connections (only their number is read).
    connections: Sized
    started_at_ms: int
    clock: Callable[[], int]
    pid: int = field(default_factory=os.getpid)

    def uptime_seconds(self) -> float:
        return max(0, self.clock() - self.started_at_ms) / 1000


def rss_bytes() -> int:
    """Resident set size now, from /proc (Linux); the peak from getrusage elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
