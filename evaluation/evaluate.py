"""Offline batch evaluation: run a Predictor over a dataset split and account for every input.

`evaluate(predictor, settings)` reads samples (bounded concurrency), predicts, updates the task's
metrics and returns the report dict; each input ends evaluated or in `failed` with its reason.
`--shard i/n` evaluates every n-th sample; `--state FILE` checkpoints progress atomically, so a
killed run restarted with the same state file ends with the same report. `merge_reports` adds
shard reports exactly (confusion matrices add; per-image tables union).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from contextlib import closing
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from clients.contract import checked_palette
from clients.files import atomic_path, atomic_write_json
from clients.datasets import TARGET_KINDS, Dataset, DatasetOptions, Sample, SampleError, open_dataset
from clients.images import ImageError, load_image
from clients.metrics import DepthMetrics, Metrics, SegmentationMetrics, metrics_from_json
from clients.metrics.tasks import DEFAULT_DEPTH_RANGE, depth_scoring, make_metrics
from .fingerprint import fingerprint_differences, inference_settings, model_fingerprint, short
from .predictors import BackendUnreachable, Predictor

log = logging.getLogger(__name__)
STATE_VERSION = 1
PICTURE_SIDE = 320  # sample pictures are stored downscaled to this longer side
Progress = Callable[[int, int, int], None]  # (accounted, total, failed)


class BackendError(RuntimeError):
    """The predictor fails on every image: stop instead of listing the whole dataset as failed."""


@dataclass(frozen=True)
class EvalSettings:
    data: str
    split: str = "val"
    layout: Optional[str] = None
    dataset: DatasetOptions = field(default_factory=DatasetOptions)
    concurrency: int = 1
    shard: tuple[int, int] = (0, 1)  # (index, count)
    state: Optional[str] = None  # progress checkpoint file (resume)
    out: Optional[str] = None  # report directory; sample pictures go to out/samples
    limit: Optional[int] = None  # evaluate only the first N samples of the split
    min_depth: float = 1e-3
    max_depth: Optional[float] = None  # None: the dataset's range, else the depth task's default (80 m)
    alignment: Optional[str] = None  # None: "scale_shift" for relative-depth models, else "none"
    crop: Optional[str] = None
    trimap_kernel: int = 10
    num_pictures: int = 8
    state_every: float = 2.0  # seconds between state checkpoints (0 = after every image)
    max_rate: Optional[float] = None  # images/s cap, to spare a shared production server
    abort_after: int = 10  # backend failures, with no success yet, that stop the run
    label_map: Optional[dict[int, int]] = None  # gt id -> id, applied before reduce_zero_label
    class_names: Optional[tuple[str, ...]] = None  # overrides the model's and the dataset's names
    ignore_unknown_ids: bool = False  # gt ids outside the model's classes are dropped, not an error
    inference: Optional[dict[str, Any]] = None  # mode/crop/stride/flip/scales; None: the predictor's own

    def __post_init__(self) -> None:
        index, count = self.shard
        if not (count >= 1 and 0 <= index < count):
            raise ValueError(f"--shard must be i/n with 0 <= i < n, got {index}/{count}")
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.max_rate is not None and self.max_rate <= 0:
            raise ValueError(f"--max-rate must be positive, got {self.max_rate}")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like 0/4, got {text!r}") from None
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"--shard must be i/n with 0 <= i < n, got {text!r}")
    return index, count


@dataclass
class Outcome:
    sample: Sample
    stage: str = ""  # "" on success; "read" | "predict" | "metric" on failure
    error: str = ""
    image: Optional[np.ndarray] = None
    target: Optional[np.ndarray] = None
    pred: Optional[np.ndarray] = None
    trimap: Optional[np.ndarray] = None  # matting: the dataset's own trimap, when it has one
    unreachable: bool = False  # the backend's server did not answer at all (see BackendUnreachable)


class _RateLimiter:
    def __init__(self, rate: Optional[float]) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            slot = max(now, self.next)
            self.next = slot + self.interval
        time.sleep(max(0.0, slot - now))


# ---- metric construction ------------------------------------------------------------------------
def build_metrics(predictor: Predictor, dataset: Dataset, s: EvalSettings) -> Metrics:
    c = predictor.contract
    if c.task == "segmentation":
        # A label map redefines the dataset's ids, so its own class count no longer applies.
        if dataset.num_classes and dataset.num_classes != c.num_classes and not s.label_map:
            raise ValueError(f"the {dataset.layout} dataset has {dataset.num_classes} classes but model "
                             f"{c.name!r} predicts {c.num_classes}; evaluate a model trained for this dataset "
                             "(or map the dataset's ids with --label-map FILE)")
        if s.class_names and len(s.class_names) != c.num_classes:
            raise ValueError(f"--class-names gives {len(s.class_names)} names but model {c.name!r} "
                             f"predicts {c.num_classes} classes")
        own = dataset.class_names if len(dataset.class_names) == c.num_classes else ()
        names = s.class_names or c.class_names or own or None
        return make_metrics("segmentation", num_classes=c.num_classes, ignore_index=dataset.ignore_index,
                            reduce_zero_label=dataset.reduce_zero_label, label_map=s.label_map,
                            class_names=names)
    if c.task == "depth":
        max_depth = s.max_depth or (dataset.depth_range or DEFAULT_DEPTH_RANGE)[1]
        alignment, prediction = depth_scoring(c.depth_kind, s.alignment)
        return make_metrics("depth", depth_range=(s.min_depth, max_depth), alignment=alignment, crop=s.crop,
                            depth_prediction=prediction)
    return make_metrics("matting", trimap_kernel=s.trimap_kernel)


# ---- state file -----------------------------------------------------------------------------------
METRIC_DATA_KEYS = ("confusion_matrix", "out_of_range", "invalid_gt", "unknown_ids", "num_images", "per_image",
                    "skipped", "keys", "class_names")


def report_fingerprint(predictor: Predictor, dataset: Dataset, s: EvalSettings, metrics: Metrics,
                       model: dict[str, Any]) -> dict[str, Any]:
    """What produced a report: the model's fingerprint and every setting that changes the numbers."""
    metric_settings = {k: v for k, v in metrics.to_json().items() if k not in METRIC_DATA_KEYS}
    options = {k: v for k, v in asdict(s.dataset).items() if v is not None}
    settings = {"inference": inference_settings(predictor, s.inference), "metrics": metric_settings,
                "dataset": {"layout": dataset.layout, "split": dataset.split, "limit": s.limit, **options},
                "ignore_unknown_ids": s.ignore_unknown_ids}
    return {"model": model, "settings": settings}


def fingerprint(predictor: Predictor, dataset: Dataset, s: EvalSettings, produced_by: dict[str, Any]) -> dict[str, Any]:
    """What must match for a state file to be resumed: same model, data, shard and settings."""
    return {"backend": predictor.backend, "model": predictor.name, "task": predictor.contract.task,
            "data": os.path.abspath(dataset.root), "shard": list(s.shard), "produced_by": produced_by}


@dataclass
class RunState:
    done: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    resumed: bool = False


def load_state(path: str, expected: dict[str, Any], metrics: Metrics) -> tuple[RunState, Metrics]:
    if not os.path.isfile(path):
        return RunState(), metrics
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if data.get("version") != STATE_VERSION or data.get("fingerprint") != expected:
        theirs = data.get("fingerprint", {})
        diff = sorted(k for k in set(expected) | set(theirs) if expected.get(k) != theirs.get(k))
        raise ValueError(f"state file {path} belongs to a different run (differs in: {', '.join(diff) or 'version'}); "
                         "delete it or pass another --state")
    # Backend failures are retried on resume (the server may be back); data failures are final.
    failed = [f for f in data["failed"] if f.get("stage") != "predict"]
    return RunState(list(data["done"]), failed, resumed=True), metrics_from_json(data["metrics"])


# ---- the run ---------------------------------------------------------------------------------------
def shard_samples(dataset: Dataset, s: EvalSettings) -> list[Sample]:
    samples = sorted(dataset.samples, key=lambda x: x.id)
    if s.limit is not None:
        samples = samples[: s.limit]
    index, count = s.shard
    return samples[index::count]


def _work(sample: Sample, dataset: Dataset, kind: str, predictor: Predictor, limiter: _RateLimiter,
          keep_image: bool) -> Outcome:
    """Read, check and predict one sample; every failure becomes an Outcome with its reason."""
    try:
        image = load_image(sample.image)
    except ImageError as exc:
        return Outcome(sample, "read", str(exc))
    try:
        target = dataset.read_target(sample, kind)
        trimap = dataset.read_target(sample, "trimap") if "trimap" in sample.targets else None
    except SampleError as exc:
        return Outcome(sample, "read", str(exc))
    for what, arr in ((kind, target), ("trimap", trimap)):
        if arr is not None and arr.shape[:2] != image.shape[:2]:
            (th, tw), (ih, iw) = arr.shape[:2], image.shape[:2]
            return Outcome(sample, "read", f"{what} is {tw}x{th} but the image is {iw}x{ih} ({sample.targets[what]})")
    limiter.wait()
    try:
        pred = predictor.predict_batch([image])[0].primary
    except Exception as exc:  # any backend error is this sample's failure; the run goes on
        return Outcome(sample, "predict", f"{type(exc).__name__}: {exc}",
                       unreachable=isinstance(exc, BackendUnreachable))
    if pred.shape != target.shape[:2]:
        return Outcome(sample, "predict", f"prediction is {pred.shape}, expected {target.shape[:2]}")
    return Outcome(sample, image=image if keep_image else None, target=target, pred=pred, trimap=trimap)


def _update(metrics: Metrics, outcome: Outcome) -> None:
    if isinstance(metrics, SegmentationMetrics):
        metrics.update(outcome.pred, outcome.target)
    elif isinstance(metrics, DepthMetrics):  # per-image tables are keyed by sample id: never counted twice
        metrics.update(outcome.pred, outcome.target, key=outcome.sample.id)
    else:
        metrics.update(outcome.pred, outcome.target, trimap=outcome.trimap, key=outcome.sample.id)


def bounded_map(fn: Callable[[Sample], Outcome], items: Sequence[Sample], concurrency: int) -> Iterator[Outcome]:
    """fn over items on `concurrency` threads, yielding outcomes as they finish; at most
    2 x concurrency items are in flight, so decoded images never pile up in memory."""
    queue = iter(items)
    inflight: set[Future] = set()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eval") as pool:
        try:
            while True:
                while len(inflight) < 2 * concurrency and (item := next(queue, None)) is not None:
                    inflight.add(pool.submit(fn, item))
                if not inflight:
                    return
                finished, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield fut.result()
        finally:  # the consumer stopped early (Ctrl-C, abort): drop what has not started
            for fut in inflight:
                fut.cancel()


def picture_name(sample_id: str) -> str:
    return sample_id.replace("/", "__") + ".npz"


def save_picture(folder: Path, outcome: Outcome, task: str) -> None:
    """Keep a small copy of (image, target, prediction) for the report's sample grid."""
    import cv2

    h, w = outcome.image.shape[:2]
    f = min(1.0, PICTURE_SIDE / max(h, w))
    size = (max(1, round(w * f)), max(1, round(h * f)))

    def small(arr: np.ndarray, nearest: bool) -> np.ndarray:
        if f == 1.0:
            return arr
        interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
        return cv2.resize(arr, size, interpolation=interp)

    seg = task == "segmentation"
    target = outcome.target.astype(np.int32 if seg else np.float32)
    with atomic_path(folder / picture_name(outcome.sample.id)) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, id=outcome.sample.id, image=small(outcome.image, False),
                            target=small(target, seg), pred=small(outcome.pred.astype(target.dtype), seg))


class _Run:
    """One evaluation's mutable progress: the metrics, which ids are done or failed, the state file."""

    def __init__(self, predictor: Predictor, s: EvalSettings, metrics: Metrics, state: RunState,
                 expected: dict[str, Any], pictures: set[str]) -> None:
        self.predictor, self.s, self.metrics, self.state = predictor, s, metrics, state
        self.expected, self.pictures = expected, pictures
        self.successes = self.backend_failures = 0
        self.last_save = time.monotonic()

    def save(self, complete: bool = False) -> None:
        if self.s.state:
            atomic_write_json(self.s.state, {
                "version": STATE_VERSION, "fingerprint": self.expected, "complete": complete,
                "done": self.state.done, "failed": self.state.failed, "metrics": self.metrics.to_json()})
            self.last_save = time.monotonic()

    def save_if_due(self) -> None:
        if time.monotonic() - self.last_save >= self.s.state_every:
            self.save()

    def handle(self, outcome: Outcome) -> None:
        if not outcome.stage:
            try:
                _update(self.metrics, outcome)
            except ValueError as exc:  # e.g. a float alpha outside [0, 1]
                outcome.stage, outcome.error = "metric", str(exc)
        if outcome.stage:
            self.fail(outcome)
            return
        self.successes += 1
        self.state.done.append(outcome.sample.id)
        if outcome.sample.id in self.pictures and self.s.out:
            if isinstance(self.metrics, SegmentationMetrics):  # show the gt the metrics saw (rzl, label map)
                outcome.target = self.metrics.prepare_gt(outcome.target)
            elif isinstance(self.metrics, DepthMetrics):  # and the depth they scored (aligned, clipped)
                outcome.pred = self.metrics.aligned_depth(outcome.pred, outcome.target)
            save_picture(Path(self.s.out) / "samples", outcome, self.predictor.contract.task)

    def fail(self, outcome: Outcome) -> None:
        self.state.failed.append({"id": outcome.sample.id, "path": outcome.sample.image,
                                  "error": outcome.error, "stage": outcome.stage})
        log.debug("failed %s: %s", outcome.sample.image, outcome.error)
        self.backend_failures += outcome.stage == "predict"
        resume = " with the same --state to resume" if self.s.state else ""
        if outcome.unreachable:  # the server is gone: each later image would wait out the retries too
            raise BackendError(f"stopped after {len(self.state.done)} evaluated images: {outcome.error}; "
                               f"bring the server back and rerun{resume} (a failed request is retried then)")
        if self.backend_failures >= self.s.abort_after and self.successes == 0:
            raise BackendError(f"the {self.predictor.backend} backend failed on {self.backend_failures} images and "
                               f"succeeded on none (last: {outcome.error}); fix it and rerun{resume}")


def evaluate(predictor: Predictor, settings: EvalSettings, progress: Optional[Progress] = None) -> dict[str, Any]:
    """Evaluate `predictor` on the settings' dataset split (or shard) and return the report dict."""
    s = settings
    dataset = open_dataset(s.data, s.split, s.layout, s.dataset)
    task = predictor.contract.task
    kind = TARGET_KINDS[task]
    if kind not in dataset.kinds:
        raise ValueError(f"the {dataset.layout} layout has no {kind} targets, so it cannot evaluate a {task} "
                         f"model (it has: {', '.join(dataset.kinds)})")
    samples = shard_samples(dataset, s)
    metrics = build_metrics(predictor, dataset, s)
    produced_by = report_fingerprint(predictor, dataset, s, metrics, model_fingerprint(predictor))
    expected = fingerprint(predictor, dataset, s, produced_by)
    state, metrics = load_state(s.state, expected, metrics) if s.state else (RunState(), metrics)
    accounted = set(state.done) | {f["id"] for f in state.failed}
    pending = [x for x in samples if x.id not in accounted]
    if state.resumed:
        log.info("resuming from %s: %d of %d images already accounted for", s.state, len(accounted), len(samples))
    pictures = {x.id for x in samples[: s.num_pictures]} if s.out else set()
    run = _Run(predictor, s, metrics, state, expected, pictures)
    limiter = _RateLimiter(s.max_rate)
    started = time.monotonic()

    def work(sample: Sample) -> Outcome:
        return _work(sample, dataset, kind, predictor, limiter, sample.id in pictures)

    try:
        with closing(bounded_map(work, pending, s.concurrency)) as outcomes:  # closing: stop the pool now
            for outcome in outcomes:
                run.handle(outcome)
                run.save_if_due()
                if progress:
                    progress(len(state.done) + len(state.failed), len(samples), len(state.failed))
    except BaseException:
        run.save()  # Ctrl-C or an abort: every handled outcome is kept, the rest is redone on resume
        raise
    run.save(complete=True)
    elapsed = time.monotonic() - started
    report = build_report(predictor, dataset, s, metrics, state, len(samples))
    report["fingerprint"] = produced_by
    report["run"] = {"seconds": round(elapsed, 3), "images_per_s": round(len(pending) / elapsed, 3) if elapsed else None,
                     "concurrency": s.concurrency, "resumed": state.resumed, "evaluated_this_run": len(pending)}
    return report


# ---- reports ---------------------------------------------------------------------------------------
def metrics_section(metrics: Metrics) -> dict[str, Any]:
    """The report's metric fields (all derived from the mergeable state)."""
    out: dict[str, Any] = {"metrics": metrics.summary(), "state": metrics.to_json()}
    if isinstance(metrics, SegmentationMetrics):
        out["per_class"] = metrics.per_class()
        out["confusion_matrix"] = metrics.confusion.tolist()
        out["out_of_range_predictions"] = metrics.out_of_range.tolist()
        out["invalid_gt_pixels"] = metrics.invalid_gt
        out["unknown_ids"] = {str(k): v for k, v in sorted(metrics.unknown_ids.items())}
        out["metric_settings"] = {"ignore_index": metrics.ignore_index, "reduce_zero_label": metrics.reduce_zero_label,
                                  "label_map": {str(k): v for k, v in sorted(metrics.label_map.items())}}
    elif isinstance(metrics, DepthMetrics):
        out["metric_settings"] = {"min_depth": metrics.min_depth, "max_depth": metrics.max_depth,
                                  "alignment": metrics.alignment, "crop": metrics.crop,
                                  "prediction": metrics.prediction}
        out["skipped"] = [{"id": k, "reason": v} for k, v in sorted(metrics.table.skipped.items())]
    else:
        out["metric_settings"] = {"trimap_kernel": metrics.trimap_kernel, "region": "trimap unknown (128)"}
    return out


def dataset_section(dataset: Dataset, s: EvalSettings, task: str) -> dict[str, Any]:
    out: dict[str, Any] = {"root": os.path.abspath(dataset.root), "split": dataset.split, "layout": dataset.layout,
                           "limit": s.limit}
    raw = [suffix for suffix in dataset.label_luts
           if any(x.targets.get("labels", "").endswith(suffix) for x in dataset.samples)]
    if task == "segmentation" and raw:  # e.g. a stock Cityscapes gtFine: raw label ids, mapped at read time
        out["label_ids"] = f"raw ids from *{raw[0]} mapped to train ids with the dataset's official table"
    if task == "matting":  # the DIM benchmark's trimaps, or ones made from alpha (mmagic's GenerateTrimap)
        out["trimaps"] = "files" if any("trimap" in x.targets for x in dataset.samples) else "generated from alpha"
    return out


def build_report(predictor: Predictor, dataset: Dataset, s: EvalSettings, metrics: Metrics, state: RunState,
                 num_images: int) -> dict[str, Any]:
    failed = sorted(({"path": f["path"], "error": f["error"], "id": f["id"], "stage": f["stage"]} for f in state.failed),
                    key=lambda f: (f["path"], f["error"]))
    if len(state.done) + len(failed) != num_images:
        raise RuntimeError(f"internal: {len(state.done)} evaluated + {len(failed)} failed != {num_images} images")
    report = {
        "model": predictor.name, "task": predictor.contract.task, "backend": predictor.backend,
        "source": predictor.source,
        "dataset": dataset_section(dataset, s, predictor.contract.task),
        "shard": f"{s.shard[0]}/{s.shard[1]}",
        "num_images": num_images, "num_evaluated": len(state.done), "num_failed": len(failed), "failed": failed,
        "ignore_unknown_ids": s.ignore_unknown_ids,
    }
    report.update(metrics_section(metrics))
    if isinstance(metrics, SegmentationMetrics):
        report["palette"] = [list(c) for c in checked_palette(predictor.contract.palette, metrics.num_classes)]
    report["evaluated_ids"] = sorted(state.done)
    return report


def missing_shards(shards: Sequence[str]) -> list[str]:
    """The i/n shards a set lacks to cover the split (['mixed'] when their n differ)."""
    parsed = [parse_shard(p) for x in shards for p in x.split(",")]
    counts = {n for _, n in parsed}
    if len(counts) != 1:
        return ["mixed shard counts " + ", ".join(sorted(set(shards)))]
    n = counts.pop()
    have = {i for i, _ in parsed}
    return [f"{i}/{n}" for i in range(n) if i not in have]


def merge_reports(reports: Sequence[dict[str, Any]], allow_partial: bool = False) -> dict[str, Any]:
    """Merge shard reports of one model on one dataset split into the report one run would give.

    A set that does not cover the split is refused unless `allow_partial`."""
    if not reports:
        raise ValueError("merge needs at least one report")
    first = reports[0]
    for key in ("model", "task", "backend", "dataset"):
        values = {json.dumps(r.get(key), sort_keys=True) for r in reports}
        if len(values) > 1:
            raise ValueError(f"cannot merge reports with different {key}: {sorted(values)}")
    for i, r in enumerate(reports[1:], 1):
        diff = fingerprint_differences(first.get("fingerprint") or {}, r.get("fingerprint") or {})
        if diff:
            field, a, b = diff[0]
            more = f" (and {len(diff) - 1} more fields)" if len(diff) > 1 else ""
            raise ValueError(f"cannot merge: the shards differ in fingerprint.{field}{more}: {short(a)} in shard "
                             f"{first['shard']}, {short(b)} in shard {r['shard']}; they were not produced by the "
                             "same model and settings")
    metrics = metrics_from_json(first["state"])
    ids = set(first["evaluated_ids"])
    for r in reports[1:]:
        overlap = ids & set(r["evaluated_ids"])
        if overlap:
            raise ValueError(f"reports overlap on {len(overlap)} images (first: {sorted(overlap)[0]!r}); "
                             "merge only disjoint shards")
        ids |= set(r["evaluated_ids"])
        metrics.merge(metrics_from_json(r["state"]))
    missing = missing_shards([r["shard"] for r in reports])
    if missing and not allow_partial:
        raise ValueError(f"the shards do not cover the split (missing: {', '.join(missing)}); merge all of them, "
                         "or pass --allow-partial")
    complete = not missing
    failed = sorted((f for r in reports for f in r["failed"]), key=lambda f: (f["path"], f["error"]))
    merged = {
        "model": first["model"], "task": first["task"], "backend": first["backend"], "source": first["source"],
        "dataset": first["dataset"],
        "shard": "0/1" if complete else ",".join(r["shard"] for r in reports),
        "num_images": sum(r["num_images"] for r in reports), "num_evaluated": len(ids),
        "num_failed": len(failed), "failed": failed,
        "ignore_unknown_ids": any(r.get("ignore_unknown_ids") for r in reports),
        "fingerprint": first.get("fingerprint"),
    }
    if not complete:
        log.warning("merged shards %s do not cover the whole split", merged["shard"])
    merged.update(metrics_section(metrics))
    if "palette" in first:
        merged["palette"] = first["palette"]
    merged["evaluated_ids"] = sorted(ids)
    merged["run"] = {"merged_from": len(reports),
                     "seconds": sum((r.get("run") or {}).get("seconds") or 0 for r in reports)}
    return merged


def collect_pictures(src_dirs: Sequence[str], out_dir: str, count: int) -> None:
    """Copy the first `count` sample pictures (by id) from shard report dirs into out/samples."""
    found: dict[str, Path] = {}
    for d in src_dirs:
        for p in sorted((Path(d) / "samples").glob("*.npz")):
            if not p.name.startswith("."):
                found.setdefault(p.name, p)
    dest = Path(out_dir) / "samples"
    for name in sorted(found)[:count]:
        dest.mkdir(parents=True, exist_ok=True)
        if found[name].resolve() != (dest / name).resolve():
            shutil.copyfile(found[name], dest / name)



# ---- verdict (what a CI should make of a report) -----------------------------------------------------
@dataclass(frozen=True)
class Problem:
    kind: str  # "nothing_evaluated" | "unknown_ids" | "failed_inputs"
    message: str  # one line: what is wrong and what to do


def format_unknown_ids(unknown: dict[str, int], limit: int = 8) -> str:
    """'3 (120 px), 7 (5 px)': ground-truth ids and their pixel counts, the largest first."""
    items = sorted(unknown.items(), key=lambda kv: (-kv[1], int(kv[0])))
    text = ", ".join(f"{k} ({v} px)" for k, v in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _first_failure(report: dict[str, Any]) -> str:
    first = report["failed"][0]
    return " ".join(f"{first['path']}: {first['error']}".split())  # one line, whatever the error said


def check_report(report: dict[str, Any], allow_failures: bool = False) -> list[Problem]:
    """The reasons a run must not pass as a success, most serious first (empty: all good).

    Ground-truth ids the model cannot predict are a problem unless the run was made with
    `ignore_unknown_ids` (recorded in the report, whose headline then says so)."""
    problems = []
    if report["num_evaluated"] == 0:
        why = (f"all {report['num_images']} failed (first: {_first_failure(report)})" if report["failed"]
               else f"shard {report['shard']} of split {report['dataset']['split']!r} holds no image")
        problems.append(Problem("nothing_evaluated", f"no image was evaluated: {why}"))
        return problems
    unknown = report.get("unknown_ids") or {}
    if unknown and not report.get("ignore_unknown_ids"):
        n = len(report.get("per_class") or [])
        problems.append(Problem(
            "unknown_ids", f"ground truth holds ids the model cannot predict (it has classes 0..{n - 1}): "
            f"{format_unknown_ids(unknown)}; map them with --label-map FILE, or pass --ignore-unknown-ids"))
    if report["num_failed"] and not allow_failures:
        problems.append(Problem(
            "failed_inputs", f"{report['num_failed']} of {report['num_images']} images failed (first: "
            f"{_first_failure(report)}); see report.md, or pass --allow-failures"))
    return problems
