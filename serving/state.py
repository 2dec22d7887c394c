"""The one place that records a running server (pid, ports, repositories, log) for status/stop/reload.

`start` writes `<state_dir>/state.json`; the other verbs read it. The embedded runtime repository
and the python-backend directory live in the same state directory, outside any source tree.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from .errors import ServingError

STATE_FILE = "state.json"


def runtime_repository_dir(state_dir: Path) -> Path:
    """The derived python-backend repository of the embedded mode."""
    return Path(state_dir) / "runtime_repository"


def backend_dir(state_dir: Path) -> Path:
    """The `--backend-directory` of the embedded mode (links into the pytriton wheel)."""
    return Path(state_dir) / "backends"


@dataclass
class ServerState:
    pid: int
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    mode: str  # "embedded" | "external"
    repository: str  # the source repository the user gave
    served_repository: str  # what Triton reads: the runtime repository (embedded) or the source
    binary: str
    log_file: str
    shm_prefix: str  # python-backend shared-memory region prefix, unique to this server
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why it is not served
    stop_timeout_s: float = 30.0
    log_offset: int = 0  # where this server's lines start in a shared log file
    grpc_ssl: bool = False  # the gRPC endpoint speaks TLS
    ssl_root_cert: str = ""  # what clients verify the server's certificate with (grpc_ssl only)

    @property
    def grpc_url(self) -> str:
        return f"{_client_host(self.host)}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{_client_host(self.host)}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_client_host(self.host)}:{self.metrics_port}/metrics"


    def bound(self, port: int) -> str:
        """Where the server really listens (the banner shows this, not the loopback alias)."""
        return f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"


def _client_host(host: str) -> str:
    # A server bound to every interface is reached locally through the loopback address.
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def save(state_dir: Path, state: ServerState) -> None:
    path = Path(state_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=1), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a concurrent `status` never reads half a file


def load(state_dir: Path) -> Optional[ServerState]:
    """The recorded server, or None when none was started from this state directory."""
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        return ServerState(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise ServingError(f"server state file {path} is unreadable ({exc}); delete it and start again") from exc


def clear(state_dir: Path) -> None:
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)


def require(state_dir: Path) -> ServerState:
    """The recorded server if its process is still alive, else a ServingError saying what to do."""
    state = load(state_dir)
    if state is None:
        raise ServingError(
            f"no pixelport Triton server is recorded in {state_dir}: start one with "
            "`python -m serving start --repository DIR` (or pass the same --state-dir)"
        )
    if not is_tritonserver(state.pid):
        raise ServingError(
            f"the recorded Triton server (pid {state.pid}) is not running; see its log {state.log_file} "
            "and start it again"
        )
    return state


def is_tritonserver(pid: int) -> bool:
    """True while `pid` is alive and is a tritonserver (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = status.rsplit(")", 1)[-1].split()[0] == "Z"
    return not zombie and b"tritonserver" in cmdline.split(b"\0", 1)[0]
