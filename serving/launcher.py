"""Start, watch and stop the real Triton server on a model repository, embedded or external.

Embedded: the `tritonserver` binary of PyPI's nvidia-pytriton wheel (python backend only) on the
derived runtime repository. External: a full Triton (onnxruntime backend) on the repository as is.
The facts that make the wheel's binary work on these machines live in this file, once each.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clients.contract import CONFIG_FILE

from . import state as state_store
from .errors import ServingError
from .leftovers import kill_stub_leftovers, remove_shm_leftovers
from .runtime_repo import derive_model, derive_repository, find_models, gpu_available
from .settings import ServerSettings
from .state import ServerState
from .stats import short_reason

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
READY_STATES = ("READY",)
FINAL_STATES = ("READY", "UNAVAILABLE", "")


# ---- facts about the PyPI wheel's tritonserver (DESIGN.md, "Serving") --------------------------
def wheel_dist_dir() -> Path:
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
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServingError(f"the nvidia-pytriton wheel has no python-backend stub for Python {version} ({stub})")
    python_dir = target / "python"
    if python_dir.exists():
        shutil.rmtree(python_dir)
    python_dir.mkdir(parents=True)
    for item in (dist / "backends" / "python").iterdir():
        if item.name != "__pycache__":
            (python_dir / item.name).symlink_to(item)
    (python_dir / "triton_python_backend_stub").symlink_to(stub)
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
        return "embedded", wheel_dist_dir() / "bin" / "tritonserver", None
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
    return "embedded", wheel_dist_dir() / "bin" / "tritonserver", None


def server_command(binary: Path, repository: Path, backends: Path, settings: ServerSettings,
                   shm_prefix: str) -> list[str]:
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
        "--allow-metrics=true",
        f"--exit-timeout-secs={int(settings.stop_timeout_s)}",
        f"--log-verbose={settings.log_verbose}",
        # A per-server prefix lets `stop` remove exactly this server's leftover regions.
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
    ]


# ---- start ------------------------------------------------------------------------------------------
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


def start_server(settings: ServerSettings) -> "TritonServer":
    """Start Triton and return once it and every model are ready (or failed, if that is allowed)."""
    models = find_models(settings.repository)
    existing = state_store.load(settings.state_dir)
    if existing is not None and state_store.is_tritonserver(existing.pid):
        raise ServingError(
            f"a pixelport Triton is already running from {settings.state_dir} (pid {existing.pid}, gRPC "
            f"{existing.grpc_url}): `python -m serving stop` first, or pass another --state-dir"
        )
    if existing is not None:
        # The server recorded here died without `stop` (killed, crashed): clear what it left first.
        TritonServer(existing, settings.state_dir).stop()
    check_ports_free(settings)
    mode, binary, backends = choose_mode(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    served, skipped, env = settings.repository.resolve(), {}, dict(os.environ)
    if mode == "embedded":
        served, skipped, backends, env = _prepare_embedded(settings, len(models))
    server = _launch(settings, mode, binary, served, backends, env, skipped)
    try:
        server.failed = server.wait_ready(settings.startup_timeout_s, settings.allow_failed_models)
    except BaseException:
        server.stop()
        raise
    return server


def _prepare_embedded(settings: ServerSettings, model_count: int) -> tuple[Path, dict[str, str], Path, dict]:
    """(runtime repository, skipped models, backend dir, environment) for the wheel's binary."""
    check_numpy()
    runtime = state_store.runtime_repository_dir(settings.state_dir)
    skipped = derive_repository(settings.repository, runtime)
    for name, reason in skipped.items():
        log.warning("skipping model %s: %s", name, reason)
    if len(skipped) == model_count:
        raise ServingError(
            f"nothing to serve in embedded mode: every model in {settings.repository} is skipped "
            f"({'; '.join(f'{n}: {r}' for n, r in skipped.items())})"
        )
    backends = prepare_backend_dir(wheel_dist_dir(), state_store.backend_dir(settings.state_dir))
    return runtime, skipped, backends, embedded_env()


def _launch(settings: ServerSettings, mode: str, binary: Path, served: Path, backends: Path, env: dict,
            skipped: dict[str, str]) -> "TritonServer":
    """Spawn tritonserver with its output in the log file and record it in the state directory."""
    shm_prefix = f"pixelport_triton_{uuid.uuid4().hex[:12]}_"
    log_file = settings.resolved_log_file
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_offset = log_file.stat().st_size if log_file.exists() else 0
    command = server_command(binary, served, backends, settings, shm_prefix)
    log.info("starting %s Triton: %s (log: %s)", mode, " ".join(command), log_file)
    with open(log_file, "ab") as log_fh:
        # A new session: the server outlives a CLI `start`, and stop() can signal its whole group
        # (the python-backend stubs stay in it).
        process = spawn(command, die_with_parent=settings.die_with_parent, stdout=log_fh, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, env=env, cwd=settings.state_dir, start_new_session=True)
    record = ServerState(
        pid=process.pid, host=settings.host, http_port=settings.http_port, grpc_port=settings.grpc_port,
        metrics_port=settings.metrics_port, mode=mode, repository=str(settings.repository.resolve()),
        served_repository=str(served), binary=str(binary), log_file=str(log_file), shm_prefix=shm_prefix,
        skipped=skipped, stop_timeout_s=settings.stop_timeout_s, log_offset=log_offset,
    )
    state_store.save(settings.state_dir, record)
    return TritonServer(record, settings.state_dir, process)


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


# ---- the handle -----------------------------------------------------------------------------------
class TritonServer:
    """A running Triton started by `start_server` (or found again with `TritonServer.attach`)."""

    def __init__(self, record: ServerState, state_dir: Path, process: Optional[subprocess.Popen] = None) -> None:
        self.record = record
        self.state_dir = Path(state_dir)
        self.process = process
        self.failed: dict[str, str] = {}  # model -> why it did not load (only with allow_failed_models)

    @classmethod
    def attach(cls, state_dir: Path) -> "TritonServer":
        """The server recorded in `state_dir`; ServingError when none is running."""
        return cls(state_store.require(state_dir), state_dir)

    grpc_url = property(lambda self: self.record.grpc_url)
    http_url = property(lambda self: self.record.http_url)
    metrics_url = property(lambda self: self.record.metrics_url)
    pid = property(lambda self: self.record.pid)
    mode = property(lambda self: self.record.mode)
    log_file = property(lambda self: Path(self.record.log_file))
    skipped = property(lambda self: dict(self.record.skipped))

    def __repr__(self) -> str:
        return f"TritonServer(pid={self.pid}, mode={self.mode}, grpc={self.grpc_url}, http={self.http_url})"

    def __enter__(self) -> "TritonServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def client(self) -> grpcclient.InferenceServerClient:
        return grpcclient.InferenceServerClient(self.grpc_url)

    def is_alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return state_store.is_tritonserver(self.pid)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines this server wrote to its log."""
        try:
            with open(self.log_file, "rb") as fh:
                fh.seek(self.record.log_offset)
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return f"(log {self.log_file} unreadable)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout_s: float, allow_failed_models: bool = False) -> dict[str, str]:
        """Block until the server is live and no model is still loading; returns {failed model: why}."""
        deadline = time.monotonic() + timeout_s
        with self.client() as client:
            while True:
                if not self.is_alive():
                    raise ServingError(self._failure(f"tritonserver exited before it was ready{self._exit_code()}"))
                try:
                    if client.is_server_live():
                        index = client.get_model_repository_index(as_json=True).get("models", [])
                        if all(m.get("state", "") in FINAL_STATES for m in index):
                            break
                except InferenceServerException:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise ServingError(self._failure(f"Triton was not ready after {timeout_s:.0f} s"))
                time.sleep(0.2)
        failed = {m["name"]: short_reason(m.get("reason") or m.get("state") or "not loaded") for m in index
                  if m.get("state") not in READY_STATES}
        if failed and (not allow_failed_models or len(failed) == len(index)):
            listed = "\n".join(f"  model {name!r} failed to load: {why}" for name, why in failed.items())
            hint = "" if allow_failed_models else " (pass --allow-failed-models to serve the others)"
            raise ServingError(self._failure(f"{len(failed)} of {len(index)} models failed to load{hint}:\n{listed}"))
        for name, why in failed.items():
            log.warning("model %s failed to load: %s", name, why)
        return failed

    def _exit_code(self) -> str:
        code = self.process.poll() if self.process is not None else None
        return f" (exit code {code})" if code is not None else ""

    def _failure(self, headline: str) -> str:
        return f"{headline}\n--- last lines of {self.log_file} ---\n{self.log_tail()}"

    def reload(self, name: str) -> list[str]:
        """Load the newest published version(s) of `name` without a restart; returns the ready versions.

        Triton keeps serving the loaded version until the new one is ready, so no request fails.
        """
        source = Path(self.record.repository) / name
        if not (source / CONFIG_FILE).is_file():
            raise ServingError(f"model {name!r} is not in {self.record.repository} (no {name}/{CONFIG_FILE})")
        if self.mode == "embedded":
            reason = derive_model(source, Path(self.record.served_repository), gpu_available())
            if reason:
                raise ServingError(f"cannot reload {name!r} in embedded mode: {reason}")
        with self.client() as client:
            try:
                client.load_model(name)
            except InferenceServerException as exc:
                raise ServingError(
                    f"reloading {name!r} failed: {short_reason(exc.message() or str(exc))}; "
                    "the version loaded before (if any) keeps serving"
                ) from exc
            # The old version unloads after the switch; until it is gone the server reports not-ready
            # (strict readiness), so return only once the model has settled.
            deadline = time.monotonic() + self.record.stop_timeout_s + 30
            while True:
                entries = [m for m in client.get_model_repository_index(as_json=True).get("models", [])
                           if m["name"] == name]
                if all(m.get("state", "") in FINAL_STATES for m in entries) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        return sorted((m.get("version", "") for m in entries if m.get("state") == "READY"), key=int)

    def stop(self, timeout_s: Optional[float] = None) -> None:
        """SIGTERM, wait, SIGKILL the process group if needed, then clear what the server left behind.

        Also cleans up after a server that already died: its python-backend stubs, shared-memory
        regions and state record go all the same.
        """
        timeout = self.record.stop_timeout_s + 5 if timeout_s is None else timeout_s
        if self.is_alive():
            os.kill(self.pid, signal.SIGTERM)
            if not self._wait_exit(timeout):
                log.warning("Triton (pid %d) ignored SIGTERM for %.0f s; killing it", self.pid, timeout)
                try:
                    os.killpg(self.pid, signal.SIGKILL)  # its own session: the stubs die with it
                except ProcessLookupError:
                    pass
                self._wait_exit(10)
        if self.process is not None:
            self.process.poll()  # reap
        kill_stub_leftovers(self.state_dir, self.pid)  # before the regions: a live stub still maps them
        remove_shm_leftovers(self.record.shm_prefix)
        current = state_store.load(self.state_dir)
        if current is not None and current.pid == self.pid:
            state_store.clear(self.state_dir)

    def _wait_exit(self, timeout_s: float) -> bool:
        if self.process is not None:
            try:
                self.process.wait(timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout_s
        while state_store.is_tritonserver(self.pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

