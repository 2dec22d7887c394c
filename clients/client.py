"""Synchronous gRPC client for a pixelport model served by Triton.

    from clients import DenseClient, load_image
    with DenseClient("127.0.0.1:8001", "seg_unet") as client:
        pred = client.predict(load_image("street.jpg"))  # pred.labels: (h, w) at the photo's size

On connect it reads the model's contract from the server (get_model_config) and checks it.
Requests round-robin over the URLs given and are retried with exponential backoff while a
server is unavailable; a request is never dropped: it returns or raises an InferenceError that
names the model, the image and the server's message. The request/retry plumbing here is shared
with the asyncio client in aio.py.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype
from tritonclient.utils.shared_memory import SharedMemoryException

from .contract import ContractError, ModelContract, numpy_dtype_name, parse_model_config
from .pipeline import check_image, postprocess, preprocess
from .prediction import Prediction
from .shm import SharedMemoryPool, Slot
from .window import SlideWindow, run_slide

log = logging.getLogger(__name__)

# Passing any channel argument makes tritonclient drop ALL its defaults, its 2 GiB message
# limits included (gRPC's own receive limit is 4 MiB: less than one 1080p logits tensor), so
# restate them and tritonclient's keepalive defaults. The short reconnect backoff lets a
# restarted server be found within ~2 s instead of gRPC's default of up to 120 s.
MAX_MESSAGE_BYTES = 2**31 - 1
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 2**31 - 1),
    ("grpc.keepalive_timeout_ms", 20000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 2),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

Urls = Union[str, Sequence[str]]


class InferenceError(RuntimeError):
    """A request that failed for good: carries the model, the image, the server and its message."""

    def __init__(self, message: str, *, model: str, image: str = "", url: str = "",
                 status: str = "", server_message: str = "") -> None:
        self.model, self.image, self.url, self.status = model, image, url, status
        self.server_message = server_message
        where = f" [{url}{', ' + status if status else ''}]" if url else ""
        super().__init__(f"model {model!r}{', ' + image if image else ''}: {message}{where}")


class ModelNotFoundError(InferenceError):
    """The server answers but does not serve the model (or that version)."""


class ServerUnavailableError(InferenceError):
    """No server answered within the retry budget."""


def parse_urls(url: Urls) -> list[str]:
    """'host:port', 'h1:p1,h2:p2' or a list of them -> ['host:port', ...]."""
    items = [url] if isinstance(url, str) else list(url)
    urls = [u.strip() for item in items for u in item.split(",") if u.strip()]
    if not urls:
        raise ValueError("give at least one server URL as HOST:PORT (Triton's gRPC port, usually 8001)")
    for u in urls:
        if "://" in u or ":" not in u:
            raise ValueError(f"server URL {u!r} must be HOST:PORT of Triton's gRPC endpoint (e.g. 127.0.0.1:8001)")
    return urls


def make_grpc_client(url: str) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(url, channel_args=CHANNEL_ARGS)


# ---- retries ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more attempts after the first, waiting backoff_s, 2*backoff_s, ... (capped at
    max_backoff_s, with jitter so many clients do not retry in lockstep)."""

    retries: int = 8
    backoff_s: float = 0.25
    max_backoff_s: float = 8.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"retry settings must be >= 0, got {self}")

    def delay(self, attempt: int) -> float:
        nominal = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return nominal * random.uniform(0.5, 1.0)


def is_model_missing(message: str) -> bool:
    text = message.lower()
    return "unknown model" in text or "is not found" in text or "no available versions" in text


def is_retryable(exc: InferenceServerException, connecting: bool = False) -> bool:
    """UNAVAILABLE (server down, restarting, overloaded) is worth retrying. After connecting,
    so is a model that vanished or is not ready, or a lost shared-memory registration: that is
    what a server in the middle of a restart or reload answers."""
    status = exc.status() or ""
    message = (exc.message() or "").lower()
    if connecting:
        return status == "StatusCode.UNAVAILABLE" and not is_model_missing(message)
    if status == "StatusCode.UNAVAILABLE":
        return True
    return (is_model_missing(message) or "not ready" in message
            or ("shared memory" in message and ("unable to find" in message or "not found" in message)))


class Retrier:
    """Book-keeping for one request's attempts: the wait before the next, or the final error."""

    def __init__(self, policy: RetryPolicy, model: str, image: str, connecting: bool = False,
                 servers: int = 1) -> None:
        self.policy, self.model, self.image, self.connecting = policy, model, image, connecting
        self.servers = servers
        self.attempt = 0
        self.started = time.monotonic()

    def failed(self, exc: Exception, url: str) -> float:
        """Seconds to wait before the next attempt; raises InferenceError when there is none."""
        if isinstance(exc, SharedMemoryException):
            raise InferenceError(f"shared memory failed: {exc}", model=self.model, image=self.image, url=url) from exc
        status, message = exc.status() or "", exc.message() or str(exc)
        details = dict(model=self.model, image=self.image, url=url, status=status, server_message=message)
        if not is_retryable(exc, self.connecting):
            raise InferenceError(message, **details) from exc
        if self.attempt >= self.policy.retries:
            elapsed = time.monotonic() - self.started
            raise ServerUnavailableError(
                f"still failing after {self.attempt + 1} attempts over {elapsed:.1f} s: {message}", **details
            ) from exc
        # With several servers, fail over to each of the others at once; then back off.
        delay = 0.0 if self.attempt + 1 < self.servers else self.policy.delay(self.attempt + 1 - self.servers)
        self.attempt += 1
        log.warning("model %r, %s: %s at %s; retry %d/%d in %.2f s", self.model, self.image,
                    status or "error", url, self.attempt, self.policy.retries, delay)
        return delay


# ---- contract ---------------------------------------------------------------------------------
def contract_from_config(config: Any, model: str) -> ModelContract:
    """The served config -> its contract, checked: input, output names and dtypes, resize."""
    msg = parse_model_config(config)
    contract = ModelContract.from_model_config(msg)
    problems = []
    _, in_dtype, in_dims = contract.input_spec()
    served = msg.input[0]
    if numpy_dtype_name(served.data_type) != in_dtype:
        problems.append(f"input dtype {numpy_dtype_name(served.data_type) or served.data_type} "
                        f"but contract says {in_dtype}")
    if list(served.dims) != in_dims:
        problems.append(f"input dims {list(served.dims)} but contract says {in_dims}")
    outs = {o.name: numpy_dtype_name(o.data_type) for o in msg.output}
    want = {name: dtype for name, dtype, _ in contract.output_specs()}
    if set(outs) != set(want):
        problems.append(f"outputs {sorted(outs)} but contract says {sorted(want)}")
    problems += [f"output {n!r} dtype {outs[n]} but contract says {want[n]}"
                 for n in sorted(set(outs) & set(want)) if outs[n] != want[n]]
    if contract.static_shape is not None:
        r = contract.resize
        if r.mode != "letterbox" or (r.height, r.width) != tuple(contract.static_shape):
            problems.append(f"fixed input shape {contract.static_shape} but resize policy {r}")
    if problems:
        raise ContractError(f"model {model!r}: served config disagrees with its pixelport contract: "
                            + "; ".join(problems) + " (re-export it with `python -m export`)")
    return contract


# ---- requests ---------------------------------------------------------------------------------
def output_nbytes(contract: ModelContract, batch: np.ndarray, images: int = 0) -> dict[str, int]:
    """Bytes each tensor takes for a request shaped like `batch` with `images` images (default:
    as many as the batch has): the input and every output."""
    n = images or batch.shape[0]
    h, w = contract.input_hw(batch.shape)
    sizes = {contract.input_spec()[0]: batch.nbytes // batch.shape[0] * n}
    for name, dtype, _ in contract.output_specs():
        planes = contract.num_classes if name == "logits" else 1
        sizes[name] = n * planes * h * w * np.dtype(dtype).itemsize
    return sizes


def shm_nbytes(contract: ModelContract, batch: np.ndarray) -> dict[str, int]:
    """Region sizes for this request. Letterbox requests all share one HxW, so size the regions
    for a full max_batch_size batch once; stride-mode regions grow when a larger image comes."""
    full = max(batch.shape[0], contract.max_batch_size) if contract.resize.mode == "letterbox" else 0
    return output_nbytes(contract, batch, full)


def make_request(batch: np.ndarray, contract: ModelContract, slot: Optional[Slot] = None):
    """(inputs, requested outputs) for one batch, over the wire or through a shm slot."""
    if contract.max_batch_size == 0:  # a model without a batch dimension takes one image
        batch = batch[0]
    name = contract.input_spec()[0]
    inp = grpcclient.InferInput(name, list(batch.shape), np_to_triton_dtype(batch.dtype))
    if slot is None:
        inp.set_data_from_numpy(batch)
    else:
        slot.write(name, batch)
        inp.set_shared_memory(slot.regions[name].name, batch.nbytes)
    outputs = []
    for out_name, _, _ in contract.output_specs():
        out = grpcclient.InferRequestedOutput(out_name)
        if slot is not None:
            region = slot.regions[out_name]
            out.set_shared_memory(region.name, region.size)
        outputs.append(out)
    return [inp], outputs


def read_result(result: grpcclient.InferResult, contract: ModelContract,
                slot: Optional[Slot] = None) -> dict[str, np.ndarray]:
    """The output tensors of one response, each with its batch dimension first."""
    arrays = {}
    for name, _, _ in contract.output_specs():
        if slot is None:
            arr = result.as_numpy(name)
        else:
            meta = result.get_output(name)
            arr = None if meta is None else slot.read(name, triton_to_np_dtype(meta.datatype), list(meta.shape))
        if arr is None:
            raise InferenceError(f"response has no output {name!r}", model=contract.name)
        arrays[name] = arr[None] if contract.max_batch_size == 0 else arr
    return arrays


def batch_plan(count: int, contract: ModelContract) -> list[list[int]]:
    """Index groups, one per request: letterbox images batch up to max_batch_size; stride-mode
    images (each its own size) go one per request."""
    size = max(1, contract.max_batch_size) if contract.resize.mode == "letterbox" else 1
    return [list(range(i, min(count, i + size))) for i in range(0, count, size)]


class ClientBase:
    """What the sync and asyncio clients share: settings, URLs, contract, shm, request plans."""

    def __init__(self, url: Urls, model: str, version: str = "", *, timeout_s: float = 60.0,
                 retries: int = 8, backoff_s: float = 0.25, max_backoff_s: float = 8.0,
                 use_shm: bool = False, shm_slots: int = 1, max_side: Optional[int] = None) -> None:
        if not model:
            raise ValueError("give the model name (see the server's repository index)")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.urls = parse_urls(url)
        self.model, self.version = model, str(version)
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(retries, backoff_s, max_backoff_s)
        self.max_side = max_side
        self._turn = itertools.count()
        self._shm = SharedMemoryPool(make_grpc_client, slots=shm_slots, timeout_s=timeout_s) if use_shm else None
        self._contract: Optional[ModelContract] = None

    @property
    def contract(self) -> ModelContract:
        if self._contract is None:
            raise RuntimeError("client is not connected yet")
        return self._contract

    @property
    def shm_region_names(self) -> list[str]:
        """Shared-memory regions this client holds now (empty without --shm or after close)."""
        return self._shm.region_names if self._shm else []

    def _next_index(self) -> int:
        return next(self._turn) % len(self.urls)  # round-robin; count() is atomic under the GIL

    def _checked(self, images: Sequence[np.ndarray], image_ids: Optional[Sequence[str]]) -> tuple[list, list[str]]:
        ids = [str(i) for i in image_ids] if image_ids is not None else [f"image {i}" for i in range(len(images))]
        if len(ids) != len(images):
            raise ValueError(f"{len(images)} images but {len(ids)} image ids")
        return [check_image(img, i) for img, i in zip(images, ids)], ids

    def _model_missing(self, exc: InferenceError, served: list[str]) -> ModelNotFoundError:
        version = f" version {self.version}" if self.version else ""
        return ModelNotFoundError(
            f"not served{version} at {exc.url}; served and ready: {served or 'none'} "
            f"(server says: {exc.server_message})", model=self.model, url=exc.url, status=exc.status,
            server_message=exc.server_message)


def ready_models(index: Any) -> list[str]:
    models = index.get("models", []) if isinstance(index, dict) else []
    return sorted({m.get("name", "") for m in models if m.get("state", "READY") == "READY"} - {""})


class DenseClient(ClientBase):
    """Blocking client; thread-safe (with shm, requests share one slot and take turns)."""

    def __init__(self, url: Urls, model: str, version: str = "", *, timeout_s: float = 60.0,
                 retries: int = 8, backoff_s: float = 0.25, max_backoff_s: float = 8.0,
                 use_shm: bool = False, max_side: Optional[int] = None) -> None:
        super().__init__(url, model, version, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                         max_backoff_s=max_backoff_s, use_shm=use_shm, shm_slots=1, max_side=max_side)
        self._clients = [make_grpc_client(u) for u in self.urls]
        try:
            self._contract = self._connect()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "DenseClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- plumbing -----------------------------------------------------------------------------
    def _call(self, fn: Callable[[str, grpcclient.InferenceServerClient], Any], image: str,
              connecting: bool = False) -> Any:
        if not self._clients:
            raise RuntimeError(f"client for {self.model!r} is closed")
        retrier = Retrier(self.retry, self.model, image, connecting, servers=len(self.urls))
        while True:
            i = self._next_index()
            try:
                return fn(self.urls[i], self._clients[i])
            except (InferenceServerException, SharedMemoryException) as exc:
                delay = retrier.failed(exc, self.urls[i])
                if self._shm is not None:
                    self._shm.invalidate(self.urls[i])
                time.sleep(delay)

    def _connect(self) -> ModelContract:
        def fetch(url: str, client: grpcclient.InferenceServerClient) -> Any:
            return client.get_model_config(self.model, self.version, as_json=True, client_timeout=self.timeout_s)

        try:
            config = self._call(fetch, "model config", connecting=True)
        except ServerUnavailableError:
            raise
        except InferenceError as exc:
            if not is_model_missing(exc.server_message):
                raise
            try:
                client = self._clients[self.urls.index(exc.url)]
                served = ready_models(client.get_model_repository_index(as_json=True, client_timeout=self.timeout_s))
            except InferenceServerException:
                served = []
            raise self._model_missing(exc, served) from exc
        contract = contract_from_config(config, self.model)
        log.info("connected to %s at %s: %s, %s, input %s, outputs %s", self.model, ",".join(self.urls),
                 contract.task, contract.resize, contract.input_dtype, contract.output_kind)
        return contract

    # ---- inference ----------------------------------------------------------------------------
    def infer_tensors(self, batch: np.ndarray, image: str = "batch") -> dict[str, np.ndarray]:
        """Send an already preprocessed batch; return the raw output tensors (batch first)."""
        contract = self.contract

        def attempt(url: str, client: grpcclient.InferenceServerClient) -> dict[str, np.ndarray]:
            if self._shm is None:
                inputs, outputs = make_request(batch, contract)
                result = client.infer(self.model, inputs, self.version, outputs=outputs, client_timeout=self.timeout_s)
                return read_result(result, contract)
            slot = self._shm.acquire()
            try:
                self._shm.prepare(slot, url, shm_nbytes(contract, batch))
                inputs, outputs = make_request(batch, contract, slot)
                result = client.infer(self.model, inputs, self.version, outputs=outputs, client_timeout=self.timeout_s)
                return read_result(result, contract, slot)
            finally:
                self._shm.release(slot)

        return self._call(attempt, image)

    def _predict_group(self, images: list[np.ndarray], ids: list[str]) -> list[Prediction]:
        batch, transforms = preprocess(images, self.contract, self.max_side)
        outputs = self.infer_tensors(batch, ", ".join(ids))
        return postprocess(outputs, transforms, self.contract)

    def predict(self, image: np.ndarray, image_id: Optional[str] = None,
                window: Optional[SlideWindow] = None) -> Prediction:
        """One RGB uint8 (H, W, 3) or grayscale (H, W) image -> its Prediction at (H, W). With a
        `window`, sliding-window (and flip/multi-scale) inference as mmseg's: clients/window.py."""
        if window is not None:
            return run_slide(self.infer_tensors, image, window, self.contract, image_id or "image")
        images, ids = self._checked([image], [image_id or "image"])
        return self._predict_group(images, ids)[0]

    def predict_batch(self, images: Sequence[np.ndarray], image_ids: Optional[Sequence[str]] = None) -> list[Prediction]:
        """Predictions in input order; letterbox models get batches of up to max_batch_size,
        stride-mode models one request per image."""
        checked, ids = self._checked(images, image_ids)
        preds: list[Prediction] = []
        for group in batch_plan(len(checked), self.contract):
            preds.extend(self._predict_group([checked[i] for i in group], [ids[i] for i in group]))
        return preds

    def close(self) -> None:
        """Unregister and destroy shared memory (if any), close the channels. Idempotent."""
        try:
            if self._shm is not None:
                self._shm.close()
        finally:
            for client in getattr(self, "_clients", []):
                client.close()
            self._clients = []
