"""Atomic, versioned publishing, without torch: a hand-made ONNX graph that fits the contract.

The crash test stops the publisher at every file-system step (as SIGKILL would: no cleanup runs)
and checks what a Triton reading the repository at that moment would see."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from clients.contract import CONFIG_FILE, LABELS_FILE, ONNX_FILE, ModelContract, Resize, list_versions
from export import ExportError
from export import repository as repo_mod
from export.repository import STAGING_PREFIX, Publisher, next_version, remove_stale
from export_helpers import assert_repository_consistent, parse_config


def contract(name: str = "seg", classes: int = 3) -> ModelContract:
    return ModelContract(name=name, task="segmentation", resize=Resize("letterbox", 32, 32), num_classes=classes,
                         class_names=tuple(f"c{i}" for i in range(classes)))


def tiny_onnx(path: Path, tag: str = "") -> None:
    """image (N, H, W, 3) uint8 -> labels (N, H, W) uint8 (channel 0): the contract's I/O."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [3])
    nodes = [
        helper.make_node("Slice", ["image", "zero", "one", "axes"], ["c0"]),
        helper.make_node("Squeeze", ["c0", "axes"], ["labels"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["batch", "height", "width"])],
        [helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
         helper.make_tensor("one", TensorProto.INT64, [1], [1]), axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string=tag)
    model.ir_version = 8
    onnx.save_model(model, str(path))


def publish(repository: Path, tag: str, version: int | None = None, force: bool = False,
            c: ModelContract | None = None) -> int:
    with Publisher(str(repository), "seg", version, force) as pub:
        tiny_onnx(pub.model_path(ONNX_FILE), tag)
        return pub.commit(c or contract())[0]


def tag_of(repository: Path, version: int) -> str:
    return onnx.load(str(repository / "seg" / str(version) / ONNX_FILE)).doc_string


def test_versions_count_up_and_the_config_reads_back(tmp_path):
    repo = tmp_path / "repo"
    assert publish(repo, "a") == 1 and publish(repo, "b") == 2
    assert list(list_versions(repo / "seg")) == [1, 2] and next_version(repo / "seg") == 3
    assert ModelContract.from_model_config(parse_config(repo / "seg" / CONFIG_FILE)) == contract()
    assert (repo / "seg" / LABELS_FILE).read_text() == "c0\nc1\nc2\n"
    assert assert_repository_consistent(repo) == [("seg", 1), ("seg", 2)]
    assert sorted(p.name for p in (repo / "seg").iterdir()) == ["1", "2", CONFIG_FILE, LABELS_FILE]
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # the new model's staging was removed


def test_an_existing_version_is_refused_unless_forced(tmp_path):
    repo = tmp_path / "repo"
    publish(repo, "a")
    with pytest.raises(ExportError, match="seg version 1 already exists .* pass --force"):
        publish(repo, "b", version=1)
    assert tag_of(repo, 1) == "a"
    assert publish(repo, "b", version=1, force=True) == 1 and tag_of(repo, 1) == "b"
    assert publish(repo, "c", version=7) == 7 and publish(repo, "d") == 8


def test_a_failed_export_leaves_nothing(tmp_path):
    repo = tmp_path / "repo"
    publish(repo, "a")
    with pytest.raises(RuntimeError, match="boom"):
        with Publisher(str(repo), "seg") as pub:
            tiny_onnx(pub.model_path(ONNX_FILE))
            raise RuntimeError("boom")
    assert sorted(p.name for p in (repo / "seg").iterdir()) == ["1", CONFIG_FILE, LABELS_FILE]


def test_verification_refuses_a_model_that_breaks_the_contract(tmp_path):
    repo = tmp_path / "repo"
    with pytest.raises(ExportError, match="differs from the contract"):
        with Publisher(str(repo), "seg") as pub:
            tiny_onnx(pub.model_path(ONNX_FILE))
            depth = ModelContract(name="seg", task="depth", resize=Resize("letterbox", 32, 32), output_kind="depth")
            pub.commit(depth)
    assert not (repo / "seg").exists()


def test_stale_staging_of_dead_exports_is_removed(tmp_path):
    model_dir = tmp_path / "repo" / "seg"
    model_dir.mkdir(parents=True)
    dead = model_dir / f"{STAGING_PREFIX}999999999-abc"
    alive = model_dir / f"{STAGING_PREFIX}{os.getpid()}-abc"
    dead.mkdir(), alive.mkdir()
    remove_stale(model_dir)
    assert not dead.exists() and alive.exists()


class Killed(BaseException):
    """Raised in place of a file-system step: like SIGKILL, no `except Exception` cleanup runs."""


def _kill_at(monkeypatch, step: int) -> list[str]:
    """Stop the publisher at its `step`-th rename/replace; disable cleanup afterwards."""
    calls: list[str] = []
    real = {"rename": os.rename, "replace": os.replace, "rmtree": shutil.rmtree}
    dead = [False]

    def wrap(kind):
        def fn(*args, **kwargs):
            if dead[0]:
                return None  # a killed process runs nothing more (no cleanup either)
            if kind != "rmtree":
                calls.append(f"{kind} {Path(args[0]).name} -> {Path(args[1]).name}")
                if len(calls) == step:
                    dead[0] = True
                    raise Killed()
            return real[kind](*args, **kwargs)
        return fn

    monkeypatch.setattr(repo_mod.os, "rename", wrap("rename"))
    monkeypatch.setattr(repo_mod.os, "replace", wrap("replace"))
    monkeypatch.setattr(repo_mod.shutil, "rmtree", wrap("rmtree"))
    return calls


@pytest.mark.parametrize("scenario", ["new", "existing", "forced"])
def test_a_kill_at_any_step_leaves_a_loadable_repository(tmp_path, monkeypatch, scenario):
    steps = 0
    for step in range(1, 12):
        repo = tmp_path / f"repo{step}"
        if scenario != "new":
            publish(repo, "old")
        with monkeypatch.context() as m:
            calls = _kill_at(m, step)
            try:
                publish(repo, "new", version=1 if scenario == "forced" else None, force=scenario == "forced")
                finished = True
            except Killed:
                finished = False
        seen = {v: tag_of(repo, v) for _, v in assert_repository_consistent(repo)}
        allowed = {"new": [{}, {1: "new"}], "existing": [{1: "old"}, {1: "old", 2: "new"}],
                   "forced": [{1: "old"}, {1: "new"}]}[scenario]
        assert seen in allowed, f"kill at step {step} ({calls[-1] if calls else '-'}): versions {seen}"
        if scenario == "new" and not finished:
            assert not (repo / "seg").exists() or (repo / "seg" / CONFIG_FILE).is_file()
        if finished:
            assert seen == allowed[1]
            steps = step - 1
            break
    assert steps >= 2, "the publisher should take several steps"
    # the next export after a kill still publishes
    assert publish(tmp_path / "repo1", "again") >= 1


def test_versions_are_read_as_the_contract_reads_them(tmp_path):
    repo = tmp_path / "repo"
    assert publish(repo, "a") == 1
    os.rename(repo / "seg" / "1", repo / "seg" / "01")  # Triton reads "01" as version 1
    assert next_version(repo / "seg") == 2 and publish(repo, "b") == 2
    assert list(list_versions(repo / "seg")) == [1, 2]


def test_published_directories_and_files_are_world_readable(tmp_path):
    repo = tmp_path / "repo"
    publish(repo, "a")
    publish(repo, "b")  # the second version goes the existing-model path
    for path in [repo / "seg", *(repo / "seg").rglob("*")]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))
