"""Typed export settings (what the CLI flags become) and the result of a publish.

`ExportSettings` mirrors `python -m export` flag for flag; `Profile` is the shape range the graph
is built and checked for (TensorRT's min/opt/max); `PublishResult` is what `export_model` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from clients.contract import (DEFAULT_OUTPUT_KIND, DEPTH_KINDS, INPUT_LAYOUTS, SEG_OUTPUTS, TASKS, ContractError,
                              ModelContract, Resize, is_valid_name)

from .errors import ExportError

SOURCES = ("arch", "module", "torchscript", "exported")
# The contract's input dtype names; "float" is the CLI's older spelling of "float32", still accepted.
INPUT_ALIASES = {"float": "float32"}
INPUTS = (*INPUT_LAYOUTS, *INPUT_ALIASES)
HW = tuple[int, int]


@dataclass(frozen=True)
class ExportSettings:
    """One export: a model source, its metadata overrides, the served form and how to publish it.

    Metadata left as None comes from the checkpoint's `meta` (zoo checkpoints) or defaults."""

    name: str
    repository: str
    # -- the model source: exactly one of arch (+checkpoint), module (+optional checkpoint),
    #    torchscript, exported
    arch: Optional[str] = None
    checkpoint: Optional[str] = None
    module: Optional[str] = None  # "pkg.mod:factory" or "path/to/file.py:factory"
    torchscript: Optional[str] = None
    exported: Optional[str] = None  # a torch.export .pt2
    # -- metadata (None: from the checkpoint meta, else a default)
    task: Optional[str] = None
    num_classes: Optional[int] = None
    width: Optional[int] = None  # zoo width (default: meta, else read off the weights)
    mean: Optional[tuple[float, float, float]] = None
    std: Optional[tuple[float, float, float]] = None
    class_names: Optional[str] = None  # a file with one class name a line
    pad_value: Optional[int] = None
    depth_kind: Optional[str] = None  # a DEPTH_KINDS entry: "metric" | "relative" | "disparity"
    depth_scale: Optional[float] = None  # served depth x scale = metres (zoo: 1.0, it outputs metres)
    # -- the served form
    input: str = "uint8"  # the contract's input dtype: "uint8" (NHWC RGB) | "float32" (normalised NCHW)
    output: str = DEFAULT_OUTPUT_KIND["segmentation"]  # segmentation: "labels" | "labels+confidence" | "logits"
    resize: Optional[str] = None  # "letterbox:HxW" | "stride:N" (default: letterbox at meta input_size)
    static: bool = False  # fixed H/W graph (TensorRT); batch stays dynamic
    max_batch: int = 8
    opset: Optional[int] = None
    min_size: Optional[HW] = None  # profile minimum H, W (default 32x32)
    max_size: Optional[HW] = None  # profile maximum H, W (default: max(2 x opt, 384)); stride mode: the
    #                                  largest image one request may carry (the contract's max_size)
    # -- precision variants
    fp16: bool = False
    int8: bool = False
    calibration: Optional[str] = None  # images (or a dataset root) for int8 and the accuracy check
    samples: int = 8  # how many sample images the fp16/int8 accuracy check uses
    atol: Optional[float] = None  # parity tolerance overrides (default per precision)
    rtol: Optional[float] = None
    # -- publishing
    version: Optional[int] = None  # default: the next free version
    force: bool = False  # replace an existing --version
    gpu: bool = False  # KIND_GPU instances + ONNX Runtime's TensorRT accelerator in the config
    tensorrt: bool = False  # build a TensorRT plan (needs the tensorrt package)
    instances: Optional[int] = None  # Triton instances; default: instance_count()
    dynamic_batching: bool = True
    report: Optional[str] = None  # also write the parity report here (JSON), pass or fail
    allow_degenerate: bool = False  # publish even if the reference output is near-zero/near-constant

    def __post_init__(self) -> None:
        # settings carry the contract's dtype name; the CLI's "float" is an alias of "float32"
        object.__setattr__(self, "input", INPUT_ALIASES.get(self.input, self.input))

    def source(self) -> str:
        """Which model source these settings name; raises if not exactly one."""
        given = [s for s in SOURCES if getattr(self, s)]
        if len(given) != 1:
            raise ExportError(
                "give exactly one model source: --arch A --checkpoint CKPT, --module pkg.mod:factory, "
                f"--torchscript FILE or --exported FILE.pt2 (got {', '.join('--' + s for s in given) or 'none'})"
            )
        return given[0]

    def instance_count(self) -> int:
        """--instances, else one per GPU, else two on CPU. One CPU instance behind Triton 2.51's dynamic
        batcher stalls: a request that arrives while the instance is finishing its previous batch
        wakes no one, and waits the batcher's 500 ms idle sleep (about 1 request in 20 at
        concurrency 1). With two, the other instance takes it; each uses all the cores, as Triton's
        own onnxruntime backend does, so one request at a time still runs at full speed."""
        if self.instances is not None:
            return self.instances
        return 1 if (self.gpu or self.tensorrt) else 2

    def check(self) -> None:
        """Reject impossible combinations before any model is loaded."""
        if not is_valid_name(self.name or ""):
            raise ExportError(
                f"--name {self.name!r} is not a safe model name: use letters, digits, '_', '-', '.' "
                "(start with a letter or digit; no path separators; at most 128 characters)"
            )
        source = self.source()
        if source == "arch" and not self.checkpoint:
            raise ExportError("--arch needs --checkpoint CKPT (the trained weights)")
        if self.checkpoint and source not in ("arch", "module"):
            raise ExportError(f"--checkpoint goes with --arch or --module, not --{source}")
        if self.task is not None and self.task not in TASKS:
            raise ExportError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.input not in INPUTS:
            raise ExportError(f"--input must be one of {', '.join(INPUTS)}, got {self.input!r}")
        if self.output not in SEG_OUTPUTS:
            raise ExportError(f"--output must be one of {', '.join(SEG_OUTPUTS)}, got {self.output!r}")
        if self.depth_kind is not None and self.depth_kind not in DEPTH_KINDS:
            raise ExportError(f"--depth-kind must be one of {', '.join(DEPTH_KINDS)}, got {self.depth_kind!r}")
        if self.max_batch < 1:
            raise ExportError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.num_classes is not None and self.num_classes < 1:
            raise ExportError(f"--num-classes must be positive, got {self.num_classes}")
        if self.fp16 and self.int8:
            raise ExportError("choose one of --fp16 and --int8")
        if self.int8 and not self.calibration:
            raise ExportError("--int8 needs --calibration DIR (a folder of representative images)")
        if self.version is not None and self.version < 1:
            raise ExportError(f"--version must be a positive integer, got {self.version}")
        if self.samples < 1:
            raise ExportError(f"--samples must be at least 1, got {self.samples}")
        if self.instances is not None and self.instances < 1:
            raise ExportError(f"--instances must be at least 1, got {self.instances}")
        for flag, value in (("--mean", self.mean), ("--std", self.std)):
            if value is not None and len(value) != 3:
                raise ExportError(f"{flag} needs three numbers (R G B on [0, 1]), got {list(value)}")
        if self.std is not None and min(self.std) <= 0:
            raise ExportError(f"--std must be positive, got {list(self.std)}")
        if self.pad_value is not None and not 0 <= self.pad_value <= 255:
            raise ExportError(f"--pad-value is a uint8 level (0..255), got {self.pad_value}")
        resize = self.parsed_resize()
        if self.static and resize is not None and resize.mode != "letterbox":
            raise ExportError("--static needs a fixed size: use --resize letterbox:HxW")
        for flag, hw in (("--min-size", self.min_size), ("--max-size", self.max_size)):
            if hw is not None and (len(hw) != 2 or min(hw) < 1):
                raise ExportError(f"{flag} must be two positive sizes HxW, got {hw}")

    def parsed_resize(self) -> Optional[Resize]:
        if self.resize is None:
            return None
        try:
            return Resize.parse(self.resize)
        except ContractError as exc:
            raise ExportError(str(exc)) from exc

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "int8" if self.int8 else "fp32"


@dataclass(frozen=True)
class Profile:
    """The input shapes the graph is built for: TensorRT's min/opt/max, and the parity gate's range."""

    min_hw: HW
    opt_hw: HW  # the traced shape: the letterbox size, or a stride-mode default
    max_hw: HW
    max_batch: int
    static: bool = False

    @classmethod
    def for_contract(cls, contract: ModelContract, settings: ExportSettings) -> "Profile":
        opt = contract.warmup_hw()
        if settings.static:
            return cls.fixed(opt, settings.max_batch)
        lo = settings.min_size or (min(32, opt[0]), min(32, opt[1]))
        # 384 keeps the gate's 250x333 inside the range for small letterbox sizes.
        hi = settings.max_size or (max(2 * opt[0], 384), max(2 * opt[1], 384))
        if not (lo[0] <= opt[0] <= hi[0] and lo[1] <= opt[1] <= hi[1]):
            raise ExportError(f"the profile must satisfy min <= opt <= max; got min {lo}, opt {opt}, max {hi} "
                              "(check --min-size / --max-size against --resize)")
        return cls(tuple(lo), tuple(opt), tuple(hi), settings.max_batch)

    @classmethod
    def fixed(cls, hw: HW, max_batch: int) -> "Profile":
        """A fixed-H/W graph with a dynamic batch (--static, or letterbox mode's fallback)."""
        return cls(tuple(hw), tuple(hw), tuple(hw), max_batch, static=True)

    def contains(self, hw: HW) -> bool:
        return self.min_hw[0] <= hw[0] <= self.max_hw[0] and self.min_hw[1] <= hw[1] <= self.max_hw[1]


@dataclass
class PublishResult:
    """What `export_model` published, and the evidence that it matches PyTorch."""

    model_dir: Path
    version: int
    version_dir: Path
    contract: ModelContract
    parity: Any  # export.parity.ParityReport
    files: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step

    def summary(self) -> str:
        return (f"published {self.contract.name} version {self.version} at {self.version_dir} "
                f"({self.contract.precision}, {self.parity.summary()})")
