"""Write an evaluation report: report.json (fractions, full precision), report.md (tables in
percent) and pictures (confusion-matrix heatmap, per-class IoU bars, a grid of sample overlays
for segmentation or error maps for depth and matting). matplotlib (Agg) is imported lazily.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from clients.metrics.matting import MATTING_KEYS
from clients.outputs import colorize
from clients.metrics.segmentation import PER_CLASS_KEYS
from clients.metrics.tasks import TASK_METRICS, higher_is_better

log = logging.getLogger(__name__)
MAX_FAILED_IN_MD = 50
TOP_K_CLASSES = 20  # past this many classes the confusion picture shows only the most confused ones
MAX_LEGEND = 24  # class entries in the overlay legend


# ---- number formatting ---------------------------------------------------------------------------
def pct(value: Optional[float]) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def num(value: Optional[float], digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def metric_cell(task: str, key: str, value: Optional[float]) -> str:
    """How a headline metric prints: segmentation and depth deltas in percent, errors as numbers."""
    if task == "segmentation" or higher_is_better(task, key):
        return pct(value)
    return num(value, 2 if key == "silog" else 4)


def metric_keys(task: str) -> tuple[str, ...]:
    return TASK_METRICS[task].keys


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any], pictures: Sequence[str] = ()) -> str:
    task = report["task"]
    ds = report["dataset"]
    keys = metric_keys(task)
    out = [f"# Evaluation: {report['model']} ({report['backend']}, {task})\n",
           f"Data: `{ds['root']}` split `{ds['split']}` (layout {ds['layout']}), shard {report['shard']}. "
           f"Images: {report['num_images']}, evaluated {report['num_evaluated']}, failed {report['num_failed']}.\n"]
    notes = [f"Labels: {ds['label_ids']}." if ds.get("label_ids") else "",
             f"Trimaps: {ds['trimaps']}." if ds.get("trimaps") else ""]
    if any(notes):
        out.append(" ".join(n for n in notes if n) + "\n")
    out += headline_warnings(report)
    produced = produced_by(report)
    if produced:
        out.append(produced)
    unit = "percent" if task == "segmentation" else "deltas in percent" if task == "depth" else "mmagic units"
    out.append(f"## Metrics ({unit})\n")
    out.append(table(keys, [[metric_cell(task, k, report["metrics"].get(k)) for k in keys]]))
    settings = report.get("metric_settings")
    if settings:
        out.append("Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + "\n")
    if task == "segmentation":
        out.append("\n## Per class (percent)\n")
        rows = [[_md_escape(r["class"])] + [pct(r[k]) for k in PER_CLASS_KEYS] + [r["gt_pixels"], r["pred_pixels"]]
                for r in report["per_class"]]
        out.append(table(["class", *PER_CLASS_KEYS, "gt px", "pred px"], rows))
        pairs = top_confusions(np.asarray(report["confusion_matrix"]), 10)
        if pairs:
            names = [r["class"] for r in report["per_class"]]
            out.append("\n## Most confused (ground truth -> prediction)\n")
            out.append(table(["ground truth", "predicted as", "pixels", "% of the class"],
                             [[_md_escape(names[g]), _md_escape(names[p]), n, pct(f)] for g, p, n, f in pairs]))
        extra = sum(report.get("out_of_range_predictions", []))
        if extra:
            out.append(f"\n{extra} pixels were predicted outside [0, {len(report['per_class'])}); "
                       "they count as misses of their ground-truth class.\n")
    if report.get("skipped"):
        out.append(f"\n{len(report['skipped'])} images had no valid ground-truth pixel and are not in the means.\n")
    if report["failed"]:
        out.append(f"\n## Failed ({report['num_failed']})\n")
        rows = [[f"`{_md_escape(f['path'])}`", f.get("stage", ""), _md_escape(f["error"])]
                for f in report["failed"][:MAX_FAILED_IN_MD]]
        out.append(table(["path", "stage", "error"], rows))
        if report["num_failed"] > MAX_FAILED_IN_MD:
            out.append(f"\n... and {report['num_failed'] - MAX_FAILED_IN_MD} more in report.json.\n")
    if pictures:
        out.append("\n## Pictures\n")
        out += [f"![{Path(p).stem}]({Path(p).name})\n" for p in pictures]
    run = report.get("run") or {}
    if run.get("images_per_s"):
        out.append(f"\nRun: {run['seconds']} s, {run['images_per_s']} images/s at concurrency {run.get('concurrency')}.\n")
    return "\n".join(out)


def produced_by(report: dict[str, Any]) -> str:
    """One line naming the model (version, weights and config digests) and the inference settings."""
    fp = report.get("fingerprint") or {}
    model, settings = fp.get("model") or {}, fp.get("settings") or {}
    if not model:
        return ""
    digest = lambda v: f"`{v[:12]}`" if v else "not exposed"  # noqa: E731
    inf = settings.get("inference") or {}
    mode = inf.get("mode", "whole")
    if mode != "whole":
        mode += f" (crop {inf.get('crop')}, stride {inf.get('stride')})"
    mode += ", flip" if inf.get("flip") else ""
    mode += f", scales {inf.get('scales')}" if inf.get("scales") not in (None, [1.0]) else ""
    label_map = (settings.get("metrics") or {}).get("label_map")
    return (f"Produced by: model `{model.get('name')}` version {model.get('version')}, weights "
            f"{digest(model.get('weights_sha256'))}, config {digest(model.get('config_sha256'))}; "
            f"inference {mode}" + (f"; label map {label_map}" if label_map else "") + ".\n")


def headline_warnings(report: dict[str, Any]) -> list[str]:
    """Bold lines under the title for anything that qualifies the numbers below them."""
    from .evaluate import format_unknown_ids

    out = []
    if report["num_evaluated"] == 0:
        out.append("**No image was evaluated: there are no metrics.**\n")
    unknown = report.get("unknown_ids") or {}
    if unknown:
        ids = format_unknown_ids(unknown)
        if report.get("ignore_unknown_ids"):
            out.append(f"**Ground-truth ids the model cannot predict were ignored (--ignore-unknown-ids): {ids}. "
                       "Those pixels are not in the metrics.**\n")
        else:
            out.append(f"**Ground truth holds ids the model cannot predict: {ids}. Those pixels are not in the "
                       "metrics, and the run fails; map them with --label-map FILE, or pass "
                       "--ignore-unknown-ids.**\n")
    return out


HEADLINE = {"segmentation": ("mIoU", "aAcc", "mAcc"), "depth": ("abs_rel", "rmse", "delta1", "silog"),
            "matting": MATTING_KEYS}


def comparison_table(reports: Sequence[dict[str, Any]]) -> str:
    """Headline metrics side by side, one column per backend (e.g. torch vs triton), one row per
    model and metric; with exactly two backends a last column gives their difference."""
    backends = list(dict.fromkeys(r["backend"] for r in reports))
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for r in reports:
        by_model.setdefault(r["model"], {})[r["backend"]] = r
    header = ["model", "task", "metric", *backends] + (["diff"] if len(backends) == 2 else [])
    rows = []
    for model, runs in by_model.items():
        task = next(iter(runs.values()))["task"]
        counts = [f"{runs[b]['num_evaluated']}/{runs[b]['num_images']}" if b in runs else "-" for b in backends]
        for key in HEADLINE[task]:
            values = [runs[b]["metrics"].get(key) if b in runs else None for b in backends]
            row = [model, task, key, *(metric_cell(task, key, v) if b in runs else "-" for b, v in zip(backends, values))]
            if len(backends) == 2:
                a, b = values
                cell = metric_cell(task, key, b - a) if a is not None and b is not None else "n/a"
                row.append(cell[1:] if cell.startswith("-") and not cell.strip("-0.") else cell)  # no "-0.00"
            rows.append(row)
        rows.append([model, task, "images evaluated", *counts] + ([""] if len(backends) == 2 else []))
    return table(header, rows)


# ---- pictures --------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    return plt


def most_confused_classes(cm: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k classes with the most confused pixels (off-diagonal, as gt or as prediction),
    in class order; classes with no pixels at all come last."""
    cm = np.asarray(cm, np.int64)
    off = cm - np.diag(np.diag(cm))
    mass = off.sum(axis=0) + off.sum(axis=1)
    seen = cm.sum(axis=0) + cm.sum(axis=1)
    order = np.lexsort((np.arange(len(cm)), -seen, -mass))  # most confused, then most frequent
    return np.sort(order[:k])


def top_confusions(cm: np.ndarray, k: int = 10) -> list[tuple[int, int, int, float]]:
    """The k largest off-diagonal cells: (gt class, predicted class, pixels, fraction of the gt class)."""
    cm = np.asarray(cm, np.int64)
    off = cm - np.diag(np.diag(cm))
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    rows = cm.sum(axis=1)
    out = []
    for idx in flat:
        g, p = divmod(int(idx), cm.shape[1])
        if off[g, p] > 0:
            out.append((g, p, int(off[g, p]), float(off[g, p] / rows[g])))
    return out


def plot_confusion(report: dict[str, Any], path: Path) -> list[str]:
    """Draw the row-normalised confusion matrix; returns the class names it shows."""
    plt = _pyplot()
    cm = np.asarray(report["confusion_matrix"], np.float64)
    names = [r["class"] for r in report["per_class"]]
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = cm / cm.sum(axis=1, keepdims=True)  # row-normalised: each gt class sums to 1
    total = len(names)
    if total > TOP_K_CLASSES:  # 150 classes are unreadable: show the most confused ones
        keep = most_confused_classes(cm, TOP_K_CLASSES)
        cm, rows, names = cm[np.ix_(keep, keep)], rows[np.ix_(keep, keep)], [names[i] for i in keep]
    n = len(names)
    side = min(max(4.0, 0.45 * n + 2), 30.0)
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(np.nan_to_num(rows), cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    subset = f", the {n} most confused of {total} classes" if n < total else ""
    ax.set_title(f"{report['model']} ({report['backend']}): confusion, row-normalised{subset}")
    if n <= 40:
        ax.set_xticks(range(n), names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if rows[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return names


def plot_per_class(report: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    names = [r["class"] for r in report["per_class"]]
    ious = [r["IoU"] for r in report["per_class"]]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.28 * len(names) + 1)))
    y = np.arange(len(names))
    ax.barh(y, [100 * v if v is not None else 0 for v in ious], color="tab:blue")
    for i, v in enumerate(ious):
        ax.text(100 * v + 1 if v is not None else 1, i, pct(v), va="center", fontsize=7)
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel("IoU (%)")
    miou = report["metrics"].get("mIoU")
    ax.set_title(f"{report['model']} ({report['backend']}): per-class IoU, mIoU {pct(miou)}%")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _load_samples(folder: Path) -> list[dict[str, np.ndarray]]:
    samples = []
    for p in sorted(folder.glob("*.npz")):
        if p.name.startswith("."):
            continue
        try:
            with np.load(p, allow_pickle=False) as z:
                samples.append({k: z[k] for k in z.files})
        except Exception as exc:  # a torn file from a killed run: skip the picture, keep the report
            log.warning("skipping unreadable sample picture %s: %s", p, exc)
    return samples


def wrong_pixels(image: np.ndarray, target: np.ndarray, pred: np.ndarray, num_classes: int,
                 ignore_index: int) -> np.ndarray:
    """RGB: the image in grey, wrong pixels red, pixels the metrics ignore dark blue."""
    grey = image.mean(axis=2, keepdims=True) if image.ndim == 3 else image[..., None]
    out = np.repeat(0.35 * grey + 90, 3, axis=2)
    ignored = (target == ignore_index) | (target < 0) | (target >= num_classes)
    out[ignored] = (20, 30, 90)
    out[~ignored & (pred != target)] = (230, 30, 30)
    return out.astype(np.uint8)


def legend_classes(samples: list[dict[str, np.ndarray]], num_classes: int) -> list[int]:
    """The classes the sample pictures show (in gt or prediction), most pixels first."""
    counts = np.zeros(num_classes, np.int64)
    for smp in samples:
        for key in ("target", "pred"):
            v = smp[key].astype(np.int64).ravel()
            counts += np.bincount(v[(v >= 0) & (v < num_classes)], minlength=num_classes)
    return [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]


def _legend(fig, samples: list[dict[str, np.ndarray]], names: Sequence[str], palette: np.ndarray) -> None:
    """Colour patches for the classes the pictures show, at most MAX_LEGEND, plus the wrong/ignored key."""
    from matplotlib.patches import Patch

    shown = legend_classes(samples, len(names))
    handles = [Patch(color=palette[i] / 255.0 if i < len(palette) else (0, 0, 0), label=names[i])
               for i in shown[:MAX_LEGEND]]
    handles += [Patch(color=(230 / 255, 30 / 255, 30 / 255), label="wrong"),
                Patch(color=(20 / 255, 30 / 255, 90 / 255), label="ignored")]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=7, frameon=False,
               title=f"classes shown ({len(shown) - MAX_LEGEND} more not listed)" if len(shown) > MAX_LEGEND else None)


def plot_samples(report: dict[str, Any], samples: list[dict[str, np.ndarray]], path: Path) -> None:
    plt = _pyplot()
    task = report["task"]
    cols = {"segmentation": ("image", "ground truth", "prediction", "wrong pixels"),
            "depth": ("image", "ground truth (m)", "prediction (m)", "abs rel error"),
            "matting": ("image", "ground-truth alpha", "predicted alpha", "|error|")}[task]
    alignment = (report.get("metric_settings") or {}).get("alignment", "none")
    if task == "depth" and alignment != "none":  # relative depth or disparity, shown as the metrics scored it
        cols = (*cols[:2], f"prediction (m, {alignment.replace('_', '+')} aligned)", cols[3])
    fig, axes = plt.subplots(len(samples), len(cols), figsize=(3 * len(cols), 2.4 * len(samples)), squeeze=False)
    palette = np.asarray(report.get("palette") or [[0, 0, 0]], np.uint8)
    for row, smp in zip(axes, samples):
        image, target, pred = smp["image"], smp["target"], smp["pred"]
        row[0].imshow(image)
        row[0].set_ylabel(str(smp["id"]), fontsize=7)
        if task == "segmentation":
            blend = lambda lab: (0.5 * image + 0.5 * colorize(lab, palette)).astype(np.uint8)  # noqa: E731
            row[1].imshow(blend(target))
            row[2].imshow(blend(pred))
            settings = report.get("metric_settings") or {}
            row[3].imshow(wrong_pixels(image, target, pred, len(report["per_class"]),
                                       int(settings.get("ignore_index", 255))))
        elif task == "depth":
            valid = target > 0
            vmax = float(np.percentile(target[valid], 99)) if valid.any() else 1.0
            row[1].imshow(np.where(valid, target, np.nan), cmap="magma_r", vmin=0, vmax=vmax)
            row[2].imshow(pred, cmap="magma_r", vmin=0, vmax=vmax)
            with np.errstate(divide="ignore", invalid="ignore"):
                err = np.where(valid, np.abs(pred - target) / target, np.nan)
            im = row[3].imshow(err, cmap="inferno", vmin=0, vmax=0.5)
            fig.colorbar(im, ax=row[3], fraction=0.046)
        else:
            row[1].imshow(target, cmap="gray", vmin=0, vmax=1)
            row[2].imshow(pred, cmap="gray", vmin=0, vmax=1)
            im = row[3].imshow(np.abs(pred - target), cmap="inferno", vmin=0, vmax=1)
            fig.colorbar(im, ax=row[3], fraction=0.046)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], cols):
        ax.set_title(title, fontsize=9)
    if task == "segmentation":
        _legend(fig, samples, [r["class"] for r in report["per_class"]], palette)
        legend_rows = -(-min(MAX_LEGEND + 2, len(report["per_class"]) + 2) // 6)
        fig.tight_layout(rect=(0, min(0.4, 0.35 * legend_rows / fig.get_figheight()), 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_pictures(report: dict[str, Any], out: Path) -> list[str]:
    written: list[str] = []
    if not report["num_evaluated"]:  # empty heatmaps and bars would only look like results
        return written
    if report["task"] == "segmentation" and report.get("per_class"):
        plot_confusion(report, out / "confusion_matrix.png")
        plot_per_class(report, out / "per_class_iou.png")
        written += [str(out / "confusion_matrix.png"), str(out / "per_class_iou.png")]
    samples = _load_samples(out / "samples")
    if samples:
        name = "sample_overlays.png" if report["task"] == "segmentation" else "error_maps.png"
        plot_samples(report, samples, out / name)
        written.append(str(out / name))
    return written


def write_report(report: dict[str, Any], out_dir: str, pictures: bool = True) -> list[str]:
    """Write report.json, report.md and the pictures into out_dir; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = write_pictures(report, out) if pictures else []
    (out / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(render_markdown(report, written))
    return [str(out / "report.json"), str(out / "report.md"), *written]


def read_report(path: str) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist; pass report directories written by `python -m evaluation eval`")
    return json.loads(p.read_text())
