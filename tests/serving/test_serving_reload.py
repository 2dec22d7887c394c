"""`python -m serving reload NAME` switches to a newly published version with no failed request."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import serving_toys as toys
from serving.__main__ import main as serving_main
from serving_toys import assert_matches, image, infer_input, reference

pytestmark = pytest.mark.integration


def test_reload_serves_the_new_version_without_failed_requests(tmp_path, own_server, capsys):
    # A repository and server of its own: publishing v2 must not change what other tests see.
    repository = tmp_path / "model_repository"
    toys.publish(repository, toys.segmentation_contract("seg_live"), toys.segmentation_onnx(seed=2), version=1)
    server = own_server(repository)
    x = image(42)
    toys.publish(repository, toys.segmentation_contract("seg_live"), toys.segmentation_onnx(seed=3), version=2)
    old, new = reference(repository, "seg_live", "1", x), reference(repository, "seg_live", "2", x)
    assert not np.array_equal(old["labels"], new["labels"]), "the two versions must answer differently"

    errors: list[str] = []
    seen: list[str] = []
    stop = threading.Event()

    def keep_requesting() -> None:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            while not stop.is_set():
                try:
                    result = client.infer("seg_live", infer_input(x))
                    version = result.get_response().model_version
                    assert_matches(result, old if version == "1" else new)
                    seen.append(version)
                except Exception as exc:  # any failure during the switch is the bug under test
                    errors.append(repr(exc))

    worker = threading.Thread(target=keep_requesting, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while not (seen or errors) and worker.is_alive():
            assert time.monotonic() < deadline, "no answer from version 1 within 60 s"
            time.sleep(0.05)
        assert serving_main(["reload", "seg_live", "--state-dir", str(server.state_dir)]) == 0
        deadline = time.monotonic() + 30
        while seen.count("2") < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive(), "the request loop did not stop within 30 s"
    assert "serving version 2" in capsys.readouterr().out
    assert errors == []
    assert "1" in seen and seen.count("2") >= 5
    assert seen == sorted(seen), "a request went back to the old version after the switch"
    with server.client() as client:
        ready = [m for m in client.get_model_repository_index(as_json=True, headers=server.admin_headers)["models"]
                 if m["name"] == "seg_live" and m.get("state") == "READY"]
        assert [m["version"] for m in ready] == ["2"]
        assert_matches(client.infer("seg_live", infer_input(x)), new)
