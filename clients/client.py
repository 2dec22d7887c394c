"""Synchronous gRPC client for a pixelport model served by Triton.

    from clients import DenseClient, load_image
    with DenseClient("127.0.0.1:8001", "seg_unet") as client:
        pred = client.predict(load_image("street.jpg"))  # pred.labels: (h, w) at the photo's size

On connect it reads the model's contract from the server (get_model_config) and checks it.
Requests round-robin over the URLs given and are retried with exponential backoff while a
server is unavailable (down, restarting, or its queue full); a request is never dropped: it
returns or raises an InferenceError that names the model, the image and the server's message.
`client.stats` counts requests, retries and failures. Images are checked against the model's size
limit before anything is sent. TLS: `ssl=True` (or `grpcs://HOST:PORT` URLs), optionally with
root certificates and a client certificate and key. The request/retry plumbing here is shared
with the asyncio client in aio.py, which differs only in awaiting the call and the back-off.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype
from tritonclient.utils.shared_memory import SharedMemoryException

from .contract import ContractError, ModelContract, numpy_dtype_name, parse_model_config
from .pipeline import check_image, letterbox_for, postprocess, preprocess
from .prediction import Prediction
from .shm import SharedMemoryPool, Slot, sweep_dead_regions
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


SCHEMES = ("grpc://", "grpcs://")  # grpcs: TLS


def parse_urls(url: Urls) -> list[str]:
    """'host:port', 'h1:p1,h2:p2', 'grpcs://host:port' (TLS) or a list of them -> [url, ...]."""
    items = [url] if isinstance(url, str) else list(url)
    urls = [u.strip() for item in items for u in item.split(",") if u.strip()]
    if not urls:
        raise ValueError("give at least one server URL as HOST:PORT (Triton's gRPC port, usually 8001)")
    for u in urls:
        target = split_url(u)[0] if u.lower().startswith(SCHEMES) else u
        if "://" in target or ":" not in target or target.startswith(":") or target.endswith(":"):
            raise ValueError(f"server URL {u!r} must be HOST:PORT of Triton's gRPC endpoint (e.g. 127.0.0.1:8001), "
                             "or grpcs://HOST:PORT for TLS")
    return urls


def split_url(url: str) -> tuple[str, Optional[bool]]:
    """'grpcs://h:p' -> ('h:p', True); 'grpc://h:p' -> ('h:p', False); 'h:p' -> ('h:p', None)."""
    for scheme, secure in (("grpcs://", True), ("grpc://", False)):
        if url.lower().startswith(scheme):
            return url[len(scheme):], secure
    return url, None


@dataclass(frozen=True)
class Tls:
    """gRPC over TLS: the root certificates to trust (PEM file; None = the system's), and a
    client certificate and its key (PEM files) for servers that ask for mutual TLS."""

    root_cert: Optional[str] = None
    client_cert: Optional[str] = None
    client_key: Optional[str] = None

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("give the client certificate and its key together (--client-cert and --client-key)")
        for what, path in (("root certificate", self.root_cert), ("client certificate", self.client_cert),
                           ("client key", self.client_key)):
            if path is not None and not os.access(path, os.R_OK):
                raise ValueError(f"{what} {path!r} is not a readable file (a PEM file is expected)")

    def client_kwargs(self) -> dict[str, Any]:
        return dict(ssl=True, root_certificates=self.root_cert, private_key=self.client_key,
                    certificate_chain=self.client_cert)


def make_tls(ssl: bool = False, root_cert: Optional[str] = None, client_cert: Optional[str] = None,
             client_key: Optional[str] = None) -> Optional[Tls]:
    """The TLS settings the keyword arguments ask for; certificates imply TLS."""
    if ssl or root_cert or client_cert or client_key:
        return Tls(root_cert, client_cert, client_key)
    return None


def client_kwargs(url: str, tls: Optional[Tls] = None) -> dict[str, Any]:
    """Keyword arguments for tritonclient's (sync or asyncio) InferenceServerClient at `url`:
    grpcs:// always uses TLS (the system's roots unless `tls` says otherwise), grpc:// never,
    and a bare HOST:PORT uses TLS when `tls` is given."""
    target, secure = split_url(url)
    if secure is False and tls is not None:
        raise ValueError(f"server URL {url!r} asks for plaintext but TLS settings were given; "
                         "drop 'grpc://' (or use grpcs://)")
    use = tls if tls is not None else (Tls() if secure else None)
    return dict(url=target, channel_args=CHANNEL_ARGS, **(use.client_kwargs() if use else {}))


def make_grpc_client(url: str, tls: Optional[Tls] = None) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(**client_kwargs(url, tls))


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


def is_queue_full(message: str) -> bool:
    """Triton's answer when a model's max_queue_size is reached (UNAVAILABLE over gRPC)."""
    return "exceeds maximum queue size" in message.lower()


def is_retryable(exc: InferenceServerException, connecting: bool = False) -> bool:
    """UNAVAILABLE (server down, restarting, overloaded, its queue full) is worth retrying. After
    connecting, so is a model that vanished or is not ready, or a lost shared-memory registration:
    that is what a server in the middle of a restart or reload answers."""
    status = exc.status() or ""
    message = (exc.message() or "").lower()
    if is_queue_full(message):
        return True
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
            busy = " (the server's queue is full: it is overloaded; send fewer requests at once)" \
                if is_queue_full(message) else ""
            raise ServerUnavailableError(
                f"still failing after {self.attempt + 1} attempts over {elapsed:.1f} s: {message}{busy}", **details
            ) from exc
        # With several servers, fail over to each of the others at once; then back off.
        delay = 0.0 if self.attempt + 1 < self.servers else self.policy.delay(self.attempt + 1 - self.servers)
        self.attempt += 1
        log.warning("model %r, %s: %s (%s) at %s; retry %d/%d in %.2f s", self.model, self.image,
                    status or "error", message.splitlines()[0][:160] if message else "", url, self.attempt,
                    self.policy.retries, delay)
        return delay


@dataclass
class ClientStats:
    """What a client has done since it was made; safe to read from any thread.

    `retries` counts attempts repeated after a retriable error (a server down, restarting or
    overloaded), so a caller can tell that its requests met trouble and got through anyway."""

    requests: int = 0  # calls that got their answer (after however many attempts)
    retries: int = 0  # attempts that failed and were tried again
    failures: int = 0  # calls that failed for good
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, requests: int = 0, retries: int = 0, failures: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.failures += failures


# What an attempt may raise that the retry policy judges (anything else is a bug or a bad input).
ATTEMPT_ERRORS = (InferenceServerException, SharedMemoryException)


class Attempts:
    """The body of one call's retry loop, shared by DenseClient and AsyncDenseClient: which server
    to try next (round-robin), and what a failed try means (give up, or count a retry, forget the
    server's shared-memory registrations, and wait). Each client's `_call` only makes the call and
    waits the delay `failed` returns: DenseClient with time.sleep, AsyncDenseClient awaiting both
    the call and asyncio.sleep."""

    def __init__(self, client: "ClientBase", grpc_clients: Sequence[Any], image: str, connecting: bool) -> None:
        if not grpc_clients:
            raise RuntimeError(f"client for {client.model!r} is not connected or is closed")
        self.client, self.grpc_clients = client, grpc_clients
        self.retrier = Retrier(client.retry, client.model, image, connecting, servers=len(client.urls))
        self.url = ""

    def next(self) -> tuple[str, Any]:
        i = self.client._next_index()
        self.url = self.client.urls[i]
        return self.url, self.grpc_clients[i]

    def succeeded(self, value: Any) -> Any:
        self.client.stats.add(requests=1)
        return value

    def failed(self, exc: Exception) -> float:
        """Seconds to wait before the next try; raises InferenceError when there is none."""
        try:
            delay = self.retrier.failed(exc, self.url)
        except InferenceError:
            self.client.stats.add(failures=1)
            raise
        self.client.stats.add(retries=1)
        if self.client._shm is not None:
            self.client._shm.invalidate(self.url)  # it may have restarted and forgotten them
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


def default_max_side(contract: ModelContract) -> int:
    """The longest side a stride-mode image keeps before it is shrunk: the model's size limit,
    rounded down to the stride, so the padded tensor stays within the limit too."""
    mh, mw = contract.size_limit
    stride = contract.resize.stride
    return min(mh // stride * stride, mw // stride * stride) or min(mh, mw)


def check_request(batch: np.ndarray, contract: ModelContract) -> None:
    """Refuse, before sending, a tensor the server would refuse: over the model's size limit per
    image, or more bytes than one request may carry (ContractError, naming the limit)."""
    if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[0] < 1:
        shape = getattr(batch, "shape", type(batch).__name__)
        raise ValueError(f"model {contract.name!r} takes a batch shaped {contract.input_shape(1, -1, -1)} "
                         f"(N >= 1 first, -1 = any size), got {shape}")
    if batch.dtype != np.dtype(contract.input_dtype):
        raise ValueError(f"model {contract.name!r} takes {contract.input_dtype} input, got {batch.dtype}")
    channels = batch.shape[3 if contract.input_layout == "NHWC" else 1]
    if channels != 3:
        raise ValueError(f"model {contract.name!r} takes {contract.input_layout} RGB input (3 channels), "
                         f"got shape {batch.shape}")
    if batch.shape[0] > max(1, contract.max_batch_size):
        raise ValueError(f"model {contract.name!r} takes at most {max(1, contract.max_batch_size)} images "
                         f"per request, got {batch.shape[0]}")
    contract.check_size(*contract.input_hw(batch.shape))
    if batch.nbytes > contract.max_request_bytes:
        raise ContractError(f"request of {batch.nbytes} bytes is over model {contract.name!r}'s limit of "
                            f"{contract.max_request_bytes} bytes (pixelport.max_request_bytes); send fewer images")


class ClientBase:
    """What the sync and asyncio clients share: settings, URLs, contract, shm, stats, checks."""

    def __init__(self, url: Urls, model: str, version: str = "", *, timeout_s: float = 60.0,
                 retries: int = 8, backoff_s: float = 0.25, max_backoff_s: float = 8.0,
                 use_shm: bool = False, shm_slots: int = 1, max_side: Optional[int] = None,
                 ssl: bool = False, root_cert: Optional[str] = None, client_cert: Optional[str] = None,
                 client_key: Optional[str] = None, stats: Optional[ClientStats] = None) -> None:
        if not model:
            raise ValueError("give the model name (see the server's repository index)")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if max_side is not None and max_side < 1:
            raise ValueError(f"max_side must be >= 1, got {max_side}")
        self.urls = parse_urls(url)
        self.model, self.version = model, str(version)
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(retries, backoff_s, max_backoff_s)
        self.tls = make_tls(ssl, root_cert, client_cert, client_key)
        for u in self.urls:
            client_kwargs(u, self.tls)  # a grpc:// URL beside TLS settings fails here, not later
        self.stats = stats if stats is not None else ClientStats()
        self._max_side = max_side
        self._turn = itertools.count()
        # A partial, not a bound method: the pool's finalizer must not keep this client alive.
        self._make_sync_client = functools.partial(make_grpc_client, tls=self.tls)
        self._shm = (SharedMemoryPool(self._make_sync_client, slots=shm_slots, timeout_s=timeout_s)
                     if use_shm else None)
        self._contract: Optional[ModelContract] = None

    @property
    def contract(self) -> ModelContract:
        if self._contract is None:
            raise RuntimeError("client is not connected yet")
        return self._contract

    @property
    def max_side(self) -> Optional[int]:
        """Stride-mode images with a longer side are shrunk to it: the value given, else (once
        connected) the model's size limit. Letterbox models resize to their fixed size anyway."""
        if self._max_side is not None or self._contract is None:
            return self._max_side
        return default_max_side(self._contract)

    @property
    def shm_region_names(self) -> list[str]:
        """Shared-memory regions this client holds now (empty without --shm or after close)."""
        return self._shm.region_names if self._shm else []

    def _next_index(self) -> int:
        return next(self._turn) % len(self.urls)  # round-robin; count() is atomic under the GIL

    def _attempts(self, image: str, connecting: bool = False) -> Attempts:
        return Attempts(self, self._clients, image, connecting)

    def _checked(self, images: Sequence[np.ndarray], image_ids: Optional[Sequence[str]]) -> tuple[list, list[str]]:
        """Images as (H, W, 3) uint8 and their ids; ValueError (ContractError past the model's
        size limit) before any work is done."""
        ids = [str(i) for i in image_ids] if image_ids is not None else [f"image {i}" for i in range(len(images))]
        if len(ids) != len(images):
            raise ValueError(f"{len(images)} images but {len(ids)} image ids")
        checked = [check_image(img, i) for img, i in zip(images, ids)]
        for img, name in zip(checked, ids):
            padded = letterbox_for(img.shape[:2], self.contract, self.max_side).padded
            try:
                self.contract.check_size(*padded)
            except ContractError as exc:
                raise ContractError(f"{name}: {exc}; it was given max_side={self.max_side} "
                                    f"(leave it unset to shrink to the model's limit)") from None
        return checked, ids

    def _sweep_shm(self) -> None:
        """Before using shared memory: clear the regions that dead clients on this host left
        registered on the servers and in /dev/shm (named pixelport_<pid>_..., pid gone)."""
        if self._shm is not None:
            for u in self.urls:
                sweep_dead_regions(self._make_sync_client, u, self.timeout_s)

    def _model_missing(self, exc: InferenceError) -> Optional[ModelNotFoundError]:
        """For a connect that failed because the server does not serve the model: that error,
        listing the models the server does serve (a short blocking call, on an error path only);
        None for any other failure."""
        if isinstance(exc, ServerUnavailableError) or not is_model_missing(exc.server_message):
            return None
        try:
            client = self._make_sync_client(exc.url)
            try:
                served: Optional[list[str]] = ready_models(
                    client.get_model_repository_index(as_json=True, client_timeout=self.timeout_s))
            finally:
                client.close()
        except InferenceServerException:  # pixelport's launcher keeps the index for admin-key holders
            served = None
        version = f" version {self.version}" if self.version else ""
        listing = ("unknown (the server lists its models only to admins: see `python -m serving status`)"
                   if served is None else served or "none")
        return ModelNotFoundError(
            f"not served{version} at {exc.url}; served and ready: {listing} "
            f"(server says: {exc.server_message})", model=self.model, url=exc.url, status=exc.status,
            server_message=exc.server_message)


def ready_models(index: Any) -> list[str]:
    models = index.get("models", []) if isinstance(index, dict) else []
    return sorted({m.get("name", "") for m in models if m.get("state", "READY") == "READY"} - {""})


class DenseClient(ClientBase):
    """Blocking client; thread-safe (with shm, requests share one slot and take turns)."""

    def __init__(self, url: Urls, model: str, version: str = "", *, timeout_s: float = 60.0,
                 retries: int = 8, backoff_s: float = 0.25, max_backoff_s: float = 8.0,
                 use_shm: bool = False, max_side: Optional[int] = None, ssl: bool = False,
                 root_cert: Optional[str] = None, client_cert: Optional[str] = None,
                 client_key: Optional[str] = None, stats: Optional[ClientStats] = None) -> None:
        super().__init__(url, model, version, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                         max_backoff_s=max_backoff_s, use_shm=use_shm, shm_slots=1, max_side=max_side,
                         ssl=ssl, root_cert=root_cert, client_cert=client_cert, client_key=client_key,
                         stats=stats)
        self._clients = [self._make_sync_client(u) for u in self.urls]
        try:
            self._contract = self._connect()
            self._sweep_shm()
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
        attempts = self._attempts(image, connecting)
        while True:
            url, grpc = attempts.next()
            try:
                return attempts.succeeded(fn(url, grpc))
            except ATTEMPT_ERRORS as exc:
                time.sleep(attempts.failed(exc))

    def _connect(self) -> ModelContract:
        def fetch(url: str, client: grpcclient.InferenceServerClient) -> Any:
            return client.get_model_config(self.model, self.version, as_json=True, client_timeout=self.timeout_s)

        try:
            config = self._call(fetch, "model config", connecting=True)
        except InferenceError as exc:
            missing = self._model_missing(exc)
            if missing is None:
                raise
            raise missing from exc
        contract = contract_from_config(config, self.model)
        log.info("connected to %s at %s: %s, %s, input %s, outputs %s, limit %dx%d", self.model,
                 ",".join(self.urls), contract.task, contract.resize, contract.input_dtype, contract.output_kind,
                 *contract.size_limit)
        return contract

    # ---- inference ----------------------------------------------------------------------------
    def infer_tensors(self, batch: np.ndarray, image: str = "batch") -> dict[str, np.ndarray]:
        """Send an already preprocessed batch; return the raw output tensors (batch first)."""
        contract = self.contract
        check_request(batch, contract)

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
