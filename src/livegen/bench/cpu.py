"""CPU use over a measurement window: per process (all threads), per thread of this process, and
the whole machine.

Linux `/proc` gives another process's time (the node subprocess), one thread's time and the
machine's busy share; where it is missing those read as None and only this process's own time
(`os.times`) is kept.
"""

from __future__ import annotations

import os
import time

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_cpu_seconds(path: str) -> float | None:
    """User + system CPU seconds from a `/proc/.../stat` file, None where there is none."""
    try:
        with open(path, encoding="ascii") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after it start behind the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15


def process_cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU seconds of process `pid` (this process when None), all its threads."""
    if pid is None or pid == os.getpid():
        times = os.times()
        return times.user + times.system
    return _stat_cpu_seconds(f"/proc/{pid}/stat")


def thread_cpu_seconds(tid: int | None) -> float | None:
    """User + system CPU seconds of one thread of this process (its native id), else None."""
    return None if tid is None else _stat_cpu_seconds(f"/proc/self/task/{tid}/stat")


def machine_cpu_ticks() -> tuple[int, int, int] | None:
    """(busy, total, steal) CPU ticks of the whole machine since boot, from /proc/stat. Steal
    is time a virtual machine's CPUs wanted to run and the host ran something else."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total, values[7] if len(values) > 7 else 0


def _share(before: float | None, after: float | None, wall: float) -> float | None:
    """CPU seconds over `wall` seconds in percent of one core."""
    if before is None or after is None:
        return None
    return round(100.0 * (after - before) / wall, 1)


class CpuWindow:
    """CPU use of named processes (a None pid is this process) and, optionally, of named
    threads of this process (by native id) between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int | None], threads: dict[str, int | None] | None = None):
        self.pids = pids
        self.threads = threads or {}
        self._wall = 0.0
        self._start: dict[str, float | None] | None = None
        self._threads_start: dict[str, float | None] = {}
        self._machine: tuple[int, int, int] | None = None

    def start(self) -> None:
        self._wall = time.monotonic()
        self._start = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine = machine_cpu_ticks()
        self._threads_start = {name: thread_cpu_seconds(tid) for name, tid in self.threads.items()}

    def stop(self) -> dict[str, float | None]:
        """`<name>_pct` per process (100 = one core busy); `machine_busy_pct` and
        `machine_steal_pct` (of all cores); `other_processes_pct` (100 = one core: what the
        machine's other processes used, which a measurement shares the cores with); then
        `<name>_pct` per thread."""
        assert self._start is not None, "start() first"
        wall = max(time.monotonic() - self._wall, 1e-6)
        result = {f"{name}_pct": _share(self._start[name], process_cpu_seconds(pid), wall)
                  for name, pid in self.pids.items()}
        machine = machine_cpu_ticks()
        result["machine_busy_pct"] = result["machine_steal_pct"] = result["other_processes_pct"] = None
        if self._machine is not None and machine is not None and machine[1] > self._machine[1]:
            total = machine[1] - self._machine[1]
            busy, steal = machine[0] - self._machine[0], machine[2] - self._machine[2]
            result["machine_busy_pct"] = round(100.0 * busy / total, 1)
            result["machine_steal_pct"] = round(100.0 * steal / total, 1)
            named = [v for k, v in result.items() if k.endswith("_process_pct") and v is not None]
            cores = os.cpu_count() or 1
            result["other_processes_pct"] = round(max(0.0, 100.0 * (busy - steal) / total * cores - sum(named)), 1)
        for name, tid in self.threads.items():
            result[f"{name}_pct"] = _share(self._threads_start[name], thread_cpu_seconds(tid), wall)
        return result
