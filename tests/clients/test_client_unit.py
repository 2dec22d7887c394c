"""Client pieces that need no real Triton: URLs and TLS settings, retry policy, the retry loop
both clients share (and its counts), a full queue, size limits, contract checks, request plans,
a dead server, TLS handshakes with a certificate made here, and that `import clients` pulls in
neither torch nor onnx."""

import asyncio
import subprocess
import sys
import time

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from clients.aio import AsyncDenseClient
from clients.client import (DenseClient, InferenceError, RetryPolicy, Retrier, ServerUnavailableError, Tls,
                            batch_plan, check_request, client_kwargs, contract_from_config, default_max_side,
                            is_retryable, output_nbytes, parse_urls)
from clients.contract import ContractError, ModelContract, Resize
from clientkit import FakeServer, FakeTriton, self_signed, toy_contract, unused_port


def seg(**kw) -> ModelContract:
    fields = dict(name="seg", task="segmentation", resize=Resize("letterbox", 32, 32), num_classes=4,
                  output_kind="labels+confidence", max_batch_size=3)
    fields.update(kw)
    return ModelContract(**fields)


def test_parse_urls():
    assert parse_urls("h:1") == ["h:1"]
    assert parse_urls("h:1, g:2") == ["h:1", "g:2"]
    assert parse_urls(["h:1", "g:2,k:3"]) == ["h:1", "g:2", "k:3"]
    assert parse_urls("grpcs://h:1,grpc://g:2") == ["grpcs://h:1", "grpc://g:2"]
    for bad in ("", [], "http://h:8000", "localhost", "grpcs://h", "grpcs://", "h:", "grpcs://grpc://h:1"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_urls(bad)


def test_tls_settings_reach_the_grpc_client(tmp_path):
    plain = client_kwargs("h:1")
    assert plain["url"] == "h:1" and "ssl" not in plain
    assert client_kwargs("grpc://h:1")["url"] == "h:1"
    secure = client_kwargs("grpcs://h:1")  # the scheme alone asks for TLS, with the system's roots
    assert secure["url"] == "h:1" and secure["ssl"] is True and secure["root_certificates"] is None
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "c.key"))
    for f in (ca, cert, key):
        f.write_text("PEM")
    tls = Tls(str(ca), str(cert), str(key))
    got = client_kwargs("h:1", tls)
    assert (got["ssl"], got["root_certificates"], got["certificate_chain"], got["private_key"]) == \
        (True, str(ca), str(cert), str(key))
    with pytest.raises(ValueError, match="plaintext"):
        client_kwargs("grpc://h:1", tls)
    with pytest.raises(ValueError, match="together"):
        Tls(client_cert=str(cert))
    with pytest.raises(ValueError, match="root certificate .*missing.pem.* not a readable file"):
        Tls(root_cert=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="plaintext"):  # checked when the client is made, before connecting
        DenseClient("grpc://127.0.0.1:1", "m", ssl=True)


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


def test_a_full_queue_is_retried_and_then_named():
    full = err("StatusCode.UNAVAILABLE", "Exceeds maximum queue size")
    assert is_retryable(full) and is_retryable(full, connecting=True)
    r = Retrier(RetryPolicy(retries=1, backoff_s=0.0), "seg", "cat.jpg")
    assert r.failed(full, "h:1") == 0.0
    with pytest.raises(ServerUnavailableError, match="queue is full"):
        r.failed(full, "h:1")


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


def test_size_limits_are_checked_before_sending():
    c = toy_contract(max_size=(20, 24))
    check_request(np.zeros((2, 20, 24, 3), np.uint8), c)
    with pytest.raises(ContractError, match=r"21x24 is over model 'toy'.s limit of 20x24"):
        check_request(np.zeros((1, 21, 24, 3), np.uint8), c)
    for bad, needle in ((np.zeros((20, 24, 3), np.uint8), "N >= 1 first"), (np.zeros((1, 8, 8, 3), np.float32), "uint8"),
                        (np.zeros((1, 8, 8, 4), np.uint8), "3 channels"), (np.zeros((3, 8, 8, 3), np.uint8), "at most 2")):
        with pytest.raises(ValueError, match=needle):
            check_request(bad, c)
    fixed = toy_contract(resize=Resize("letterbox", 20, 24), static_shape=(20, 24))  # Triton refuses other sizes
    check_request(np.zeros((2, 20, 24, 3), np.uint8), fixed)
    for h, w in ((19, 24), (20, 23), (8, 8)):
        with pytest.raises(ContractError, match=rf"{h}x{w} is not model 'toy'.s fixed input size 20x24; letterbox"):
            check_request(np.zeros((1, h, w, 3), np.uint8), fixed)
    with pytest.raises(ContractError, match=r"20x25 is over model 'toy'.s limit of 20x24"):
        check_request(np.zeros((1, 20, 25, 3), np.uint8), fixed)
    stride = ModelContract(name="d", task="depth", resize=Resize("stride", stride=32), output_kind="depth",
                           max_size=(1000, 700))
    assert default_max_side(stride) == 672  # the padded tensor (a stride multiple) stays inside 1000x700
    assert default_max_side(ModelContract(name="d", task="depth", resize=Resize("stride", stride=32),
                                          output_kind="depth")) == 2048


@pytest.fixture
def fake():
    servers = []

    def start(servicer, tls=None):
        servers.append(FakeServer(servicer, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_sync_and_async_share_the_retry_loop_and_count_retries(fake):
    """The same loop body under both clients: a full queue is retried (not a hang, not an error),
    each retry is counted, and past the budget the error names the overloaded server."""
    server = fake(FakeTriton(toy_contract(), busy=3))
    img = np.zeros((10, 12, 3), np.uint8)
    with DenseClient(server.address, "toy", retries=5, backoff_s=0.001) as client:
        pred = client.predict(img)
        assert pred.labels.shape == (10, 12) and np.all(pred.labels == 1)
        assert (client.stats.retries, client.stats.requests, client.stats.failures) == (3, 2, 0)  # config + infer
    assert server.servicer.rejected == 3 and server.servicer.infers == 1

    server.servicer.busy = 2

    async def run():
        async with AsyncDenseClient(server.address, "toy", retries=5, backoff_s=0.001) as client:
            pred = await client.predict(img)
            return pred, client.stats

    pred, stats = asyncio.run(run())
    assert np.all(pred.labels == 1) and (stats.retries, stats.requests, stats.failures) == (2, 2, 0)

    server.servicer.busy = 10
    with DenseClient(server.address, "toy", retries=2, backoff_s=0.001) as client:
        with pytest.raises(ServerUnavailableError, match="queue is full") as info:
            client.predict(img, "cat.jpg")
        assert "cat.jpg" in str(info.value) and client.stats.failures == 1 and client.stats.retries == 2


def test_oversize_images_shrink_by_default_and_fail_early_when_asked_otherwise(fake):
    stride = toy_contract(resize=Resize("stride", stride=8), max_size=(32, 40))
    server = fake(FakeTriton(stride))
    big = np.zeros((100, 60, 3), np.uint8)
    with DenseClient(server.address, "toy") as client:
        assert client.max_side == 32
        pred = client.predict(big)  # shrunk to the model's limit, answered at the original size
        assert pred.labels.shape == (100, 60) and pred.transform.padded == (32, 24)
    with DenseClient(server.address, "toy", max_side=64) as client:
        before = server.servicer.infers
        with pytest.raises(ContractError, match=r"big.png: image 64x40 is over model 'toy'.s limit of 32x40"):
            client.predict(big, "big.png")
        assert server.servicer.infers == before  # refused before anything was sent
        with pytest.raises(ContractError, match="limit"):
            client.infer_tensors(np.zeros((1, 48, 48, 3), np.uint8))
        assert client.predict(np.zeros((30, 20, 3), np.uint8)).labels.shape == (30, 20)  # within: fine


def test_tls_with_a_self_signed_certificate(fake, tmp_path):
    """A real TLS handshake (a stand-in gRPC server, a certificate made here): trusted with
    --root-cert, refused without it, and mutual TLS needs the client's certificate."""
    key, cert = self_signed(tmp_path)
    server = fake(FakeTriton(toy_contract()), (key.read_bytes(), cert.read_bytes()))
    img = np.zeros((9, 9, 3), np.uint8)
    for url, kw in ((f"grpcs://{server.address}", dict(root_cert=str(cert))),
                    (server.address, dict(ssl=True, root_cert=str(cert)))):
        with DenseClient(url, "toy", **kw) as client:
            assert np.all(client.predict(img).labels == 1)

        async def run():
            async with AsyncDenseClient(url, "toy", **kw) as client:
                return await client.predict(img)

        assert np.all(asyncio.run(run()).labels == 1)
    with pytest.raises(ServerUnavailableError, match="(?i)handshake"):  # a certificate nobody vouches for
        DenseClient(f"grpcs://{server.address}", "toy", retries=0, timeout_s=5)
    with pytest.raises(ServerUnavailableError):  # plaintext to a TLS port
        DenseClient(server.address, "toy", retries=0, timeout_s=5)

    ckey, ccert = self_signed(tmp_path, "client")
    mutual = fake(FakeTriton(toy_contract()), (key.read_bytes(), cert.read_bytes(), ccert.read_bytes()))
    with DenseClient(mutual.address, "toy", root_cert=str(cert), client_cert=str(ccert), client_key=str(ckey)) as c:
        assert np.all(c.predict(img).labels == 1)
    with pytest.raises(ServerUnavailableError):
        DenseClient(mutual.address, "toy", root_cert=str(cert), retries=0, timeout_s=5)


def test_a_missing_model_names_the_served_ones_where_the_server_lists_them(fake):
    from clients.client import ModelNotFoundError

    for listing, shown in ((True, r"\['toy'\]"), (False, r"unknown \(the server lists its models only to admins")):
        server = fake(FakeTriton(toy_contract(), listing=listing))
        needle = rf"'tyo': not served at {server.address}; served and ready: {shown}"
        with pytest.raises(ModelNotFoundError, match=needle):
            DenseClient(server.address, "tyo", retries=3, backoff_s=0.001)
        with pytest.raises(ModelNotFoundError, match=needle):
            asyncio.run(AsyncDenseClient(server.address, "tyo", retries=3, backoff_s=0.001).connect())
