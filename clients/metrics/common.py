"""Small helpers the metric classes share: NaN <-> JSON null, and per-image result tables."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np


def nan_to_none(value: Any) -> Optional[float]:
    """A float for JSON; NaN/inf (undefined metrics) become None -> null."""
    v = float(value)
    return v if math.isfinite(v) else None


def none_to_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


class PerImageTable:
    """Per-image metric rows keyed by sample id, averaged in sorted-id order.

    Keying by id makes merging shards (and resuming a run) exact: the mean never depends on the
    order images were processed in, and an id can never be counted twice."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.rows: dict[str, list[float]] = {}
        self.skipped: dict[str, str] = {}

    def next_id(self) -> str:
        return f"{len(self.rows) + len(self.skipped):08d}"

    def add(self, key: Optional[str], values: dict[str, float]) -> str:
        key = self.next_id() if key is None else str(key)
        self._check_new(key)
        self.rows[key] = [float(values[k]) for k in self.keys]
        return key

    def skip(self, key: Optional[str], reason: str) -> str:
        key = self.next_id() if key is None else str(key)
        self._check_new(key)
        self.skipped[key] = reason
        return key

    def _check_new(self, key: str) -> None:
        if key in self.rows or key in self.skipped:
            raise ValueError(f"image {key!r} was already counted; each image id may be updated once")

    def merge(self, other: "PerImageTable") -> None:
        if other.keys != self.keys:
            raise ValueError(f"cannot merge metric tables with keys {self.keys} and {other.keys}")
        overlap = (set(self.rows) | set(self.skipped)) & (set(other.rows) | set(other.skipped))
        if overlap:
            raise ValueError(
                f"{len(overlap)} images appear in both inputs (first: {sorted(overlap)[0]!r}); "
                "merge only disjoint shards"
            )
        self.rows.update(other.rows)
        self.skipped.update(other.skipped)

    def mean(self) -> dict[str, float]:
        if not self.rows:
            return {k: float("nan") for k in self.keys}
        table = np.array([self.rows[k] for k in sorted(self.rows)], np.float64)  # (N, K)
        return {k: float(v) for k, v in zip(self.keys, table.mean(axis=0))}

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys),
            "per_image": {k: [nan_to_none(v) for v in self.rows[k]] for k in sorted(self.rows)},
            "skipped": dict(sorted(self.skipped.items())),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], keys: tuple[str, ...]) -> "PerImageTable":
        if tuple(data.get("keys", keys)) != keys:
            raise ValueError(f"metric table has keys {data.get('keys')}, expected {list(keys)}")
        table = cls(keys)
        table.rows = {k: [none_to_nan(v) for v in row] for k, row in data.get("per_image", {}).items()}
        table.skipped = dict(data.get("skipped", {}))
        return table


class PerImageMetrics:
    """What depth and matting metrics share: per-image rows in a table, merged and averaged."""

    table: PerImageTable

    def settings(self) -> tuple:
        """What must be equal for two instances to merge."""
        raise NotImplementedError

    def merge(self, other: "PerImageMetrics"):
        if type(other) is not type(self) or self.settings() != other.settings():
            raise ValueError(f"cannot merge {type(self).__name__} with different settings: "
                             f"{self.settings()} vs {getattr(other, 'settings', lambda: '?')()}")
        self.table.merge(other.table)
        return self

    def compute(self) -> dict[str, float]:
        return self.table.mean()

    def summary(self) -> dict[str, Optional[float]]:
        return {k: nan_to_none(v) for k, v in self.compute().items()}
