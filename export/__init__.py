"""Trained PyTorch model -> verified ONNX (or TensorRT) -> a Triton model repository.

`export_model(ExportSettings(...))` loads the model, makes it exportable, exports it, runs the
parity gate against PyTorch and publishes atomically; the CLI is `python -m export`.
"""

from typing import Any

from .errors import ExportError, ParityError
from .settings import ExportSettings, Profile, PublishResult

__all__ = ["ExportSettings", "PublishResult", "Profile", "ExportError", "ParityError", "export_model"]


def __getattr__(name: str) -> Any:
    # torch, onnx and onnxruntime load on first use: `python -m export --help` and settings
    # construction stay fast.
    if name == "export_model":
        from .api import export_model

        return export_model
    raise AttributeError(f"module 'export' has no attribute {name!r}")
