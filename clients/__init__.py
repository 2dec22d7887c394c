"""pixelport clients: what a production app imports (no torch, no onnx).

    from clients import DenseClient, load_image
    with DenseClient("127.0.0.1:8001", "seg_unet") as client:
        labels = client.predict(load_image("street.jpg")).labels

Names load lazily, so `import clients.contract` (export, serving) pulls in neither cv2 nor gRPC.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DenseClient": "client",
    "InferenceError": "client",
    "ModelNotFoundError": "client",
    "ServerUnavailableError": "client",
    "ClientStats": "client",
    "AsyncDenseClient": "aio",
    "SlideWindow": "window",
    "Prediction": "prediction",
    "Letterbox": "letterbox",
    "load_image": "images",
    "ImageError": "images",
    "preprocess": "pipeline",
    "postprocess": "pipeline",
    "ModelContract": "contract",
    "ContractError": "contract",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clients' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # cache: the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
