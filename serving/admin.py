"""The admin key that unlocks Triton's administrative endpoints (safe by default, DESIGN.md "Serving").

`start` makes a random key, keeps it in the state directory with mode 0600 and launches Triton with
the model-repository (load, unload, index, and so model-file uploads), logging and trace endpoints
restricted to requests that carry it. Inference, metadata, model config, statistics, health and
shared memory stay open: clients need them. `reload` and `status` read the key from the same file.

Limit: tritonserver takes the key on its command line (it has no flag to read it from a file), so
a local user who can read /proc/<pid>/cmdline sees it; the key guards the network endpoints, not
against other users of the same machine (mount /proc with hidepid=2 where that matters).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Optional

KEY_FILE = "admin.key"
# Triton's names for the endpoint groups it can restrict (`tritonserver --help`).
RESTRICTED = ("model-repository", "logging", "trace")
HEADER = "pixelport-admin-key"
# Triton checks gRPC restricted calls for the header under this prefix (its error message names it).
GRPC_HEADER = "triton-grpc-protocol-" + HEADER


def create_key(state_dir: Path) -> str:
    """A new random key, written to `<state_dir>/admin.key` readable by this user only."""
    key = secrets.token_urlsafe(32)
    path = Path(state_dir) / KEY_FILE
    path.unlink(missing_ok=True)  # a new file, so the mode below holds even if an old one was wider
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
    return key


def read_key(state_dir: Path) -> Optional[str]:
    """The key of the server started from `state_dir`, or None (an older server, or not readable)."""
    try:
        return (Path(state_dir) / KEY_FILE).read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def remove_key(state_dir: Path) -> None:
    (Path(state_dir) / KEY_FILE).unlink(missing_ok=True)


def server_flags(key: str) -> list[str]:
    """tritonserver flags restricting the admin endpoints on HTTP and gRPC to holders of `key`."""
    # The form the wheel's Triton 2.51 accepts: `<apis>:<header>=<value>` (its --help prose says
    # `<apis>,<key>=<value>`; the parser splits on the colon).
    apis = ",".join(RESTRICTED)
    return [f"--http-restricted-api={apis}:{HEADER}={key}", f"--grpc-restricted-protocol={apis}:{HEADER}={key}"]


def grpc_headers(key: Optional[str]) -> Optional[dict[str, str]]:
    """Headers for a tritonclient.grpc call to a restricted endpoint (None when there is no key)."""
    return {GRPC_HEADER: key} if key else None


def http_headers(key: Optional[str]) -> dict[str, str]:
    return {HEADER: key} if key else {}


def redact(command: list[str], key: str) -> list[str]:
    """The command line with the key hidden, for logs."""
    return [arg.replace(key, "***") for arg in command]
