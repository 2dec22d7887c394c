"""Request bounds in the backend: an oversized request is refused with INVALID_ARGUMENT, cheaply."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

import serving_toys as toys
from serving.wheel import STUB_NAME
from serving_toys import TOY_MAX_SIZE, assert_matches, image, infer_input, reference


def test_limits_name_the_parameter(runtime_model):
    spec = runtime_model.TensorSpec({"name": "image", "data_type": "TYPE_UINT8", "dims": [-1, -1, 3]})
    limits = runtime_model.Limits({"pixelport.max_size": "64x32", "pixelport.max_request_bytes": "20000",
                                   "pixelport.input_layout": "NHWC"})
    limits.check(spec, (2, 64, 32, 3), 2 * 64 * 32 * 3, batched=True)
    with pytest.raises(ValueError, match=r"image 65x32 is over the model's limit of 64x32 \(pixelport.max_size\)"):
        limits.check(spec, (1, 65, 32, 3), 65 * 32 * 3, batched=True)
    with pytest.raises(ValueError, match=r"over the model's limit of 64x32"):
        limits.check(spec, (1, 8, 33, 3), 8 * 33 * 3, batched=True)
    with pytest.raises(ValueError, match=r"30000 input bytes, over the model's limit of 20000 "
                                         r"\(pixelport.max_request_bytes\)"):
        limits.check(spec, (5, 40, 30, 3), 30000, batched=True)
    nchw = runtime_model.Limits({"pixelport.max_size": "64x32", "pixelport.input_layout": "NCHW"})
    fp = runtime_model.TensorSpec({"name": "image", "data_type": "TYPE_FP32", "dims": [3, -1, -1]})
    with pytest.raises(ValueError, match="image 64x40"):
        nchw.check(fp, (1, 3, 64, 40), 0, batched=True)
    runtime_model.Limits({}).check(spec, (1, 9000, 9000, 3), 1, batched=True)  # no bound configured
    with pytest.raises(ValueError, match="malformed request bounds"):
        runtime_model.Limits({"pixelport.max_size": "64x"})


def stub_pid(server, model: str) -> int:
    """The python-backend stub serving `model`: a live child of the server whose argv names the model's
    runtime directory (the newest, should a reload elsewhere be replacing one)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if (argv[0].endswith(STUB_NAME) and fields[0] not in "ZX" and int(fields[1]) == server.pid
                and f"/{model}/" in " ".join(argv)):
            found.append((int(fields[19]), int(entry.name)))  # (start time, pid)
    assert found, f"no python-backend stub for {model} under Triton pid {server.pid}"
    return max(found)[1]


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and its parts (RssAnon, RssFile, RssShmem) of a process, in kB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1]) for line in lines if line.startswith(("VmRSS", "Rss"))}


@contextlib.contextmanager
def in_shared_memory(client, array: np.ndarray):
    """`array` as a registered system shared-memory input: the request then carries no bytes over
    gRPC (192 MB take seconds on a 2-core machine), so only the server's own work is timed."""
    name = f"pixelport_{os.getpid()}_bounds_test"
    handle = shm.create_shared_memory_region(name, "/" + name, array.nbytes)
    try:
        shm.set_shared_memory_region(handle, [array])
        client.register_system_shared_memory(name, "/" + name, array.nbytes)
        inp = grpcclient.InferInput("image", list(array.shape), "UINT8")
        inp.set_shared_memory(name, array.nbytes)
        yield [inp]
    finally:
        try:
            client.unregister_system_shared_memory(name)
        finally:
            shm.destroy_shared_memory_region(handle)


def refuse_huge(server, repository: Path) -> tuple[InferenceServerException, float, dict, dict]:
    """Send seg an 8000x8000 image; (error, seconds, stub memory before, after the next request).

    The seconds are for a repeat of the request: the first one also grows the python backend's
    shared-memory pool to 192 MB (about 1.4 s on 2 busy cores), which happens before model.py runs."""
    huge = np.zeros((1, 8000, 8000, 3), np.uint8)  # 192 MB, far over seg's 256x256 limit
    with server.client() as client, in_shared_memory(client, huge) as inputs:
        client.infer("seg", infer_input(image(1)))  # warm: the stub has run once
        pid = stub_pid(server, "seg")
        before = memory_kb(pid)
        with pytest.raises(InferenceServerException):
            client.infer("seg", inputs)
        client.infer("seg", infer_input(image(1)))  # the stub releases the refused request by then
        after = memory_kb(pid)
        started = time.monotonic()
        with pytest.raises(InferenceServerException) as info:
            client.infer("seg", inputs)
        seconds = time.monotonic() - started
        x = image(2)  # the requests after it are served as before
        assert_matches(client.infer("seg", infer_input(x)), reference(repository, "seg", "1", x))
    return info.value, seconds, before, after


@pytest.mark.integration
def test_oversized_image_is_refused_at_once_with_invalid_argument(toy_server, toy_repository):
    error, seconds, _, _ = refuse_huge(toy_server, toy_repository)
    assert error.status() == "StatusCode.INVALID_ARGUMENT", (error.status(), error.message())
    message = error.message()
    assert "8000x8000" in message and "{}x{}".format(*TOY_MAX_SIZE) in message and "pixelport.max_size" in message
    # About 0.25 s on an idle 2-core machine (moving 192 MB into the stub, then the refusal); the
    # bound is loose because the suite shares those cores (load averages of 15 were seen).
    assert seconds < 5.0, f"refusing took {seconds:.2f} s"


@pytest.mark.integration
def test_oversized_image_leaves_the_stub_no_private_memory(toy_server, toy_repository):
    """The stub's own memory (RssAnon) is back within 5 % once the next request has been served.

    What this cannot promise, and so does not assert: the wheel's python backend (Triton 2.51)
    moves every input into the stub before execute() runs. The server first grows its shared-memory
    pool to hold the request, and the stub copies the input into a new numpy array (pb_tensor.cc
    builds py::array(dtype, dims, ptr) without a base). model.py then refuses before any model
    tensor is built. The copy is freed once the stub releases the request (by the next one at the
    latest), but the pool's pages stay mapped (RssShmem, shared with the server): VmRSS stays
    about one request larger (+183 MB here)."""
    _, _, before, after = refuse_huge(toy_server, toy_repository)
    assert after["RssAnon"] <= before["RssAnon"] * 1.05, f"stub memory grew: {before} -> {after} (kB)"


@pytest.mark.integration
def test_empty_dimension_is_invalid_argument(toy_server):
    with toy_server.client() as client:
        with pytest.raises(InferenceServerException) as info:
            client.infer("seg", infer_input(np.zeros((1, 0, 5, 3), np.uint8)))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT", info.value.message()
    assert "empty dimension" in info.value.message()


@pytest.mark.integration
def test_derived_config_bounds_the_queue(toy_server):
    with toy_server.client() as client:
        config = client.get_model_config("seg").config
    assert config.dynamic_batching.default_queue_policy.max_queue_size > 0
    assert config.parameters["pixelport.max_size"].string_value == "{}x{}".format(*TOY_MAX_SIZE)
    assert int(config.parameters["pixelport.max_request_bytes"].string_value) > 0


@pytest.mark.integration
@pytest.mark.slow
def test_repeated_oversized_requests_over_grpc_do_not_pile_up_in_the_server(tmp_path, own_server):
    """The attacker's path: 192 MB requests sent over gRPC, each refused. Triton must receive every
    byte before any backend can look at them, and the first one also grows the python backend's
    shared-memory pool for good, so memory cannot stay flat; what must hold is that refused requests
    do not accumulate. With Triton's default pool of 8 reusable request objects, each keeping its
    largest request's buffer, tritonserver's private memory grew by about one request per request
    (38 -> 1324 MB over 8 here); `grpc_request_pool=0` frees each one after its answer."""
    source = tmp_path / "repo"
    toys.publish(source, toys.segmentation_contract("seg"), toys.segmentation_onnx(seed=0), version=1)
    server = own_server(source)
    huge = np.zeros((1, 8000, 8000, 3), np.uint8)
    request = huge.nbytes / 1024  # kB
    anon = []
    with server.client() as client:
        for _ in range(6):
            with pytest.raises(InferenceServerException) as info:
                client.infer("seg", infer_input(huge))
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
            anon.append(memory_kb(server.pid)["RssAnon"])
    grown = anon[-1] - anon[1]  # after the second: the pool and the first buffers are in place
    assert grown < 1.5 * request, f"tritonserver's private memory grew {grown / 1024:.0f} MB over 4 refused " \
                                  f"requests of {request / 1024:.0f} MB: {[round(a / 1024) for a in anon]} MB"


@pytest.mark.integration
def test_an_oversized_grpc_request_leaves_tritonserver_memory_where_it_was(tmp_path, own_server):
    """Triton 2.51 has no gRPC message-size cap: tritonserver receives all 192 MB before it can refuse
    them. What must hold is that it gives them back. With glibc's default (dynamic) mmap threshold it
    kept them in its arenas, 38 -> 100-220 MB after three; the launcher's fixed threshold leaves only
    the connection's own read buffer (a few MB, whatever the request's size) while the sender stays
    connected, and nothing once it has gone."""
    source = tmp_path / "repo"
    contract = toys.segmentation_contract("seg_fixed", static_shape=(32, 32), max_size=None)
    toys.publish(source, contract, toys.segmentation_onnx(seed=0), version=1)
    server = own_server(source)
    x = image(3, 32, 32)
    huge = np.zeros((1, 8000, 8000, 3), np.uint8)
    with server.client() as client:
        for _ in range(20):
            client.infer("seg_fixed", infer_input(x))
        before = memory_kb(server.pid)["VmRSS"]
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(InferenceServerException) as info:
                client.infer("seg_fixed", infer_input(huge))
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT", info.value.message()
            assert time.monotonic() - started < 5.0
        assert_matches(client.infer("seg_fixed", infer_input(x)), reference(source, "seg_fixed", "1", x))
        connected = memory_kb(server.pid)["VmRSS"]
    assert connected - before < 8 * 1024, f"tritonserver kept {(connected - before) / 1024:.0f} MB of 3 x 192 MB"
    deadline = time.monotonic() + 5
    while (after := memory_kb(server.pid)["VmRSS"]) > before * 1.05 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert after <= before * 1.05, f"tritonserver: {before / 1024:.1f} -> {after / 1024:.1f} MB after the sender left"


@pytest.mark.integration
def test_a_fixed_size_model_is_guarded_by_triton_before_the_backend_copies_anything(tmp_path, own_server):
    """A letterbox model's requests are HxW by contract, so its config has fixed dims: Triton refuses
    any other shape while normalising the request, before the python backend grows its pool or the
    stub copies a byte (what a dynamic-size model cannot avoid on Triton 2.51, above)."""
    source = tmp_path / "repo"
    contract = toys.segmentation_contract("seg_fixed", static_shape=(32, 32), max_size=None)
    toys.publish(source, contract, toys.segmentation_onnx(seed=0), version=1)
    server = own_server(source)
    huge = np.zeros((1, 8000, 8000, 3), np.uint8)
    with server.client() as client, in_shared_memory(client, huge) as inputs:
        x = image(3, 32, 32)
        assert_matches(client.infer("seg_fixed", infer_input(x)), reference(source, "seg_fixed", "1", x))
        stub = stub_pid(server, "seg_fixed")
        before = {"server": memory_kb(server.pid), "stub": memory_kb(stub)}
        for bad in (inputs, infer_input(image(4, 24, 32))):  # larger, and smaller than 32x32
            started = time.monotonic()
            with pytest.raises(InferenceServerException) as info:
                client.infer("seg_fixed", bad)
            assert time.monotonic() - started < 2.0
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT", info.value.message()
            assert "unexpected shape for input 'image'" in info.value.message()
        assert_matches(client.infer("seg_fixed", infer_input(x)), reference(source, "seg_fixed", "1", x))
        after = {"server": memory_kb(server.pid), "stub": memory_kb(stub)}
    for proc in ("server", "stub"):
        # RssShmem is the python backend's pool: an 8000x8000 request that reached it would add 183 MB
        assert after[proc]["RssShmem"] <= before[proc]["RssShmem"] * 1.05 + 1024, (proc, before, after)
        assert after[proc]["VmRSS"] <= before[proc]["VmRSS"] * 1.05, (proc, before, after)
