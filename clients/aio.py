"""asyncio gRPC client: many images in flight at once, at most `concurrency` requests.

    async with AsyncDenseClient("127.0.0.1:8001", "seg_unet", concurrency=8) as client:
        preds = await client.predict_many(images)  # in input order

One image per request; Triton's dynamic batcher groups concurrent requests on the server.
Pre/post-processing runs in worker threads (cv2 releases the GIL), so the event loop keeps
requests flowing. Retries (the same loop body, awaited), round-robin, size and contract checks,
TLS, stats and shm are the sync client's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Optional, Sequence, Union

import numpy as np
import tritonclient.grpc.aio as aiogrpc

from .client import (ATTEMPT_ERRORS, ClientBase, ClientStats, InferenceError, Urls, check_request, client_kwargs,
                     contract_from_config, make_request, read_result, shm_nbytes)
from .pipeline import postprocess, preprocess
from .prediction import Prediction
from .window import SlideWindow, run_slide_async

log = logging.getLogger(__name__)


class AsyncDenseClient(ClientBase):
    """Connect with `await client.connect()` or `async with`; close with `await client.close()`."""

    def __init__(self, url: Urls, model: str, version: str = "", *, concurrency: int = 8,
                 timeout_s: float = 60.0, retries: int = 8, backoff_s: float = 0.25,
                 max_backoff_s: float = 8.0, use_shm: bool = False, max_side: Optional[int] = None,
                 ssl: bool = False, root_cert: Optional[str] = None, client_cert: Optional[str] = None,
                 client_key: Optional[str] = None, stats: Optional[ClientStats] = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        # One shm slot per request in flight, so concurrent requests never share a region.
        super().__init__(url, model, version, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                         max_backoff_s=max_backoff_s, use_shm=use_shm, shm_slots=concurrency, max_side=max_side,
                         ssl=ssl, root_cert=root_cert, client_cert=client_cert, client_key=client_key,
                         stats=stats)
        self.concurrency = concurrency
        self._clients: list[aiogrpc.InferenceServerClient] = []
        self._gate: Optional[asyncio.Semaphore] = None
        self.in_flight = 0
        self.peak_in_flight = 0  # the most requests seen in flight at once (for checks and stats)

    async def __aenter__(self) -> "AsyncDenseClient":
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> "AsyncDenseClient":
        """Open channels, read and check the contract. Returns self."""
        if self._contract is not None:
            return self
        self._clients = [aiogrpc.InferenceServerClient(**client_kwargs(u, self.tls)) for u in self.urls]
        self._gate = asyncio.Semaphore(self.concurrency)
        try:
            self._contract = await self._fetch_contract()
            await asyncio.to_thread(self._sweep_shm)
        except BaseException:
            await self.close()
            raise
        return self

    async def _call(self, fn: Callable[[str, aiogrpc.InferenceServerClient], Awaitable[Any]], image: str,
                    connecting: bool = False) -> Any:
        attempts = self._attempts(image, connecting)
        while True:
            url, grpc = attempts.next()
            try:
                return attempts.succeeded(await fn(url, grpc))
            except ATTEMPT_ERRORS as exc:
                await asyncio.sleep(attempts.failed(exc))

    async def _fetch_contract(self):
        async def fetch(url: str, client: aiogrpc.InferenceServerClient) -> Any:
            return await client.get_model_config(self.model, self.version, as_json=True, client_timeout=self.timeout_s)

        try:
            config = await self._call(fetch, "model config", connecting=True)
        except InferenceError as exc:
            missing = await asyncio.to_thread(self._model_missing, exc)
            if missing is None:
                raise
            raise missing from exc
        return contract_from_config(config, self.model)

    async def infer_tensors(self, batch: np.ndarray, image: str = "batch") -> dict[str, np.ndarray]:
        """Send an already preprocessed batch; return the raw output tensors (batch first).
        Counts against `concurrency` like predict does."""
        if self._gate is None:
            raise RuntimeError(f"client for {self.model!r} is not connected (await connect())")
        async with self._gate:
            return await self._infer_tensors(batch, image)

    async def _infer_tensors(self, batch: np.ndarray, image: str) -> dict[str, np.ndarray]:
        contract = self.contract
        check_request(batch, contract)

        async def attempt(url: str, client: aiogrpc.InferenceServerClient) -> dict[str, np.ndarray]:
            if self._shm is None:
                inputs, outputs = make_request(batch, contract)
                result = await client.infer(self.model, inputs, self.version, outputs=outputs,
                                            client_timeout=self.timeout_s)
                return read_result(result, contract)
            slot = self._shm.acquire()  # never waits: the gate admits at most `concurrency` (= slots)
            try:
                # Registration is a rare, short, sync RPC; keep it off the event loop.
                await asyncio.to_thread(self._shm.prepare, slot, url, shm_nbytes(contract, batch))
                inputs, outputs = make_request(batch, contract, slot)
                result = await client.infer(self.model, inputs, self.version, outputs=outputs,
                                            client_timeout=self.timeout_s)
                return read_result(result, contract, slot)
            finally:
                self._shm.release(slot)

        return await self._call(attempt, image)

    async def predict(self, image: np.ndarray, image_id: Optional[str] = None,
                      window: Optional[SlideWindow] = None) -> Prediction:
        """One image -> its Prediction at the original size; waits for a free request slot. With a
        `window`, sliding-window inference (clients/window.py): each tile batch takes a slot."""
        if window is not None:
            return await run_slide_async(self.infer_tensors, image, window, self.contract, image_id or "image")
        images, ids = self._checked([image], [image_id or "image"])
        if self._gate is None:
            raise RuntimeError(f"client for {self.model!r} is not connected (await connect())")
        async with self._gate:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                batch, transforms = await asyncio.to_thread(preprocess, images, self.contract, self.max_side)
                outputs = await self._infer_tensors(batch, ids[0])
                return (await asyncio.to_thread(postprocess, outputs, transforms, self.contract))[0]
            finally:
                self.in_flight -= 1

    async def predict_many(self, images: Sequence[np.ndarray], image_ids: Optional[Sequence[str]] = None,
                           return_exceptions: bool = False) -> list[Union[Prediction, BaseException]]:
        """Predictions in input order, at most `concurrency` requests in flight. With
        return_exceptions, a failed image yields its exception in its place instead of raising."""
        ids = list(image_ids) if image_ids is not None else [f"image {i}" for i in range(len(images))]
        if len(ids) != len(images):
            raise ValueError(f"{len(images)} images but {len(ids)} image ids")
        return await asyncio.gather(*(self.predict(img, i) for img, i in zip(images, ids)),
                                    return_exceptions=return_exceptions)

    async def close(self) -> None:
        """Unregister and destroy shared memory (if any), close the channels. Idempotent."""
        try:
            if self._shm is not None:
                await asyncio.to_thread(self._shm.close)
        finally:
            clients, self._clients = self._clients, []
            for client in clients:
                await client.close()
