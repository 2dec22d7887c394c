"""Unregistering a region Triton still holds for a moment after the last response is retried briefly."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from clients import shm


class HeldFor:
    def __init__(self, busy_calls: int, message: str = "Cannot unregister shared memory region 'r', it is currently in use.") -> None:
        self.busy_calls, self.message, self.calls = busy_calls, message, 0

    def unregister_system_shared_memory(self, name, client_timeout=None):
        self.calls += 1
        if self.calls <= self.busy_calls:
            raise InferenceServerException(self.message)


def test_a_region_in_use_is_unregistered_once_released():
    client = HeldFor(busy_calls=3)
    shm._unregister_one(client, "r", timeout_s=1.0)
    assert client.calls == 4


def test_other_errors_and_a_region_held_too_long_are_not_hidden(monkeypatch):
    with pytest.raises(InferenceServerException, match="unknown region"):
        shm._unregister_one(HeldFor(1, "unknown region 'r'"), "r", timeout_s=1.0)
    monkeypatch.setattr(shm, "IN_USE_GRACE_S", 0.1)
    with pytest.raises(InferenceServerException, match="in use"):
        shm._unregister_one(HeldFor(10**6), "r", timeout_s=1.0)
