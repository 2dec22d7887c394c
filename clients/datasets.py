"""Dataset readers for offline evaluation: list (image, target) samples of one split, read targets.

Layouts: the pixelport synthetic layout, mmsegmentation's img_dir/ann_dir, Cityscapes
(gtFine labelTrainIds, or the raw labelIds mapped with the official table), ADE20K
(reduce_zero_label), Pascal VOC (palette PNGs), NYU-style depth PNGs with a scale, and the
matting test sets (Composition-1k / Adobe DIM: merged, alpha, trimaps; AIM-500 / P3M: image,
mask, trimap folders). `open_dataset(root, split)` auto-detects; `layout=` forces one.
Reading never crashes a run: a bad target raises `SampleError` with the reason, per sample.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .images import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)
TARGET_KINDS = {"segmentation": "labels", "depth": "depth", "matting": "alpha"}

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                      "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                      "bus", "train", "motorcycle", "bicycle")
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
# mmsegmentation's ADE20KDataset classes (SceneParsing's 150, after reduce_zero_label).
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag")

# cityscapesscripts' helpers/labels.py: label id (0..33) -> train id; 255 = ignored in evaluation.
# (License plate, id -1, is never written into a labelIds PNG.)
CITYSCAPES_ID_TO_TRAINID = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255, 11: 2, 12: 3, 13: 4,
    14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18}
CITYSCAPES_TRAIN_SUFFIX = "_gtFine_labelTrainIds.png"
CITYSCAPES_RAW_SUFFIX = "_gtFine_labelIds.png"


def id_lut(mapping: dict[int, int], default: int = 255) -> np.ndarray:
    """A 256-entry uint8 lookup table from {id: new id}; ids not in the mapping get `default`."""
    lut = np.full(256, default, np.uint8)
    for k, v in mapping.items():
        lut[k] = v
    return lut


class SampleError(ValueError):
    """One sample's target cannot be used (missing, unreadable, wrong size); the run goes on."""


@dataclass(frozen=True)
class Sample:
    id: str  # unique within the split; also the key of per-image metrics
    image: str  # path
    targets: dict[str, str] = field(default_factory=dict)  # kind ("labels"|"depth"|"alpha") -> path


@dataclass(frozen=True)
class DatasetOptions:
    """What a layout cannot always tell by itself (the CLI's --img-suffix, --depth-scale, ...)."""

    img_suffix: Optional[str] = None  # mmseg: e.g. ".jpg"; None = any image extension
    seg_suffix: str = ".png"
    depth_scale: Optional[float] = None  # depth PNG value / depth_scale = metres (None: layout default)
    reduce_zero_label: Optional[bool] = None  # None: the layout's default (True only for ADE20K)


@dataclass
class Dataset:
    root: str
    split: str
    layout: str
    samples: list[Sample]
    kinds: tuple[str, ...]  # target kinds this layout provides
    num_classes: int = 0  # 0 = unknown (take the model's)
    class_names: tuple[str, ...] = ()
    ignore_index: int = 255
    reduce_zero_label: bool = False
    depth_scale: float = 1000.0
    depth_range: Optional[tuple[float, float]] = None  # (min, max) metres when the layout knows it
    label_palette: bool = False  # VOC: an RGB label is mapped back to indices through the palette
    # label files whose name ends with a key hold raw ids, mapped through the value (a 256-entry LUT)
    label_luts: dict[str, np.ndarray] = field(default_factory=dict)
    missing_hint: str = ""  # appended to a missing-target error: where else the layout looked

    def read_target(self, sample: Sample, kind: str) -> np.ndarray:
        """The target as the metrics want it: labels int (H, W); depth float64 metres (0 = invalid);
        alpha uint8 or float [0, 1] (H, W); trimap uint8 0/128/255 (H, W)."""
        path = sample.targets.get(kind)
        if path is None:
            raise SampleError(f"layout {self.layout!r} has no {kind} targets")
        if not os.path.isfile(path):
            raise SampleError(f"missing {kind} file {path}{self.missing_hint if kind == 'labels' else ''}")
        if kind == "labels":
            labels = read_label(path, palette=self.label_palette)
            lut = next((t for suffix, t in self.label_luts.items() if path.endswith(suffix)), None)
            return labels if lut is None else map_ids(labels, lut, path)
        if kind == "depth":
            return read_depth(path, self.depth_scale)
        if kind == "trimap":
            return read_trimap(path)
        return read_alpha(path)


# ---- target readers ----------------------------------------------------------------------------
def read_label(path: str, palette: bool = False) -> np.ndarray:
    """Class ids from a single-channel or palette ('P' mode) PNG; the palette indices are the ids."""
    from PIL import Image  # the client extra has pillow; cv2 would expand a palette PNG to colours

    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.array(im)
    except Exception as exc:  # PIL raises many types for a corrupt file
        raise SampleError(f"cannot read label {path}: {exc}") from exc
    if arr.ndim == 3 and palette:
        return _rgb_to_voc_index(arr[..., :3], path)
    if arr.ndim != 2:
        raise SampleError(
            f"label {path} is {mode} with shape {arr.shape}; expected single-channel class ids or a "
            "palette PNG (for RGB-coloured VOC labels use --layout voc)"
        )
    return arr


def _rgb_to_voc_index(rgb: np.ndarray, path: str) -> np.ndarray:
    from .contract import default_palette

    codes = rgb[..., 0].astype(np.int64) << 16 | rgb[..., 1].astype(np.int64) << 8 | rgb[..., 2]
    lookup = {r << 16 | g << 8 | b: i for i, (r, g, b) in enumerate(default_palette(256))}
    uniq, inverse = np.unique(codes, return_inverse=True)
    unknown = [u for u in uniq if int(u) not in lookup]
    if unknown:
        u = int(unknown[0])
        raise SampleError(f"label {path} has colour {(u >> 16, u >> 8 & 255, u & 255)} outside the VOC palette")
    return np.array([lookup[int(u)] for u in uniq], np.uint8)[inverse].reshape(codes.shape)


def map_ids(labels: np.ndarray, lut: np.ndarray, path: str) -> np.ndarray:
    if labels.size and int(labels.max()) >= len(lut):
        raise SampleError(f"label {path} holds id {int(labels.max())}, outside the id table (0..{len(lut) - 1})")
    return lut[labels]


def read_trimap(path: str) -> np.ndarray:
    """A trimap file: 0 background, 128 unknown, 255 foreground (the DIM benchmark's values)."""
    import cv2

    arr = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise SampleError(f"cannot read trimap {path}: not a readable image")
    if arr.ndim == 3:
        arr = arr[..., 0]
    odd = np.setdiff1d(np.unique(arr), [0, 128, 255])
    if arr.dtype != np.uint8 or odd.size:
        raise SampleError(f"trimap {path} holds values {odd[:5].tolist()} ({arr.dtype}); expected uint8 0 "
                          "(background), 128 (unknown) and 255 (foreground)")
    return arr


def read_depth(path: str, scale: float) -> np.ndarray:
    """Metres from a 16-bit PNG (value / scale) or a float .npy (already metres)."""
    if path.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise SampleError(f"cannot read depth {path}: {exc}") from exc
        return _single_channel(np.asarray(arr, np.float64), path, "depth")
    import cv2

    arr = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise SampleError(f"cannot read depth {path}: not a readable image")
    arr = _single_channel(arr, path, "depth")
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float64)
    return arr.astype(np.float64) / scale


def read_alpha(path: str) -> np.ndarray:
    import cv2

    arr = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise SampleError(f"cannot read alpha {path}: not a readable image")
    if arr.ndim == 3:  # a grey matte saved as BGR(A): the channels are equal
        arr = arr[..., 0]
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    if arr.dtype != np.uint8:
        raise SampleError(f"alpha {path} has dtype {arr.dtype}; expected 8- or 16-bit")
    return arr


def _single_channel(arr: np.ndarray, path: str, what: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise SampleError(f"{what} {path} has shape {arr.shape}; expected a single channel")
    return arr


# ---- layouts -----------------------------------------------------------------------------------
def _images_under(folder: Path, suffix: Optional[str] = None) -> list[Path]:
    if not folder.is_dir():
        return []
    if suffix:
        return sorted(p for p in folder.rglob(f"*{suffix}") if p.is_file())
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _need_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{layout} layout: {path} does not exist (check --data and --split)")
    return path


def _pixelport(root: Path, split: str, opts: DatasetOptions) -> Dataset:
    meta = json.loads((root / "meta.json").read_text())
    samples = []
    for img in _images_under(_need_dir(root / "images" / split, "pixelport")):
        rel = img.relative_to(root / "images" / split).with_suffix("")
        targets = {kind: str(root / kind / split / f"{rel}.png") for kind in ("labels", "depth", "alpha")}
        samples.append(Sample(rel.as_posix(), str(img), targets))
    dmin, dmax = meta.get("depth_min"), meta.get("depth_max")
    return Dataset(str(root), split, "pixelport", samples, ("labels", "depth", "alpha"),
                   num_classes=int(meta.get("num_classes", 0)), class_names=tuple(meta.get("class_names", ())),
                   ignore_index=int(meta.get("ignore_index", 255)),
                   reduce_zero_label=bool(opts.reduce_zero_label),
                   depth_scale=float(opts.depth_scale or meta.get("depth_scale", 1000)),
                   depth_range=(float(dmin), float(dmax)) if dmin is not None and dmax is not None else None)


def _paired(img_root: Path, ann_root: Path, img_suffix: Optional[str], ann_suffix: str) -> list[Sample]:
    """Samples whose annotation is `ann_root/<relative stem><ann_suffix>`."""
    samples = []
    for img in _images_under(img_root, img_suffix):
        rel = img.relative_to(img_root).as_posix()
        stem = rel[: -len(img_suffix)] if img_suffix else rel.rsplit(".", 1)[0]
        samples.append(Sample(stem, str(img), {"labels": str(ann_root / f"{stem}{ann_suffix}")}))
    return samples


def _mmseg(root: Path, split: str, opts: DatasetOptions) -> Dataset:
    img_root = _need_dir(root / "img_dir" / split, "mmseg")
    samples = _paired(img_root, root / "ann_dir" / split, opts.img_suffix, opts.seg_suffix)
    return Dataset(str(root), split, "mmseg", samples, ("labels",),
                   reduce_zero_label=bool(opts.reduce_zero_label))


def _cityscapes(root: Path, split: str, opts: DatasetOptions) -> Dataset:
    img_root = _need_dir(root / "leftImg8bit" / split, "cityscapes")
    samples = _paired(img_root, root / "gtFine" / split, "_leftImg8bit.png", CITYSCAPES_TRAIN_SUFFIX)
    # A stock gtFine download has only the 34 raw label ids; cityscapesscripts' createTrainIdLabelImgs
    # writes the train-id files. Without them, map the raw ids with the same table at read time.
    raw = 0
    for i, smp in enumerate(samples):
        train = smp.targets["labels"]
        fallback = train[: -len(CITYSCAPES_TRAIN_SUFFIX)] + CITYSCAPES_RAW_SUFFIX
        if not os.path.isfile(train) and os.path.isfile(fallback):
            samples[i] = replace(smp, targets={"labels": fallback})
            raw += 1
    if raw:
        log.info("cityscapes: %d of %d samples have only *%s; mapping the 34 label ids to the 19 train ids with "
                 "cityscapesscripts' table", raw, len(samples), CITYSCAPES_RAW_SUFFIX)
    return Dataset(str(root), split, "cityscapes", samples, ("labels",), num_classes=19,
                   class_names=CITYSCAPES_CLASSES, reduce_zero_label=bool(opts.reduce_zero_label),
                   label_luts={CITYSCAPES_RAW_SUFFIX: id_lut(CITYSCAPES_ID_TO_TRAINID)},
                   missing_hint=f" (nor its *{CITYSCAPES_RAW_SUFFIX}: is --data the folder holding gtFine?)")


def _ade_root(root: Path) -> Path:
    return root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root


def _ade20k(root: Path, split: str, opts: DatasetOptions) -> Dataset:
    base = _ade_root(root)
    folder = {"val": "validation", "train": "training"}.get(split, split)
    img_root = _need_dir(base / "images" / folder, "ade20k")
    samples = _paired(img_root, base / "annotations" / folder, opts.img_suffix or ".jpg", ".png")
    # ADE20K's 0 means "other": mmseg drops it and shifts 1..150 to 0..149.
    rzl = True if opts.reduce_zero_label is None else opts.reduce_zero_label
    return Dataset(str(root), split, "ade20k", samples, ("labels",), num_classes=150, reduce_zero_label=rzl,
                   class_names=ADE20K_CLASSES if rzl else ())


def _voc_root(root: Path) -> Path:
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    return root


def _voc(root: Path, split: str, opts: DatasetOptions) -> Dataset:
    base = _voc_root(root)
    listing = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise FileNotFoundError(f"voc layout: {listing} does not exist (check --data and --split)")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    samples = [Sample(i, str(base / "JPEGImages" / f"{i}.jpg"), {"labels": str(base / "SegmentationClass" / f"{i}.png")})
               for i in sorted(set(ids))]
    return Dataset(str(root), split, "voc", samples, ("labels",), num_classes=21, class_names=VOC_CLASSES,
                   reduce_zero_label=bool(opts.reduce_zero_label), label_palette=True)


def _nyu(root: Path, split: str, opts: DatasetOptions) -> Dataset:
    """BTS-style NYU: <split>/**/rgb_<k>.jpg|png beside sync_depth_<k>.png (or depth_<k>.png)."""
    split_root = _need_dir(root / split, "nyu")
    samples = []
    for img in _images_under(split_root):
        if not img.stem.startswith("rgb_"):
            continue
        k = img.stem[len("rgb_"):]
        depth = img.parent / f"sync_depth_{k}.png"
        if not depth.exists() and (img.parent / f"depth_{k}.png").exists():
            depth = img.parent / f"depth_{k}.png"
        rel = img.parent.relative_to(split_root).as_posix()
        sid = f"{rel}/{k}" if rel != "." else k
        samples.append(Sample(sid, str(img), {"depth": str(depth)}))
    return Dataset(str(root), split, "nyu", samples, ("depth",), depth_scale=float(opts.depth_scale or 1000.0),
                   depth_range=(1e-3, 10.0))


def _is_nyu(root: Path) -> bool:
    return any(p.name.startswith("rgb_") for p in root.glob("*/**/rgb_*"))


# ---- matting test sets ---------------------------------------------------------------------------
# Folder names as the sets ship them (GCA/MatteFormer's Composition-1k test set, AIM-500, P3M-500-P/NP).
COMP1K_IMAGE_DIRS = ("merged",)
PORTRAIT_IMAGE_DIRS = ("original", "blurred_image", "original_image", "image")
ALPHA_DIRS = ("alpha_copy", "alpha", "mask")
TRIMAP_DIRS = ("trimaps", "trimap")


def _first_dir(base: Path, names: tuple[str, ...]) -> Optional[Path]:
    return next((base / n for n in names if (base / n).is_dir()), None)


def _matting_base(root: Path, split: str, image_dirs: tuple[str, ...]) -> Path:
    """The folder holding the image/alpha/trimap folders: <root>/<split> if it has them, else <root>
    (the test sets ship without a split level)."""
    return root / split if _first_dir(root / split, image_dirs) else root


def _by_stem(folder: Optional[Path]) -> dict[str, Path]:
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in _images_under(folder)} if folder else {}


def _matting(root: Path, split: str, layout: str, image_dirs: tuple[str, ...]) -> Dataset:
    base = _matting_base(root, split, image_dirs)
    images = _first_dir(base, image_dirs)
    alphas = _first_dir(base, ALPHA_DIRS)
    if images is None or alphas is None:
        raise FileNotFoundError(f"{layout} layout: {base} needs an image folder ({' or '.join(image_dirs)}) and an "
                                f"alpha folder ({' or '.join(ALPHA_DIRS)})")
    trimap_dir = _first_dir(base, TRIMAP_DIRS)
    alpha_of, trimap_of = _by_stem(alphas), _by_stem(trimap_dir)
    samples = []
    for sid, img in _by_stem(images).items():
        # DIM composites are named <foreground>_<background index>; their alpha (and trimap, in the
        # original release) is named after the foreground alone.
        fg = sid.rsplit("_", 1)[0] if "_" in sid and sid.rsplit("_", 1)[1].isdigit() else sid
        alpha = alpha_of.get(sid) or alpha_of.get(fg) or alphas / f"{sid}.png"
        targets = {"alpha": str(alpha)}
        if trimap_dir is not None:  # a set that ships trimaps must have one for every image
            targets["trimap"] = str(trimap_of.get(sid) or trimap_of.get(fg) or trimap_dir / f"{sid}.png")
        samples.append(Sample(sid, str(img), targets))
    return Dataset(str(root), split, layout, samples, ("alpha",))


def _comp1k(root: Path, split: str, opts: DatasetOptions) -> Dataset:
    return _matting(root, split, "comp1k", COMP1K_IMAGE_DIRS)


def _portrait_matting(root: Path, split: str, opts: DatasetOptions) -> Dataset:
    return _matting(root, split, "aim", PORTRAIT_IMAGE_DIRS)


def _is_matting(root: Path, image_dirs: tuple[str, ...]) -> bool:
    return any(_first_dir(base, image_dirs) and _first_dir(base, ALPHA_DIRS)
               for base in [root, *(p for p in root.iterdir() if p.is_dir())])


# name -> (detector, reader); detection tries them in this order.
LAYOUTS: dict[str, tuple[Callable[[Path], bool], Callable[[Path, str, DatasetOptions], Dataset]]] = {
    "pixelport": (lambda r: (r / "meta.json").is_file() and (r / "images").is_dir(), _pixelport),
    "mmseg": (lambda r: (r / "img_dir").is_dir() and (r / "ann_dir").is_dir(), _mmseg),
    "cityscapes": (lambda r: (r / "leftImg8bit").is_dir() and (r / "gtFine").is_dir(), _cityscapes),
    "ade20k": (lambda r: (_ade_root(r) / "images" / "validation").is_dir()
               or (_ade_root(r) / "images" / "training").is_dir(), _ade20k),
    "voc": (lambda r: (_voc_root(r) / "JPEGImages").is_dir()
            and (_voc_root(r) / "SegmentationClass").is_dir(), _voc),
    "nyu": (_is_nyu, _nyu),
    "comp1k": (lambda r: _is_matting(r, COMP1K_IMAGE_DIRS), _comp1k),
    "aim": (lambda r: _is_matting(r, PORTRAIT_IMAGE_DIRS), _portrait_matting),
}


def detect_layout(root: str) -> str:
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    for name, (detect, _) in LAYOUTS.items():
        if detect(path):
            return name
    raise ValueError(f"cannot tell the layout of {root}; pass --layout, one of: {', '.join(LAYOUTS)}")


def open_dataset(root: str, split: str = "val", layout: Optional[str] = None,
                 options: Optional[DatasetOptions] = None) -> Dataset:
    """List the samples of one split. Unknown layout -> ValueError naming the known ones."""
    opts = options or DatasetOptions()
    name = layout or detect_layout(root)
    if name not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {name!r}; known layouts: {', '.join(LAYOUTS)}")
    dataset = LAYOUTS[name][1](Path(root), split, opts)
    if not dataset.samples:
        raise ValueError(f"{name} layout: no images for split {split!r} under {root}")
    return dataset


def with_samples(dataset: Dataset, samples: list[Sample]) -> Dataset:
    return replace(dataset, samples=samples)
