"""Start Triton on a repository and hold a handle to it: wait for readiness, reload, status, stop.

`start_server(settings)` returns a `TritonServer` once the server and every model are ready (or
failed, if that is allowed); `TritonServer.attach(state_dir)` finds a running one again.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clients.contract import CONFIG_FILE, is_valid_name

from . import admin, wheel
from . import state as state_store
from .errors import ServingError
from .leftovers import kill_stub_leftovers, remove_shm_leftovers
from .process import check_ports_free, choose_mode, launch, server_command
from .runtime_repo import derive_model, derive_repository, find_models, gpu_available
from .settings import ServerSettings
from .state import ServerState
from .stats import ModelStatus, collect_status, short_reason

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
READY_STATES = ("READY",)
# Repository-index states after which a model will not change by itself ("" = not loaded at all).
FINAL_STATES = ("READY", "UNAVAILABLE", "")
POLL_S = 0.1


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
    if settings.exposed:
        log.warning("binding Triton to %s: other machines can reach it. Inference and metadata are open to "
                    "them (the admin endpoints need the key in %s)%s", settings.host, settings.state_dir,
                    "" if settings.ssl_cert else "; gRPC is not encrypted (pass --ssl-cert/--ssl-key)")
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
    wheel.check_numpy()
    runtime = state_store.runtime_repository_dir(settings.state_dir)
    skipped = derive_repository(settings.repository, runtime)
    for name, reason in skipped.items():
        log.warning("skipping model %r: %s", name, reason)
    if len(skipped) == model_count:
        raise ServingError(
            f"nothing to serve in embedded mode: every model in {settings.repository} is skipped "
            f"({'; '.join(f'{n}: {r}' for n, r in skipped.items())})"
        )
    backends = wheel.prepare_backend_dir(wheel.dist_dir(), state_store.backend_dir(settings.state_dir))
    return runtime, skipped, backends, wheel.embedded_env()


def _launch(settings: ServerSettings, mode: str, binary: Path, served: Path, backends: Path, env: dict,
            skipped: dict[str, str]) -> "TritonServer":
    """Spawn tritonserver and record it in the state directory."""
    shm_prefix = f"pixelport_triton_{uuid.uuid4().hex[:12]}_"
    log_file = settings.resolved_log_file
    key = admin.create_key(settings.state_dir)
    command = server_command(binary, served, backends, settings, shm_prefix, key)
    log.info("starting %s Triton: %s (log: %s)", mode, " ".join(admin.redact(command, key)), log_file)
    process, log_offset = launch(command, log_file, env, settings.state_dir, settings.die_with_parent)
    record = ServerState(
        pid=process.pid, host=settings.host, http_port=settings.http_port, grpc_port=settings.grpc_port,
        metrics_port=settings.metrics_port, mode=mode, repository=str(settings.repository.resolve()),
        served_repository=str(served), binary=str(binary), log_file=str(log_file), shm_prefix=shm_prefix,
        skipped=skipped, stop_timeout_s=settings.stop_timeout_s, log_offset=log_offset,
        grpc_ssl=settings.ssl_cert is not None,
        ssl_root_cert=str(settings.ssl_root_cert or settings.ssl_cert or ""),
    )
    state_store.save(settings.state_dir, record)
    return TritonServer(record, settings.state_dir, process)


class TritonServer:
    """A running Triton started by `start_server` (or found again with `TritonServer.attach`)."""

    def __init__(self, record: ServerState, state_dir: Path, process: Optional[subprocess.Popen] = None) -> None:
        self.record = record
        self.state_dir = Path(state_dir)
        self.process = process
        self.failed: dict[str, str] = {}  # model -> why it did not load (only with allow_failed_models)
        self._admin_key = admin.read_key(self.state_dir)

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
        if self.record.grpc_ssl:
            return grpcclient.InferenceServerClient(self.grpc_url, ssl=True,
                                                    root_certificates=self.record.ssl_root_cert)
        return grpcclient.InferenceServerClient(self.grpc_url)

    @property
    def admin_headers(self) -> Optional[dict[str, str]]:
        """gRPC headers that unlock the restricted endpoints (repository index, load, unload)."""
        return admin.grpc_headers(self._admin_key)

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

    # ---- waiting ---------------------------------------------------------------------------------
    def _settled_index(self, client: grpcclient.InferenceServerClient, timeout_s: float,
                       wanted: Callable[[dict], bool] = lambda entry: True) -> Optional[list[dict]]:
        """Poll the repository index until every wanted model is in a final state (READY, UNAVAILABLE,
        not loaded); returns those entries, or None after `timeout_s`. The one wait of this module:
        readiness at start and the switch after a reload both end when no model is still loading."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.is_alive():
                raise ServingError(self._failure(f"tritonserver exited before it was ready{self._exit_code()}"))
            try:
                if client.is_server_live():
                    index = client.get_model_repository_index(as_json=True, headers=self.admin_headers)
                    entries = [m for m in index.get("models", []) if wanted(m)]
                    if all(m.get("state", "") in FINAL_STATES for m in entries):
                        return entries
            except InferenceServerException:
                pass  # not listening yet
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL_S)

    def wait_ready(self, timeout_s: float, allow_failed_models: bool = False) -> dict[str, str]:
        """Block until the server is live and no model is still loading; returns {failed model: why}."""
        with self.client() as client:
            index = self._settled_index(client, timeout_s)
        if index is None:
            raise ServingError(self._failure(f"Triton was not ready after {timeout_s:.0f} s"))
        failed = {m["name"]: self._why_not_ready(m) for m in index if m.get("state") not in READY_STATES}
        if failed and (not allow_failed_models or len(failed) == len(index)):
            listed = "\n".join(f"  model {name!r} failed to load: {why}" for name, why in failed.items())
            hint = "" if allow_failed_models else " (pass --allow-failed-models to serve the others)"
            raise ServingError(self._failure(f"{len(failed)} of {len(index)} models failed to load{hint}:\n{listed}"))
        for name, why in failed.items():
            log.warning("model %r failed to load: %s", name, why)
        return failed

    def _why_not_ready(self, entry: dict) -> str:
        """One line on why a model in the index is not serving: Triton's reason, else its log's."""
        name = entry["name"]
        if entry.get("reason"):
            return short_reason(entry["reason"])
        if not is_valid_name(name):
            return f"{name!r} is not a valid model name (letters, digits, '_', '-', '.'); rename the directory"
        # A directory Triton could not even read (e.g. a config.pbtxt that does not parse) has no
        # state or reason in the index; the server log says why.
        marker = f"Poll failed for model directory '{name}': "
        for line in reversed(self.log_tail(lines=100000).splitlines()):
            if marker in line:
                return short_reason(line.split(marker, 1)[1].rstrip('"'))
        return entry.get("state") or "not loaded"

    def _exit_code(self) -> str:
        code = self.process.poll() if self.process is not None else None
        return f" (exit code {code})" if code is not None else ""

    def _failure(self, headline: str) -> str:
        return f"{headline}\n--- last lines of {self.log_file} ---\n{self.log_tail()}"

    def status(self) -> list[ModelStatus]:
        """Per-model status (stats.collect_status), with the server log's reason where Triton gives none."""
        with self.client() as client:
            statuses = collect_status(client, self.skipped, self.admin_headers)
        for entry in statuses:
            if not entry.ok and not entry.reason:
                entry.reason = self._why_not_ready({"name": entry.name, "state": ""})
        return statuses

    # ---- reload ----------------------------------------------------------------------------------
    def reload(self, name: str) -> list[str]:
        """Load the newest published version(s) of `name` without a restart; returns the ready versions.

        Triton keeps serving the loaded version until the new one is ready, so no request fails.
        """
        if not is_valid_name(name):
            raise ServingError(f"{name!r} is not a valid model name (letters, digits, '_', '-', '.')")
        source = Path(self.record.repository) / name
        if not (source / CONFIG_FILE).is_file():
            raise ServingError(f"model {name!r} is not in {self.record.repository} (no {name}/{CONFIG_FILE})")
        if self.mode == "embedded":
            reason = derive_model(source, Path(self.record.served_repository), gpu_available())
            if reason:
                raise ServingError(f"cannot reload {name!r} in embedded mode: {reason}")
        with self.client() as client:
            try:
                client.load_model(name, headers=self.admin_headers)
            except InferenceServerException as exc:
                raise ServingError(
                    f"reloading {name!r} failed: {short_reason(exc.message() or str(exc))}; "
                    "the version loaded before (if any) keeps serving"
                ) from exc
            # The old version unloads after the switch; until it is gone the server reports not-ready
            # (strict readiness), so return only once the model has settled.
            entries = self._settled_index(client, self.record.stop_timeout_s + 30, lambda m: m["name"] == name)
            if entries is None:  # still switching: report what is ready now
                index = client.get_model_repository_index(as_json=True, headers=self.admin_headers)
                entries = [m for m in index.get("models", []) if m["name"] == name]
        return sorted((m.get("version", "") for m in entries if m.get("state") == "READY"), key=int)

    # ---- stop ------------------------------------------------------------------------------------
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
            admin.remove_key(self.state_dir)

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
            time.sleep(POLL_S)
        return True
