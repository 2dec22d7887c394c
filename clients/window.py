"""Sliding-window inference and test-time augmentation (flip, multi-scale) for a served model,
computed exactly as mmsegmentation's `EncoderDecoder.slide_inference` and its aug test do.

    window = SlideWindow(crop=(512, 1024), stride=(341, 683), flip=True, scales=(0.5, 1.0, 1.5))
    pred = client.predict(image, window=window)  # pred.labels: (H, W)

The tiles of one image travel as batched requests of up to max_batch_size tiles. Logits (or depth)
are summed where tiles overlap and divided by the count, one band of rows at a time: rows are
finished (averaged, resized back, merged over augmentations, argmaxed) as soon as no later tile
can touch them, so memory grows with the crop and the image width, never with all tiles' logits
(the uint8 images of each scale are held; an 8000x8000 image with 19 classes never needs its
4.9 GB logits map). A side shorter than the crop gets one tile of that side, as in mmseg; the tile
is padded (bottom/right, the model's pad value) only up to what the model accepts, and the padding
is cropped off its outputs before they are summed, so it never enters the average.
`SlideJob` is the plan without I/O (next request, feed its outputs); `run_slide` and
`run_slide_async` drive it with a client's `infer_tensors`. `mmseg_slide_reference` and
`mmseg_aug_reference` are mmseg's loops written plainly, for tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Mapping, Optional, Sequence

import cv2
import numpy as np

from .contract import ModelContract
from .pipeline import check_image, normalise
from .prediction import Prediction

HW = tuple[int, int]
Box = tuple[int, int, int, int]  # (y1, y2, x1, x2) of one tile, as mmseg names them
TASKS = ("segmentation", "depth")


# ---- geometry (mmseg's formulas) -------------------------------------------------------------
def grid_count(size: int, crop: int, stride: int) -> int:
    """Tiles along one side: mmseg's h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1."""
    return max(size - crop + stride - 1, 0) // stride + 1


def tile_spans(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """[(start, end)] along one side: the last tile is shifted back to end at the border, and a
    side shorter than the crop gets one tile of the whole side (mmseg: no padding there)."""
    spans = []
    for idx in range(grid_count(size, crop, stride)):
        end = min(idx * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    return spans


def tile_boxes(image_hw: HW, crop: HW, stride: HW) -> list[Box]:
    """Every tile's (y1, y2, x1, x2), row by row, in mmseg's loop order."""
    rows = tile_spans(image_hw[0], crop[0], stride[0])
    cols = tile_spans(image_hw[1], crop[1], stride[1])
    return [(y1, y2, x1, x2) for y1, y2 in rows for x1, x2 in cols]


def scaled_hw(image_hw: HW, scale: float) -> HW:
    """The size mmcv's imrescale gives for a scale factor: int(side * scale + 0.5)."""
    return int(image_hw[0] * float(scale) + 0.5), int(image_hw[1] * float(scale) + 0.5)


def resize_image(image: np.ndarray, hw: HW) -> np.ndarray:
    """Resize an aug-test input as mmseg's Resize(keep_ratio) does: cv2 bilinear, also when
    shrinking (mmcv's default interpolation; not the letterbox's INTER_AREA)."""
    if image.shape[:2] == tuple(hw):
        return image
    return cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR).reshape(hw + image.shape[2:])


# ---- the window settings ------------------------------------------------------------------------
@dataclass(frozen=True)
class SlideWindow:
    """Sliding-window settings: crop and stride as (h, w), optional horizontal flip and scales.

    With one augmentation (scale 1, no flip) the labels are the argmax of the averaged logits, as
    mmseg's slide mode; with several, the softmax of each is resized back, averaged and argmaxed,
    as mmseg's aug test. Scales multiply the image's own size (mmseg's `Resize(scale_factor=r)`)."""

    crop: HW
    stride: HW
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    # Tiles per request; 0 = the model's max_batch_size. The result does not depend on it; the
    # speed does (measured on 2 CPU cores: batches pay over shared memory, not over gRPC, where
    # one response carries every tile's logits).
    tiles_per_request: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop", _pair(self.crop, "crop"))
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if any(s > c for s, c in zip(self.stride, self.crop)):
            raise ValueError(f"stride {self.stride} is larger than crop {self.crop}: tiles would leave gaps "
                             "(mmseg uses a stride of about 2/3 of the crop, e.g. crop 512x1024, stride 341x683)")
        if self.tiles_per_request < 0:
            raise ValueError(f"tiles_per_request must be >= 0 (0 = the model's max_batch_size), got {self.tiles_per_request}")
        if not self.scales or any(not (math.isfinite(s) and s > 0) for s in self.scales):
            raise ValueError(f"scales must be positive numbers such as 0.5,0.75,1.0, got {self.scales}")

    @property
    def augs(self) -> list[tuple[float, bool]]:
        """(scale, flipped) in mmseg's order: for each scale, unflipped then flipped."""
        return [(s, f) for s in self.scales for f in ((False, True) if self.flip else (False,))]

    def to_dict(self) -> dict[str, object]:
        """For reports and fingerprints."""
        return {"mode": "slide", "crop": list(self.crop), "stride": list(self.stride), "flip": self.flip,
                "scales": list(self.scales)}


def _pair(value: Sequence[int], what: str) -> HW:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be (h, w), got {value!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{what} must be positive, got {(h, w)}")
    return h, w


# ---- the model's side of a tile -----------------------------------------------------------------
def check_model(contract: ModelContract) -> int:
    """Channels a tile's output averages over (classes, or 1 for depth); raise if the model
    cannot be slid: segmentation needs logits, since labels cannot be averaged."""
    if contract.task not in TASKS:
        raise ValueError(f"model {contract.name!r} is a {contract.task} model; sliding-window inference "
                         f"supports {' and '.join(TASKS)} models")
    if contract.task == "segmentation":
        if "logits" not in contract.output_names:
            raise ValueError(
                f"model {contract.name!r} serves {contract.output_kind!r}; sliding-window and aug-test inference "
                "average logits over overlapping tiles, which labels cannot be. Publish the model with "
                "logits: `python -m export ... --output logits`")
        return contract.num_classes
    return 1


def network_hw(tile_hw: HW, contract: ModelContract) -> HW:
    """The input size a tile is sent at: the model's fixed shape, else padded up to its stride.

    Padding goes at the bottom and right with the model's pad value and is cropped off the
    outputs before they are summed, so it never enters the average."""
    th, tw = tile_hw
    if contract.static_shape is not None:
        nh, nw = contract.static_shape
        if th > nh or tw > nw:
            raise ValueError(f"tile {th}x{tw} does not fit model {contract.name!r}'s fixed input {nh}x{nw}; "
                             f"use a crop of at most {nh}x{nw}")
    else:
        s = contract.resize.stride
        nh, nw = -(-th // s) * s, -(-tw // s) * s
    mh, mw = contract.size_limit
    if nh > mh or nw > mw:
        raise ValueError(f"tile {th}x{tw} (sent as {nh}x{nw}) is over model {contract.name!r}'s input limit "
                         f"{mh}x{mw}; use a smaller crop, or re-export with --max-size {nh}x{nw} or more")
    return nh, nw


def tile_batch(tiles: np.ndarray, contract: ModelContract) -> np.ndarray:
    """(N, h, w, 3) uint8 tiles -> the model's input batch at network_hw (pad bottom/right)."""
    n, th, tw = tiles.shape[:3]
    nh, nw = network_hw((th, tw), contract)
    if (nh, nw) == (th, tw):
        batch = np.ascontiguousarray(tiles)
    else:
        batch = np.full((n, nh, nw, 3), contract.pad_value, np.uint8)
        batch[:, :th, :tw] = tiles
    return normalise(batch, contract) if contract.input_dtype == "float32" else batch


def tile_values(outputs: Mapping[str, np.ndarray], contract: ModelContract, tile_hw: HW, count: int) -> np.ndarray:
    """Output tensors of a tile batch -> (N, C, h, w) float32: logits, or depth in metres (C = 1)."""
    name = "logits" if contract.task == "segmentation" else "depth"
    if name not in outputs:
        raise ValueError(f"model output {name!r} is missing; got {sorted(outputs)}")
    arr = outputs[name]
    if contract.task == "depth":
        arr = arr[:, None]
    th, tw = tile_hw
    if arr.ndim != 4 or arr.shape[0] != count or arr.shape[2] < th or arr.shape[3] < tw:
        raise ValueError(f"model output {name!r} has shape {arr.shape}, expected ({count}, C, >={th}, >={tw})")
    values = arr[:, :, :th, :tw].astype(np.float32)
    if contract.task == "depth":
        values *= np.float32(contract.depth_scale)
    return values


# ---- maps: resize, softmax ----------------------------------------------------------------------
def _source_index(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps, as torch's interpolate(mode='bilinear', align_corners=False) places them:
    src = (dst + 0.5) * in / out - 0.5, clamped at 0; (lower index, upper index, upper weight)."""
    f32 = np.float32  # in float32, as torch's CPU kernel computes the taps for float maps
    scale = f32(in_size) / f32(out_size)
    src = np.maximum(scale * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5), f32(0))
    lo = np.minimum(src.astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, src - lo.astype(f32)


class RowResizer:
    """Bilinear resize of a (C, H, W) map fed as bands of rows, top to bottom; each output row is
    emitted once its two source rows have arrived. Whole map or bands: the same arithmetic per
    value, so a streamed resize equals the one-shot `resize_map` bit for bit."""

    def __init__(self, in_hw: HW, out_hw: HW) -> None:
        self.in_hw, self.out_hw = tuple(in_hw), tuple(out_hw)
        self.rows = _source_index(in_hw[0], out_hw[0])
        self.cols = _source_index(in_hw[1], out_hw[1])
        self.next_out = 0  # first output row not yet emitted
        self.buf_y0 = 0  # source row of buf[:, 0]
        self.buf: Optional[np.ndarray] = None

    def feed(self, y0: int, band: np.ndarray) -> Optional[tuple[int, np.ndarray]]:
        """Source rows [y0, y0 + rows) -> (first output row, (C, n, out_w)) ready now, or None."""
        if self.in_hw == self.out_hw:
            return y0, band
        self.buf = band if self.buf is None else np.concatenate([self.buf, band], axis=1)
        end = self.buf_y0 + self.buf.shape[1]
        assert y0 + band.shape[1] == end, "bands must arrive in order"
        lo, hi, lam = self.rows
        stop = self.out_hw[0] if end == self.in_hw[0] else int(np.searchsorted(hi, end, side="left"))
        if stop <= self.next_out:
            return None
        start, self.next_out = self.next_out, stop
        a, b = self.buf[:, lo[start:stop] - self.buf_y0], self.buf[:, hi[start:stop] - self.buf_y0]
        w = lam[start:stop, None]
        out = a * (np.float32(1) - w) + b * w  # (C, n, in_w): rows first, then columns
        if stop < self.out_hw[0]:  # drop the source rows no later output row needs (when shrinking,
            keep = min(int(lo[stop]) - self.buf_y0, self.buf.shape[1] - 1)  # keep one: rows stay contiguous)
            self.buf, self.buf_y0 = self.buf[:, keep:], self.buf_y0 + keep
        else:
            self.buf = None
        if self.in_hw[1] != self.out_hw[1]:
            clo, chi, clam = self.cols
            out = out[..., clo] * (np.float32(1) - clam) + out[..., chi] * clam
        return start, out


def resize_map(values: np.ndarray, out_hw: HW) -> np.ndarray:
    """(C, H, W) float32 -> (C, h, w), bilinear with torch's align_corners=False taps (mmseg's
    `resize(..., mode='bilinear')` of logits back to the original size)."""
    done = RowResizer(values.shape[1:], out_hw).feed(0, values)
    assert done is not None and done[1].shape[1] == out_hw[0]
    return done[1]


def argmax_channels(values: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (h, w) index of the largest channel, the first on ties: np.argmax(axis=0),
    in C contiguous passes (numpy's strided reduction over axis 0 is several times slower)."""
    best = values[0].copy()
    index = np.zeros(values.shape[1:], np.intp)
    for c in range(1, values.shape[0]):
        better = values[c] > best
        index[better] = c
        np.maximum(best, values[c], out=best)
    return index


def softmax(values: np.ndarray) -> np.ndarray:
    """Softmax over the channel axis of (C, h, w) float32."""
    e = np.exp(values - values.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


# ---- one augmentation: slide, then back to the original geometry -----------------------------
class _Stream:
    """One augmented image slid over: hands out tiles in order, sums their values into a band of
    rows, and returns rows (averaged by the count) once no later tile reaches them."""

    def __init__(self, image: np.ndarray, window: SlideWindow, channels: int, scale: float, flip: bool,
                 out_hw: HW, max_tiles: int) -> None:
        self.image, self.scale, self.flip = image, scale, flip
        self.boxes = tile_boxes(image.shape[:2], window.crop, window.stride)
        self.tile_hw = (self.boxes[0][1] - self.boxes[0][0], self.boxes[0][3] - self.boxes[0][2])
        self.sent = self.added = 0
        self.band_y0 = 0  # image row of the band's first row
        self.used = 0  # band rows in use; rows past them are zero
        # A request of max_tiles tiles reaches at most this far below the first unfinished row;
        # _hold grows the band (doubling) should that ever fall short.
        w_grids = grid_count(image.shape[1], window.crop[1], window.stride[1])
        rows = min(image.shape[0], self.tile_hw[0] + window.stride[0] * -(-max_tiles // w_grids))
        self.sum = np.zeros((channels, rows, image.shape[1]), np.float32)  # mmseg's preds, from band_y0
        self.count = np.zeros((rows, image.shape[1]), np.float32)  # mmseg's count_mat
        self.resizer = RowResizer(image.shape[:2], out_hw)

    @property
    def position(self) -> float:
        """Where the next tile starts, in original-image rows (the least advanced stream goes next)."""
        return self.boxes[self.sent][0] / self.scale if self.sent < len(self.boxes) else math.inf

    def take(self, n: int) -> tuple[list[Box], np.ndarray]:
        boxes = self.boxes[self.sent:self.sent + n]
        self.sent += len(boxes)
        return boxes, np.stack([self.image[y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])

    def add(self, boxes: Sequence[Box], values: np.ndarray) -> Optional[tuple[int, np.ndarray]]:
        """Sum (N, C, h, w) tile values in; -> (first original row, values there) when rows finish."""
        assert list(boxes) == self.boxes[self.added:self.added + len(boxes)], "tiles must come back in order"
        for (y1, y2, x1, x2), v in zip(boxes, values):
            r1, r2 = y1 - self.band_y0, y2 - self.band_y0
            self._hold(r2)
            self.sum[:, r1:r2, x1:x2] += v
            self.count[r1:r2, x1:x2] += 1
        self.added += len(boxes)
        done = self.boxes[self.added][0] if self.added < len(self.boxes) else self.image.shape[0]
        if done <= self.band_y0:
            return None
        k = done - self.band_y0
        assert (self.count[:k] > 0).all(), "every pixel is covered by a tile"
        mean = self.sum[:, :k] / self.count[:k]
        y0, self.band_y0 = self.band_y0, done
        rest, self.used = self.used - k, self.used - k  # shift the unfinished rows up, zero the rest
        self.sum[:, :rest], self.count[:rest] = self.sum[:, k:k + rest], self.count[k:k + rest]
        self.sum[:, rest:rest + k], self.count[rest:rest + k] = 0, 0
        if self.flip:
            mean = mean[..., ::-1]  # back to the original orientation, as mmseg's postprocess
        return self.resizer.feed(y0, mean)


    def _hold(self, rows: int) -> None:
        """Make the band hold `rows` rows (new ones zero), doubling its capacity when needed."""
        if rows > self.sum.shape[1]:
            cap = max(rows, 2 * self.sum.shape[1])
            grown = np.zeros((self.sum.shape[0], cap, self.sum.shape[2]), np.float32)
            grown[:, :self.used] = self.sum[:, :self.used]
            counts = np.zeros((cap, self.count.shape[1]), np.float32)
            counts[:self.used] = self.count[:self.used]
            self.sum, self.count = grown, counts
        self.used = max(self.used, rows)


class _Merge:
    """Sums the augmentations' rows in aug order (mmseg's TTA: sum, then divide by the count),
    emitting rows every augmentation has reached."""

    def __init__(self, count: int, probabilities: bool) -> None:
        self.count, self.probabilities = count, probabilities
        self.done = 0
        self.parts: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(count)]
        self.reached = [0] * count

    def add(self, k: int, y0: int, rows: np.ndarray) -> Optional[tuple[int, np.ndarray]]:
        if self.count == 1:
            return y0, rows
        self.parts[k].append((y0, softmax(rows) if self.probabilities else rows))
        self.reached[k] = y0 + rows.shape[1]
        stop = min(self.reached)
        if stop <= self.done:
            return None
        total = None
        for k in range(self.count):
            part = self._take(k, stop)
            total = part.copy() if total is None else np.add(total, part, out=total)
        total /= np.float32(self.count)
        start, self.done = self.done, stop
        return start, total

    def _take(self, k: int, stop: int) -> np.ndarray:
        """Rows [done, stop) of augmentation k, dropping them from its buffer."""
        pieces = []
        while self.parts[k] and self.parts[k][0][0] < stop:
            y0, rows = self.parts[k].pop(0)
            a, b = max(self.done - y0, 0), min(stop, y0 + rows.shape[1]) - y0
            pieces.append(rows[:, a:b])
            if y0 + rows.shape[1] > stop:
                self.parts[k].insert(0, (stop, rows[:, b:]))
                break
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)


# ---- the job ----------------------------------------------------------------------------------
@dataclass
class TileRequest:
    """One request's worth of tiles: which augmentation, which boxes, the input batch."""

    aug: int
    boxes: list[Box]
    batch: np.ndarray
    tile_hw: HW = field(default=(0, 0))


class SlideJob:
    """Sliding-window (and aug-test) inference of one image, without I/O:

        job = SlideJob(image, window, contract)
        while (req := job.next_request()) is not None:
            job.feed(req, infer_tensors(req.batch))
        pred = job.result()
    """

    def __init__(self, image: np.ndarray, window: SlideWindow, contract: ModelContract) -> None:
        channels = check_model(contract)
        image = check_image(image)
        self.contract, self.window = contract, window
        self.hw: HW = image.shape[:2]
        self.max_tiles = min(max(1, contract.max_batch_size), window.tiles_per_request or math.inf)
        self.streams = []
        for scale, flip in window.augs:
            hw = scaled_hw(self.hw, scale)
            if min(hw) < 1:
                raise ValueError(f"scale {scale} shrinks the {self.hw[0]}x{self.hw[1]} image to nothing")
            scaled = resize_image(image, hw)
            self.streams.append(_Stream(scaled[:, ::-1] if flip else scaled, window, channels, scale, flip, self.hw,
                                        self.max_tiles))
            network_hw(self.streams[-1].tile_hw, contract)  # fail before any request
        self.merge = _Merge(len(self.streams), contract.task == "segmentation")
        dtype = contract.label_dtype if contract.task == "segmentation" else np.float32
        self.out = np.zeros(self.hw, dtype)
        self.rows_done = 0
        self.requests = 0

    def next_request(self) -> Optional[TileRequest]:
        """The next batch of tiles, from the least advanced augmentation; None when all are sent."""
        k = min(range(len(self.streams)), key=lambda i: self.streams[i].position)
        stream = self.streams[k]
        if stream.position == math.inf:
            return None
        boxes, tiles = stream.take(self.max_tiles)
        self.requests += 1
        return TileRequest(k, boxes, tile_batch(tiles, self.contract), stream.tile_hw)

    def feed(self, request: TileRequest, outputs: Mapping[str, np.ndarray]) -> None:
        """The outputs of `request` (batch first), in the order requests were made."""
        values = tile_values(outputs, self.contract, request.tile_hw, len(request.boxes))
        rows = self.streams[request.aug].add(request.boxes, values)
        if rows is not None:
            rows = self.merge.add(request.aug, *rows)
        if rows is not None:
            y0, band = rows
            if self.contract.task == "segmentation":
                self.out[y0:y0 + band.shape[1]] = argmax_channels(band)  # (C, n, W) -> (n, W)
            else:
                self.out[y0:y0 + band.shape[1]] = band[0]
            self.rows_done = y0 + band.shape[1]

    def result(self) -> Prediction:
        if self.rows_done != self.hw[0]:
            raise RuntimeError(f"slide job incomplete: {self.rows_done} of {self.hw[0]} rows done")
        if self.contract.task == "segmentation":
            return Prediction(task="segmentation", labels=self.out)
        return Prediction(task="depth", depth=self.out, depth_kind=self.contract.depth_kind)


def run_slide(infer: Callable[[np.ndarray, str], Mapping[str, np.ndarray]], image: np.ndarray,
              window: SlideWindow, contract: ModelContract, image_id: str = "image") -> Prediction:
    """Slide over `image` with a blocking `infer(batch, description) -> outputs` (a client's
    infer_tensors, or an in-process runner)."""
    job = SlideJob(image, window, contract)
    while (request := job.next_request()) is not None:
        job.feed(request, infer(request.batch, f"{image_id} (tiles, request {job.requests})"))
    return job.result()


async def run_slide_async(infer: Callable[[np.ndarray, str], Awaitable[Mapping[str, np.ndarray]]],
                          image: np.ndarray, window: SlideWindow, contract: ModelContract,
                          image_id: str = "image") -> Prediction:
    """run_slide for an asyncio client; the numpy work runs in a worker thread."""
    import asyncio

    job = await asyncio.to_thread(SlideJob, image, window, contract)
    while (request := await asyncio.to_thread(job.next_request)) is not None:
        outputs = await infer(request.batch, f"{image_id} (tiles, request {job.requests})")
        await asyncio.to_thread(job.feed, request, outputs)
    return job.result()


# ---- mmseg's algorithm, written plainly (the reference the tests hold the above to) -------------
def mmseg_slide_reference(run_logits: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                          crop: HW, stride: HW) -> np.ndarray:
    """mmseg's `EncoderDecoder.slide_inference` for one image, line by line: `run_logits` takes
    a (1, h, w, 3) uint8 crop and returns its (1, C, h, w) logits. Returns (C, H, W) float32."""
    h_stride, w_stride = stride
    h_crop, w_crop = crop
    h_img, w_img = image.shape[:2]
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = None
    count_mat = np.zeros((1, h_img, w_img), np.float32)
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * h_stride
            x1 = w_idx * w_stride
            y2 = min(y1 + h_crop, h_img)
            x2 = min(x1 + w_crop, w_img)
            y1 = max(y2 - h_crop, 0)
            x1 = max(x2 - w_crop, 0)
            crop_img = image[None, y1:y2, x1:x2]
            crop_seg_logit = run_logits(crop_img)[0].astype(np.float32)
            if preds is None:
                preds = np.zeros((crop_seg_logit.shape[0], h_img, w_img), np.float32)
            preds += np.pad(crop_seg_logit, ((0, 0), (y1, h_img - y2), (x1, w_img - x2)))
            count_mat[:, y1:y2, x1:x2] += 1
    assert (count_mat == 0).sum() == 0
    return preds / count_mat


def mmseg_aug_reference(run_logits: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                        window: SlideWindow, task: str = "segmentation") -> np.ndarray:
    """mmseg's test with augmentations, whole maps at a time: for each (scale, flip) resize the
    image, slide, flip the logits back, resize them to the original size; one augmentation ->
    argmax of those logits; several -> mean of their softmax, argmax (TTA merge_preds).
    Depth (C = 1) averages the depth instead. Returns labels (H, W) or depth (H, W)."""
    hw = image.shape[:2]
    augs = window.augs
    total = None
    for scale, flip in augs:
        img = resize_image(image, scaled_hw(hw, scale))
        if flip:
            img = img[:, ::-1]
        logits = mmseg_slide_reference(run_logits, np.ascontiguousarray(img), window.crop, window.stride)
        if flip:
            logits = logits[..., ::-1]
        logits = resize_map(logits, hw)
        if len(augs) > 1 and task == "segmentation":
            logits = softmax(logits)
        total = logits.copy() if total is None else np.add(total, logits, out=total)
    if len(augs) > 1:
        total /= np.float32(len(augs))
    return total.argmax(axis=0) if task == "segmentation" else total[0]
