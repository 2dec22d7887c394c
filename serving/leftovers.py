"""What a Triton server that is gone can leave behind, and how `stop` clears it away.

That means python-backend stub processes and shared-memory regions. Both are found by what is ours
by construction: the server's own state directory, process group and region-name prefix.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

from .state import is_tritonserver
from .wheel import STUB_NAME

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
# Client-side system shared-memory regions are named `pixelport_<pid>_...` by pixelport clients, so a
# region whose creating process is gone is a leftover that `stop` may remove without hurting anyone.
CLIENT_SHM_PATTERN = re.compile(r"^pixelport_(\d+)_")
KILL_WAIT_S = 5.0


class Process(NamedTuple):
    pid: int
    argv: list[str]
    ppid: int
    pgid: int


def processes(proc: Path = Path("/proc")) -> Iterator[Process]:
    """Every live process we can read (zombies hold no memory or CPU and are skipped)."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            cwd = os.readlink(entry / "cwd") if argv[0] and not argv[0].startswith("/") else "/"
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if fields[0] in "ZX" or not argv[0]:
            continue
        argv[0] = os.path.normpath(os.path.join(cwd, argv[0]))
        yield Process(int(entry.name), argv, int(fields[1]), int(fields[2]))


def stub_leftovers(state_dir: Path, server_pid: Optional[int] = None) -> list[Process]:
    """Python-backend stubs of the server recorded in `state_dir` whose tritonserver is gone.

    A stub is this server's when it runs from `state_dir` (the embedded mode links the stub into
    `<state_dir>/backends/python/`; /proc/PID/exe resolves into the shared wheel, so it cannot tell
    servers apart), or when it is in the process group of `server_pid` (the server leads its own
    session and its stubs inherit that group; a group id is never reused while a member lives).
    Stubs whose parent is a live tritonserver belong to a running server and are left alone.
    """
    roots = {os.path.abspath(state_dir) + os.sep, os.path.realpath(state_dir) + os.sep}
    found = []
    for process in processes():
        ours = process.argv[0].startswith(tuple(roots)) or (
            server_pid is not None and process.pgid == server_pid and os.path.basename(process.argv[0]) == STUB_NAME)
        if ours and not is_tritonserver(process.ppid):
            found.append(process)
    return found


def kill_stub_leftovers(state_dir: Path, server_pid: Optional[int] = None) -> list[int]:
    """SIGKILL the stubs `stub_leftovers` finds and wait until they are gone; returns their pids."""
    # Why: a stub outlives a tritonserver that died without a clean shutdown (SIGKILL, OOM killer,
    # crash). It only polls kill(parent_pid, 0), which an unreaped (zombie) parent passes; one whose
    # server was killed mid-request hangs for ever in a futex on the shared memory; and it ignores
    # SIGTERM by design (the backend stops it through shared memory). So only SIGKILL ends it.
    leftovers = stub_leftovers(state_dir, server_pid)
    for process in leftovers:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pids = [p.pid for p in leftovers]
    deadline = time.monotonic() + KILL_WAIT_S
    while pids and time.monotonic() < deadline:
        live = {p.pid for p in processes()}
        if not live.intersection(pids):
            break
        time.sleep(0.05)
    if pids:
        owner = f"Triton pid {server_pid}" if server_pid is not None else f"a Triton in {state_dir}"
        log.warning("killed %d python-backend stub(s) left behind by %s: pids %s", len(pids), owner,
                    ", ".join(map(str, pids)))
    return pids


def dead_client(name: str) -> bool:
    """True for a region name made by a pixelport client whose process is gone."""
    match = CLIENT_SHM_PATTERN.match(name.lstrip("/"))
    return match is not None and not Path(f"/proc/{match.group(1)}").exists()


def clean_client_regions(client, shm_dir: Path = SHM_DIR) -> list[str]:
    """Unregister from a running server the system shared-memory regions of pixelport clients that
    died without cleaning up, and unlink their segments; returns the region names.

    A client that is killed (SIGKILL, OOM) cannot unregister: the server keeps the region mapped,
    and the segment keeps its memory in /dev/shm, until someone does it for the client."""
    regions = client.get_system_shared_memory_status(as_json=True).get("regions", {})
    entries = regions.values() if isinstance(regions, dict) else regions
    cleaned = []
    for entry in entries:
        name, key = entry.get("name", ""), entry.get("key", "")
        if not (dead_client(name) and dead_client(key)):
            continue  # not ours to judge: only names with a dead creator's pid are leftovers
        client.unregister_system_shared_memory(name)
        (shm_dir / key.lstrip("/")).unlink(missing_ok=True)
        cleaned.append(name)
    removed = remove_shm_leftovers("", shm_dir)  # segments of dead clients that were never registered
    if cleaned or removed:
        log.info("unregistered %d region(s) of dead clients (%s); unlinked %s", len(cleaned), ", ".join(cleaned),
                 ", ".join(removed) or "no other segment")
    return cleaned


def remove_shm_leftovers(server_prefix: str, shm_dir: Path = SHM_DIR) -> list[str]:
    """Remove this server's python-backend regions and regions of pixelport clients that are gone."""
    removed = []
    if not shm_dir.is_dir():
        return removed
    for entry in shm_dir.iterdir():
        if (server_prefix and entry.name.startswith(server_prefix)) or dead_client(entry.name):
            try:
                entry.unlink()
                removed.append(entry.name)
            except OSError:
                pass
    if removed:
        log.info("removed shared-memory leftovers: %s", ", ".join(removed))
    return removed
