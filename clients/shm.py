"""System shared memory for clients on the same host as Triton: tensors skip the gRPC wire.

Regions are created once per slot (one slot per request in flight), reused, grown only when a
request needs more, registered with each server lazily, and ALWAYS unregistered and unlinked:
on close(), on garbage collection and at interpreter exit (weakref.finalize), also after errors.

Only a SIGKILL (or a crash) skips that. So every region is named `pixelport_<pid>_...` after the
process that made it, and a new client sweeps, at connect, the regions whose process is gone:
from the server (unregister) and from /dev/shm (unlink). `serving status --clean` and the
server's own sweep read the same names.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from .processes import pid_alive

log = logging.getLogger(__name__)

PREFIX = "pixelport_"
SHM_DIR = "/dev/shm"
# pixelport_<pid>_<12 hex>_s<slot>_<tensor>: the pid of the creating process comes first, so a
# sweep can tell a leftover (its process gone) from a live client's region.
OWNER_PATTERN = re.compile(r"^pixelport_(\d+)_")


def region_prefix(pid: Optional[int] = None) -> str:
    """Names start with pixelport_<pid>_ so a leak is easy to attribute (and find in /dev/shm)."""
    return f"{PREFIX}{os.getpid() if pid is None else pid}_"


def owner_pid(name: str) -> Optional[int]:
    """The pid in a pixelport client region's name, or None for any other name."""
    match = OWNER_PATTERN.match(name.lstrip("/"))
    return int(match.group(1)) if match else None


def sweep_dead_regions(make_client: Callable[[str], grpcclient.InferenceServerClient], url: str,
                       timeout_s: float = 10.0, shm_dir: str = SHM_DIR) -> list[str]:
    """Unregister from the server at `url`, and unlink from `shm_dir`, every pixelport client
    region whose creating process no longer runs on this host; returns their names.

    A client that uses system shared memory runs on the server's host, so the pids in the names
    registered there are pids on this host. Housekeeping only: a failure is logged, never raised."""
    removed: list[str] = []
    try:
        client = make_client(url)
        try:
            status = client.get_system_shared_memory_status(as_json=True, client_timeout=timeout_s)
            for name in (status or {}).get("regions", {}):
                pid = owner_pid(name)
                if pid is not None and not pid_alive(pid):
                    client.unregister_system_shared_memory(name, client_timeout=timeout_s)
                    removed.append(name)
        finally:
            client.close()
    except InferenceServerException as exc:
        log.warning("could not sweep leftover shared memory on %s: %s", url, exc)
    try:
        leftovers = [f for f in os.listdir(shm_dir) if (p := owner_pid(f)) is not None and not pid_alive(p)]
    except OSError:
        leftovers = []
    for name in leftovers:
        try:
            os.unlink(os.path.join(shm_dir, name))
            removed.append(name)
        except OSError as exc:  # gone meanwhile, or another user's
            log.debug("could not remove %s/%s: %s", shm_dir, name, exc)
    if removed:
        log.info("removed %d shared-memory regions left by dead clients: %s", len(set(removed)),
                 ", ".join(sorted(set(removed))))
    return sorted(set(removed))


@dataclass
class Region:
    """One POSIX shared-memory region: Triton's name, the shm key and the mapping."""

    name: str
    size: int
    handle: object = None

    @property
    def key(self) -> str:
        return "/" + self.name


@dataclass
class Slot:
    """The regions of one request in flight, one per tensor (input and each output)."""

    index: int
    regions: dict[str, Region] = field(default_factory=dict)

    def write(self, tensor: str, array: np.ndarray) -> None:
        shm.set_shared_memory_region(self.regions[tensor].handle, [np.ascontiguousarray(array)])

    def read(self, tensor: str, dtype: np.dtype, shape: list[int]) -> np.ndarray:
        # A view into the region, which the next request overwrites: copy it out.
        return np.array(shm.get_contents_as_numpy(self.regions[tensor].handle, dtype, shape), copy=True)


@dataclass
class _State:
    """Everything cleanup needs, kept apart from the manager so the finalizer does not keep it
    alive: live regions, and which region names each server URL has registered."""

    regions: dict[str, Region] = field(default_factory=dict)
    registered: dict[str, set[str]] = field(default_factory=dict)
    make_client: Optional[Callable[[str], grpcclient.InferenceServerClient]] = None
    timeout_s: float = 10.0
    closed: bool = False


IN_USE_GRACE_S = 2.0  # Triton may still hold a region for a moment after the last response


def _unregister_one(client: grpcclient.InferenceServerClient, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + IN_USE_GRACE_S
    while True:
        try:
            client.unregister_system_shared_memory(name, client_timeout=timeout_s)
            return
        except InferenceServerException as exc:
            if "in use" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _unregister(state: _State, url: str, names: set[str]) -> None:
    try:
        client = state.make_client(url)
        try:
            for name in sorted(names):
                _unregister_one(client, name, state.timeout_s)
        finally:
            client.close()
    except Exception as exc:  # a dead server forgets its regions anyway; never mask the caller's error
        log.warning("could not unregister shared memory %s from %s: %s", sorted(names), url, exc)


def _destroy(region: Region) -> None:
    try:
        shm.destroy_shared_memory_region(region.handle)
    except Exception as exc:
        log.warning("could not destroy shared memory region %s: %s", region.name, exc)


def _cleanup(state: _State) -> None:
    if state.closed:
        return
    state.closed = True
    for url, names in state.registered.items():
        if names:
            _unregister(state, url, set(names))
    state.registered.clear()
    for region in state.regions.values():
        _destroy(region)
    state.regions.clear()


class SharedMemoryPool:
    """`slots` sets of regions for one client; thread-safe acquire/release of slots.

    `make_client(url)` returns a synchronous Triton gRPC client (registration is rare and
    sync for both DenseClient and AsyncDenseClient, so there is one implementation of it).
    """

    def __init__(self, make_client: Callable[[str], grpcclient.InferenceServerClient],
                 slots: int = 1, timeout_s: float = 10.0) -> None:
        if slots < 1:
            raise ValueError(f"shared memory needs at least one slot, got {slots}")
        self._state = _State(make_client=make_client, timeout_s=timeout_s)
        self._free = [Slot(i) for i in range(slots)]
        self._lock = threading.Lock()
        self._available = threading.Semaphore(slots)
        self._clients: dict[str, grpcclient.InferenceServerClient] = {}
        self._finalizer = weakref.finalize(self, _cleanup, self._state)

    # ---- slots ----------------------------------------------------------------------------
    def acquire(self) -> Slot:
        self._available.acquire()
        with self._lock:
            return self._free.pop()

    def release(self, slot: Slot) -> None:
        with self._lock:
            self._free.append(slot)
        self._available.release()

    # ---- regions --------------------------------------------------------------------------
    def prepare(self, slot: Slot, url: str, sizes: dict[str, int]) -> None:
        """Make `slot` hold at least `sizes` bytes per tensor, registered on `url`."""
        if self._state.closed:
            raise RuntimeError("shared memory pool is closed")
        with self._lock:
            for tensor, size in sizes.items():
                region = slot.regions.get(tensor)
                if region is None or region.size < size:
                    if region is not None:
                        self._drop(region)
                    slot.regions[tensor] = self._create(f"s{slot.index}_{tensor}", size)
            registered = self._state.registered.setdefault(url, set())
            missing = [r for r in slot.regions.values() if r.name not in registered]
        for region in missing:
            self._register(url, region)

    def invalidate(self, url: str) -> None:
        """The server at `url` may have restarted and forgotten its registrations."""
        with self._lock:
            self._state.registered.pop(url, None)

    def _create(self, tag: str, size: int) -> Region:
        name = f"{region_prefix()}{uuid.uuid4().hex[:12]}_{tag}"
        # Round up so stride-mode images of slightly different sizes reuse the region.
        size = max(4096, 1 << (int(size) - 1).bit_length())
        region = Region(name, size)
        region.handle = shm.create_shared_memory_region(name, region.key, size, create_only=True)
        self._state.regions[name] = region
        log.debug("created shared memory region %s (%d bytes)", name, size)
        return region

    def _drop(self, region: Region) -> None:
        for url, names in self._state.registered.items():
            if region.name in names:
                names.discard(region.name)
                _unregister(self._state, url, {region.name})
        self._state.regions.pop(region.name, None)
        _destroy(region)

    def _client(self, url: str) -> grpcclient.InferenceServerClient:
        with self._lock:
            if url not in self._clients:
                self._clients[url] = self._state.make_client(url)
            return self._clients[url]

    def _register(self, url: str, region: Region) -> None:
        client = self._client(url)
        try:
            client.register_system_shared_memory(region.name, region.key, region.size,
                                                 client_timeout=self._state.timeout_s)
        except InferenceServerException as exc:
            if "already" not in str(exc).lower():
                raise
            # Left over from before a reconnect: replace the stale registration.
            client.unregister_system_shared_memory(region.name, client_timeout=self._state.timeout_s)
            client.register_system_shared_memory(region.name, region.key, region.size,
                                                 client_timeout=self._state.timeout_s)
        with self._lock:
            self._state.registered.setdefault(url, set()).add(region.name)

    # ---- lifetime -------------------------------------------------------------------------
    @property
    def region_names(self) -> list[str]:
        return sorted(self._state.regions)

    @property
    def closed(self) -> bool:
        return self._state.closed

    def close(self) -> None:
        """Unregister every region from every server, unlink them all. Idempotent."""
        self._finalizer()
        for client in self._clients.values():
            client.close()
        self._clients.clear()
