"""Synthetic dense-prediction data: textured ground plus shapes, with labels, metric depth and alpha.

`synthesize(out_dir, n_train, n_val, size, seed)` writes the layout the README documents
(images/labels/depth/alpha PNGs per split, meta.json last). Byte-identical for a seed; each image
has its own generator seeded by (seed, split, index), so n_train never changes the val split.
"""

from __future__ import annotations

import colorsys
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

CLASS_NAMES = ("background", "ball", "crate", "cone", "ring")
IGNORE_INDEX = 255
DEPTH_SCALE = 1000  # depth PNG value / DEPTH_SCALE = metres (uint16 millimetres)
DEPTH_MIN, DEPTH_MAX = 0.5, 20.0  # metres; every valid depth pixel lies in this range
CAMERA_HEIGHT = 1.5  # metres above the ground plane
# The horizon sits this many focal lengths above the image centre, so every row sees ground.
HORIZON = 0.6
# Each class has a hue family (degrees) and its own texture; a few objects take any hue, so shape
# and texture matter too, not colour alone.
CLASS_HUES = {1: (0, 25), 2: (35, 60), 3: (95, 150), 4: (200, 260)}
ODD_HUE_P = 0.1
VAL_SIDES = (200, 400)  # val image height and width are each drawn from this range
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # fixed: same bytes on every run
SPLITS = {"train": 0, "val": 1}
KINDS = ("images", "labels", "depth", "alpha")


@dataclass(frozen=True)
class Camera:
    """A pinhole camera whose focal length is the image's longer side.

    Letterboxing an image to a square therefore gives every image the same camera, so depth
    labels stay valid after a client (or the trainer's validation) letterboxes them."""

    height: int
    width: int

    @property
    def focal(self) -> float:
        return float(max(self.height, self.width))

    @property
    def horizon_row(self) -> float:
        return (self.height - 1) / 2 - HORIZON * self.focal

    def ground_depth(self, row: np.ndarray | float) -> np.ndarray | float:
        """Depth (m) of the ground plane seen at image row `row` (flat ground, level camera)."""
        return CAMERA_HEIGHT * self.focal / (np.asarray(row, dtype=np.float64) - self.horizon_row)

    def contact_row(self, depth: float) -> float:
        return self.horizon_row + CAMERA_HEIGHT * self.focal / depth


@dataclass
class Canvas:
    image: np.ndarray  # (H, W, 3) float32 RGB in [0, 255]
    labels: np.ndarray  # (H, W) uint8
    depth: np.ndarray  # (H, W) float64 metres
    alpha: np.ndarray  # (H, W) float32 in [0, 1]


def _colour(rng: np.random.Generator, cls: int) -> np.ndarray:
    lo, hi = CLASS_HUES[cls]
    hue = rng.uniform(0, 360) if rng.random() < ODD_HUE_P else rng.uniform(lo, hi)
    rgb = colorsys.hsv_to_rgb(hue / 360.0, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
    return np.array(rgb, np.float32) * 255


def _smooth_noise(rng: np.random.Generator, cells: int, out: int) -> np.ndarray:
    """Tileable-enough value noise in [0, 1]: a coarse random grid upsampled, plus fine grain."""
    coarse = cv2.resize(rng.random((cells, cells), dtype=np.float32), (out, out), interpolation=cv2.INTER_CUBIC)
    return np.clip(0.8 * coarse + 0.2 * rng.random((out, out), dtype=np.float32), 0, 1)


def _ground(rng: np.random.Generator, cam: Camera) -> Canvas:
    """Textured ground plane; the texture lives in world coordinates, so it recedes with depth."""
    h, w = cam.height, cam.width
    z_row = cam.ground_depth(np.arange(h)).astype(np.float32)[:, None]  # (H, 1) metres
    x = (np.arange(w, dtype=np.float32)[None, :] - (w - 1) / 2) * z_row / cam.focal  # (H, W) lateral m
    z = np.broadcast_to(z_row, (h, w))
    tile, period = 64, 2.0  # texture tile covers period x period metres of ground
    noise = _smooth_noise(rng, 6, tile)
    u = (x / period) % 1.0 * tile
    v = np.ascontiguousarray((z / period) % 1.0 * tile)
    tex = cv2.remap(noise, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    # Paving joints every metre: thin in the distance, a perspective cue for depth.
    joint_w = 0.05
    joints = ((x % 1.0) < joint_w) | ((z_row % 1.0) < joint_w)
    joint_strength = rng.uniform(0.0, 0.35)
    base_hue = rng.uniform(0, 1)
    c1 = np.array(colorsys.hsv_to_rgb(base_hue, rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.6)), np.float32)
    c2 = np.array(colorsys.hsv_to_rgb((base_hue + rng.uniform(-0.1, 0.1)) % 1, rng.uniform(0.0, 0.3),
                                      rng.uniform(0.4, 0.8)), np.float32)
    shade = 1.0 - joint_strength * joints
    light = np.linspace(rng.uniform(0.8, 1.1), rng.uniform(0.8, 1.1), h, dtype=np.float32)[:, None]
    image = (c1 * 255 + (c2 - c1) * 255 * tex[..., None]) * (shade * light)[..., None]
    return Canvas(image, np.zeros((h, w), np.uint8), z.astype(np.float64), np.zeros((h, w), np.float32))


def _object_mask(cls: int, size: int, s: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Draw one object's shape, anti-aliased, in its own box; returns (coverage, depth offset, height px).

    Shapes sit on their contact point at the bottom-centre of a (size, size) box; `s` is pixels
    per metre at the object's depth."""
    mask = np.zeros((size, size), np.uint8)
    relief = np.zeros((size, size), np.float32)  # metres nearer than the contact depth
    cx, bottom = size / 2, size - 2.0
    sub = 16  # 4 fractional bits: sub-pixel-accurate anti-aliased edges
    aa = dict(lineType=cv2.LINE_AA, shift=4)
    if cls in (1, 4):  # ball / ring: a disc standing on the ground
        radius_m = rng.uniform(0.2, 0.45) if cls == 1 else rng.uniform(0.25, 0.5)
        r = radius_m * s
        cy = bottom - r
        cv2.circle(mask, (round(cx * sub), round(cy * sub)), round(r * sub), 255, -1, **aa)
        yy, xx = np.ogrid[0:size, 0:size]
        d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / max(r * r, 1e-6)
        if cls == 1:  # a sphere's front surface bulges towards the camera
            relief = radius_m * np.sqrt(np.clip(1 - d2, 0, 1))
        else:
            cv2.circle(mask, (round(cx * sub), round(cy * sub)), round(r * rng.uniform(0.45, 0.65) * sub), 0, -1, **aa)
        return mask, relief, 2 * r
    if cls == 2:  # crate: a box, slightly rotated
        bw, bh = rng.uniform(0.4, 0.9) * s, rng.uniform(0.3, 0.8) * s
        box = cv2.boxPoints(((cx, bottom - bh / 2), (bw, bh), rng.uniform(-12, 12)))
        box[:, 1] -= box[:, 1].max() - bottom  # a tilted box rests on its lowest corner
        cv2.fillPoly(mask, [np.round(box * sub).astype(np.int32)], 255, **aa)
        return mask, relief, bh
    base, tall = rng.uniform(0.35, 0.65) * s, rng.uniform(0.5, 1.0) * s  # cone: a triangle
    tri = np.array([[cx - base / 2, bottom], [cx + base / 2, bottom], [cx + rng.uniform(-0.1, 0.1) * base,
                                                                       bottom - tall]])
    cv2.fillPoly(mask, [np.round(tri * sub).astype(np.int32)], 255, **aa)
    return mask, relief, tall


def _texture(cls: int, colour: np.ndarray, shape: tuple[int, int], height_px: float,
             rng: np.random.Generator) -> np.ndarray:
    """The object's own look: shaded ball, planked crate, banded cone, speckled ring."""
    h, w = shape
    yy, xx = np.ogrid[0:h, 0:w]
    yy, xx = yy.astype(np.float32), xx.astype(np.float32)
    if cls == 1:  # lit from the upper left
        lx, ly = w * 0.35, h - height_px * 0.7
        d = np.sqrt((xx - lx) ** 2 + (yy - ly) ** 2) / max(height_px, 1.0)
        mod = np.clip(1.15 - 0.9 * d, 0.35, 1.15)
    elif cls == 2:  # horizontal planks with dark gaps
        period = max(height_px / rng.integers(3, 6), 2.0)
        mod = np.where((yy % period) < max(period * 0.15, 0.8), 0.55, 1.0) * (0.9 + 0.1 * np.sin(xx * 0.7))
    elif cls == 3:  # two light bands, like a traffic cone
        frac = (yy - (h - 2 - height_px)) / max(height_px, 1.0)
        band = ((frac > 0.3) & (frac < 0.42)) | ((frac > 0.6) & (frac < 0.72))
        mod = np.where(band, 1.6, 1.0)
    else:  # speckle
        mod = 0.7 + 0.6 * rng.random((h, w), dtype=np.float32)
    return np.clip(colour * np.broadcast_to(mod, (h, w))[..., None], 0, 255)


def _paste(canvas: Canvas, cls: int, depth: float, col: float, rng: np.random.Generator, cam: Camera) -> None:
    """Composite one object standing on the ground at `depth`, centred on column `col`."""
    s = cam.focal / depth  # pixels per metre at this depth
    size = int(np.ceil(1.1 * s)) + 6  # every shape fits in 1.1 m
    mask, relief, height_px = _object_mask(cls, size, s, rng)
    cover = mask.astype(np.float32) / 255
    sigma = rng.uniform(0.0, 1.2)  # soft, varied edges: motion blur / defocus at the matte border
    if sigma > 0.3:
        cover = cv2.GaussianBlur(cover, (0, 0), sigma)
    top = int(round(cam.contact_row(depth))) - (size - 2)
    left = int(round(col - size / 2))
    # Clip the object's box to the image.
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size, cam.height), min(left + size, cam.width)
    if y1 <= y0 or x1 <= x0:
        return
    sl = (slice(y0, y1), slice(x0, x1))
    osl = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    m = cover[osl]
    tex = _texture(cls, _colour(rng, cls), (size, size), height_px, rng)[osl]
    canvas.image[sl] = tex * m[..., None] + canvas.image[sl] * (1 - m[..., None])
    canvas.alpha[sl] = m + canvas.alpha[sl] * (1 - m)
    inside = m >= 0.5
    canvas.labels[sl][inside] = cls
    canvas.depth[sl][inside] = (depth - relief[osl])[inside]
    # Partly covered edge pixels belong to no single class: label them 'ignore'.
    canvas.labels[sl][(m > 0.25) & (m < 0.75)] = IGNORE_INDEX


def render(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, ...]:
    """One scene -> (image RGB uint8, labels uint8, depth uint16 mm, alpha uint8)."""
    cam = Camera(height, width)
    canvas = _ground(rng, cam)
    n = int(rng.integers(3, 8))
    rows = rng.uniform(0.25, 1.1, n) * height  # contact rows: objects may be cut by the bottom edge
    depths = cam.ground_depth(rows)
    cols = rng.uniform(-0.05, 1.05, n) * width
    classes = rng.integers(1, len(CLASS_NAMES), n)
    for i in np.argsort(-depths, kind="stable"):  # far to near: nearer objects occlude
        _paste(canvas, int(classes[i]), float(depths[i]), float(cols[i]), rng, cam)
    depth = np.clip(canvas.depth, DEPTH_MIN, DEPTH_MAX)
    invalid = canvas.labels == IGNORE_INDEX  # mixed edge pixels have no single depth either
    if rng.random() < 0.5:  # a sensor dropout hole
        hole = np.zeros((height, width), np.uint8)
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        axes = (int(rng.uniform(0.03, 0.08) * width), int(rng.uniform(0.03, 0.08) * height))
        cv2.ellipse(hole, centre, axes, 0, 0, 360, 1, -1)
        invalid |= hole.astype(bool)
    depth_mm = np.round(depth * DEPTH_SCALE).astype(np.uint16)
    depth_mm[invalid] = 0
    image = canvas.image + rng.uniform(1, 4) * rng.standard_normal(canvas.image.shape, dtype=np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    alpha = np.clip(np.round(canvas.alpha * 255), 0, 255).astype(np.uint8)
    return image, canvas.labels, depth_mm, alpha


def meta() -> dict:
    from clients.contract import default_palette  # the one palette every tool draws with

    return {
        "class_names": list(CLASS_NAMES),
        "num_classes": len(CLASS_NAMES),
        "palette": [list(c) for c in default_palette(len(CLASS_NAMES))],
        "ignore_index": IGNORE_INDEX,
        "depth_scale": DEPTH_SCALE,
        "depth_unit": "png value / depth_scale = metres; 0 = invalid",
        "depth_min": DEPTH_MIN,
        "depth_max": DEPTH_MAX,
        "camera": {"height_m": CAMERA_HEIGHT, "focal": "longer image side", "horizon": HORIZON},
    }


def _write(path: Path, array: np.ndarray) -> None:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), array, PNG_PARAMS):
        raise RuntimeError(f"could not write {path}; is the directory writable?")


def _write_sample(job: tuple[Path, str, int, int, int, int]) -> None:
    """Render and write one image: every file depends on (seed, split, index) alone."""
    root, split, index, seed, height, width = job
    rng = np.random.default_rng([seed, SPLITS[split], index])
    if split == "val":
        height, width = (int(v) for v in rng.integers(VAL_SIDES[0], VAL_SIDES[1] + 1, 2))
    for kind, array in zip(KINDS, render(rng, height, width)):
        _write(root / kind / split / f"{index:05d}.png", array)


def synthesize(out_dir: str | Path, n_train: int, n_val: int, size: int = 128, seed: int = 0,
               workers: int = 0) -> Path:
    """Write the dataset under out_dir and return it. meta.json comes last: its presence means done.

    `workers` processes render in parallel (0 = one per core, at most 4); the files are the
    same for any worker count."""
    if n_train < 0 or n_val < 0 or (n_train + n_val) == 0:
        raise ValueError(f"need some images: got n_train={n_train}, n_val={n_val}")
    if size < 16:
        raise ValueError(f"--size must be at least 16 px, got {size}")
    root = Path(out_dir)
    (root / "meta.json").unlink(missing_ok=True)
    for split in SPLITS:
        for kind in KINDS:
            folder = root / kind / split
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob("*.png"):  # a rerun with fewer images leaves no leftovers
                stale.unlink()
    jobs = [(root, "train", i, seed, size, size) for i in range(n_train)]
    jobs += [(root, "val", i, seed, 0, 0) for i in range(n_val)]
    workers = min(workers or os.cpu_count() or 1, 4, len(jobs))
    if workers > 1:
        # fork: the children only run numpy/cv2 code, and need not re-import torch as spawn would.
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_sample, jobs, chunksize=16):
                pass
    else:
        for job in jobs:
            _write_sample(job)
    log.info("wrote %d train and %d val images to %s", n_train, n_val, root)
    (root / "meta.json").write_text(json.dumps(meta(), indent=2, sort_keys=True) + "\n")
    return root
