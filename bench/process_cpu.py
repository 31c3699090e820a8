"""CPU seconds a running process has used, from /proc (Linux): what the benchmarks count for processes they did not
start with os.wait4 (a bridge, a broker, a browser), each measured over a span by taking it twice."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_seconds", "tree_cpu_seconds"]

TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (fields 14 and 15 of proc(5))."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and every descendant alive now (a browser and its renderers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(_stat_fields(int(stat.parent.name))[1])
        except (OSError, IndexError, ValueError):
            continue  # gone since listed
        children.setdefault(parent, []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            total += cpu_seconds(current)
        except OSError:
            continue
    return total
