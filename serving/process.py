"""Which Triton runs, with which command line, and how its process is spawned.

Embedded: the PyPI wheel's binary (serving/wheel.py) on the derived runtime repository. External:
a full Triton (onnxruntime backend) on the repository as it is.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from . import admin, wheel
from .errors import ServingError
from .settings import ServerSettings


# ---- which Triton ---------------------------------------------------------------------------------
def full_triton_backends(binary: Path) -> Optional[Path]:
    """The backend directory of a full Triton (one with the onnxruntime backend), else None."""
    for candidate in (binary.resolve().parent.parent / "backends", Path("/opt/tritonserver/backends")):
        if (candidate / "onnxruntime").is_dir():
            return candidate
    return None


def choose_mode(settings: ServerSettings) -> tuple[str, Path, Optional[Path]]:
    """(mode, binary, backend dir of a full Triton or None) for these settings."""
    explicit = settings.tritonserver
    if settings.mode == "embedded":
        if explicit is not None:
            raise ServingError("--tritonserver names a full Triton; drop it or use --mode external/auto")
        return "embedded", wheel.binary(), None
    binary = explicit or (Path(shutil.which("tritonserver")) if shutil.which("tritonserver") else None)
    if binary is not None:
        if not binary.is_file():
            raise ServingError(f"--tritonserver {binary} does not exist")
        backends = full_triton_backends(binary)
        if backends is not None:
            return "external", binary, backends
        if explicit is not None or settings.mode == "external":
            raise ServingError(
                f"{binary} has no onnxruntime backend (looked in {binary.resolve().parent.parent}/backends "
                "and /opt/tritonserver/backends): use a full Triton or drop --tritonserver for the embedded mode"
            )
    if settings.mode == "external":
        raise ServingError("no full Triton found (no `tritonserver` on PATH): pass --tritonserver PATH")
    return "embedded", wheel.binary(), None


# ---- the command line -----------------------------------------------------------------------------
def server_command(binary: Path, repository: Path, backends: Path, settings: ServerSettings,
                   shm_prefix: str, admin_key: str) -> list[str]:
    """The tritonserver command line (it carries the admin key: log it through admin.redact)."""
    return [
        str(binary),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        # Explicit control: every model loads at start, and `reload NAME` loads a new version later.
        "--model-control-mode=explicit",
        "--load-model=*",
        # One broken model must not take the others down; `start` decides whether that is fatal.
        "--exit-on-error=false",
        f"--http-address={settings.host}",
        f"--http-port={settings.http_port}",
        f"--grpc-address={settings.host}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-address={settings.host}",
        f"--metrics-port={settings.metrics_port}",
        # Bounded memory: see ServerSettings.grpc_request_pool.
        f"--grpc-infer-allocation-pool-size={settings.grpc_request_pool}",
        "--allow-metrics=true",
        f"--exit-timeout-secs={int(settings.stop_timeout_s)}",
        f"--log-verbose={settings.log_verbose}",
        # A per-server prefix lets `stop` remove exactly this server's leftover regions.
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        # Safe by default: loading, unloading and uploading models, logging and tracing need the key.
        *admin.server_flags(admin_key),
        *tls_flags(settings),
    ]


def tls_flags(settings: ServerSettings) -> list[str]:
    """TLS for the gRPC endpoint (the wheel's Triton 2.51 has these flags; HTTP stays plain)."""
    if settings.ssl_cert is None:
        return []
    flags = ["--grpc-use-ssl=true", f"--grpc-server-cert={settings.ssl_cert}", f"--grpc-server-key={settings.ssl_key}"]
    if settings.ssl_root_cert is not None:
        flags.append(f"--grpc-root-cert={settings.ssl_root_cert}")
    return flags


def check_ports_free(settings: ServerSettings) -> None:
    for label, port in (("HTTP", settings.http_port), ("gRPC", settings.grpc_port), ("metrics", settings.metrics_port)):
        with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
            try:
                sock.bind((settings.host, port))
            except OSError as exc:
                flag = {"HTTP": "--http-port", "gRPC": "--grpc-port", "metrics": "--metrics-port"}[label]
                raise ServingError(
                    f"{label} port {port} on {settings.host} is not available ({exc.strerror}): stop what "
                    f"listens there (`python -m serving stop`) or pass another {flag}"
                ) from exc


# ---- spawning -------------------------------------------------------------------------------------
# glibc's malloc raises its mmap threshold (up to 32 MB) the first time a large block is freed and
# from then on keeps freed memory in its arenas. Triton's gRPC server reads a request in 64 kB
# slices, so each refused 8000x8000 request (192 MB) stayed in tritonserver's RSS after its answer:
# 38 -> 100-220 MB. A fixed threshold below those slices maps each one on its own and unmaps it when
# freed (38 -> 39-42 MB while the sender stays connected). Operators' own malloc settings win.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "32768", "MALLOC_TRIM_THRESHOLD_": "131072"}


def bounded_allocator_env(env: dict) -> dict:
    """`env` with glibc's malloc set to hand large freed blocks back to the system."""
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return dict(env)
    return {**ALLOCATOR_ENV, **env}


def launch(command: list[str], log_file: Path, env: dict, cwd: Path, die_with_parent: bool) -> tuple[subprocess.Popen, int]:
    """Spawn the server with its output appended to `log_file`; returns (process, where its lines start)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_offset = log_file.stat().st_size if log_file.exists() else 0
    with open(log_file, "ab") as log_fh:
        # A new session: the server outlives a CLI `start`, and stop() can signal its whole group
        # (the python-backend stubs stay in it).
        process = spawn(command, die_with_parent=die_with_parent, stdout=log_fh, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, env=bounded_allocator_env(env), cwd=cwd,
                        start_new_session=True)
    return process, log_offset


def spawn(command: list[str], die_with_parent: bool = False, **popen_kwargs) -> subprocess.Popen:
    """Popen, optionally SIGTERMing the child when this *process* dies (not just the calling thread)."""
    if not die_with_parent:
        return subprocess.Popen(command, **popen_kwargs)
    # PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: a server
    # started from a worker thread would get SIGTERM as soon as that thread returned. So fork from one
    # executor thread that lives until the interpreter exits.
    with _spawner_lock:
        if _spawner.get(os.getpid()) is None:  # per pid: a forked child does not inherit the thread
            _spawner.clear()
            _spawner[os.getpid()] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixelport-spawner")
        executor = _spawner[os.getpid()]
    preexec = functools.partial(_die_with_parent, os.getpid())
    return executor.submit(subprocess.Popen, command, preexec_fn=preexec, **popen_kwargs).result()


_spawner: dict[int, ThreadPoolExecutor] = {}
_spawner_lock = threading.Lock()


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child before exec: SIGTERM it when the starting process dies (Linux prctl)."""
    import ctypes

    # SIGTERM, never SIGKILL: Triton then stops its python-backend stubs; a SIGKILLed server leaves them.
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        raise ChildProcessError("the starting process is gone")
