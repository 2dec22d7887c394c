"""Facts about the `tritonserver` binary that PyPI's nvidia-pytriton wheel ships (the embedded mode).

Each fact that makes that binary and its python backend work on these machines lives here once,
with the reason (DESIGN.md, "Serving"). The rest of serving asks this module and never repeats one.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import site
import sys
import sysconfig
from pathlib import Path
from typing import Optional

from .errors import ServingError

STUB_NAME = "triton_python_backend_stub"


def dist_dir() -> Path:
    """`pytriton/tritonserver/` of the installed nvidia-pytriton wheel (bin/, backends/, stubs)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServingError(
            "the embedded Triton needs the nvidia-pytriton wheel: `pip install -e '.[serve]'` "
            "(or run a full Triton with --tritonserver PATH)"
        )
    dist = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    if not (dist / "bin" / "tritonserver").is_file():
        raise ServingError(f"nvidia-pytriton is installed but {dist}/bin/tritonserver is missing; reinstall it")
    return dist


def binary() -> Path:
    """The wheel's `tritonserver` (python backend only: no onnxruntime or TensorRT backend)."""
    return dist_dir() / "bin" / "tritonserver"


def check_numpy() -> None:
    # The python-backend stub is built against the NumPy 1 ABI: under NumPy 2 it returns empty
    # outputs instead of failing, so refuse to start rather than serve wrong answers.
    version = importlib.metadata.version("numpy")
    if int(version.split(".")[0]) >= 2:
        raise ServingError(
            f"the embedded Triton's python backend needs NumPy 1.x, this environment has {version}: "
            "`pip install 'numpy<2'` (nvidia-pytriton pins it for this reason)"
        )


def prepare_backend_dir(dist: Path, target: Path) -> Path:
    """A `--backend-directory` whose python backend uses the stub built for this Python."""
    # The stub embeds one CPython version and must match the interpreter whose packages serve the
    # models; the wheel ships one per version under python_backend_stubs/<X.Y>/, so link ours in.
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / STUB_NAME
    if not stub.is_file():
        raise ServingError(f"the nvidia-pytriton wheel has no python-backend stub for Python {version} ({stub})")
    python_dir = target / "python"
    if python_dir.exists():
        shutil.rmtree(python_dir)
    python_dir.mkdir(parents=True)
    for item in (dist / "backends" / "python").iterdir():
        if item.name != "__pycache__":
            (python_dir / item.name).symlink_to(item)
    (python_dir / STUB_NAME).symlink_to(stub)
    return target


def embedded_env(base: Optional[dict] = None) -> dict:
    """The environment the wheel's binary and its python-backend stubs need."""
    env = dict(os.environ if base is None else base)
    # The stub links libpython<X.Y>.so dynamically; this interpreter's LIBDIR holds the right one.
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    # The stub's embedded Python finds its prefix by looking `python3` up on PATH: this
    # interpreter's bin directory first makes its stdlib match that libpython.
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    # The stub ignores PYTHONPATH; runtime/model.py puts these directories first on sys.path.
    env["PIXELPORT_SITE_PACKAGES"] = os.pathsep.join(site.getsitepackages())
    return env
