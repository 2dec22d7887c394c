"""Atomic file writes: write beside the target, fsync, rename over it.

A crash, a SIGKILL or a concurrent reader sees the old file or the new one, never half of one.
Files come out 0644 (mkstemp's 0600 would hide outputs from other users, e.g. Triton's).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

FILE_MODE = 0o644
PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, else removed.

    For writers that want a file name (torch.save, cv2.imwrite, onnx.save)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: PathLike, data: Union[bytes, str]) -> Path:
    """Write bytes (or UTF-8 text) to `path` atomically; returns the path."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def atomic_write_json(path: PathLike, data: Any, indent: Union[int, None] = None) -> Path:
    return atomic_write(path, json.dumps(data, indent=indent))
