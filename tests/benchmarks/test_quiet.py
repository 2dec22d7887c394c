"""benchmarks.quiet: a busy child process is seen as busy until it stops, then as idle."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.quiet import cpu_seconds, process_tree, wait_idle


def test_waits_for_a_spinning_child_then_returns_once_it_stops():
    # A child that spins for 0.6 s, then sleeps: the wait must last about as long as the spin.
    child = subprocess.Popen([sys.executable, "-c", "import time\nend = time.monotonic() + 0.6\n"
                              "while time.monotonic() < end: pass\ntime.sleep(30)"])
    try:
        time.sleep(0.2)  # the interpreter is up and spinning
        assert child.pid in process_tree(os.getpid())
        waited = wait_idle([child.pid], timeout_s=10)
        assert 0.1 <= waited < 5, waited
        before = cpu_seconds([child.pid])
        time.sleep(0.3)
        assert cpu_seconds([child.pid]) - before <= 0.02  # idle now, as wait_idle said
        assert wait_idle([child.pid], timeout_s=10) < 0.5  # and an idle tree returns at once
    finally:
        child.kill()
        child.wait(timeout=30)


def test_a_process_that_never_settles_is_waited_for_at_most_the_timeout():
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        started = time.monotonic()
        assert wait_idle([child.pid], timeout_s=0.5) >= 0.5
        assert time.monotonic() - started < 3
    finally:
        child.kill()
        child.wait(timeout=30)
