"""What the machine did, read from /proc (Linux): CPU time a process used, its resident memory, and the
time the hypervisor gave to other machines (steal), which decides the tail of any figure on a shared VM."""

from __future__ import annotations

import os
import time
from pathlib import Path


def cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) ticks of all CPUs so far, from /proc/stat; None where there is none."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])

def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of CPU time the hypervisor gave to other machines between two cpu_ticks()."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100 * (after[0] - before[0]) / (after[1] - before[1]), 1)

def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def status_mib(pid: int, field: str) -> float:
    """A memory figure of /proc/PID/status in MiB: VmRSS (resident), RssAnon (its anonymous part:
    heap, thread arenas, stacks; not the pages of files mapped in, such as the libraries' code)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def process_rss_mib(pid: int) -> float:
    return status_mib(pid, "VmRSS")

def idle_cpu_percent(pid: int, seconds: float = 5.0) -> float:
    cpu_before, started = process_cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return round(100 * (process_cpu_s(pid) - cpu_before) / (time.monotonic() - started), 3)
