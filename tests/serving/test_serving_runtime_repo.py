"""Deriving the embedded runtime repository: everything kept but the backend, plans skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

import serving_toys as toys
from clients.contract import CONFIG_FILE, LABELS_FILE, ONNX_FILE, PLAN_FILE, read_config_file
from serving import ServingError
from serving.runtime_repo import (ACCELERATOR_PARAM, REQUESTED_KIND_PARAM, RUNTIME_MODEL, derive_model,
                                  derive_repository, find_models, gpu_available)


@pytest.fixture
def source(tmp_path) -> Path:
    repository = tmp_path / "src"
    toys.publish(repository, toys.segmentation_contract("seg", instance_count=2), toys.segmentation_onnx(), 1)
    toys.publish(repository, toys.segmentation_contract("seg", instance_count=2), toys.segmentation_onnx(seed=5), 3)
    toys.publish(repository, toys.depth_contract("gpu_depth", instance_kind="KIND_GPU", gpu_accelerator=True,
                                                 precision="fp16"), toys.depth_onnx(), 1)
    plan = repository / "plan_only"
    (plan / "1").mkdir(parents=True)
    (plan / CONFIG_FILE).write_text(toys.depth_contract("plan_only", platform="tensorrt_plan").to_pbtxt())
    (plan / "1" / PLAN_FILE).write_bytes(b"engine")
    return repository


def test_runtime_config_keeps_everything_but_the_backend(source, tmp_path):
    runtime = tmp_path / "runtime"
    skipped = derive_repository(source, runtime, gpu_present=False)
    original = read_config_file(str(source / "seg" / CONFIG_FILE))
    derived = read_config_file(str(runtime / "seg" / CONFIG_FILE))
    assert derived.backend == "python" and not derived.platform and not derived.default_model_filename
    assert original.backend == "onnxruntime"  # the source repository stays standard
    for field in ("name", "max_batch_size", "input", "output", "dynamic_batching", "instance_group",
                  "model_warmup", "parameters"):
        assert getattr(derived, field) == getattr(original, field), field
    assert derived.instance_group[0].count == 2
    assert set(skipped) == {"plan_only"} and "TensorRT plan" in skipped["plan_only"]
    assert not (runtime / "plan_only").exists()


def test_every_onnx_version_links_the_source_file(source, tmp_path):
    runtime = tmp_path / "runtime"
    derive_repository(source, runtime, gpu_present=False)
    assert sorted(p.name for p in (runtime / "seg").iterdir() if p.is_dir()) == ["1", "3"]
    for version in ("1", "3"):
        assert (runtime / "seg" / version / ONNX_FILE).resolve() == (source / "seg" / version / ONNX_FILE).resolve()
        assert (runtime / "seg" / version / "model.py").read_bytes() == RUNTIME_MODEL.read_bytes()
    assert (runtime / "seg" / LABELS_FILE).read_text() == (source / "seg" / LABELS_FILE).read_text()


def test_gpu_instances_fall_back_to_cpu_without_a_gpu(source, tmp_path):
    derive_repository(source, tmp_path / "cpu", gpu_present=False)
    derive_repository(source, tmp_path / "gpu", gpu_present=True)
    cpu = read_config_file(str(tmp_path / "cpu" / "gpu_depth" / CONFIG_FILE))
    gpu = read_config_file(str(tmp_path / "gpu" / "gpu_depth" / CONFIG_FILE))
    assert cpu.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert gpu.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    for derived in (cpu, gpu):
        # model.py learns the wish for a GPU and the ORT accelerator from parameters.
        assert derived.parameters[REQUESTED_KIND_PARAM].string_value == "KIND_GPU"
        assert derived.parameters[ACCELERATOR_PARAM].string_value == "tensorrt"
        assert not derived.optimization.execution_accelerators.gpu_execution_accelerator


def test_rederive_adds_the_new_version_and_drops_removed_ones(source, tmp_path):
    runtime = tmp_path / "runtime"
    derive_repository(source, runtime, gpu_present=False)
    toys.publish(source, toys.segmentation_contract("seg"), toys.segmentation_onnx(seed=6), 4)
    (source / "seg" / "1" / ONNX_FILE).unlink()
    (source / "seg" / "1").rmdir()
    assert derive_model(source / "seg", runtime, gpu_present=False) is None
    assert sorted(p.name for p in (runtime / "seg").iterdir() if p.is_dir()) == ["3", "4"]
    assert not [p for p in runtime.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_unparseable_config_is_passed_through_for_triton_to_report(tmp_path):
    (tmp_path / "src" / "bad" / "1").mkdir(parents=True)
    (tmp_path / "src" / "bad" / CONFIG_FILE).write_text("this is { not pbtxt")
    derive_repository(tmp_path / "src", tmp_path / "runtime", gpu_present=False)
    assert (tmp_path / "runtime" / "bad" / CONFIG_FILE).read_text() == "this is { not pbtxt"


def test_missing_and_empty_repositories(tmp_path):
    with pytest.raises(ServingError, match="does not exist"):
        find_models(tmp_path / "nope")
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    with pytest.raises(ServingError, match="has no models"):
        find_models(tmp_path / "empty")


def test_gpu_detection_reads_proc_or_device_nodes(tmp_path):
    proc, dev = tmp_path / "proc", tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidiactl").touch()  # driver present, no GPU
    assert not gpu_available(proc, dev)
    (dev / "nvidia0").touch()  # as on the lent H200 (Firecracker): /dev/nvidia0 and /proc both present
    assert gpu_available(proc, dev)
    (dev / "nvidia0").unlink()
    (proc / "0000:00:06.0").mkdir(parents=True)
    assert gpu_available(proc, dev)
