"""Atomic, versioned publishing into a Triton model repository.

Files are written to a staging directory, verified (onnxruntime loads the model, the config
round-trips through Triton's schema), then renamed into `NAME/<version>/`; config.pbtxt and
labels.txt are replaced with write-then-rename. A kill at any point leaves no numeric version
directory without a complete model and never a half-written config.

Where staging lives: Triton ignores a model's non-numeric subdirectories, so for an existing
model it is `NAME/.pixelport-staging-*`. Triton does NOT ignore hidden directories at the
repository root (each would be a model that fails to load), so a brand-new model is staged
beside the repository (same filesystem: rename stays atomic) and appears in one rename, config
and version together. Stale staging directories of dead exports are removed by the next export.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from clients.contract import (CONFIG_FILE, LABELS_FILE, ONNX_FILE, PLAN_FILE, ContractError, ModelContract,
                              list_versions)
from clients.files import FILE_MODE, atomic_write
from clients.processes import pid_alive

from .errors import ExportError

log = logging.getLogger(__name__)
STAGING_PREFIX = ".pixelport-staging-"
LOCK_FILE = ".pixelport.lock"
VERSION_FILES_DIR = "version"  # inside staging: becomes NAME/<version>/
# Published directories and files are world-readable: Triton often runs as another user.
# (mkdtemp makes 0700 directories, and the staging directory becomes the model directory.)
DIR_MODE = 0o755


def next_version(model_dir: Path) -> int:
    """One past the newest version, as the contract lists them (Triton's reading of the names)."""
    versions = list_versions(model_dir)
    return max(versions) + 1 if versions else 1


def make_readable(root: Path) -> None:
    """Directories 0755 and files 0644 under (and including) `root`."""
    os.chmod(root, DIR_MODE)
    for path in root.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, DIR_MODE if path.is_dir() else FILE_MODE)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale(parent: Path) -> None:
    """Delete staging left by exports that were killed (their pid is in the name and is gone)."""
    try:
        entries = [p for p in parent.iterdir() if p.name.startswith(STAGING_PREFIX) and p.is_dir()]
    except OSError:  # missing or unreadable: nothing of ours there
        return
    for path in entries:
        pid_text = path.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and not pid_alive(int(pid_text)):
            log.info("removing %s, left by an interrupted export", path)
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def repository_lock(repository: Path) -> Iterator[None]:
    """One publisher at a time per repository (the lock file is a file: Triton ignores it)."""
    with open(repository / LOCK_FILE, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class Publisher:
    """Stage a model version, then commit it atomically.

        with Publisher(repo, "seg", version=None, force=False) as pub:
            path = pub.model_path(ONNX_FILE)   # write the model here
            pub.commit(contract)               # verify, rename into seg/<version>/
    """

    def __init__(self, repository: str, name: str, version: Optional[int] = None, force: bool = False) -> None:
        self.repository = Path(repository).absolute()
        self.name = name
        self.model_dir = self.repository / name
        self.requested = version
        self.force = force
        self.staging: Optional[Path] = None
        self.version: Optional[int] = None

    # -- staging -------------------------------------------------------------------------------
    def __enter__(self) -> "Publisher":
        if self.repository.exists() and not self.repository.is_dir():
            raise ExportError(f"--repository {str(self.repository)!r} is a file, not a directory")
        self.repository.mkdir(parents=True, exist_ok=True)
        self.check_version()
        for place in (self.model_dir, self.repository.parent):  # both places staging may live
            remove_stale(place)
        parent = self._staging_parent()
        self.staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=parent))
        (self.staging / VERSION_FILES_DIR).mkdir()
        log.debug("staging %s in %s", self.name, self.staging)
        return self

    def __exit__(self, *exc: object) -> None:
        # Runs on errors and Ctrl-C; a SIGKILL leaves the (hidden) staging dir for remove_stale.
        if self.staging is not None and self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None

    def _staging_parent(self) -> Path:
        if self.model_dir.is_dir():
            return self.model_dir
        beside = self.repository.parent
        try:
            if os.access(beside, os.W_OK) and beside.stat().st_dev == self.repository.stat().st_dev:
                return beside
        except OSError:
            pass
        # The repository is a mount point or its parent is read-only: stage in the model's own
        # directory (Triton polling meanwhile would see a model without a config).
        log.warning("cannot stage beside %s (read-only or another filesystem); staging inside %s",
                    self.repository, self.model_dir)
        self.model_dir.mkdir()
        return self.model_dir

    def check_version(self) -> None:
        existing = list_versions(self.model_dir)
        if self.requested is not None and self.requested in existing and not self.force:
            raise ExportError(f"{self.name} version {self.requested} already exists in {self.repository}; "
                              "pass --force to replace it, or leave out --version to publish the next one")

    def work_dir(self) -> Path:
        """Scratch space on the staging filesystem (intermediate ONNX files); never published."""
        assert self.staging is not None, "use Publisher as a context manager"
        work = self.staging / ".work"
        work.mkdir(exist_ok=True)
        return work

    def model_path(self, filename: str) -> Path:
        assert self.staging is not None, "use Publisher as a context manager"
        return self.staging / VERSION_FILES_DIR / filename

    # -- verify + commit ------------------------------------------------------------------------
    def _write_metadata(self, root: Path, contract: ModelContract) -> None:
        atomic_write(root / CONFIG_FILE, contract.to_pbtxt())
        if contract.task == "segmentation":
            atomic_write(root / LABELS_FILE, contract.labels_txt())

    def verify(self, contract: ModelContract) -> None:
        """Staged files load and say what the contract says; raises ExportError otherwise."""
        assert self.staging is not None
        config_text = (self.staging / CONFIG_FILE).read_text(encoding="utf-8")
        try:
            parsed = ModelContract.from_model_config(config_text)
        except ContractError as exc:
            raise ExportError(f"the generated {CONFIG_FILE} does not read back: {exc}") from exc
        if parsed.to_pbtxt() != contract.to_pbtxt():
            raise ExportError(f"the generated {CONFIG_FILE} does not round-trip through Triton's schema")
        version_dir = self.staging / VERSION_FILES_DIR
        if contract.platform == "tensorrt_plan":
            plan = version_dir / PLAN_FILE
            if not plan.is_file() or plan.stat().st_size == 0:
                raise ExportError(f"the staged {PLAN_FILE} is missing or empty")
        else:
            verify_onnx(version_dir / ONNX_FILE, contract)
        for path in version_dir.iterdir():
            _fsync_file(path)

    def commit(self, contract: ModelContract) -> tuple[int, Path]:
        """Verify, then rename the staged version into place; returns (version, version_dir)."""
        assert self.staging is not None, "use Publisher as a context manager"
        if contract.name != self.name:
            raise ExportError(f"contract name {contract.name!r} differs from the published name {self.name!r}")
        shutil.rmtree(self.staging / ".work", ignore_errors=True)
        self._write_metadata(self.staging, contract)
        self.verify(contract)
        make_readable(self.staging)
        with repository_lock(self.repository):
            self.check_version()  # another export may have published meanwhile
            version = self.requested or next_version(self.model_dir)
            if self.model_dir.is_dir() and (self.model_dir / CONFIG_FILE).is_file():
                self._commit_existing(contract, version)
            else:
                self._commit_new(version)
        self.version = version
        log.info("published %s version %d", self.name, version)
        return version, self.model_dir / str(version)

    def _commit_new(self, version: int) -> None:
        # config, labels and <version>/ appear in one rename.
        assert self.staging is not None
        os.rename(self.staging / VERSION_FILES_DIR, self.staging / str(version))
        if self.model_dir.is_dir():  # the fallback staged inside it: move the pieces in
            os.rename(self.staging / str(version), self.model_dir / str(version))
            for name in (CONFIG_FILE, LABELS_FILE):
                if (self.staging / name).is_file():
                    os.replace(self.staging / name, self.model_dir / name)
            shutil.rmtree(self.staging, ignore_errors=True)
        else:
            try:
                os.rename(self.staging, self.model_dir)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise ExportError(f"{self.model_dir} appeared while exporting; run the export again") from exc
                raise
        self.staging = None
        _fsync_dir(self.repository)

    def _commit_existing(self, contract: ModelContract, version: int) -> None:
        assert self.staging is not None
        staged, target = self.staging / VERSION_FILES_DIR, self.model_dir / str(version)
        if target.is_dir():  # --force: replace the files in place, so the version is never missing
            _replace_files(staged, target)
        else:
            os.rename(staged, target)
        # The version is in place before the config changes: a kill in between serves the new
        # version with the previous (complete) config, never a config without its model.
        for name in (CONFIG_FILE, LABELS_FILE):
            if (self.staging / name).is_file():
                os.replace(self.staging / name, self.model_dir / name)
        _fsync_dir(self.model_dir)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None


def _replace_files(src: Path, dst: Path) -> None:
    """Move src's files over dst's, each with an atomic os.replace: side files (external weights)
    first and the model file last, then drop files the new version no longer has."""
    model_files = (ONNX_FILE, PLAN_FILE)
    new = sorted(src.iterdir(), key=lambda p: p.name in model_files)
    for path in new:
        os.replace(path, dst / path.name)
    keep = {p.name for p in new}
    for old in dst.iterdir():
        if old.name not in keep and old.is_file():
            old.unlink()


def verify_onnx(path: Path, contract: ModelContract) -> None:
    """onnxruntime loads the model and its I/O names and types are the contract's."""
    import onnxruntime as ort

    if not path.is_file():
        raise ExportError(f"the staged {path.name} is missing")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ExportError(f"onnxruntime cannot load the exported model: {str(exc).splitlines()[0]}") from exc
    got_in = [(i.name, i.type) for i in session.get_inputs()]
    got_out = [(o.name, o.type) for o in session.get_outputs()]
    in_name, in_dtype, _ = contract.input_spec()
    want_in = [(in_name, _ort_type(in_dtype))]
    want_out = [(n, _ort_type(d)) for n, d, _ in contract.output_specs()]
    if got_in != want_in or got_out != want_out:
        raise ExportError(f"the exported model's I/O {got_in} -> {got_out} differs from the contract's "
                          f"{want_in} -> {want_out}")


def _ort_type(numpy_dtype: str) -> str:
    return {"uint8": "tensor(uint8)", "int32": "tensor(int32)", "float32": "tensor(float)",
            "float16": "tensor(float16)", "int64": "tensor(int64)"}[numpy_dtype]

