"""perf_analyzer-style latency/throughput of one served model over gRPC, across concurrency levels.

    python -m benchmarks latency --url 127.0.0.1:8001 --model NAME --concurrency 1,2,4,8 --out DIR

Warm-up, then measurement windows per level until three consecutive windows agree within 10 %
(or --windows is reached). The server's own queue/compute split comes from Triton's statistics
API as deltas over the measured windows. The loop itself lives in benchmarks.measure.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from clients.client import DenseClient
from clients.contract import ModelContract
from clients.pipeline import normalise

from .measure import LoopSettings, sweep

log = logging.getLogger(__name__)


@dataclass
class LatencySettings:
    url: str
    model: str
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    shm: bool = False
    image_size: Optional[tuple[int, int]] = None  # random images of this HxW (before letterbox)
    images_dir: Optional[str] = None
    window_s: float = 2.0
    windows: int = 8  # the most windows per level
    min_windows: int = 3  # windows that must agree (perf_analyzer's stability criterion)
    stability: float = 0.10
    warmup_s: float = 1.0
    seed: int = 0

    @property
    def loop(self) -> LoopSettings:
        return LoopSettings(window_s=self.window_s, max_windows=self.windows, min_windows=self.min_windows,
                            stability=self.stability, warmup_s=self.warmup_s)


class RequestSource:
    """Prepared requests: the images are letterboxed per request, as a production client would."""

    def __init__(self, images: list[np.ndarray], contract: ModelContract) -> None:
        from clients import pipeline  # the client's own preprocessing, timed as part of the client

        self.images = images
        self.contract = contract
        self.pipeline = pipeline

    def prepare(self, i: int):
        batch, transforms = self.pipeline.preprocess([self.images[i % len(self.images)]], self.contract)
        return batch, transforms

    def finish(self, outputs: dict[str, np.ndarray], transforms) -> None:
        self.pipeline.postprocess(outputs, transforms, self.contract)


class TensorSource:
    """Already network-size tensors: no client pre/post-processing on the clock."""

    def __init__(self, batch: np.ndarray) -> None:
        self.batch = batch

    def prepare(self, i: int):
        return self.batch, None

    def finish(self, outputs: dict[str, np.ndarray], transforms) -> None:
        pass


def make_batch(input_dtype: str, contract: ModelContract, batch: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Random network-size images: (B, H, W, 3) uint8, or the raw form's normalised NCHW float32."""
    images = np.random.default_rng(seed).integers(0, 256, (batch, hw[0], hw[1], 3), dtype=np.uint8)
    return images if input_dtype == "uint8" else normalise(images, contract)


def load_images(settings: LatencySettings) -> list[np.ndarray]:
    if settings.images_dir:
        from pathlib import Path

        from clients.images import load_image

        paths = sorted(p for p in Path(settings.images_dir).iterdir() if p.is_file())[:32]
        images = [load_image(str(p)) for p in paths]
        if not images:
            raise ValueError(f"no images in {settings.images_dir!r}")
        return images
    h, w = settings.image_size or (512, 512)
    rng = np.random.default_rng(settings.seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]


def measure(settings: LatencySettings) -> dict:
    with DenseClient(settings.url, settings.model, retries=2) as probe:  # clear errors: dead server, no model
        source = RequestSource(load_images(settings), probe.contract)
        levels = sweep(settings.url, settings.model, settings.concurrency, source, settings.loop, shm=settings.shm)
    return {"settings": asdict(settings), "model": settings.model, "task": probe.contract.task,
            "transport": "shm" if settings.shm else "grpc", "levels": [asdict(level) for level in levels]}
