"""INT8 on this CPU: fp32 against int8 variants (QDQ vs QOperator, u8s8/s8s8/u8u8, reduce_range,
MinMax/Entropy/Percentile, automatic mixed precision), timed interleaved in one run, with accuracy
on the val split, and onnxruntime's per-op profile of fp32 and the fastest int8 that passes.

    python -m benchmarks.int8_study --checkpoint CKPT --data DATA --image-size 512x512 \\
        --out benchmarks/results/int8_seg_unet.json
    python -m benchmarks.int8_study --arch upernet --width 32 --data DATA --out benchmarks/results/int8_upernet.json

Without --checkpoint, a random-init zoo model stands in (agreement with fp32 is then the measure;
mIoU against ground truth means nothing). Benchmarks are not tests: nothing here asserts on timings.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import onnx

log = logging.getLogger("benchmarks.int8_study")

# name -> settings overrides; the baseline is QDQ u8s8 per-channel MinMax with full-range weights.
GRID: dict[str, dict] = {
    "qdq-u8s8": {},  # reduce_range chosen by the CPU (on without VNNI)
    "qdq-u8s8-fullrange": {"reduce_range": False},
    "qdq-u8s8-rr": {"reduce_range": True},
    "qoperator-u8s8": {"format": "qoperator"},
    "qdq-s8s8": {"types": "s8s8"},
    "qdq-u8u8": {"types": "u8u8"},
    "qdq-u8s8-pertensor": {"per_channel": False},
    "qdq-u8s8-entropy": {"calibration": "entropy"},
    "qdq-u8s8-percentile": {"calibration": "percentile"},
}


@dataclass
class StudySettings:
    out: str
    data: str
    checkpoint: Optional[str] = None
    model_dir: Optional[str] = None  # an already exported fp32 model (<repository>/<name>): no export
    arch: str = "unet"  # random-init zoo model when no checkpoint
    width: int = 32
    num_classes: int = 6
    image_size: tuple[int, int] = (512, 512)
    threads: int = 2
    rounds: int = 8
    iters: int = 3
    calibration_images: int = 8
    eval_images: int = 30
    variants: tuple[str, ...] = tuple(GRID)
    mixed: bool = True  # also run the automatic mixed-precision search
    profile_iters: int = 10
    conv_probe: bool = True  # also time one bare conv, fp32 vs int8, at three widths


def export_fp32(s: StudySettings, repository: Path) -> tuple[Path, object]:
    """The fp32 served model (uint8 in, labels out) through the real exporter and its gate."""
    from export import ExportSettings, export_model
    from models.checkpoint import read_checkpoint

    ckpt, arch = s.checkpoint, None
    extra = {}
    if ckpt:
        arch = read_checkpoint(ckpt)[1].get("arch")
    else:
        import torch

        from models import create_model

        arch = s.arch
        ckpt = str(repository.parent / f"{arch}_w{s.width}_random.pt")
        model = create_model(arch, task="segmentation", num_classes=s.num_classes, width=s.width)
        torch.save(model.state_dict(), ckpt)
        extra = {"task": "segmentation", "num_classes": s.num_classes, "width": s.width}
    h, w = s.image_size
    settings = ExportSettings(name="study", repository=str(repository), arch=arch, checkpoint=ckpt,
                              resize=f"letterbox:{h}x{w}", max_batch=2, version=1, force=True,
                              max_size=(h, w), calibration=s.data, **extra)
    result = export_model(settings)
    return result.version_dir / "model.onnx", result.contract


def existing_fp32(model_dir: str) -> tuple[Path, object]:
    """The newest version's model.onnx of an exported model, and its contract."""
    from clients.contract import ModelContract, list_versions

    root = Path(model_dir)
    contract = ModelContract.from_model_config((root / "config.pbtxt").read_text(encoding="utf-8"))
    return root / str(max(list_versions(root))) / "model.onnx", contract


def _dataset_samples(data: str, split: str, limit: int):
    from clients.datasets import open_dataset
    from clients.images import load_image
    from export.accuracy import Sample

    ds = open_dataset(data, split)
    out = []
    for s in ds.samples[:limit]:
        target = ds.read_target(s, "labels") if "labels" in ds.kinds else None
        out.append(Sample(s.id, load_image(s.image), target))
    return out


def build_variants(s: StudySettings, fp32: Path, contract, work: Path) -> dict[str, dict]:
    """Each grid variant quantized fully; then the mixed-precision search on the baseline format."""
    from export import quantize as q
    from export.accuracy import calibration_batches
    from export.parity import Tolerance

    batches = calibration_batches(_dataset_samples(s.data, "train", s.calibration_images), contract)
    prepared = work / "prepared.onnx"
    q.preprocess(fp32, prepared)
    built: dict[str, dict] = {}
    for name in s.variants:
        settings = replace(q.Int8Settings(), **GRID[name])
        path = work / f"{name}.onnx"
        t = time.perf_counter()
        try:
            q.quantize(prepared, path, batches, settings, cache=work / f"calib-{settings.calibration}.json")
        except Exception as exc:  # a variant onnxruntime cannot build is a finding
            log.warning("%s: %s", name, exc)
            built[name] = {"error": str(exc)}
            continue
        built[name] = {"path": path, "settings": asdict(settings), "label": settings.label,
                       "build_s": time.perf_counter() - t}
        log.info("built %s (%s) in %.1f s", name, settings.label, built[name]["build_s"])
    if s.mixed:
        gate_samples = _dataset_samples(s.data, "val", 8)
        settings = q.Int8Settings()
        judge = q.make_judge(fp32, contract, gate_samples, [s.image_size], Tolerance.for_precision("int8"),
                             settings.margin)
        # a tighter search too: the acceptance asks mIoU within 1 point, and >= 99% agreement is the aim
        for name, tol in (("qdq-u8s8-mixed", Tolerance.for_precision("int8")),
                          ("qdq-u8s8-mixed-tight", replace(Tolerance.for_precision("int8"),
                                                           min_agreement=0.99, max_metric_drop=0.005))):
            judge = q.make_judge(fp32, contract, gate_samples, [s.image_size], tol, 0.0)
            path = work / f"{name}.onnx"
            t = time.perf_counter()
            try:
                result = q.quantize_within_budget(fp32, path, batches, settings, judge, workdir=work)
                built[name] = {"path": path, "settings": asdict(settings), "label": settings.label + "-mixed",
                               "mixed": asdict(result), "build_s": time.perf_counter() - t}
            except Exception as exc:
                log.warning("%s: %s", name, exc)
                built[name] = {"error": str(exc)}
    return built


def accuracy_of(path: Path, fp32_run, fp32_preds, contract, samples) -> dict:
    from clients.metrics.tasks import make_metrics
    from clients.pipeline import postprocess, preprocess
    from export.accuracy import onnx_runner

    run = onnx_runner(path)
    m = make_metrics("segmentation", num_classes=contract.num_classes, ignore_index=contract.ignore_index)
    agree = total = 0
    for sample, ref in zip(samples, fp32_preds):
        batch, transforms = preprocess([sample.image], contract)
        pred = postprocess(run(batch), transforms, contract)[0].primary
        agree += int((pred == ref).sum())
        total += ref.size
        if sample.target is not None:
            m.update(pred, sample.target)
    out = m.compute()
    return {"miou": float(out["mIoU"]), "aacc": float(out["aAcc"]), "agreement_vs_fp32": agree / max(total, 1)}


def time_interleaved(s: StudySettings, paths: dict[str, Path], batch: np.ndarray) -> dict[str, list[float]]:
    """Round-robin over variants: each round runs every variant `iters` times (ms per call)."""
    from export.quantize import session

    sessions = {name: session(p, s.threads) for name, p in paths.items()}
    feeds = {"image": batch}
    for sess in sessions.values():  # warm-up: first-run allocations and kernel selection
        for _ in range(2):
            sess.run(None, feeds)
    times: dict[str, list[float]] = defaultdict(list)
    for r in range(s.rounds):
        order = list(sessions) if r % 2 == 0 else list(reversed(sessions))  # no variant always goes first
        for name in order:
            for _ in range(s.iters):
                t = time.perf_counter()
                sessions[name].run(None, feeds)
                times[name].append((time.perf_counter() - t) * 1e3)
    return times


def profile(path: Path, threads: int, batch: np.ndarray, iters: int, work: Path) -> dict:
    """onnxruntime's own per-node profile: time by op type, and which heavy ops run in fp32."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / f"prof-{path.stem}")
    opts.optimized_model_filepath = str(work / f"opt-{path.stem}.onnx")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(2 + iters):
        sess.run(None, {"image": batch})
    trace = json.loads(Path(sess.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    by_node: dict[str, list] = {}
    runs = [e for e in trace if e.get("name") == "model_run"][2:]
    run_start = min(e["ts"] for e in runs) if runs else 0
    for e in trace:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= run_start:
            op = e["args"].get("op_name", "?")
            by_op[op] += e["dur"] / 1e3 / iters
            node = by_node.setdefault(e["name"][: -len("_kernel_time")], [op, 0.0])
            node[1] += e["dur"] / 1e3 / iters
    total = sum(by_op.values())
    opt = onnx.load(str(work / f"opt-{path.stem}.onnx"))
    counts: dict[str, int] = defaultdict(int)
    for node in opt.graph.node:
        counts[node.op_type] += 1
    heavy_fp32 = [n.name for n in opt.graph.node if n.op_type in ("Conv", "FusedConv", "ConvTranspose")]
    return {"ms_per_run_by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
            "share_by_op": {k: v / total for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])} if total else {},
            "kernel_ms_per_run": total, "optimized_op_counts": dict(sorted(counts.items())),
            "top_nodes_ms": [{"node": n, "op": op, "ms": ms}
                             for n, (op, ms) in sorted(by_node.items(), key=lambda kv: -kv[1][1])[:15]],
            "fp32_conv_nodes": heavy_fp32}


def conv_probe(work: Path, threads: int, channels=(16, 64, 256), hw: int = 128, rounds: int = 5) -> list[dict]:
    """One 3x3 conv C->C at hw x hw, fp32 against QDQ u8s8 (per-channel, this CPU's reduce_range):
    what the int8 kernels give on their own, before any graph overhead (ms per call, interleaved)."""
    from onnx import TensorProto, helper, numpy_helper

    from export import quantize as q

    rng = np.random.default_rng(0)
    out = []
    for c in channels:
        w = numpy_helper.from_array((rng.standard_normal((c, c, 3, 3)) * 0.05).astype(np.float32), "w")
        graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")],
                                  "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])], [w])
        fp32, int8 = work / f"probe{c}.onnx", work / f"probe{c}-int8.onnx"
        onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
        x = np.abs(rng.standard_normal((1, c, hw, hw))).astype(np.float32)

        class Reader:  # the probe's input is "x", not the served "image"
            def __init__(self):
                self.items = iter([{"x": x}])

            def get_next(self):
                return next(self.items, None)

        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        reduce_range=q.Int8Settings().resolved_reduce_range())
        sessions = {"fp32": q.session(fp32, threads), "int8": q.session(int8, threads)}
        times: dict[str, list[float]] = defaultdict(list)
        for sess in sessions.values():
            sess.run(None, {"x": x})
        for _ in range(rounds):
            for name, sess in sessions.items():
                t = time.perf_counter()
                sess.run(None, {"x": x})
                times[name].append((time.perf_counter() - t) * 1e3)
        f, i = statistics.median(times["fp32"]), statistics.median(times["int8"])
        gmacs = c * c * 9 * hw * hw / 1e9
        out.append({"channels": c, "hw": hw, "fp32_ms": f, "int8_ms": i, "speedup": f / i,
                    "fp32_gmac_s": gmacs / (f / 1e3), "int8_gmac_s": gmacs / (i / 1e3)})
        log.info("conv probe %d->%d at %dx%d: fp32 %.1f ms, int8 %.1f ms (x%.2f)", c, c, hw, hw, f, i, f / i)
    return out


def study(s: StudySettings) -> dict:
    from clients.pipeline import postprocess, preprocess
    from export.accuracy import onnx_runner
    from export.quantize import cpu_has_vnni

    with tempfile.TemporaryDirectory(prefix="pixelport-int8-study-") as tmp:
        work = Path(tmp)
        (work / "repo").mkdir()
        fp32, contract = existing_fp32(s.model_dir) if s.model_dir else export_fp32(s, work / "repo")
        built = build_variants(s, fp32, contract, work)
        paths = {"fp32": fp32, **{k: v["path"] for k, v in built.items() if "path" in v}}

        samples = _dataset_samples(s.data, "val", s.eval_images)
        fp32_run = onnx_runner(fp32)
        fp32_preds = []
        for sample in samples:
            b, tr = preprocess([sample.image], contract)
            fp32_preds.append(postprocess(fp32_run(b), tr, contract)[0].primary)
        acc = {name: accuracy_of(p, fp32_run, fp32_preds, contract, samples) for name, p in paths.items()}

        batch = preprocess([samples[0].image], contract)[0]  # (1, H, W, 3) uint8, a real image
        times = time_interleaved(s, paths, batch)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows = []
        for name in paths:
            rows.append({"variant": name, "label": built.get(name, {}).get("label", "fp32"),
                         "p50_ms": med[name], "p90_ms": float(np.percentile(times[name], 90)),
                         "speedup_vs_fp32": med["fp32"] / med[name], **acc[name],
                         "miou_drop_points": 100 * (acc["fp32"]["miou"] - acc[name]["miou"]),
                         "fp32_layers": len(built.get(name, {}).get("mixed", {}).get("fp32_layers", []))})
        int8_rows = [r for r in rows if r["variant"] != "fp32" and r["miou_drop_points"] <= 1.0]
        fastest = max(int8_rows, key=lambda r: r["speedup_vs_fp32"])["variant"] if int8_rows else None
        profiles = {"fp32": profile(fp32, s.threads, batch, s.profile_iters, work)}
        if fastest:
            profiles[fastest] = profile(paths[fastest], s.threads, batch, s.profile_iters, work)
        probe = conv_probe(work, s.threads) if s.conv_probe else []
    return {
        "settings": {**asdict(s), "image_size": list(s.image_size)},
        "machine": {"cpu_vnni": cpu_has_vnni(), "cores_seen": _cores(), "python": platform.python_version(),
                    "onnxruntime": _ort_version(), "shared": "2 cores shared with other engineers' test runs: "
                    "compare ratios from this run only"},
        "model": {"source": s.checkpoint or s.model_dir or f"random-init {s.arch} width {s.width}",
                  "num_classes": contract.num_classes, "trained": bool(s.checkpoint)},
        "rows": rows,
        "fastest_within_1_point": fastest,
        "variants": {k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in built.items()},
        "profiles": profiles,
        "conv_probe": probe,
    }


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def table(result: dict) -> str:
    lines = [f"{'variant':<24} {'p50 ms':>8} {'x fp32':>7} {'mIoU':>7} {'drop pt':>8} {'agree':>8} {'fp32 L':>6}"]
    for r in result["rows"]:
        lines.append(f"{r['variant']:<24} {r['p50_ms']:8.1f} {r['speedup_vs_fp32']:7.2f} {100 * r['miou']:7.2f} "
                     f"{r['miou_drop_points']:8.2f} {100 * r['agreement_vs_fp32']:7.2f}% {r['fp32_layers']:6d}")
    for name, prof in result["profiles"].items():
        top = ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(prof["share_by_op"].items())[:6])
        lines.append(f"profile {name}: {prof['kernel_ms_per_run']:.1f} ms/run in kernels: {top}")
    for row in result.get("conv_probe", []):
        lines.append(f"conv probe {row['channels']}->{row['channels']} 3x3 at {row['hw']}x{row['hw']}: fp32 "
                     f"{row['fp32_ms']:.1f} ms, int8 {row['int8_ms']:.1f} ms (x{row['speedup']:.2f})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from clients.cli_args import hw_arg

    p = argparse.ArgumentParser(prog="python -m benchmarks.int8_study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="result JSON path (a .txt table is written beside it)")
    p.add_argument("--data", required=True, help="synthetic dataset root: train split calibrates, val split scores")
    p.add_argument("--checkpoint", help="trained zoo checkpoint (default: a random-init --arch/--width model)")
    p.add_argument("--model-dir", help="an exported fp32 model <repository>/<name> to study instead of exporting")
    p.add_argument("--arch", default="unet", help="zoo architecture for the random-init model (default unet)")
    p.add_argument("--width", type=int, default=32, help="zoo width for the random-init model (default 32)")
    p.add_argument("--image-size", type=hw_arg, default=(512, 512), help="letterbox HxW (default 512x512)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default 2)")
    p.add_argument("--rounds", type=int, default=8, help="interleaved timing rounds (default 8)")
    p.add_argument("--iters", type=int, default=3, help="timed calls per variant per round (default 3)")
    p.add_argument("--eval-images", type=int, default=30, help="val images scored (default 30)")
    p.add_argument("--calibration-images", type=int, default=8, help="train images calibrated on (default 8)")
    p.add_argument("--variants", default=",".join(GRID), help=f"comma list from {', '.join(GRID)}")
    p.add_argument("--no-mixed", action="store_true", help="skip the mixed-precision search")
    p.add_argument("--no-conv-probe", action="store_true", help="skip the bare-conv fp32/int8 probe")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("benchmarks", "export"):
        logging.getLogger(name).setLevel(logging.INFO)
    unknown = [v for v in args.variants.split(",") if v not in GRID]
    if unknown:
        print(f"error: unknown variant(s) {unknown}; choose from {', '.join(GRID)}", file=sys.stderr)
        return 2
    s = StudySettings(out=args.out, data=args.data, checkpoint=args.checkpoint, model_dir=args.model_dir,
                      arch=args.arch, width=args.width, image_size=tuple(args.image_size), threads=args.threads,
                      rounds=args.rounds, iters=args.iters,
                      eval_images=args.eval_images, calibration_images=args.calibration_images,
                      variants=tuple(args.variants.split(",")), mixed=not args.no_mixed,
                      conv_probe=not args.no_conv_probe)
    result = study(s)
    out = Path(s.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = table(result)
    out.with_suffix(".txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
