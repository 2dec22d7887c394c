"""Fixtures for the models room: one tiny synthetic dataset shared by the module's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.synth import synthesize

TINY_SIZE = 32


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """8 train images at 32 px and 3 val images (200-400 px sides)."""
    return synthesize(tmp_path_factory.mktemp("models") / "data", n_train=8, n_val=3, size=TINY_SIZE, seed=0)
