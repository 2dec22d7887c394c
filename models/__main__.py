"""Command line for the models room: synthesize data, train, validate.

    python -m models synth --out work/data --n-train 600 --n-val 60 --size 128 --seed 0
    python -m models train --arch unet --task segmentation --data work/data --epochs 10 --out work/seg.pt
    python -m models validate --checkpoint work/seg.pt --data work/data
    python -m models list
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional, Sequence

from .registry import TASKS, list_models
from .train import TrainConfig

log = logging.getLogger("models")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the synthetic dataset")
    s.add_argument("--out", required=True, help="dataset directory")
    s.add_argument("--n-train", type=int, default=600, help="training images (default 600)")
    s.add_argument("--n-val", type=int, default=60, help="validation images (default 60)")
    s.add_argument("--size", type=int, default=128, help="train image side (val sizes vary 200-400)")
    s.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes a byte-identical tree")
    s.add_argument("--workers", type=int, default=0, help="render processes (0 = one per core, at most 4)")

    t = sub.add_parser("train", help="train a zoo model on the synthetic dataset")
    t.add_argument("--arch", default=TrainConfig.arch, choices=list_models(), help="zoo architecture (default %(default)s)")
    t.add_argument("--task", default=TrainConfig.task, choices=TASKS, help="what the model predicts (default %(default)s)")
    t.add_argument("--data", required=True, help="dataset directory (python -m models synth)")
    t.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="epochs in all, resumed ones included (default %(default)s)")
    t.add_argument("--out", required=True, help="checkpoint path, rewritten after every epoch")
    t.add_argument("--resume", help="continue from this checkpoint (written by an earlier run)")
    t.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, help="images per step (default %(default)s)")
    t.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate after warm-up (default %(default)s)")
    t.add_argument("--size", type=int, default=TrainConfig.size, help="training crop side; validation letterboxes to it")
    t.add_argument("--seed", type=int, default=TrainConfig.seed, help="seed of init, data order and augmentation (default %(default)s)")
    t.add_argument("--width", type=int, default=TrainConfig.width, help="base channel width of the zoo model")
    t.add_argument("--scale", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="random zoom range (default per task: 0.75 1.5; depth 0.9 1.2)")
    t.add_argument("--threads", type=int, default=0, help="torch threads (0 = half the cores, at most 8)")
    t.add_argument("--stop-after", type=int, default=0, help="stop after this epoch, as if interrupted")
    t.add_argument("--no-progress", action="store_true", help="no per-epoch progress line")

    v = sub.add_parser("validate", help="print a checkpoint's validation metric as JSON")
    v.add_argument("--checkpoint", required=True, help="checkpoint written by `python -m models train`")
    v.add_argument("--data", required=True, help="dataset directory (python -m models synth)")
    v.add_argument("--split", default="val", choices=("train", "val"), help="which split to score (default val)")

    sub.add_parser("list", help="list the zoo architectures")
    return p


def _run(args: argparse.Namespace) -> dict:
    if args.command == "synth":
        from .synth import synthesize

        root = synthesize(args.out, args.n_train, args.n_val, args.size, args.seed, workers=args.workers)
        return {"dataset": str(root), "n_train": args.n_train, "n_val": args.n_val}
    if args.command == "train":
        from .train import train

        cfg = TrainConfig(arch=args.arch, task=args.task, data=args.data, epochs=args.epochs, out=args.out,
                          resume=args.resume, batch_size=args.batch_size, lr=args.lr, size=args.size,
                          seed=args.seed, width=args.width, scale=tuple(args.scale) if args.scale else None,
                          threads=args.threads, stop_after=args.stop_after, progress=not args.no_progress)
        return {"checkpoint": args.out, **train(cfg)}
    if args.command == "validate":
        from .evaluate import validate_checkpoint

        return validate_checkpoint(args.checkpoint, args.data, split=args.split)
    return {"models": list_models(), "tasks": list(TASKS)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        result = _run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # CheckpointError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last finished epoch's checkpoint can be resumed with --resume", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
