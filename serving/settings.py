"""Typed settings for one Triton server: which repository, where it listens, how it runs.

`python -m serving start` turns its flags into a `ServerSettings`; library callers build one directly.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

MODES = ("auto", "embedded", "external")


def free_ports(count: int = 3, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel says are free right now (all bound at once, so they differ).

    For servers a tool starts for itself (tests, benchmarks); a tiny race with other processes
    remains, which start_server reports as a port in use."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def default_state_dir() -> Path:
    """Where `start` records the running server so `status`/`stop`/`reload` find it.

    Outside any source tree on purpose: the embedded runtime repository is derived here.
    """
    env = os.environ.get("PIXELPORT_STATE_DIR")
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / f"pixelport-serving-{os.getuid()}"


@dataclass
class ServerSettings:
    """One Triton server on one model repository.

    mode: "auto" serves the repository as it is when a full Triton (onnxruntime backend) is found
    (`tritonserver` given, or on PATH), else embedded; "embedded" always derives the python-backend
    runtime repository and runs the PyPI wheel's binary; "external" requires a full Triton.

    die_with_parent: the server gets SIGTERM (a clean shutdown that also stops its python-backend
    stubs) when the starting *process* dies without stop(), through Linux's PR_SET_PDEATHSIG. That
    signal follows the thread that forked the server, so the launcher forks from one thread that lives
    until the interpreter exits: a server started from a short-lived worker thread keeps running
    after that thread ends. Linux only.
    """

    repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    log_file: Optional[Path] = None  # default: <state_dir>/server.log
    tritonserver: Optional[Path] = None  # a full Triton binary (external mode)
    mode: str = "auto"
    state_dir: Path = field(default_factory=default_state_dir)
    startup_timeout_s: float = 180.0  # bounded wait for the server and every model
    stop_timeout_s: float = 30.0  # SIGTERM grace (Triton's --exit-timeout-secs) before SIGKILL
    allow_failed_models: bool = False  # serve what loads instead of failing the start
    log_verbose: int = 0
    # TLS on the gRPC endpoint: PEM server certificate and key; ssl_root_cert is the CA bundle that
    # signed the certificate (clients, the launcher's own included, verify the server with it; for
    # a self-signed certificate it is the certificate itself, the default).
    ssl_cert: Optional[Path] = None
    ssl_key: Optional[Path] = None
    ssl_root_cert: Optional[Path] = None
    # Tests and --foreground: SIGTERM the server if the starting process dies without stop() (see above).
    die_with_parent: bool = False
    # gRPC request/response objects Triton keeps for reuse. A pooled object keeps the buffer of the
    # largest request it ever carried, so a pool of N holds up to N oversized (refused) requests'
    # bytes for good; 0 frees each one after its answer. Triton's default is 8.
    grpc_request_pool: int = 0

    def __post_init__(self) -> None:
        self.repository = Path(self.repository).expanduser()
        # Absolute: the server runs with the state directory as its cwd and reads paths inside it.
        self.state_dir = Path(self.state_dir).expanduser().absolute()
        if self.log_file is not None:
            self.log_file = Path(self.log_file).expanduser().absolute()  # recorded for other processes
        if self.tritonserver is not None:
            self.tritonserver = Path(self.tritonserver).expanduser()
        for name in ("ssl_cert", "ssl_key", "ssl_root_cert"):
            value = getattr(self, name)
            if value is not None:
                path = Path(value).expanduser().absolute()  # the server's cwd is the state directory
                if not path.is_file():
                    raise ValueError(f"--{name.replace('_', '-')} {path} does not exist")
                setattr(self, name, path)
        if (self.ssl_cert is None) != (self.ssl_key is None):
            raise ValueError("TLS needs both --ssl-cert and --ssl-key")
        if self.ssl_root_cert is not None and self.ssl_cert is None:
            raise ValueError("--ssl-root-cert needs --ssl-cert and --ssl-key")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        ports = {"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port}
        for name, port in ports.items():
            if not 0 < int(port) < 65536:
                raise ValueError(f"--{name}-port must be in 1..65535, got {port}")
        if len(set(ports.values())) != 3:
            raise ValueError(f"HTTP, gRPC and metrics ports must differ, got {ports}")
        if self.startup_timeout_s <= 0 or self.stop_timeout_s <= 0:
            raise ValueError("startup and stop timeouts must be positive")
        if self.grpc_request_pool < 0:
            raise ValueError(f"--grpc-request-pool must be >= 0, got {self.grpc_request_pool}")

    @property
    def resolved_log_file(self) -> Path:
        return self.log_file or self.state_dir / "server.log"

    @property
    def exposed(self) -> bool:
        """True when the server listens beyond this machine's loopback interface."""
        return not is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it resolves beyond loopback
