"""pixelport's model zoo, synthetic data and trainer (training side; needs torch)."""

from . import zoo as _zoo  # noqa: F401  (registers the architectures)
from .registry import TASKS, create_model, list_models

__all__ = ["TASKS", "create_model", "list_models"]
