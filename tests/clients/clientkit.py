"""Small helpers shared by the client tests: a dead port, and a stand-in gRPC server.

`FakeTriton` speaks Triton's gRPC protocol (tritonclient's own service definition) for one
segmentation model: enough for the client's plumbing (TLS handshakes, retries on a full queue),
never a substitute for the real Triton the integration tests use.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from concurrent import futures
from pathlib import Path
from typing import Optional

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from clients.contract import ModelContract, Resize


def unused_port() -> int:
    """A local port nothing listens on (bound and released): a dead server's address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def toy_contract(**kw) -> ModelContract:
    fields = dict(name="toy", task="segmentation", resize=Resize("letterbox", 16, 16), num_classes=3,
                  output_kind="labels", max_batch_size=2)
    fields.update(kw)
    return ModelContract(**fields)


class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Serves `contract` (labels = 1 everywhere); the first `busy` infer calls answer as Triton does
    when a model's queue is full. Thread-safe counters: `infers` (answered), `rejected`."""

    def __init__(self, contract: ModelContract, busy: int = 0, listing: bool = True) -> None:
        self.contract, self.busy, self.listing = contract, busy, listing
        self.infers = self.rejected = 0
        self._lock = threading.Lock()

    def ModelConfig(self, request, context):
        if request.name != self.contract.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.name}' is not found")
        return service_pb2.ModelConfigResponse(config=self.contract.to_model_config())

    def RepositoryIndex(self, request, context):
        if not self.listing:  # as pixelport's launcher answers clients without the admin key
            context.abort(grpc.StatusCode.UNAVAILABLE, "This API is restricted, expecting header 'pixelport-admin-key'")
        return service_pb2.RepositoryIndexResponse(
            models=[service_pb2.RepositoryIndexResponse.ModelIndex(name=self.contract.name, state="READY")])

    def ModelInfer(self, request, context):
        with self._lock:
            if self.busy > 0:
                self.busy -= 1
                self.rejected += 1
                full = True
            else:
                self.infers += 1
                full = False
        if full:  # what Triton's dynamic batcher answers past max_queue_size
            context.abort(grpc.StatusCode.UNAVAILABLE, "Exceeds maximum queue size")
        n, h, w = request.inputs[0].shape[:3]  # (N, H, W, 3) uint8 in
        response = service_pb2.ModelInferResponse(model_name=self.contract.name, id=request.id)
        response.outputs.add(name="labels", datatype="UINT8", shape=[n, h, w])
        response.raw_output_contents.append(np.ones((n, h, w), np.uint8).tobytes())
        return response


class FakeServer:
    """A FakeTriton on 127.0.0.1, plaintext or TLS (`tls` = (key PEM, cert PEM[, client CA PEM])
    bytes; with a client CA the server demands a client certificate). Stop with .stop()."""

    def __init__(self, servicer: FakeTriton, tls: Optional[tuple[bytes, ...]] = None) -> None:
        self.servicer = servicer
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self.server)
        if tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            key, cert, *client_ca = tls
            creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca[0] if client_ca else None,
                                                require_client_auth=bool(client_ca))
            self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(grace=None).wait(timeout=10)


def self_signed(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """(key, certificate) PEM files of a fresh self-signed certificate for 127.0.0.1/localhost."""
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return key, cert
