"""Client pieces that need no server: URLs, retry policy, contract checks, request plans, a dead
server, and that `import clients` pulls in neither torch nor onnx."""

import subprocess
import sys
import time

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from clients.client import (DenseClient, InferenceError, RetryPolicy, Retrier, ServerUnavailableError,
                            batch_plan, contract_from_config, is_retryable, output_nbytes, parse_urls)
from clients.contract import ContractError, ModelContract, Resize
from clientkit import unused_port


def seg(**kw) -> ModelContract:
    fields = dict(name="seg", task="segmentation", resize=Resize("letterbox", 32, 32), num_classes=4,
                  output_kind="labels+confidence", max_batch_size=3)
    fields.update(kw)
    return ModelContract(**fields)


def test_parse_urls():
    assert parse_urls("h:1") == ["h:1"]
    assert parse_urls("h:1, g:2") == ["h:1", "g:2"]
    assert parse_urls(["h:1", "g:2,k:3"]) == ["h:1", "g:2", "k:3"]
    for bad in ("", [], "http://h:8000", "localhost"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_urls(bad)


def test_retry_policy_backs_off_exponentially_and_is_bounded():
    p = RetryPolicy(retries=5, backoff_s=0.5, max_backoff_s=3.0)
    for attempt, nominal in enumerate([0.5, 1.0, 2.0, 3.0, 3.0]):
        assert nominal / 2 <= p.delay(attempt) <= nominal
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)


def err(status, message="boom"):
    return InferenceServerException(message, status=status)


def test_what_is_retried():
    assert is_retryable(err("StatusCode.UNAVAILABLE", "failed to connect to all addresses"))
    assert not is_retryable(err("StatusCode.INVALID_ARGUMENT", "bad shape"))
    missing = err("StatusCode.NOT_FOUND", "Request for unknown model: 'm' is not found")
    assert not is_retryable(missing, connecting=True)  # a typo in the model name fails fast
    assert is_retryable(missing)  # mid-run it is a server restarting or reloading
    assert is_retryable(err("StatusCode.INVALID_ARGUMENT", "Unable to find system shared memory region: 'x'"))


def test_retrier_gives_up_with_model_image_and_server_message():
    r = Retrier(RetryPolicy(retries=2, backoff_s=0.0), "seg", "cat.jpg")
    unavailable = err("StatusCode.UNAVAILABLE", "connection refused")
    assert r.failed(unavailable, "h:1") == 0.0
    assert r.failed(unavailable, "h:2") == 0.0
    with pytest.raises(ServerUnavailableError) as info:
        r.failed(unavailable, "h:1")
    msg = str(info.value)
    assert "'seg'" in msg and "cat.jpg" in msg and "connection refused" in msg and "3 attempts" in msg
    with pytest.raises(InferenceError, match="bad shape") as info:
        Retrier(RetryPolicy(), "seg", "dog.png").failed(err("StatusCode.INVALID_ARGUMENT", "bad shape"), "h:1")
    assert info.value.image == "dog.png" and info.value.status == "StatusCode.INVALID_ARGUMENT"


def test_retrier_fails_over_to_other_servers_before_backing_off():
    r = Retrier(RetryPolicy(retries=5, backoff_s=1.0), "seg", "x", servers=3)
    unavailable = err("StatusCode.UNAVAILABLE")
    delays = [r.failed(unavailable, f"h:{i}") for i in range(4)]
    assert delays[:2] == [0.0, 0.0] and 0.5 <= delays[2] <= 1.0 and 1.0 <= delays[3] <= 2.0


def test_contract_from_config_accepts_its_own_config_and_json():
    c = seg()
    assert contract_from_config(c.to_pbtxt(), "seg").output_specs() == c.output_specs()
    from google.protobuf import json_format
    as_json = {"config": json_format.MessageToDict(c.to_model_config(), preserving_proto_field_name=True)}
    assert contract_from_config(as_json, "seg").resize == c.resize


@pytest.mark.parametrize("mutate,needle", [
    (lambda cfg: setattr(cfg.output[0], "name", "mask"), "outputs"),
    (lambda cfg: setattr(cfg.input[0], "data_type", mc.TYPE_FP32), "input dtype"),
    (lambda cfg: setattr(cfg.output[1], "data_type", mc.TYPE_FP16), "dtype"),
    (lambda cfg: cfg.parameters.pop("pixelport.task"), "pixelport.task"),
])
def test_contract_from_config_rejects_mismatches(mutate, needle):
    cfg = seg().to_model_config()
    mutate(cfg)
    with pytest.raises(ContractError, match=needle):
        contract_from_config(cfg, "seg")


def test_batch_plan_and_shm_sizes():
    assert batch_plan(7, seg()) == [[0, 1, 2], [3, 4, 5], [6]]
    stride = ModelContract(name="d", task="depth", resize=Resize("stride", stride=8), output_kind="depth")
    assert batch_plan(3, stride) == [[0], [1], [2]]
    sizes = output_nbytes(seg(output_kind="logits"), np.zeros((2, 32, 32, 3), np.uint8))
    assert sizes == {"image": 2 * 32 * 32 * 3, "logits": 2 * 4 * 32 * 32 * 4}


def test_dead_server_is_a_clear_error_after_bounded_retries():
    port = unused_port()
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError) as info:
        DenseClient(f"127.0.0.1:{port}", "seg_unet", retries=2, backoff_s=0.05, timeout_s=5)
    assert time.monotonic() - started < 30
    assert f"127.0.0.1:{port}" in str(info.value) and "seg_unet" in str(info.value)
    assert "3 attempts" in str(info.value)


def test_client_package_imports_without_torch_or_onnx():
    code = ("import clients, clients.client, clients.aio, clients.letterbox, clients.images, clients.pipeline, "
            "clients.cli_infer, clients.outputs, clients.shm; import sys; "
            "clients.DenseClient, clients.AsyncDenseClient, clients.Letterbox, clients.load_image, clients.Prediction; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime')); "
            "assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
