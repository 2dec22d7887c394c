"""Sample images: int8 calibration, and the end-to-end metric check of every export.

Samples come from `--calibration DIR` (a dataset root with ground truth, or a plain folder of
images) or, by default, a small synthetic val split. The check runs two models (PyTorch vs the
fp32 ONNX, or fp32 vs fp16/int8) through the clients' own pre/post-processing and compares the
task metric (mIoU, abs_rel or alpha MSE) end to end.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import onnxruntime as ort
import torch

from clients.contract import INPUT_NAME, ModelContract
from clients.datasets import TARGET_KINDS, SampleError, open_dataset
from clients.images import ImageError, find_images, load_image
from clients.metrics.tasks import TASK_METRICS, make_metrics
from clients.pipeline import postprocess, preprocess

from .errors import ExportError

log = logging.getLogger(__name__)


@dataclass
class Sample:
    id: str
    image: np.ndarray  # RGB uint8 (H, W, 3)
    target: Optional[np.ndarray] = None  # labels / depth (metres) / alpha at the image size


def load_samples(directory: Optional[str], task: str, limit: int) -> list[Sample]:
    """Up to `limit` images (with targets where the folder is a dataset)."""
    if directory is None:
        return _synthetic_samples(task, limit)
    root = Path(directory)
    if not root.is_dir():
        raise ExportError(f"--calibration {directory!r}: no such directory")
    try:
        dataset = open_dataset(directory, "val")
    except (ValueError, FileNotFoundError, KeyError):
        dataset = None
    samples: list[Sample] = []
    if dataset is not None:
        kind = TARGET_KINDS[task]
        for s in dataset.samples[:limit]:
            target = None
            if kind in dataset.kinds:
                try:
                    target = dataset.read_target(s, kind)
                except SampleError as exc:
                    log.info("sample %s has no usable target: %s", s.id, exc)
            samples.append(Sample(s.id, load_image(s.image), target))
        return samples
    for path in find_images([root], recursive=True)[:limit]:
        try:
            samples.append(Sample(path.stem, load_image(path)))
        except ImageError as exc:
            log.warning("skipping %s", exc)
    if not samples:
        raise ExportError(f"--calibration {directory!r} holds no readable images")
    return samples


def _synthetic_samples(task: str, limit: int) -> list[Sample]:
    from models.synth import synthesize  # the default sample set: a synthetic val split

    with tempfile.TemporaryDirectory(prefix="pixelport-samples-") as tmp:
        synthesize(tmp, n_train=0, n_val=limit, seed=0)
        return load_samples(tmp, task, limit)


def calibration_batches(samples: list[Sample], contract: ModelContract) -> list[np.ndarray]:
    """Each sample as the served model receives it (letterboxed, one image a batch)."""
    return [preprocess([s.image], contract)[0] for s in samples]


Runner = Callable[[np.ndarray], dict[str, np.ndarray]]  # served-form batch -> {output name: array}


def onnx_runner(path: Path) -> Runner:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda batch: dict(zip(names, session.run(names, {INPUT_NAME: batch})))


def torch_runner(served: torch.nn.Module, contract: ModelContract) -> Runner:
    """The eager served-form module (export.wrapper.ServedModel) as a runner."""
    names = list(contract.output_names)

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {n: t.numpy() for n, t in zip(names, served(torch.from_numpy(batch)))}

    return run


def _predict(run: Runner, sample: Sample, contract: ModelContract) -> np.ndarray:
    batch, transforms = preprocess([sample.image], contract)
    return postprocess(run(batch), transforms, contract)[0].primary


def _metric(task: str, contract: ModelContract, pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    m = make_metrics(task, num_classes=contract.num_classes, ignore_index=contract.ignore_index)
    for i, (pred, gt) in enumerate(pairs):
        if task == "segmentation":
            m.update(pred, gt)
        else:
            m.update(pred, gt, key=str(i))
    return float(m.compute()[TASK_METRICS[task].primary])


def compare_on_samples(baseline: Runner, candidate: Runner, contract: ModelContract, samples: list[Sample],
                       names: tuple[str, str]) -> dict[str, Any]:
    """The task metric of two runners on the samples (through the clients' own letterbox and
    inverse), and the candidate's change; `names` label them (e.g. ("pytorch", "onnx"))."""
    key, higher_better = TASK_METRICS[contract.task].primary, TASK_METRICS[contract.task].higher_is_better
    base_preds = [_predict(baseline, s, contract) for s in samples]
    cand_preds = [_predict(candidate, s, contract) for s in samples]
    with_gt = [i for i, s in enumerate(samples) if s.target is not None and s.target.shape == base_preds[i].shape]
    base = value = float("nan")
    if with_gt:
        reference = "ground truth"
        base = _metric(contract.task, contract, [(base_preds[i], samples[i].target) for i in with_gt])
        value = _metric(contract.task, contract, [(cand_preds[i], samples[i].target) for i in with_gt])
    if math.isnan(base):
        # plain images, or ground truth the metric cannot use (e.g. none of this model's classes):
        # the baseline's output stands in for the ground truth
        reference = f"{names[0]} predictions"
        base = _metric(contract.task, contract, list(zip(base_preds, base_preds)))
        value = _metric(contract.task, contract, list(zip(cand_preds, base_preds)))
    change = value - base
    images = len(with_gt) if reference == "ground truth" else len(samples)
    return {"metric": key, "reference": reference, "images": images,
            "baseline": names[0], "candidate": names[1], names[0]: base, names[1]: value,
            "change": change, "drop": -change if higher_better else change}
