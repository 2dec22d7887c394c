"""The served-model contract: the one definition shared by export (writer), serving and clients.

A pixelport model directory is a standard Triton model (`config.pbtxt`, `<version>/model.onnx`,
`labels.txt`). Everything a client needs to prepare inputs and read outputs travels inside the
config as `parameters`, so clients learn it from `get_model_config` and never hard-code it.
Facts (names, layout, parameter keys, versions) need only the standard library; Triton's protobuf
schema (which pulls in gRPC) is imported only when a config is built or parsed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

if TYPE_CHECKING:  # the protobuf schema imports grpc; only config building/parsing needs it
    from tritonclient.grpc import model_config_pb2 as mc

TASKS = ("segmentation", "depth", "matting")
INPUT_NAME = "image"
# Segmentation output kinds (what --output chooses) and the tensors each one exposes.
SEG_OUTPUTS = {
    "labels": ("labels",),
    "labels+confidence": ("labels", "confidence"),
    "logits": ("logits",),
}
# Every task's output kinds and their tensors; the first kind is the task's default.
TASK_OUTPUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "segmentation": SEG_OUTPUTS,
    "depth": {"depth": ("depth",)},
    "matting": {"alpha": ("alpha",)},
}
DEFAULT_OUTPUT_KIND = {task: next(iter(kinds)) for task, kinds in TASK_OUTPUTS.items()}
# Served input dtypes and the layout each implies: uint8 images travel NHWC RGB and are
# normalised in the graph; float32 tensors are already normalised NCHW.
INPUT_LAYOUTS = {"uint8": "NHWC", "float32": "NCHW"}
# What a depth output means: metres (after depth_scale), depth up to scale, or relative inverse
# depth (disparity, as MiDaS, DPT and Depth Anything output).
DEPTH_KINDS = ("metric", "relative", "disparity")
ALPHA_RANGES = ("0-1", "0-255")
IGNORE_INDEX = 255
# fullmatch, never match: `$` would let a trailing newline through.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
CONFIG_FILE = "config.pbtxt"
LABELS_FILE = "labels.txt"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
PARAM_PREFIX = "pixelport."
DEFAULT_MAX_SIDE = 2048  # stride-mode models without an explicit --max-size
DEFAULT_MAX_QUEUE_SIZE = 64  # requests a model's dynamic batcher holds before rejecting (retriable)
EXTRA_PREFIX = PARAM_PREFIX + "extra."


def parse_hw(text: str, what: str = "size") -> tuple[int, int]:
    """`HxW` (or a single `N` for NxN) as positive ints; ValueError naming `what` otherwise."""
    parts = text.strip().lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
        if len(parts) > 2 or h <= 0 or w <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"{what} must look like HxW with positive integers (e.g. 512x1024), got {text!r}") from None
    return h, w



def _pb() -> Any:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def is_valid_name(name: str) -> bool:
    """A model name that is safe as a directory and a URL path segment."""
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


def list_versions(model_dir: "str | Path", filename: Optional[str] = None) -> dict[int, Path]:
    """{version: directory} of a Triton model directory, oldest first.

    A version directory is named by decimal digits, as Triton reads it (`01` is version 1, and so
    would collide with `1`: the canonical spelling wins). With `filename`, only versions holding it."""
    root = Path(model_dir)
    found: dict[int, Path] = {}
    if not root.is_dir():
        return found
    for entry in root.iterdir():
        if not (entry.is_dir() and entry.name.isascii() and entry.name.isdigit()):
            continue
        if filename is not None and not (entry / filename).is_file():
            continue
        version = int(entry.name)
        if version not in found or entry.name == str(version):
            found[version] = entry
    return dict(sorted(found.items()))


def latest_version(model_dir: "str | Path", filename: Optional[str] = None) -> Optional[tuple[int, Path]]:
    """(version, directory) of the newest version, or None."""
    versions = list_versions(model_dir, filename)
    return next(reversed(versions.items())) if versions else None


class ContractError(ValueError):
    """A model config that does not carry a valid pixelport contract."""


@dataclass(frozen=True)
class Resize:
    """How clients must prepare an image: letterbox to a fixed HxW, or pad to a stride multiple."""

    mode: str = "letterbox"  # "letterbox" | "stride"
    height: int = 0  # letterbox target (mode == "letterbox")
    width: int = 0
    stride: int = 32  # pad multiple (mode == "stride"); also the model's output stride

    def __post_init__(self) -> None:
        if self.mode not in ("letterbox", "stride"):
            raise ContractError(f"resize mode must be 'letterbox' or 'stride', got {self.mode!r}")
        if self.mode == "letterbox" and (self.height <= 0 or self.width <= 0):
            raise ContractError(f"letterbox resize needs a positive HxW, got {self.height}x{self.width}")
        if self.stride <= 0:
            raise ContractError(f"stride must be positive, got {self.stride}")

    @classmethod
    def parse(cls, text: str) -> "Resize":
        """Parse the CLI form `letterbox:HxW` or `stride:N`."""
        kind, _, arg = text.partition(":")
        try:
            if kind == "letterbox":
                return cls("letterbox", *parse_hw(arg))
            if kind == "stride":
                return cls("stride", stride=int(arg))
        except ValueError:
            pass
        raise ContractError(f"--resize must look like 'letterbox:512x512' or 'stride:32', got {text!r}")

    def __str__(self) -> str:
        return f"letterbox:{self.height}x{self.width}" if self.mode == "letterbox" else f"stride:{self.stride}"


@dataclass(frozen=True)
class ModelContract:
    """Everything about a served model that the writer, the server and the clients agree on."""

    name: str
    task: str
    resize: Resize
    input_dtype: str = "uint8"  # "uint8" (NHWC RGB, normalised in-graph) | "float32" (NCHW, normalised)
    output_kind: str = "labels"  # segmentation: a SEG_OUTPUTS key; depth: "depth"; matting: "alpha"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # on [0,1] RGB, as torchvision
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    pad_value: int = 0  # image letterbox pad (uint8 RGB level)
    ignore_index: int = IGNORE_INDEX
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    depth_kind: str = "metric"  # a DEPTH_KINDS entry
    depth_scale: float = 1.0  # the depth output times this is metres
    alpha_range: str = "0-1"  # alpha output range: "0-1" (FP32) | "0-255" (UINT8)
    max_batch_size: int = 8
    dynamic_batching: bool = True
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    platform: str = "onnxruntime"  # "onnxruntime" | "tensorrt_plan"
    gpu_accelerator: bool = False  # add the ORT TensorRT execution accelerator
    static_shape: Optional[tuple[int, int]] = None  # (H, W) every request has (fixed config dims), else any
    precision: str = "fp32"  # "fp32" | "fp16" | "int8"; the I/O types stay as above either way
    intra_op_threads: int = 0  # embedded runner: onnxruntime intra-op threads (0 = let it pick)
    # Request bounds (safe by default): the largest image (H, W) one request may carry, checked by
    # the backend before any tensor is built and by clients before sending; None = the resize
    # policy's own size (letterbox HxW, or DEFAULT_MAX_SIDE squared in stride mode).
    max_size: Optional[tuple[int, int]] = None
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE  # requests waiting beyond this are rejected (UNAVAILABLE, retriable)
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_valid_name(self.name):
            raise ContractError(
                f"model name {self.name!r} is not safe: use letters, digits, '_', '-', '.' "
                "(no path separators, at most 128 characters)"
            )
        if self.task not in TASKS:
            raise ContractError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.input_dtype not in INPUT_LAYOUTS:
            raise ContractError(f"input dtype must be one of {tuple(INPUT_LAYOUTS)}, got {self.input_dtype!r}")
        expected = tuple(TASK_OUTPUTS[self.task])
        if self.output_kind not in expected:
            raise ContractError(f"{self.task} output must be one of {expected}, got {self.output_kind!r}")
        if self.task == "segmentation":
            if self.num_classes <= 0:
                raise ContractError("a segmentation model needs num_classes > 0")
            if self.class_names and len(self.class_names) != self.num_classes:
                raise ContractError(
                    f"{len(self.class_names)} class names for {self.num_classes} classes"
                )
        if self.max_batch_size < 0:
            raise ContractError("max_batch_size must be >= 0")
        if self.max_size is not None and (len(self.max_size) != 2 or min(self.max_size) <= 0):
            raise ContractError(f"max size must be a positive (H, W), got {self.max_size!r}")
        if self.max_queue_size < 0:
            raise ContractError("max_queue_size must be >= 0 (0 = unbounded)")
        if self.task == "depth" and self.depth_kind not in DEPTH_KINDS:
            raise ContractError(f"depth kind must be one of {DEPTH_KINDS}, got {self.depth_kind!r}")
        if self.task == "matting" and self.alpha_range not in ALPHA_RANGES:
            raise ContractError(f"alpha range must be one of {ALPHA_RANGES}, got {self.alpha_range!r}")

    # ---- tensors -------------------------------------------------------------------------
    @property
    def label_dtype(self) -> str:
        # uint8 holds class ids 0..254; 255 is the ignore index, so more classes need int32.
        return "uint8" if self.num_classes <= 255 else "int32"

    @property
    def input_layout(self) -> str:
        """"NHWC" (uint8 images) or "NCHW" (normalised float32)."""
        return INPUT_LAYOUTS[self.input_dtype]

    @property
    def hw_axes(self) -> tuple[int, int]:
        """The height and width axes of a batched input tensor."""
        return (1, 2) if self.input_layout == "NHWC" else (2, 3)

    def input_dims(self, height: int, width: int) -> list[int]:
        """One image's input dims (no batch) at HxW, in the served layout."""
        return [height, width, 3] if self.input_layout == "NHWC" else [3, height, width]

    def input_shape(self, batch: int, height: int, width: int) -> tuple[int, ...]:
        return (batch, *self.input_dims(height, width))

    def input_hw(self, shape: Sequence[int]) -> tuple[int, int]:
        """(H, W) of a batched input tensor's shape."""
        a, b = self.hw_axes
        return int(shape[a]), int(shape[b])

    @property
    def size_limit(self) -> tuple[int, int]:
        """The largest (H, W) one image in a request may have."""
        if self.max_size is not None:
            return self.max_size
        if self.static_shape is not None:
            return self.static_shape
        if self.resize.mode == "letterbox":
            return (self.resize.height, self.resize.width)
        return (DEFAULT_MAX_SIDE, DEFAULT_MAX_SIDE)

    @property
    def max_request_bytes(self) -> int:
        """The most input bytes one request may carry: a full batch at the size limit."""
        h, w = self.size_limit
        return max(1, self.max_batch_size) * h * w * 3 * (1 if self.input_dtype == "uint8" else 4)

    def check_size(self, height: int, width: int) -> None:
        """Raise ContractError when one image of HxW is over this model's limit, or is not its fixed size."""
        mh, mw = self.size_limit
        if height > mh or width > mw:
            raise ContractError(
                f"image {height}x{width} is over model {self.name!r}'s limit of {mh}x{mw} "
                f"(pixelport.max_size); shrink it first (the client's max_side does)"
            )
        if self.static_shape is not None and (height, width) != tuple(self.static_shape):
            raise ContractError(
                f"image {height}x{width} is not model {self.name!r}'s fixed input size "
                f"{self.static_shape[0]}x{self.static_shape[1]}; "
                f"letterbox it to that size first (the client does)"
            )

    @property
    def output_names(self) -> tuple[str, ...]:
        return TASK_OUTPUTS[self.task][self.output_kind]

    def input_spec(self) -> tuple[str, str, list[int]]:
        """(name, numpy dtype, dims without batch)."""
        h, w = self.static_shape or (-1, -1)
        return INPUT_NAME, self.input_dtype, self.input_dims(h, w)

    def output_specs(self) -> list[tuple[str, str, list[int]]]:
        """[(name, numpy dtype, dims without batch)] in graph order."""
        h, w = self.static_shape or (-1, -1)
        if self.task == "depth":
            return [("depth", "float32", [h, w])]
        if self.task == "matting":
            return [("alpha", "uint8" if self.alpha_range == "0-255" else "float32", [h, w])]
        specs = []
        for name in self.output_names:
            if name == "labels":
                specs.append((name, self.label_dtype, [h, w]))
            elif name == "confidence":
                specs.append((name, "float32", [h, w]))
            else:
                specs.append((name, "float32", [self.num_classes, h, w]))
        return specs

    # ---- parameters ------------------------------------------------------------------------
    def parameters(self) -> dict[str, str]:
        p = {
            "pixelport.task": self.task,
            "pixelport.input_dtype": self.input_dtype,
            "pixelport.input_layout": self.input_layout,
            "pixelport.color": "RGB",
            "pixelport.mean": json.dumps(list(self.mean)),
            "pixelport.std": json.dumps(list(self.std)),
            "pixelport.resize": str(self.resize),
            "pixelport.stride": str(self.resize.stride),
            "pixelport.pad_value": str(self.pad_value),
            "pixelport.ignore_index": str(self.ignore_index),
            "pixelport.output_kind": self.output_kind,
            "pixelport.precision": self.precision,
            "pixelport.max_batch_size": str(self.max_batch_size),
        }
        if self.task == "segmentation":
            p["pixelport.num_classes"] = str(self.num_classes)
            p["pixelport.class_names"] = json.dumps(list(self.class_names))
            p["pixelport.palette"] = json.dumps([list(c) for c in self.palette])
        if self.task == "depth":
            p["pixelport.depth_kind"] = self.depth_kind
            p["pixelport.depth_scale"] = repr(float(self.depth_scale))
        if self.task == "matting":
            p["pixelport.alpha_range"] = self.alpha_range
        p["pixelport.max_size"] = "{}x{}".format(*self.size_limit)
        p["pixelport.max_request_bytes"] = str(self.max_request_bytes)
        if self.intra_op_threads:
            p["pixelport.intra_op_threads"] = str(self.intra_op_threads)
        p.update({EXTRA_PREFIX + k: v for k, v in self.extra.items()})
        return p

    @classmethod
    def from_parameters(cls, name: str, params: dict[str, str], max_batch_size: int = 8) -> "ModelContract":
        def get(key: str, default: Optional[str] = None) -> str:
            value = params.get(PARAM_PREFIX + key, default)
            if value is None:
                raise ContractError(
                    f"model {name!r} has no 'pixelport.{key}' parameter: it was not published by "
                    "pixelport's exporter (re-export it with `python -m export`)"
                )
            return value

        try:
            resize = Resize.parse(get("resize"))
            if resize.mode == "letterbox":
                resize = Resize("letterbox", resize.height, resize.width, int(get("stride", "32")))
            task = get("task")
            return cls(
                name=name,
                task=task,
                resize=resize,
                input_dtype=get("input_dtype"),
                output_kind=get("output_kind"),
                mean=tuple(json.loads(get("mean"))),
                std=tuple(json.loads(get("std"))),
                pad_value=int(get("pad_value")),
                ignore_index=int(get("ignore_index", str(IGNORE_INDEX))),
                num_classes=int(get("num_classes", "0")),
                class_names=tuple(json.loads(get("class_names", "[]"))),
                palette=tuple(tuple(c) for c in json.loads(get("palette", "[]"))),
                depth_kind=get("depth_kind", "metric"),
                depth_scale=float(get("depth_scale", "1.0")),
                alpha_range=get("alpha_range", "0-1"),
                precision=get("precision", "fp32"),
                max_batch_size=max_batch_size,
                intra_op_threads=int(get("intra_op_threads", "0")),
                max_size=parse_hw(params[PARAM_PREFIX + "max_size"]) if PARAM_PREFIX + "max_size" in params else None,
                extra={k[len(EXTRA_PREFIX):]: v for k, v in params.items() if k.startswith(EXTRA_PREFIX)},
            )._without_default_max_size()
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            if isinstance(exc, ContractError):
                raise
            raise ContractError(f"model {name!r} carries a malformed pixelport parameter: {exc}") from exc

    # ---- Triton config -----------------------------------------------------------------------
    def to_model_config(self) -> "mc.ModelConfig":
        mc = _pb()
        cfg = mc.ModelConfig(name=self.name, max_batch_size=self.max_batch_size)
        if self.platform == "tensorrt_plan":
            cfg.platform = "tensorrt_plan"
            cfg.default_model_filename = PLAN_FILE
        else:
            cfg.backend = "onnxruntime"
            cfg.default_model_filename = ONNX_FILE
        in_name, in_dtype, in_dims = self.input_spec()
        cfg.input.add(name=in_name, data_type=triton_dtype(in_dtype), dims=in_dims)
        for out_name, out_dtype, out_dims in self.output_specs():
            cfg.output.add(name=out_name, data_type=triton_dtype(out_dtype), dims=out_dims)
        if self.dynamic_batching and self.max_batch_size > 1:
            # No added delay: requests that queue while the instance is busy are still batched,
            # and a lone request (concurrency 1) is not held back waiting for company.
            cfg.dynamic_batching.SetInParent()
            if self.max_queue_size:
                cfg.dynamic_batching.default_queue_policy.max_queue_size = self.max_queue_size
        group = cfg.instance_group.add(count=self.instance_count)
        group.kind = mc.ModelInstanceGroup.Kind.Value(self.instance_kind)
        if self.gpu_accelerator and self.platform == "onnxruntime":
            acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
            acc.parameters["precision_mode"] = "FP16" if self.precision == "fp16" else "FP32"
            acc.parameters["max_workspace_size_bytes"] = str(1 << 30)
        warm = cfg.model_warmup.add(name="opt_shape", batch_size=1)
        warm_dims = self.input_dims(*(self.static_shape or self.warmup_hw()))
        warm.inputs[in_name].data_type = triton_dtype(in_dtype)
        warm.inputs[in_name].dims.extend(warm_dims)
        warm.inputs[in_name].zero_data = True
        for key, value in self.parameters().items():
            cfg.parameters[key].string_value = value
        return cfg

    def warmup_hw(self) -> tuple[int, int]:
        if self.resize.mode == "letterbox":
            return (self.resize.height, self.resize.width)
        return (8 * self.resize.stride, 8 * self.resize.stride)

    def to_pbtxt(self) -> str:
        from google.protobuf import text_format

        return text_format.MessageToString(self.to_model_config())

    @classmethod
    def from_model_config(cls, config: Any) -> "ModelContract":
        """Read a contract from a ModelConfig message, a `get_model_config(as_json=True)` dict
        (with or without its `config` wrapper), or config.pbtxt text."""
        mc = _pb()
        msg = parse_model_config(config)
        params = {k: v.string_value for k, v in msg.parameters.items()}
        contract = cls.from_parameters(msg.name, params, msg.max_batch_size)
        in_names = [i.name for i in msg.input]
        if in_names != [INPUT_NAME]:
            raise ContractError(f"model {msg.name!r} has inputs {in_names}; pixelport expects [{INPUT_NAME!r}]")
        dims = list(msg.input[0].dims)
        hw = [dims[a - 1] for a in contract.hw_axes] if len(dims) == 3 else []
        group = msg.instance_group[0] if msg.instance_group else None
        accelerators = msg.optimization.execution_accelerators.gpu_execution_accelerator
        return replace(
            contract,
            dynamic_batching=msg.HasField("dynamic_batching"),
            # only a dynamic batcher has a queue policy; without one the field keeps its default
            max_queue_size=(msg.dynamic_batching.default_queue_policy.max_queue_size
                            if msg.HasField("dynamic_batching") else contract.max_queue_size),
            instance_count=group.count if group and group.count else 1,
            instance_kind=mc.ModelInstanceGroup.Kind.Name(group.kind) if group else "KIND_CPU",
            platform="tensorrt_plan" if msg.platform == "tensorrt_plan" else "onnxruntime",
            gpu_accelerator=len(accelerators) > 0,
            static_shape=tuple(hw) if len(hw) == 2 and min(hw) > 0 else None,
        )._without_default_max_size()

    def _without_default_max_size(self) -> "ModelContract":
        # The config always spells the limit out (the backend needs it); read back, a limit equal
        # to the resize policy's own is the default, so contracts round-trip exactly.
        if self.max_size is not None and self.max_size == replace(self, max_size=None).size_limit:
            return replace(self, max_size=None)
        return self

    def labels_txt(self) -> str:
        names = self.class_names or tuple(f"class_{i}" for i in range(self.num_classes))
        return "".join(f"{n}\n" for n in names)


# numpy dtype name <-> Triton config data type name, for the types pixelport serves.
TRITON_DTYPE_NAMES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "uint16": "TYPE_UINT16",
                      "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                      "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64"}
NUMPY_DTYPE_NAMES = {v: k for k, v in TRITON_DTYPE_NAMES.items()}


def triton_dtype(numpy_name: str) -> int:
    """The config enum value of a numpy dtype name."""
    return _pb().DataType.Value(TRITON_DTYPE_NAMES[numpy_name])


def numpy_dtype_name(triton_type: "int | str") -> Optional[str]:
    """The numpy dtype name of a config data type (enum value or `TYPE_*` name), or None."""
    name = triton_type if isinstance(triton_type, str) else _pb().DataType.Name(triton_type)
    return NUMPY_DTYPE_NAMES.get(name)


def parse_model_config(config: Any) -> "mc.ModelConfig":
    """A ModelConfig message from a message, a JSON-style dict, or pbtxt text."""
    from google.protobuf import json_format, text_format

    mc = _pb()
    if isinstance(config, mc.ModelConfig):
        return config
    if isinstance(config, str):
        msg = mc.ModelConfig()
        try:
            text_format.Parse(config, msg)
        except text_format.ParseError as exc:
            raise ContractError(f"config.pbtxt does not parse with Triton's schema: {exc}") from exc
        return msg
    if isinstance(config, dict):
        body = config.get("config", config)
        msg = mc.ModelConfig()
        json_format.ParseDict(body, msg, ignore_unknown_fields=True)
        return msg
    if hasattr(config, "config") and isinstance(config.config, mc.ModelConfig):  # ModelConfigResponse
        return config.config
    raise ContractError(f"cannot read a model config from {type(config).__name__}")


def read_config_file(path: "str | Path") -> "mc.ModelConfig":
    """Parse a config.pbtxt file, or the config.pbtxt inside a model directory."""
    file = Path(path)
    if file.is_dir():
        file = file / CONFIG_FILE
    with open(file, encoding="utf-8") as fh:
        return parse_model_config(fh.read())


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """The Pascal VOC colour map, as every segmentation tool draws it."""
    out = []
    for i in range(num_classes):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return tuple(out)


def checked_palette(palette: Sequence[Sequence[int]], num_classes: int) -> tuple[tuple[int, int, int], ...]:
    pal = tuple(tuple(int(v) for v in c) for c in palette) if palette else default_palette(num_classes)
    if len(pal) < num_classes or any(len(c) != 3 for c in pal):
        raise ContractError(f"palette needs {num_classes} RGB triples, got {len(pal)}")
    return pal[:num_classes]
