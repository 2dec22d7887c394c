"""Wait until the processes a benchmark shares the machine with have stopped using the CPU.

onnxruntime's and OpenMP's worker threads spin for a while after each run before they sleep
(libgomp's default spins for a good fraction of a second), so a variant timed right after another
competes with that variant's spinning threads. Timing each variant only once this process and the
server's processes are idle keeps one variant's leftovers out of the next one's numbers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable

TICKS = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (a Triton server's python-backend stubs), from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone: it uses no CPU any more
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICKS


def wait_idle(roots: Iterable[int], busy_fraction: float = 0.25, window_s: float = 0.1,
              timeout_s: float = 2.0) -> float:
    """Block until the process trees under `roots` use less than `busy_fraction` of one core over
    `window_s` (or `timeout_s` passed); returns the seconds waited."""
    start = time.monotonic()
    roots = list(roots)
    while True:
        pids = [p for r in roots for p in process_tree(r)]
        before = cpu_seconds(pids)
        time.sleep(window_s)
        used = cpu_seconds(pids) - before
        waited = time.monotonic() - start
        # /proc counts whole clock ticks (10 ms each), so the bar is a few ticks per window: a
        # spinning thread burns a whole core, the polling itself a tick now and then.
        if used <= busy_fraction * window_s or waited >= timeout_s:
            return waited
