"""Shared helpers for the export tests: checkpoints as the trainer writes them, the CLI in a
subprocess, and the repository invariants a stock Triton relies on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import onnxruntime as ort
import torch
from google.protobuf import text_format
from torch import nn
from tritonclient.grpc import model_config_pb2

from clients.contract import CONFIG_FILE, ONNX_FILE, ModelContract, default_palette
from models import create_model

ROOT = Path(__file__).resolve().parents[2]
USER_MODELS = Path(__file__).with_name("user_models.py")
ZOO_SIZE = 64
ZOO_WIDTH = 8


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics, so outputs vary over the image (a fresh zoo model's
    near-constant argmax would make label parity trivially true)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def zoo_meta(arch: str, task: str, num_classes: int = 5, size: int = ZOO_SIZE, width: int = ZOO_WIDTH) -> dict:
    seg = task == "segmentation"
    return {
        "arch": arch, "task": task, "width": width, "num_classes": num_classes if seg else 1,
        "class_names": [f"c{i}" for i in range(num_classes)] if seg else [],
        "palette": [list(c) for c in default_palette(num_classes)] if seg else [],
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "input_size": [size, size],
        "pad_value": 114, "ignore_index": 255, "depth_scale": 1.0, "depth_kind": "metric",
    }


def save_zoo_checkpoint(path: Path, arch: str, task: str = "segmentation", num_classes: int = 5,
                        seed: int = 0, **meta_overrides) -> Path:
    """A checkpoint in the trainer's format ({'model', 'meta'}), random weights."""
    meta = {**zoo_meta(arch, task, num_classes), **meta_overrides}
    model = randomise(create_model(arch, task=task, num_classes=meta["num_classes"], width=meta["width"]), seed)
    torch.save({"model": model.state_dict(), "meta": meta, "epoch": 1}, path)
    return path


def run_cli(*args: str, timeout: float = 600, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "export", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(cwd or ROOT), env=env)


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    """Parse with Triton's own schema, as the server does."""
    msg = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), msg)
    return msg


def assert_repository_consistent(repository: Path) -> list[tuple[str, int]]:
    """What a Triton loading `repository` right now would see is whole: every model directory
    has a parsable config, every numeric version holds a model onnxruntime loads, and no
    non-hidden stray directory sits at the top level. Returns [(model, version)]."""
    loaded = []
    if not repository.exists():
        return loaded
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir()):
        assert not model_dir.name.startswith("."), f"hidden directory {model_dir} at the repository root"
        config = parse_config(model_dir / CONFIG_FILE)  # raises if missing or broken
        contract = ModelContract.from_model_config(config)
        versions = sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                          key=lambda p: int(p.name))
        assert versions, f"{model_dir} has a config but no version"
        for version in versions:
            session = ort.InferenceSession(str(version / ONNX_FILE), providers=["CPUExecutionProvider"])
            assert [o.name for o in session.get_outputs()] == [n for n, _, _ in contract.output_specs()]
            loaded.append((model_dir.name, int(version.name)))
    return loaded
