"""One Predictor interface over three backends, so one harness evaluates any of them.

- `TritonPredictor`: the served model over gRPC (wraps `clients.DenseClient`).
- `OnnxPredictor`: an exported model directory (config.pbtxt + <version>/model.onnx) run by
  onnxruntime in-process, with the same `clients.pipeline` pre/post-processing.
- `TorchPredictor`: a training checkpoint run by PyTorch in-process, computing the served form
  (letterbox, normalise, model, argmax/depth/alpha, same inverse). torch is imported lazily.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

import numpy as np

from clients.contract import CONFIG_FILE, INPUT_NAME, ONNX_FILE, ModelContract, Resize, read_config_file
from clients.pipeline import preprocess, postprocess
from clients.prediction import Prediction
from clients.window import SlideWindow, check_model, run_slide

log = logging.getLogger(__name__)
BACKENDS = ("triton", "onnx", "torch")


class Predictor(Protocol):
    backend: str  # "triton" | "onnx" | "torch"
    name: str  # the model's name (for reports)
    source: str  # where it came from: URL/model, model directory or checkpoint path
    contract: ModelContract

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PredictorSettings:
    """Which model to evaluate, as the eval CLI's backend flags say."""

    backend: str
    url: Optional[str] = None  # triton: host:port (comma-separated for several servers)
    model: Optional[str] = None  # triton: model name
    model_dir: Optional[str] = None  # onnx: <repository>/<name>
    version: Optional[int] = None  # onnx: model version (default: the highest)
    checkpoint: Optional[str] = None  # torch: checkpoint path
    resize: Optional[str] = None  # torch: "letterbox:HxW" | "stride:N" (default: checkpoint input_size)
    like: Optional[str] = None  # torch: copy the served contract (resize, outputs) of this model dir
    threads: int = 0  # onnx/torch intra-op threads (0 = library default)
    window: Optional[SlideWindow] = None  # --mode slide: sliding-window (+ flip/multi-scale) inference


class _InProcess:
    """Shared predict_batch for in-process backends: preprocess -> run -> postprocess."""

    backend = ""
    name = ""
    source = ""
    contract: ModelContract
    window: Optional[SlideWindow] = None

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        if self.window is not None:  # tiles batched as the client batches them: same sums, same labels
            return [run_slide(lambda batch, _: self.run(batch), img, self.window, self.contract) for img in images]
        if self.contract.resize.mode == "stride":
            # Stride-mode images keep their own padded size: one forward each, as the client sends them.
            return [p for img in images for p in self._predict([img])]
        return self._predict(list(images))

    def _predict(self, images: list[np.ndarray]) -> list[Prediction]:
        batch, transforms = preprocess(images, self.contract)
        return postprocess(self.run(batch), transforms, self.contract)

    def predict(self, image: np.ndarray) -> Prediction:
        return self.predict_batch([image])[0]

    def close(self) -> None:
        pass


def latest_version(model_dir: Path, filename: str = ONNX_FILE) -> tuple[int, Path]:
    """(version, path) of the highest numeric version directory holding `filename`."""
    versions = sorted(int(p.name) for p in model_dir.iterdir()
                      if p.is_dir() and p.name.isdigit() and (p / filename).is_file())
    if not versions:
        raise FileNotFoundError(f"{model_dir} has no <version>/{filename}; publish it with `python -m export`")
    return versions[-1], model_dir / str(versions[-1]) / filename


class OnnxPredictor(_InProcess):
    """onnxruntime in-process on an exported Triton model directory."""

    backend = "onnx"

    def __init__(self, model_dir: str, version: Optional[int] = None, threads: int = 0,
                 providers: Optional[list[str]] = None) -> None:
        import onnxruntime as ort  # not in the client extra: imported only when asked for

        root = Path(model_dir)
        config = root / CONFIG_FILE
        if not config.is_file():
            raise FileNotFoundError(f"{root} has no {CONFIG_FILE}; --model-dir must be <repository>/<model name>")
        self.contract = ModelContract.from_model_config(read_config_file(str(config)))
        if self.contract.platform != "onnxruntime":
            raise ValueError(f"model {self.contract.name!r} is a {self.contract.platform} model; "
                             "the onnx backend needs model.onnx (evaluate it through Triton instead)")
        if version is None:
            version, path = latest_version(root)
        else:
            path = root / str(version) / ONNX_FILE
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist")
        opts = ort.SessionOptions()
        threads = threads or self.contract.intra_op_threads
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        self.output_names = [name for name, _, _ in self.contract.output_specs()]
        self.name, self.version, self.source = self.contract.name, version, str(path)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {INPUT_NAME: batch})
        return dict(zip(self.output_names, outs))


class TorchPredictor(_InProcess):
    """A training checkpoint run by PyTorch in-process, computing exactly the served form."""

    backend = "torch"

    def __init__(self, checkpoint: str, resize: Optional[str] = None, contract: Optional[ModelContract] = None,
                 threads: int = 0, device: str = "cpu") -> None:
        # The export extra; a client-only install never reaches this. The contract and the served
        # computation are export's own, so this is exactly what `python -m export` would publish.
        import torch

        from export.metadata import build_contract
        from export.settings import ExportSettings
        from export.sources import infer_width
        from export.wrapper import ServedModel
        from models import create_model
        from models.checkpoint import load_weights, read_checkpoint

        state, meta, _ = read_checkpoint(checkpoint)
        if not meta.get("arch"):
            raise ValueError(f"checkpoint {checkpoint!r} has no meta.arch; it was not written by "
                             "pixelport's trainer (export it and use --backend onnx instead)")
        task = meta.get("task", "segmentation")
        width = int(meta.get("width") or infer_width(state) or 16)
        num_classes = int(meta.get("num_classes") or 0)
        model = create_model(meta["arch"], task=task, num_classes=num_classes, width=width)
        load_weights(model, state, hint=f"meta says arch={meta['arch']!r}, width={width}")
        if contract is None:
            settings = ExportSettings(name=_safe_name(Path(checkpoint).stem), repository="", arch=meta["arch"],
                                      checkpoint=checkpoint, resize=resize)
            contract = build_contract(settings, meta, task, num_classes)
        elif resize:
            from dataclasses import replace

            contract = replace(contract, resize=Resize.parse(resize))
        if contract.task != task:
            raise ValueError(f"checkpoint is a {task} model but the contract says {contract.task}")
        self.contract = contract
        self.served = ServedModel(model, contract).eval().to(device)
        self.output_names = [name for name, _, _ in contract.output_specs()]
        if threads:
            torch.set_num_threads(threads)
        self._torch, self.device = torch, device
        self.name, self.source = contract.name, str(checkpoint)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            outs = self.served(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device))
        return {name: out.cpu().numpy() for name, out in zip(self.output_names, outs)}


def _safe_name(text: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in text).lstrip("_.-")
    return cleaned[:128] or "checkpoint"


class BackendUnreachable(RuntimeError):
    """No server answered within the client's retry budget: every later image would wait as long
    and fail the same way, so the evaluation stops (its --state resumes it)."""


class TritonPredictor:
    """The served model over gRPC: a thin adapter over `clients.DenseClient`."""

    backend = "triton"
    window: Optional[SlideWindow] = None

    def __init__(self, url: str, model: str, **client_kwargs: Any) -> None:
        from clients.client import DenseClient

        urls = [u.strip() for u in url.split(",") if u.strip()]
        self.client = DenseClient(urls if len(urls) > 1 else urls[0], model, **client_kwargs)
        self.contract = self.client.contract
        self.name, self.source = model, f"{url}/{model}"

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        from clients.client import ServerUnavailableError

        try:
            if self.window is not None:
                return [self.client.predict(img, window=self.window) for img in images]
            return self.client.predict_batch(list(images))
        except ServerUnavailableError as exc:
            raise BackendUnreachable(str(exc)) from exc

    def predict(self, image: np.ndarray) -> Prediction:
        return self.predict_batch([image])[0]

    def close(self) -> None:
        self.client.close()


def make_predictor(settings: PredictorSettings) -> Predictor:
    """Build the predictor the settings name; a missing flag is a clear error. With a window,
    a model that cannot be slid (labels only, matting) is refused here, before any image."""
    predictor = _make_predictor(settings)
    if settings.window is not None:
        try:
            check_model(predictor.contract)
        except ValueError:
            predictor.close()
            raise
        predictor.window = settings.window
    return predictor


def _make_predictor(settings: PredictorSettings) -> Predictor:
    s = settings
    if s.backend == "triton":
        if not (s.url and s.model):
            raise ValueError("--backend triton needs --url HOST:PORT and --model NAME")
        return TritonPredictor(s.url, s.model)
    if s.backend == "onnx":
        if not s.model_dir:
            raise ValueError("--backend onnx needs --model-dir <repository>/<model name>")
        return OnnxPredictor(s.model_dir, s.version, s.threads)
    if s.backend == "torch":
        if not s.checkpoint:
            raise ValueError("--backend torch needs --checkpoint PATH")
        like = None
        if s.like:
            like = ModelContract.from_model_config(read_config_file(os.path.join(s.like, CONFIG_FILE)))
        return TorchPredictor(s.checkpoint, s.resize, like, s.threads)
    raise ValueError(f"unknown backend {s.backend!r}; known: {', '.join(BACKENDS)}")
