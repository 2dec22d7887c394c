"""The served-model contract: the one definition shared by export (writer), serving and clients.

A pixelport model directory is a standard Triton model (`config.pbtxt`, `<version>/model.onnx`,
`labels.txt`). Everything a client needs to prepare inputs and read outputs travels inside the
config as `parameters`, so clients learn it from `get_model_config` and never hard-code it.
Only numpy and tritonclient's protobufs are needed here: production apps import this module.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

TASKS = ("segmentation", "depth", "matting")
INPUT_NAME = "image"
# Segmentation output kinds (what --output chooses) and the tensors each one exposes.
SEG_OUTPUTS = {
    "labels": ("labels",),
    "labels+confidence": ("labels", "confidence"),
    "logits": ("logits",),
}
IGNORE_INDEX = 255
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
CONFIG_FILE = "config.pbtxt"
LABELS_FILE = "labels.txt"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"


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
                h, w = (int(v) for v in arg.lower().split("x"))
                return cls("letterbox", h, w)
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
    depth_kind: str = "metric"  # "metric" | "relative"
    depth_scale: float = 1.0  # the depth output times this is metres
    alpha_range: str = "0-1"  # alpha output range: "0-1" (FP32) | "0-255" (UINT8)
    max_batch_size: int = 8
    dynamic_batching: bool = True
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    platform: str = "onnxruntime"  # "onnxruntime" | "tensorrt_plan"
    gpu_accelerator: bool = False  # add the ORT TensorRT execution accelerator
    static_shape: Optional[tuple[int, int]] = None  # (H, W) of a fixed-shape graph, else dynamic
    precision: str = "fp32"  # "fp32" | "fp16" | "int8"; the I/O types stay as above either way
    intra_op_threads: int = 0  # embedded runner: onnxruntime intra-op threads (0 = let it pick)
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ContractError(
                f"model name {self.name!r} is not safe: use letters, digits, '_', '-', '.' "
                "(no path separators, at most 128 characters)"
            )
        if self.task not in TASKS:
            raise ContractError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.input_dtype not in ("uint8", "float32"):
            raise ContractError(f"input dtype must be uint8 or float32, got {self.input_dtype!r}")
        expected = {"segmentation": tuple(SEG_OUTPUTS), "depth": ("depth",), "matting": ("alpha",)}[self.task]
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

    # ---- tensors -------------------------------------------------------------------------
    @property
    def label_dtype(self) -> str:
        # uint8 holds class ids 0..254; 255 is the ignore index, so more classes need int32.
        return "uint8" if self.num_classes <= 255 else "int32"

    def input_spec(self) -> tuple[str, str, list[int]]:
        """(name, numpy dtype, dims without batch)."""
        h, w = self.static_shape or (-1, -1)
        if self.input_dtype == "uint8":
            return INPUT_NAME, "uint8", [h, w, 3]
        return INPUT_NAME, "float32", [3, h, w]

    def output_specs(self) -> list[tuple[str, str, list[int]]]:
        """[(name, numpy dtype, dims without batch)] in graph order."""
        h, w = self.static_shape or (-1, -1)
        if self.task == "depth":
            return [("depth", "float32", [h, w])]
        if self.task == "matting":
            return [("alpha", "uint8" if self.alpha_range == "0-255" else "float32", [h, w])]
        specs = []
        for name in SEG_OUTPUTS[self.output_kind]:
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
            "pixelport.input_layout": "NHWC" if self.input_dtype == "uint8" else "NCHW",
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
        if self.intra_op_threads:
            p["pixelport.intra_op_threads"] = str(self.intra_op_threads)
        p.update({f"pixelport.extra.{k}": v for k, v in self.extra.items()})
        return p

    @classmethod
    def from_parameters(cls, name: str, params: dict[str, str], max_batch_size: int = 8) -> "ModelContract":
        def get(key: str, default: Optional[str] = None) -> str:
            value = params.get(f"pixelport.{key}", default)
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
                extra={k[len("pixelport.extra."):]: v for k, v in params.items() if k.startswith("pixelport.extra.")},
            )
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            if isinstance(exc, ContractError):
                raise
            raise ContractError(f"model {name!r} carries a malformed pixelport parameter: {exc}") from exc

    # ---- Triton config -----------------------------------------------------------------------
    def to_model_config(self) -> mc.ModelConfig:
        cfg = mc.ModelConfig(name=self.name, max_batch_size=self.max_batch_size)
        if self.platform == "tensorrt_plan":
            cfg.platform = "tensorrt_plan"
            cfg.default_model_filename = PLAN_FILE
        else:
            cfg.backend = "onnxruntime"
            cfg.default_model_filename = ONNX_FILE
        in_name, in_dtype, in_dims = self.input_spec()
        cfg.input.add(name=in_name, data_type=_TRITON_DTYPE[in_dtype], dims=in_dims)
        for out_name, out_dtype, out_dims in self.output_specs():
            cfg.output.add(name=out_name, data_type=_TRITON_DTYPE[out_dtype], dims=out_dims)
        if self.dynamic_batching and self.max_batch_size > 1:
            # No added delay: requests that queue while the instance is busy are still batched,
            # and a lone request (concurrency 1) is not held back waiting for company.
            cfg.dynamic_batching.SetInParent()
        group = cfg.instance_group.add(count=self.instance_count)
        group.kind = mc.ModelInstanceGroup.Kind.Value(self.instance_kind)
        if self.gpu_accelerator and self.platform == "onnxruntime":
            acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
            acc.parameters["precision_mode"] = "FP16" if self.precision == "fp16" else "FP32"
            acc.parameters["max_workspace_size_bytes"] = str(1 << 30)
        warm = cfg.model_warmup.add(name="opt_shape", batch_size=1)
        shape = list(self.static_shape or self.warmup_hw())
        warm_dims = shape + [3] if self.input_dtype == "uint8" else [3] + shape
        warm.inputs[in_name].data_type = _TRITON_DTYPE[in_dtype]
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
        return text_format.MessageToString(self.to_model_config())

    @classmethod
    def from_model_config(cls, config: Any) -> "ModelContract":
        """Read a contract from a ModelConfig message, a `get_model_config(as_json=True)` dict
        (with or without its `config` wrapper), or config.pbtxt text."""
        msg = parse_model_config(config)
        params = {k: v.string_value for k, v in msg.parameters.items()}
        contract = cls.from_parameters(msg.name, params, msg.max_batch_size)
        in_names = [i.name for i in msg.input]
        if in_names != [INPUT_NAME]:
            raise ContractError(f"model {msg.name!r} has inputs {in_names}; pixelport expects [{INPUT_NAME!r}]")
        dims = list(msg.input[0].dims)
        hw = dims[:2] if contract.input_dtype == "uint8" else dims[1:]
        group = msg.instance_group[0] if msg.instance_group else None
        accelerators = msg.optimization.execution_accelerators.gpu_execution_accelerator
        return replace(
            contract,
            dynamic_batching=msg.HasField("dynamic_batching"),
            instance_count=group.count if group and group.count else 1,
            instance_kind=mc.ModelInstanceGroup.Kind.Name(group.kind) if group else "KIND_CPU",
            platform="tensorrt_plan" if msg.platform == "tensorrt_plan" else "onnxruntime",
            gpu_accelerator=len(accelerators) > 0,
            static_shape=tuple(hw) if len(hw) == 2 and min(hw) > 0 else None,
        )

    def labels_txt(self) -> str:
        names = self.class_names or tuple(f"class_{i}" for i in range(self.num_classes))
        return "".join(f"{n}\n" for n in names)


_TRITON_DTYPE = {"uint8": mc.TYPE_UINT8, "int32": mc.TYPE_INT32, "float32": mc.TYPE_FP32, "float16": mc.TYPE_FP16}
NUMPY_DTYPE_OF_TRITON = {mc.TYPE_UINT8: "uint8", mc.TYPE_INT32: "int32", mc.TYPE_INT64: "int64",
                         mc.TYPE_FP32: "float32", mc.TYPE_FP16: "float16"}


def parse_model_config(config: Any) -> mc.ModelConfig:
    """A ModelConfig message from a message, a JSON-style dict, or pbtxt text."""
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


def read_config_file(path: str) -> mc.ModelConfig:
    with open(path, encoding="utf-8") as fh:
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
