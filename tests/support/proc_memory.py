"""The server's memory as the kernel counts it (Linux /proc), for tests that bound it."""

from pathlib import Path


def memory_kib(pid: int, field: str) -> int:
    """`VmRSS` (resident now) or `VmHWM` (the peak resident size) of `pid`, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_mib(pid: int) -> float:
    return memory_kib(pid, "VmRSS") / 1024


def peak_mib(pid: int) -> float:
    return memory_kib(pid, "VmHWM") / 1024
