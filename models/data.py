"""Training data: a torch Dataset over the synthetic layout, plus its augmentation.

Each transform is one small class taking and returning (image, target), as torchvision's
segmentation references do. Images pad with the pad value; targets pad with their own 'ignore'
marker (labels 255, depth 0, alpha -1) so padding never counts in the loss or the metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

# ImageNet statistics on [0, 1] RGB (torchvision style): what export bakes into the graph.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PAD_VALUE = 0  # uint8 image pad level, as mmseg's pad_val
IGNORE_INDEX = 255
INVALID_ALPHA = -1.0  # alpha target outside the image (padding): excluded from the loss


@dataclass(frozen=True)
class TargetKind:
    """How a task's target moves through geometry: interpolation, pad value, zoom rule."""

    interpolation: int
    pad: float
    # Zooming in by s looks like the camera moved s times closer: depth shrinks by s.
    divide_by_zoom: bool = False


TARGETS = {
    # Labels: nearest, never a blend of class ids; pad with ignore, never a class id.
    "segmentation": TargetKind(cv2.INTER_NEAREST, IGNORE_INDEX),
    # Depth: nearest so invalid zeros never blend into valid depth.
    "depth": TargetKind(cv2.INTER_NEAREST, 0.0, divide_by_zoom=True),
    "matting": TargetKind(cv2.INTER_LINEAR, INVALID_ALPHA),
}


def _resize(image: np.ndarray, target: np.ndarray, kind: TargetKind, scale: float,
            size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = size
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, (w, h), interpolation=interp)
    target = cv2.resize(target, (w, h), interpolation=kind.interpolation)
    if kind.divide_by_zoom:
        target = target / scale
    return image, target


def _pad_to(image: np.ndarray, target: np.ndarray, kind: TargetKind, height: int, width: int,
            top: int = 0, left: int = 0) -> tuple[np.ndarray, np.ndarray]:
    h, w = target.shape
    pads = (top, height - h - top, left, width - w - left)
    if not any(pads):
        return image, target
    image = cv2.copyMakeBorder(image, *pads, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    target = cv2.copyMakeBorder(target, *pads, cv2.BORDER_CONSTANT, value=kind.pad)
    return image, target


class RandomScale:
    def __init__(self, kind: TargetKind, low: float, high: float) -> None:
        self.kind, self.low, self.high = kind, low, high

    def __call__(self, image, target, rng: np.random.Generator):
        s = float(rng.uniform(self.low, self.high))
        h, w = target.shape
        return _resize(image, target, self.kind, s, (max(1, round(h * s)), max(1, round(w * s))))


class RandomCrop:
    """Crop size x size at a random place; pad first where the image is smaller."""

    def __init__(self, kind: TargetKind, size: int) -> None:
        self.kind, self.size = kind, size

    def __call__(self, image, target, rng: np.random.Generator):
        h, w = target.shape
        ph, pw = max(self.size, h), max(self.size, w)
        # Place a small image at a random offset inside the padded canvas, not always top-left.
        image, target = _pad_to(image, target, self.kind, ph, pw,
                                int(rng.integers(0, ph - h + 1)), int(rng.integers(0, pw - w + 1)))
        y = int(rng.integers(0, ph - self.size + 1))
        x = int(rng.integers(0, pw - self.size + 1))
        return image[y:y + self.size, x:x + self.size], target[y:y + self.size, x:x + self.size]


class RandomLetterbox:
    """Blank a symmetric band (top+bottom or left+right), as letterboxing a non-square image does.

    Validation and clients letterbox images of any aspect ratio into the square input; without
    seeing pad bars in training, a depth model reads them as 'zoomed out' and gets far worse.
    Pixels keep their place, so the synthetic camera (and the depth) is unchanged."""

    def __init__(self, kind: TargetKind, p: float = 0.5, min_fraction: float = 0.5) -> None:
        self.kind, self.p, self.min_fraction = kind, p, min_fraction

    def __call__(self, image, target, rng: np.random.Generator):
        if rng.random() >= self.p:
            return image, target
        axis = int(rng.integers(0, 2))  # 0: bars top and bottom (a wide image); 1: left and right
        n = target.shape[axis]
        keep = int(round(n * rng.uniform(self.min_fraction, 1.0)))
        lo, hi = (n - keep) // 2, (n - keep) // 2 + keep
        image, target = image.copy(), target.copy()
        for bar in (slice(0, lo), slice(hi, n)):
            index = (bar, slice(None)) if axis == 0 else (slice(None), bar)
            image[index] = PAD_VALUE
            target[index] = self.kind.pad
        return image, target


class RandomHFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image, target, rng: np.random.Generator):
        if rng.random() < self.p:
            return image[:, ::-1], target[:, ::-1]
        return image, target


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float normalised with MEAN/STD."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (x - mean) / std


def read_meta(root: str | Path) -> dict:
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; generate the data first: python -m models synth --out {root}")
    return json.loads(path.read_text())


class SynthDataset(Dataset):
    """One split of the synthetic layout for one task, decoded once into memory.

    Training: transforms (scale, crop, flip) draw from a generator seeded by (seed, epoch, index):
    call `set_epoch` like DistributedSampler, and any epoch replays exactly, e.g. after a resume.
    Validation reads `images`/`targets` directly (models.evaluate letterboxes them)."""

    def __init__(self, root: str | Path, split: str, task: str, transforms: list, seed: int = 0) -> None:
        if task not in TARGETS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TARGETS)}")
        self.root, self.split, self.task = Path(root), split, task
        self.meta = read_meta(root)
        self.transforms, self.seed, self.epoch = transforms, seed, 0
        folder = self.root / "images" / split
        self.ids = sorted(p.stem for p in folder.glob("*.png"))
        if not self.ids:
            raise FileNotFoundError(f"no images in {folder}; regenerate with python -m models synth --out {root}")
        self.images = [self._read("images", i) for i in self.ids]
        self.targets = [self._read_target(i) for i in self.ids]

    @classmethod
    def for_training(cls, root, task: str, size: int, scale: tuple[float, float], seed: int) -> "SynthDataset":
        kind = TARGETS[task]
        return cls(root, "train", task, [RandomScale(kind, *scale), RandomCrop(kind, size), RandomLetterbox(kind),
                                         RandomHFlip()], seed)

    @classmethod
    def for_validation(cls, root, task: str, split: str = "val") -> "SynthDataset":
        """Untransformed samples; models.evaluate letterboxes them as a client would."""
        return cls(root, split, task, [])

    def _read(self, kind: str, sample_id: str) -> np.ndarray:
        path = self.root / kind / self.split / f"{sample_id}.png"
        array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise FileNotFoundError(f"cannot read {path}; is the dataset complete?")
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB) if array.ndim == 3 else array

    def _read_target(self, sample_id: str) -> np.ndarray:
        if self.task == "segmentation":
            return self._read("labels", sample_id)
        if self.task == "depth":
            return self._read("depth", sample_id).astype(np.float32) / float(self.meta["depth_scale"])
        return self._read("alpha", sample_id).astype(np.float32) / 255

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, target = self.images[index], self.targets[index]
        for t in self.transforms:
            image, target = t(image, target, rng)
        target = np.ascontiguousarray(target)
        if self.task == "segmentation":
            return to_tensor(image), torch.from_numpy(target.astype(np.int64))  # (3,H,W), (H,W)
        return to_tensor(image), torch.from_numpy(target.astype(np.float32))[None]  # (3,H,W), (1,H,W)
