"""The embedded Triton on tiny ONNX models: it answers, matches onnxruntime, batches, fails per request."""

from __future__ import annotations

import threading
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clients.contract import CONFIG_FILE, ModelContract
from serving import collect_status
import serving_toys as toys
from serving_toys import assert_matches, image, infer_input, reference
from slow_toy import slow_segmentation_onnx

pytestmark = pytest.mark.integration


def test_server_metadata_reports_triton(toy_server):
    with toy_server.client() as client:
        meta = client.get_server_metadata()
        assert meta.name == "triton"
        assert "model_repository" in meta.extensions
        assert client.is_server_ready()


def test_every_model_answers_like_onnxruntime(toy_server, toy_repository):
    with toy_server.client() as client:
        index = client.get_model_repository_index(as_json=True, headers=toy_server.admin_headers)["models"]
        models = sorted({m["name"] for m in index if m.get("state") == "READY"})
        assert models == ["depth", "seg", "seg_live"]
        for seed, name in enumerate(models):
            x = image(seed, batch=2)
            result = client.infer(name, infer_input(x))
            version = result.get_response().model_version
            assert_matches(result, reference(toy_repository, name, version, x))


def test_served_config_keeps_the_contract(toy_server, toy_repository):
    """Clients read the contract from the server; embedded mode must not change it."""
    with toy_server.client() as client:
        served = ModelContract.from_model_config(client.get_model_config("seg", as_json=True))
        config = client.get_model_config("seg").config
    source = ModelContract.from_model_config((toy_repository / "seg" / CONFIG_FILE).read_text())
    assert served == source
    assert config.backend == "python" and config.max_batch_size == 8 and config.HasField("dynamic_batching")
    assert config.instance_group[0].count == 1


def test_requested_output_subset(toy_server):
    with toy_server.client() as client:
        result = client.infer("seg", infer_input(image(3)), outputs=[grpcclient.InferRequestedOutput("labels")])
        assert result.as_numpy("labels").shape == (1, 40, 56)
        assert result.as_numpy("confidence") is None


def _infer_concurrently(client, model: str, images: list[np.ndarray]) -> list:
    results: list = [None] * len(images)
    done = threading.Semaphore(0)
    for i, x in enumerate(images):
        def callback(result, error, i=i):
            results[i] = error if error is not None else result
            done.release()
        client.async_infer(model, infer_input(x), callback)
    for _ in images:
        assert done.acquire(timeout=60)
    return results


def _batch_sizes(client, model: str) -> dict[int, int]:
    """Triton's own count of executions per batch size for `model` (statistics API)."""
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for s in stats for b in s.get("batch_stats", [])}


def test_dynamic_batching_under_concurrency(tmp_path, own_server):
    """A burst while the one instance is busy is batched, and each request gets its own answer.

    Each execution of the slow toy takes ~0.4 s whatever its batch size, and the burst is sent in
    milliseconds: while the first request executes, the others queue, and the dynamic batcher (no
    queue delay) must take them together. The check is Triton's own per-batch-size statistics."""
    repository = tmp_path / "model_repository"
    toys.publish(repository, toys.segmentation_contract("seg_slow"), slow_segmentation_onnx(seed=0), version=1)
    server = own_server(repository)
    images = [image(100 + i, 120, 160) for i in range(9)]  # the first executes alone, then 8 together
    with server.client() as client:
        before = _batch_sizes(client, "seg_slow")  # the server may have warmed the model up
        results = _infer_concurrently(client, "seg_slow", images)
        after = _batch_sizes(client, "seg_slow")
    batches = {size: n - before.get(size, 0) for size, n in after.items() if n > before.get(size, 0)}
    assert sum(size * count for size, count in batches.items()) == len(images), batches
    assert max(batches) > 1, f"no dynamic batch was formed: executions per batch size {batches}"
    assert sum(batches.values()) < len(images), batches
    for x, result in zip(images, results):
        assert not isinstance(result, Exception), result
        assert_matches(result, reference(repository, "seg_slow", "1", x))


def test_mixed_shapes_in_one_batch_are_each_correct(toy_server, toy_repository):
    images = [image(200 + i, 32 + 8 * (i % 3), 48) for i in range(9)]
    with toy_server.client() as client:
        results = _infer_concurrently(client, "seg", images)
    for x, result in zip(images, results):
        assert not isinstance(result, Exception), result
        assert_matches(result, reference(toy_repository, "seg", "1", x))


@pytest.mark.parametrize("bad", [np.zeros((1, 0, 5, 3), np.uint8), np.zeros((1, 8, 8, 4), np.uint8),
                                 np.zeros((1, 8, 8, 3), np.float32)], ids=["empty", "channels", "dtype"])
def test_bad_request_fails_alone_with_a_clear_error(toy_server, toy_repository, bad):
    good = image(7)
    with toy_server.client() as client:
        inp = grpcclient.InferInput("image", list(bad.shape), "FP32" if bad.dtype == np.float32 else "UINT8")
        inp.set_data_from_numpy(bad)
        with pytest.raises(InferenceServerException) as info:
            client.infer("seg", [inp])
        message = info.value.message()
        assert "image" in message and ("shape" in message or "type" in message or "dimension" in message), message
        assert_matches(client.infer("seg", infer_input(good)), reference(toy_repository, "seg", "1", good))


def test_status_and_metrics(toy_server):
    with toy_server.client() as client:
        client.infer("depth", infer_input(image(9)))
        statuses = {s.name: s for s in collect_status(client, toy_server.skipped, toy_server.admin_headers)}
        raw = client.get_inference_statistics("depth", as_json=True)["model_stats"][0]  # nothing ran since
    assert statuses["depth"].state == "READY" and statuses["depth"].versions == ["1"]
    split = raw["inference_stats"]
    assert statuses["depth"].inference_count == int(raw["inference_count"]) >= 1
    # Triton's own totals, added by hand: input copy + run + output copy, per request, in ms.
    ns = sum(int(split[k]["ns"]) for k in ("compute_input", "compute_infer", "compute_output"))
    assert statuses["depth"].avg_compute_ms == pytest.approx(ns / int(split["compute_infer"]["count"]) / 1e6)
    assert statuses["depth"].avg_compute_ms > 0
    with urllib.request.urlopen(toy_server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    assert 'nv_inference_count{model="depth",version="1"}' in text


@pytest.mark.needs_cpu_only_onnxruntime
def test_gpu_instances_fall_back_to_cpu_and_say_so(toy_server):
    """The toy depth model asks for KIND_GPU; without a GPU (or onnxruntime-gpu) it still serves."""
    with toy_server.client() as client:
        client.infer("depth", infer_input(image(11)))
    log = toy_server.log_tail(lines=100000)
    assert "pixelport depth v1: instance_group asks for KIND_GPU but" in log and "falling back to CPU" in log
