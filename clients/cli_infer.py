r"""Batch inference: every image in the inputs through a served model, results written to a folder.

    python -m clients infer --url 127.0.0.1:8001 --model seg_unet photos/ extra.jpg --out out/
    python -m clients infer --url HOST:PORT --model NAME INPUT... --out DIR \
        [--concurrency N] [--shm] [--overlay] [--recursive] [--max-side N]
    python -m clients infer --url grpcs://HOST:PORT --root-cert ca.pem --model NAME INPUT... --out DIR

Files are taken as given; folders contribute their images (with --recursive, sub-folders too,
mirrored under --out). Per image it writes what clients.outputs describes (files 0644). Progress
goes to stderr; at the end a summary and DIR/failed.json: every input that failed, with its reason,
also those that could not be read at all (symbolic-link loops, permission errors, folders that
cannot be listed) and images the image library warned about (e.g. decompression bombs).
If the server stops answering mid-run (no server within the retry budget), the run stops there:
the images not yet sent are listed as "not processed" rather than each waiting out the retries.
Exit status: 0 all written, 1 some failed (the good ones are still written), 2 nothing could
run (no inputs, server unreachable, model missing or not a pixelport model).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .aio import AsyncDenseClient
from .contract import ContractError
from .client import ClientStats, InferenceError, ServerUnavailableError
from .files import atomic_write_json
from .images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageError, load_image
from .outputs import write_prediction
from .progress import Progress

log = logging.getLogger(__name__)


@dataclass
class InferSettings:
    """What one `infer` run does; the CLI builds it from its flags."""

    urls: list[str]
    model: str
    inputs: list[Path]
    out: Path
    version: str = ""
    concurrency: int = 4
    use_shm: bool = False
    overlay: bool = False
    recursive: bool = False
    timeout_s: float = 60.0
    # 12 retries at 0.25 s doubling to 8 s: up to about a minute of waiting for a server that
    # restarts, before an image is reported failed.
    retries: int = 12
    backoff_s: float = 0.25
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: Optional[int] = None  # None: the model's size limit (stride-mode models)
    ssl: bool = False
    root_cert: Optional[str] = None
    client_cert: Optional[str] = None
    client_key: Optional[str] = None


@dataclass
class InferReport:
    written: dict[str, list[str]] = field(default_factory=dict)  # input -> files written
    failed: dict[str, str] = field(default_factory=dict)  # input -> reason
    seconds: float = 0.0
    stats: ClientStats = field(default_factory=ClientStats)  # the client's: requests, retries, failures

    @property
    def images_per_s(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else 0.0

    @property
    def retries(self) -> int:
        """Requests repeated after a retriable error (server down, restarting or overloaded)."""
        return self.stats.retries


def _unreadable(exc: OSError) -> str:
    return f"cannot read ({exc.strerror or exc})"


def _folder_images(folder: Path, recursive: bool, failed: dict[str, str]) -> list[Path]:
    """Image files in `folder` (sorted; sub-folders too with `recursive`, following links to
    folders but never round a loop). Entries that cannot be examined (a symbolic-link loop, a
    permission error, a folder that cannot be listed) go to `failed` with the reason."""
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()

    def walk(directory: Path) -> None:
        try:
            info = directory.stat()
            if (info.st_dev, info.st_ino) in visited:  # a link back to a folder already walked
                return
            visited.add((info.st_dev, info.st_ino))
            names = sorted(os.listdir(directory))
        except OSError as exc:
            failed[str(directory)] = f"cannot list folder ({exc.strerror or exc})"
            return
        for name in names:
            path = directory / name
            try:
                mode = path.stat().st_mode
            except FileNotFoundError:  # a dangling link: an image that is not there
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    failed[str(path)] = "broken symbolic link (its target does not exist)"
                continue
            except OSError as exc:  # e.g. ELOOP: a link that points round in a circle
                failed[str(path)] = _unreadable(exc)
                continue
            if stat.S_ISDIR(mode):
                if recursive:
                    walk(path)
            elif stat.S_ISREG(mode) and path.suffix.lower() in IMAGE_EXTENSIONS:
                found.append(path)

    walk(folder)
    return found


def plan_outputs(inputs: list[Path], out: Path, recursive: bool) -> tuple[list[tuple[Path, Path]], dict[str, str]]:
    """((input file, output stem) pairs, {input that cannot be read at all: reason}). Files keep
    their stem; images found in a folder keep their path relative to it. Clashing stems (a.jpg
    and a.png) get a _2, _3 ... suffix. A missing file stays a job (it fails as "file not found")."""
    pairs: list[tuple[Path, Path]] = []
    failed: dict[str, str] = {}
    for item in inputs:
        try:
            is_dir = stat.S_ISDIR(item.stat().st_mode)
        except FileNotFoundError:
            is_dir = False
        except OSError as exc:  # a symbolic-link loop given by name, a permission error
            failed[str(item)] = _unreadable(exc)
            continue
        if is_dir:
            pairs.extend((p, out / p.relative_to(item).with_suffix("")) for p in _folder_images(item, recursive, failed))
        else:
            pairs.append((item, out / item.stem))
    used: set[Path] = set()
    seen: set[str] = set()
    unique = []
    for path, stem in pairs:
        key = os.path.realpath(path)  # never raises, loops included
        if key in seen:  # named twice (a file and its folder): process it once
            continue
        seen.add(key)
        candidate, n = stem, 1
        while candidate in used:
            n += 1
            candidate = stem.with_name(f"{stem.name}_{n}")
        used.add(candidate)
        unique.append((path, candidate))
    return unique, failed


async def _infer_all(settings: InferSettings, jobs: list[tuple[Path, Path]], report: InferReport) -> None:
    client = AsyncDenseClient(settings.urls, settings.model, settings.version, concurrency=settings.concurrency,
                              timeout_s=settings.timeout_s, retries=settings.retries, backoff_s=settings.backoff_s,
                              use_shm=settings.use_shm, max_side=settings.max_side, ssl=settings.ssl,
                              root_cert=settings.root_cert, client_cert=settings.client_cert,
                              client_key=settings.client_key, stats=report.stats)
    progress = Progress(len(jobs), "infer")
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    gone: list[str] = []  # set once no server answered: every later image would wait as long

    async def worker() -> None:
        while not queue.empty() and not gone:
            path, stem = queue.get_nowait()
            try:
                image = await asyncio.to_thread(load_image, path, settings.max_pixels)
                pred = await client.predict(image, str(path))
                files = await asyncio.to_thread(write_prediction, pred, client.contract, stem, image, settings.overlay)
                report.written[str(path)] = [str(f) for f in files]
            except ServerUnavailableError as exc:
                report.failed[str(path)] = _reason(path, exc)
                gone.append(str(exc))
            except (ImageError, InferenceError, ValueError, OSError) as exc:
                report.failed[str(path)] = _reason(path, exc)
            except Exception as exc:  # the CLI edge: one image's surprise never stops the run
                log.exception("unexpected failure on %s", path)
                report.failed[str(path)] = f"{type(exc).__name__}: {_reason(path, exc)}"
            progress.update(str(path) in report.written)

    try:
        await client.connect()
        # Twice the request bound: while some workers decode or write, others keep requests in flight.
        await asyncio.gather(*(worker() for _ in range(2 * settings.concurrency)))
        while not queue.empty():  # the server went away mid-run: the rest is listed, not sent
            path, _ = queue.get_nowait()
            report.failed[str(path)] = f"not processed: the server stopped answering ({gone[0]})"
            progress.update(False)
    finally:
        progress.close()
        await client.close()


def _reason(path: Path, exc: BaseException) -> str:
    """The error without a leading copy of the file name (the report is keyed by it)."""
    text = str(exc)
    return text[len(f"{path}: "):] if text.startswith(f"{path}: ") else text


def run_infer(settings: InferSettings, report: Optional[InferReport] = None) -> InferReport:
    """Run the whole batch; raises (InferenceError, ValueError) only when nothing can run.

    Pass `report` to watch it fill while the run goes (written, failed, stats.retries)."""
    jobs, unreadable = plan_outputs(settings.inputs, settings.out, settings.recursive)
    report = report if report is not None else InferReport()
    report.failed.update(unreadable)
    if not jobs and not unreadable:
        raise ValueError(f"no images found in {[str(p) for p in settings.inputs]} "
                         f"(extensions {', '.join(IMAGE_EXTENSIONS)}; use --recursive for sub-folders)")
    settings.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if not jobs:  # only inputs that cannot be read: each is listed, nothing to send
        report.seconds = time.monotonic() - started
        _write_failed(settings.out, report)
        return report
    try:
        asyncio.run(_infer_all(settings, jobs, report))
    except (InferenceError, ValueError) as exc:  # ContractError is a ValueError
        # Nothing could be sent (no server, no such model, bad client settings): every input not
        # yet accounted for fails with that reason.
        for path, _ in jobs:
            if str(path) not in report.written:
                report.failed.setdefault(str(path), f"not processed: {exc}")
        raise
    finally:
        report.seconds = time.monotonic() - started
        _write_failed(settings.out, report)
    return report


def _write_failed(out: Path, report: InferReport) -> None:
    entries = [{"input": path, "error": reason} for path, reason in sorted(report.failed.items())]
    atomic_write_json(out / "failed.json", entries, indent=2)


def _summary(report: InferReport, out: Path) -> str:
    retried = f", {report.retries} retried requests" if report.retries else ""
    lines = [f"done {len(report.written)}, failed {len(report.failed)} in {report.seconds:.1f} s "
             f"({report.images_per_s:.2f} images/s{retried}); outputs in {out}"]
    lines += [f"  FAILED {path}: {reason}" for path, reason in sorted(report.failed.items())]
    if report.failed:
        lines.append(f"  (listed in {out / 'failed.json'})")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("infer", help="run a served model over images and write the results",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files and/or folders")
    p.add_argument("--url", action="append", required=True,
                   help="Triton gRPC HOST:PORT; repeat (or comma-separate) to round-robin over servers")
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--version", default="", help="model version (default: the server's choice)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--shm", action="store_true", help="pass tensors through system shared memory (local server)")
    p.add_argument("--overlay", action="store_true", help="segmentation: also write a colour overlay")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--retries", type=int, default=12, help="retries per request while a server is unavailable")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    p.add_argument("--max-side", type=int, default=None,
                   help="stride-mode models: shrink longer sides above this (default: the model's size limit; "
                        "a value above the limit makes larger images fail)")
    tls = p.add_argument_group("TLS", "gRPC over TLS (also implied by grpcs://HOST:PORT URLs)")
    tls.add_argument("--ssl", action="store_true", help="connect with TLS (the system's root certificates "
                     "unless --root-cert)")
    tls.add_argument("--root-cert", default=None, metavar="PEM", help="root certificate(s) to trust; implies --ssl")
    tls.add_argument("--client-cert", default=None, metavar="PEM", help="client certificate for mutual TLS "
                     "(with --client-key); implies --ssl")
    tls.add_argument("--client-key", default=None, metavar="PEM", help="the client certificate's private key")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        print("error: --concurrency must be >= 1", file=sys.stderr)
        return 2
    settings = InferSettings(urls=args.url, model=args.model, inputs=args.inputs, out=args.out,
                             version=args.version, concurrency=args.concurrency, use_shm=args.shm,
                             overlay=args.overlay, recursive=args.recursive, timeout_s=args.timeout,
                             retries=args.retries, max_pixels=args.max_pixels, max_side=args.max_side,
                             ssl=args.ssl, root_cert=args.root_cert, client_cert=args.client_cert,
                             client_key=args.client_key)
    try:
        report = run_infer(settings)
    except (InferenceError, ContractError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(_summary(report, settings.out))
    return 1 if report.failed else 0
