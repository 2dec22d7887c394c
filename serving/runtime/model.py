"""Generic Triton python-backend model that runs its version's `model.onnx` with onnxruntime.

`serving/runtime_repo.py` copies this file into every version of the embedded runtime repository.
It is self-contained: it imports only numpy, onnxruntime and Triton's `triton_python_backend_utils`.
"""

import ctypes
import json
import mmap
import os
import sys


def _use_serving_site_packages() -> None:
    # The python-backend stub ignores PYTHONPATH, so the launcher names the serving interpreter's
    # site-packages in PIXELPORT_SITE_PACKAGES; they go first so numpy 1.x and onnxruntime come
    # from there and never from the base interpreter (which may hold NumPy 2, see DESIGN.md).
    paths = [p for p in os.environ.get("PIXELPORT_SITE_PACKAGES", "").split(os.pathsep) if p]
    for path in reversed(paths):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


_use_serving_site_packages()

import numpy as np  # noqa: E402  (after the sys.path fix above, on purpose)

try:  # the stub provides this module; the unit tests import the pure helpers without it
    import triton_python_backend_utils as pb_utils  # noqa: E402
except ImportError:  # pragma: no cover - outside Triton
    pb_utils = None

# Copies of clients/contract.py and serving/runtime_repo.py facts (this file may import neither);
# tests/serving/test_serving_model_py.py pins each one to its source.
CONFIG_FILE = "config.pbtxt"
ONNX_FILE = "model.onnx"
THREADS_PARAM = "pixelport.intra_op_threads"
LAYOUT_PARAM = "pixelport.input_layout"  # "NHWC" | "NCHW": where one image's H and W are
MAX_SIZE_PARAM = "pixelport.max_size"  # "HxW": the largest image one request may carry
MAX_BYTES_PARAM = "pixelport.max_request_bytes"  # the most input bytes one request may carry
REQUESTED_KIND_PARAM = "pixelport.runtime.requested_kind"
ACCELERATOR_PARAM = "pixelport.runtime.accelerator"
ACCELERATOR_PRECISION_PARAM = "pixelport.runtime.accelerator_precision"
# Config data types -> numpy, for the types pixelport serves (see clients/contract.py).
NUMPY_DTYPES = {
    "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_INT8": np.int8, "TYPE_UINT16": np.uint16,
    "TYPE_INT16": np.int16, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
}
ORT_DTYPES = {
    "tensor(bool)": np.bool_, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
    "tensor(uint16)": np.uint16, "tensor(int16)": np.int16, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(float16)": np.float16, "tensor(float)": np.float32,
    "tensor(double)": np.float64,
}


class TensorSpec:
    """One config input/output: name, numpy dtype, dims without the batch dimension."""

    def __init__(self, entry: dict) -> None:
        self.name = entry["name"]
        self.type_name = entry.get("data_type", "TYPE_FP32")
        if self.type_name not in NUMPY_DTYPES:
            raise ValueError(f"tensor {self.name!r} has unsupported data type {self.type_name}")
        self.dtype = np.dtype(NUMPY_DTYPES[self.type_name])
        self.dims = [int(d) for d in entry.get("dims", [])]


def check_input(spec: TensorSpec, array: np.ndarray, batched: bool) -> None:
    """Raise ValueError with a fix-it message when one request's tensor does not fit the config."""
    if array.dtype != spec.dtype:
        raise ValueError(
            f"input {spec.name!r} must be {spec.type_name[5:]} ({spec.dtype.name}), got {array.dtype.name}"
        )
    want = (["batch"] if batched else []) + [str(d) for d in spec.dims]
    dims = array.shape[1:] if batched else array.shape
    if len(dims) != len(spec.dims) or any(d != s for d, s in zip(dims, spec.dims) if s >= 0):
        raise ValueError(f"input {spec.name!r} must have shape [{', '.join(want)}], got {list(array.shape)}")
    if 0 in array.shape:
        raise ValueError(f"input {spec.name!r} has an empty dimension {list(array.shape)}: send at least 1x1")


class Limits:
    """A model's request bounds, read from its parameters once; None means no bound."""

    def __init__(self, params: dict) -> None:
        layout = params.get(LAYOUT_PARAM, "NHWC")
        self.hw_axes = (0, 1) if layout == "NHWC" else (1, 2)  # in one image's dims (no batch)
        size, nbytes = params.get(MAX_SIZE_PARAM, ""), params.get(MAX_BYTES_PARAM, "")
        try:
            self.max_hw = tuple(int(v) for v in size.lower().split("x")) if size else None
            self.max_bytes = int(nbytes or 0) or None
            if self.max_hw is not None and (len(self.max_hw) != 2 or min(self.max_hw) <= 0):
                raise ValueError
        except ValueError:
            raise ValueError(
                f"malformed request bounds {MAX_SIZE_PARAM}={size!r} {MAX_BYTES_PARAM}={nbytes!r} "
                "(want HxW and a byte count); re-export the model"
            ) from None

    def check(self, spec: TensorSpec, shape: tuple, nbytes: int, batched: bool) -> None:
        """Raise ValueError naming the limit when one request's input is over it.

        Reads only the shape and byte count, never the data: a huge request is refused before any
        tensor is built from it, so it costs the backend no memory."""
        dims = shape[1:] if batched else shape
        if self.max_hw is not None and len(dims) == len(spec.dims) and len(dims) > max(self.hw_axes):
            h, w = (int(dims[a]) for a in self.hw_axes)
            if h > self.max_hw[0] or w > self.max_hw[1]:
                raise ValueError(
                    f"input {spec.name!r} image {h}x{w} is over the model's limit of "
                    f"{self.max_hw[0]}x{self.max_hw[1]} ({MAX_SIZE_PARAM}); resize it first (clients letterbox it)"
                )
        if self.max_bytes is not None and nbytes > self.max_bytes:
            raise ValueError(
                f"request carries {nbytes} input bytes, over the model's limit of {self.max_bytes} "
                f"({MAX_BYTES_PARAM}); send fewer or smaller images"
            )


MADV_REMOVE = 9  # linux/mman.h: free a shared mapping's pages (a hole punched in its tmpfs file)


def pool_view(tensor) -> "np.ndarray | None":
    """A request input where the python backend put it, in its shared-memory pool (`as_numpy()` is
    the stub's private copy); None where DLPack cannot give it (GPU memory, an older stub)."""
    try:
        return np.from_dlpack(tensor)
    except Exception:  # noqa: BLE001 - whatever the stub raises, there is simply nothing to release
        return None


def release_pages(array: "np.ndarray | None") -> bool:
    """Hand back the shared-memory pages under a refused input. The python backend copied it into
    its pool (which never shrinks) before the model could look at it: without this, one oversized
    request kept its size in every process that maps the pool. Only whole pages inside the array
    are released, and only a shared mapping has any to release (elsewhere madvise refuses, harmlessly).
    True when pages were released."""
    if array is None:
        return False
    start, end = array.ctypes.data, array.ctypes.data + array.nbytes
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    last = end // mmap.PAGESIZE * mmap.PAGESIZE
    if last <= first:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), MADV_REMOVE) == 0


def group_by_shape(shapes: list) -> list:
    """Indices of requests whose per-item shapes agree, so each group is one onnxruntime run."""
    groups: dict = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(index)
    return list(groups.values())


def split_rows(array: np.ndarray, counts: list) -> list:
    """Split a stacked batch back into per-request pieces of `counts` rows each."""
    bounds = np.cumsum([0] + list(counts))
    return [array[bounds[i]:bounds[i + 1]] for i in range(len(counts))]


def available_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)


def default_threads() -> int:
    """Every instance may use all the cores, as in Triton's onnxruntime backend: a lone request runs
    at full speed, and instances that run at once share the cores (without spinning, see below)."""
    return available_cores()


def session_options(ort, threads: int, instances: int):
    """One graph at a time per instance (Triton runs the instances in parallel). When the instances'
    threads outnumber the cores, they must not spin-wait between ops: a spinning idle pool steals
    the core another instance is computing on."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if threads * instances > available_cores():
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class TritonPythonModel:
    """Parse the config once, load the ONNX file once, then stack each dynamic batch into one run."""

    def initialize(self, args: dict) -> None:
        import onnxruntime as ort  # after the sys.path fix; imported here so unit tests need no ORT

        self.ort = ort
        config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.version = args["model_version"]
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.inputs = [TensorSpec(e) for e in config.get("input", [])]
        self.outputs = [TensorSpec(e) for e in config.get("output", [])]
        self.params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.limits = Limits(self.params)
        # INVALID_ARGUMENT for a bad request where this python backend can say so (its TritonError
        # takes a code since 23.xx); older ones answer INTERNAL with the same message.
        self.invalid_arg = getattr(getattr(pb_utils, "TritonError", None), "INVALID_ARG", None)
        instances = sum(int(g.get("count", 1) or 1) for g in config.get("instance_group", [])) or 1
        threads = int(self.params.get(THREADS_PARAM, "0") or 0) or default_threads()

        path = os.path.realpath(os.path.join(args["model_repository"], self.version, ONNX_FILE))
        options = session_options(ort, threads, instances)
        providers = self._providers(args)
        self.session = self._session(path, options, providers)
        self._check_graph(path)
        self._log("info", f"loaded {path} with {self.session.get_providers()} and {threads} intra-op threads")

    # ---- setup ---------------------------------------------------------------------------------
    def _providers(self, args: dict) -> list:
        on_gpu = args.get("model_instance_kind") in ("GPU", "KIND_GPU")
        if not (on_gpu or self.params.get(REQUESTED_KIND_PARAM) == "KIND_GPU"):
            return ["CPUExecutionProvider"]
        available = self.ort.get_available_providers()
        if not on_gpu:
            why = "Triton sees no GPU on this machine"
        elif "CUDAExecutionProvider" not in available:
            why = ("this onnxruntime has no CUDA provider (install the gpu extra: onnxruntime-gpu instead of "
                   "onnxruntime)")
        else:
            device = int(args.get("model_instance_device_id", 0))
            providers = []
            if "TensorrtExecutionProvider" in available:
                cache = os.path.join("/tmp", f"pixelport-trt-cache-{os.getuid()}", self.name, self.version)
                providers.append(("TensorrtExecutionProvider", {
                    "device_id": device,
                    "trt_fp16_enable": self.params.get(ACCELERATOR_PRECISION_PARAM, "FP32") == "FP16",
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": cache,
                }))
            return providers + [("CUDAExecutionProvider", {"device_id": device}), "CPUExecutionProvider"]
        self._log("warn", f"instance_group asks for KIND_GPU but {why}; falling back to CPU")
        return ["CPUExecutionProvider"]

    def _session(self, path: str, options, providers: list):
        try:
            return self.ort.InferenceSession(path, sess_options=options, providers=providers)
        except Exception as exc:
            names = [p[0] if isinstance(p, tuple) else p for p in providers]
            if names[0] == "TensorrtExecutionProvider":
                # TensorRT libraries missing or the graph unsupported: CUDA still serves it.
                self._log("warn", f"TensorRT execution provider failed ({exc}); using CUDA")
                return self._session(path, options, providers[1:])
            raise RuntimeError(
                f"model {self.name!r} version {self.version}: onnxruntime cannot load {path}: {exc}"
            ) from exc

    def _check_graph(self, path: str) -> None:
        """The ONNX graph must expose exactly what the config promises, or loading fails here."""
        graph_in = {i.name: i for i in self.session.get_inputs()}
        graph_out = {o.name: o for o in self.session.get_outputs()}
        for specs, graph, kind in ((self.inputs, graph_in, "input"), (self.outputs, graph_out, "output")):
            for spec in specs:
                node = graph.get(spec.name)
                if node is None:
                    raise RuntimeError(
                        f"model {self.name!r}: config {kind} {spec.name!r} is not in {path} "
                        f"(graph {kind}s: {sorted(graph)}); re-export the model"
                    )
                if ORT_DTYPES.get(node.type) != spec.dtype.type:
                    raise RuntimeError(
                        f"model {self.name!r}: {kind} {spec.name!r} is {node.type} in the graph but "
                        f"{spec.type_name} in {CONFIG_FILE}; re-export the model"
                    )

    # ---- inference -----------------------------------------------------------------------------
    def execute(self, requests: list) -> list:
        """Exactly one response per request, in order; a bad request fails alone."""
        responses = [None] * len(requests)
        feeds, wanted, shapes, live = [], [], [], []
        for index, request in enumerate(requests):
            try:
                feed = self._checked_feed(request)
            except ValueError as exc:
                responses[index] = self._error(str(exc), self.invalid_arg)
                continue
            names = list(request.requested_output_names()) or [o.name for o in self.outputs]
            # Unbatched models cannot stack: each request is its own group.
            key = tuple(feed[s.name].shape[1:] for s in self.inputs) if self.batched else (index,)
            live.append(index)
            feeds.append(feed)
            wanted.append(names)
            shapes.append(key)
        for group in group_by_shape(shapes):
            self._run_group(group, feeds, wanted, live, responses)
        return responses

    def _checked_feed(self, request) -> dict:
        """{input name: array} of one request, after its bounds, dtype and shape are checked.

        The bounds come first and read only shapes and byte counts, so an oversized request is
        refused before any model tensor is built. By then the python backend has already copied it
        into its shared-memory pool and the stub into `as_numpy()`'s array (Triton 2.51); the copy
        goes with the request, and the pool's pages are handed back here (the pool never shrinks)."""
        tensors, received = {}, []
        for spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is None:
                raise ValueError(f"request has no input {spec.name!r}")
            received.append(tensor)
            tensors[spec.name] = tensor.as_numpy()
        nbytes = sum(int(a.nbytes) for a in tensors.values())
        try:
            for spec in self.inputs:
                self.limits.check(spec, tensors[spec.name].shape, nbytes, self.batched)
        except ValueError:
            for tensor in received:
                release_pages(pool_view(tensor))
            raise
        for spec in self.inputs:
            check_input(spec, tensors[spec.name], self.batched)
        return tensors

    def _run_group(self, group: list, feeds: list, wanted: list, live: list, responses: list) -> None:
        """One onnxruntime run for requests of one shape; each gets its own rows back."""
        names = [o.name for o in self.outputs if any(o.name in wanted[g] for g in group)]
        counts = [len(feeds[g][self.inputs[0].name]) for g in group]
        if len(group) == 1:
            feed = feeds[group[0]]
        else:  # (sum of batches, ...) from the per-request (b_i, ...) tensors
            feed = {s.name: np.concatenate([feeds[g][s.name] for g in group]) for s in self.inputs}
        try:
            results = self.session.run(names, feed)
        except Exception as exc:
            shape = list(feed[self.inputs[0].name].shape)
            for g in group:
                responses[live[g]] = self._error(f"onnxruntime failed on input shape {shape}: {exc}")
            return
        pieces = {name: split_rows(out, counts) if self.batched else [out] for name, out in zip(names, results)}
        for position, g in enumerate(group):
            tensors = [pb_utils.Tensor(n, np.ascontiguousarray(pieces[n][position])) for n in names if n in wanted[g]]
            responses[live[g]] = pb_utils.InferenceResponse(output_tensors=tensors)

    def _error(self, message: str, code=None):
        text = f"model {self.name!r}: {message}"
        error = pb_utils.TritonError(text) if code is None else pb_utils.TritonError(text, code)
        return pb_utils.InferenceResponse(output_tensors=[], error=error)

    def _log(self, level: str, message: str) -> None:
        logger = pb_utils.Logger
        (logger.log_warn if level == "warn" else logger.log_info)(f"pixelport {self.name} v{self.version}: {message}")

    def finalize(self) -> None:
        self.session = None
