"""The clients against a real Triton serving the zoo: parity with the in-process pipeline, async
routing, shared memory (identical results, nothing left behind, a SIGKILLed client's regions swept
by the next), errors and size limits, the infer CLI, the one-screen example, and a server restart
in the middle of a run (held there by construction, retries counted)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

import clients
import clients.cli_infer
from clients import AsyncDenseClient, DenseClient, ModelNotFoundError
from clients.cli_infer import InferReport, InferSettings, run_infer
from clients.client import batch_plan
from clients.contract import ONNX_FILE, ContractError, read_config_file
from clients.pipeline import postprocess, preprocess
from clients.shm import SHM_DIR, owner_pid
from clientkit import unused_port

pytestmark = pytest.mark.integration

REPO_ROOT = Path(clients.__file__).resolve().parents[1]
MODELS = ["seg_unet", "depth_unet", "matting_unet"]
ODD_SIZES = [(37, 91), (101, 33), (64, 64), (1, 1), (250, 190), (2, 300)]


def images(sizes=ODD_SIZES, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]


class Reference:
    """The in-process pipeline: same letterbox -> onnxruntime on the served ONNX file -> same inverse."""

    def __init__(self, repository: Path, model: str) -> None:
        import onnxruntime as ort

        from clients.client import contract_from_config

        model_dir = repository / model
        version = max(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
        self.contract = contract_from_config(read_config_file(str(model_dir / "config.pbtxt")), model)
        self.session = ort.InferenceSession(str(model_dir / str(version) / ONNX_FILE), providers=["CPUExecutionProvider"])
        self.names = [name for name, _, _ in self.contract.output_specs()]

    def predict_batch(self, images):
        """The same request plan as the client (float sums depend on the batch composition)."""
        preds = []
        for group in batch_plan(len(images), self.contract):
            batch, transforms = preprocess([images[i] for i in group], self.contract)
            outputs = dict(zip(self.names, self.session.run(self.names, {"image": batch})))
            preds += postprocess(outputs, transforms, self.contract)
        return preds

    def predict(self, image):
        return self.predict_batch([image])[0]


def assert_same(a, b):
    for field in ("labels", "confidence", "logits", "depth", "alpha"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            assert x.shape == y.shape and x.dtype == y.dtype, field
            assert np.array_equal(x, y), f"{field} differs at {np.argwhere(x != y)[:5].tolist()}"


def assert_close(a, b):
    """Same image's result, up to float rounding: Triton's dynamic batcher may run concurrent
    requests as one batch, and onnxruntime's float sums differ in the last bits across batch sizes
    (a result routed to the wrong request differs in size and content, not in the 6th digit)."""
    assert a.shape == b.shape
    if a.labels is not None:  # an argmax near a tie may flip with those last bits
        assert np.mean(a.labels == b.labels) >= 0.999
    for field in ("depth", "alpha", "confidence"):
        x, y = getattr(a, field), getattr(b, field)
        if x is not None:
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=field)


def shm_files(names) -> list[str]:
    """Which of these regions exist in /dev/shm (only the test's own: never all of /dev/shm)."""
    return sorted(n for n in names if os.path.exists(os.path.join(SHM_DIR, n)))


def registered(url: str) -> list[str]:
    client = grpcclient.InferenceServerClient(url)
    try:
        return sorted(client.get_system_shared_memory_status(as_json=True).get("regions", {}))
    finally:
        client.close()


def server_regions(url: str, names) -> list[str]:
    """Which of these regions the server has registered."""
    return sorted(set(names) & set(registered(url)))


def wait_until(condition, timeout_s: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting until {what}")
        time.sleep(0.02)


@pytest.mark.parametrize("model", MODELS)
def test_predict_equals_in_process_pipeline(triton_server, zoo_repository, model):
    ref = Reference(zoo_repository, model)
    with DenseClient(triton_server.grpc_url, model) as client:
        assert client.contract.task == ref.contract.task
        for i, img in enumerate(images()):
            pred = client.predict(img, f"odd {img.shape}")
            assert pred.shape == img.shape[:2]
            assert_same(pred, ref.predict(img))
        if model == "seg_unet":  # batched requests (4 + 2 images) too
            for got, want in zip(client.predict_batch(images(seed=1)), ref.predict_batch(images(seed=1))):
                assert_same(got, want)


def test_async_concurrency_8_returns_each_result_to_its_request(triton_server, zoo_repository):
    sizes = [(20 + 7 * i, 150 - 5 * i) for i in range(24)]  # every image its own size and content
    imgs = images(sizes, seed=2)
    ref = Reference(zoo_repository, "depth_unet")

    async def run():
        async with AsyncDenseClient(triton_server.grpc_url, "depth_unet", concurrency=8) as client:
            preds = await client.predict_many(imgs, [f"img{i}" for i in range(len(imgs))])
            mixed = await client.predict_many([imgs[0], np.zeros((4, 4), np.float32)], ["good", "bad"],
                                              return_exceptions=True)
            return preds, client.peak_in_flight, mixed

    preds, peak, mixed = asyncio.run(run())
    assert 1 < peak <= 8
    assert_close(mixed[0], preds[0])  # one bad image does not stop the others
    assert isinstance(mixed[1], ValueError) and "bad: got float32" in str(mixed[1])
    for img, pred in zip(imgs, preds):
        assert_close(pred, ref.predict(img))


def test_shared_memory_matches_wire_and_leaves_nothing_behind(triton_server):
    url, imgs = triton_server.grpc_url, images()
    with DenseClient(url, "seg_unet") as wire:
        expected = [wire.predict(img) for img in imgs]
        expected_batch = wire.predict_batch(imgs)
    with DenseClient(url, "seg_unet", use_shm=True) as client:
        assert_same(client.predict(imgs[0]), expected[0])
        names = client.shm_region_names
        assert names and server_regions(url, names) == names  # registered with the server
        assert all(owner_pid(n) == os.getpid() for n in names)  # pixelport_<pid>_...: a sweep can tell owners
        for img, want in zip(imgs, expected):
            assert_same(client.predict(img), want)
        for got, want in zip(client.predict_batch(imgs), expected_batch):  # full max_batch_size requests
            assert_same(got, want)
        assert client.shm_region_names == names  # created once, sized for the largest request, reused
        assert shm_files(names) == names
    assert shm_files(names) == [] and server_regions(url, names) == []

    async def run():
        async with AsyncDenseClient(url, "seg_unet", concurrency=4, use_shm=True) as client:
            preds = await client.predict_many(imgs)
            return preds, client.shm_region_names

    preds, names = asyncio.run(run())
    for got, want in zip(preds, expected):
        assert_close(got, want)  # concurrent: the server may batch them
    assert names and shm_files(names) == [] and server_regions(url, names) == []


def test_shared_memory_is_released_on_error_and_on_garbage_collection(triton_server):
    url = triton_server.grpc_url
    with pytest.raises(ValueError, match="expected uint8 RGB"):
        with DenseClient(url, "seg_unet", use_shm=True) as client:
            client.predict(images()[0])
            names = client.shm_region_names
            assert names and shm_files(names) == names
            client.predict(np.zeros((8, 8, 3), np.float32))
    assert shm_files(names) == [] and server_regions(url, names) == []

    client = DenseClient(url, "seg_unet", use_shm=True)
    client.predict(images()[0])
    names = client.shm_region_names
    assert names and shm_files(names) == names
    del client
    gc.collect()
    assert shm_files(names) == [] and server_regions(url, names) == []


def test_a_sigkilled_clients_regions_are_swept_by_the_next_client(triton_server):
    url = triton_server.grpc_url
    code = ("import sys, numpy as np; from clients import DenseClient; "
            f"c = DenseClient({url!r}, 'seg_unet', use_shm=True); c.predict(np.zeros((8, 8, 3), np.uint8)); "
            "print(' '.join(c.shm_region_names), flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        names = lines.get(timeout=120).split()  # regions made and registered; the client now waits
    finally:
        proc.kill()  # no close(), no finalizer, no atexit: what a SIGKILL or the OOM killer leaves
        proc.wait(timeout=30)
    assert names and all(owner_pid(n) == proc.pid for n in names)
    # Left behind on the server. Their /dev/shm files are not asserted here: any pixelport process
    # on this host (a server stopping, a shm client of another server) may unlink a dead client's
    # files at any moment, by design, and one did once between the kill and this line.
    assert server_regions(url, names) == names
    with DenseClient(url, "seg_unet"):  # without shared memory: no sweep, nothing touched
        assert server_regions(url, names) == names
    with DenseClient(url, "seg_unet", use_shm=True) as client:
        assert server_regions(url, names) == [] and shm_files(names) == []
        assert client.predict(images()[0]).labels is not None


def test_clear_errors_for_missing_model_and_bad_images(triton_server):
    # The launcher keeps the repository index for admins, so the served list is named only where allowed.
    with pytest.raises(ModelNotFoundError, match=r"'no_such_model'.*not served.*served and ready: "
                                                 r"(\[.*'seg_unet'|unknown \(the server lists its models only to admins)"):
        DenseClient(triton_server.grpc_url, "no_such_model")
    with DenseClient(triton_server.grpc_url, "seg_unet") as client:
        for bad in (np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.uint16)):
            with pytest.raises(ValueError, match="cat.png: got .* expected uint8 RGB"):
                client.predict(bad, "cat.png")
        mh, mw = client.contract.size_limit  # from the served config (pixelport.max_size)
        before = client.stats.requests
        with pytest.raises(ContractError, match=rf"{mh + 1}x{mw} is over model 'seg_unet'.s limit of {mh}x{mw}"):
            client.infer_tensors(np.zeros((1, mh + 1, mw, 3), np.uint8))  # refused before sending
        assert client.stats.requests == before
        assert client.predict(np.zeros((1000, 700, 3), np.uint8)).labels.shape == (1000, 700)  # letterboxed


def test_round_robin_over_urls_survives_a_dead_one(triton_server):
    dead = unused_port()
    img = images()[0]
    with DenseClient(triton_server.grpc_url, "seg_unet") as single:
        want = single.predict(img)
    with DenseClient([f"127.0.0.1:{dead}", triton_server.grpc_url], "seg_unet", backoff_s=0.01) as client:
        for _ in range(4):  # half the requests go to the dead server first and fail over
            assert_same(client.predict(img), want)


def write_mixed_folder(folder: Path) -> dict[str, str]:
    """Good and bad files a user might have; returns name -> 'ok' | 'bad'."""
    folder.mkdir(parents=True)
    rgb = images([(45, 70)], seed=3)[0]
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=95)
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)]), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 256).save(folder / "deep16.png")
    (folder / "empty.png").write_bytes(b"")
    jpeg = (folder / "photo.jpg").read_bytes()
    (folder / "corrupt.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "notes.txt").write_text("not an image, not picked up from a folder")
    return {"photo": "ok", "gray": "ok", "rgba": "ok", "deep16": "ok", "empty": "bad", "corrupt": "bad"}


def run_cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """`python -m clients ARGS`; the result also carries the process's `pid`."""
    with subprocess.Popen([sys.executable, "-m", "clients", *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    result.pid = proc.pid
    return result


def test_infer_cli_writes_good_images_and_lists_bad_ones(triton_server, tmp_path):
    expect = write_mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = run_cli("infer", "--url", triton_server.grpc_url, "--model", "seg_unet", str(tmp_path / "in"),
                     "--out", str(out), "--concurrency", "3", "--overlay")
    assert result.returncode == 1, result.stderr
    for stem, state in expect.items():
        written = (out / f"{stem}.png").exists() and (out / f"{stem}_overlay.png").exists()
        assert written == (state == "ok"), stem
    labels = cv2.imread(str(out / "gray.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (45, 70) and labels.dtype == np.uint8
    failed = {Path(f["input"]).name: f["error"] for f in json.loads((out / "failed.json").read_text())}
    assert set(failed) == {"empty.png", "corrupt.jpg"}
    assert "empty file" in failed["empty.png"] and "corrupt" in failed["corrupt.jpg"]
    assert "done 4, failed 2" in result.stdout and "images/s" in result.stdout


def test_infer_cli_depth_and_matting_outputs(triton_server, tmp_path):
    Image.fromarray(images([(50, 80)])[0]).save(tmp_path / "a.png")
    for model, files in (("depth_unet", ["a.png", "a_preview.png"]), ("matting_unet", ["a.png"])):
        out = tmp_path / model
        result = run_cli("infer", "--url", triton_server.grpc_url, "--model", model, str(tmp_path / "a.png"),
                         "--out", str(out), "--shm")
        assert result.returncode == 0, result.stderr
        assert sorted(p.name for p in out.iterdir()) == sorted(files + ["failed.json"])
        main = cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED)
        assert main.shape == (50, 80) and main.dtype == (np.uint16 if model == "depth_unet" else np.uint8)
        left = [f for f in os.listdir(SHM_DIR) if owner_pid(f) == result.pid]  # that run's regions only
        assert left == [] and [n for n in registered(triton_server.grpc_url) if owner_pid(n) == result.pid] == []


def test_infer_cli_exit_2_when_model_missing(triton_server, tmp_path):
    Image.fromarray(images([(10, 10)])[0]).save(tmp_path / "a.png")
    result = run_cli("infer", "--url", triton_server.grpc_url, "--model", "nope", str(tmp_path / "a.png"),
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "not served" in result.stderr


def test_segment_one_example(triton_server, zoo_repository, tmp_path):
    img = images([(77, 123)], seed=4)[0]
    Image.fromarray(img).save(tmp_path / "img.png")
    expected = Reference(zoo_repository, "seg_unet").predict(img).labels
    cv2.imwrite(str(tmp_path / "good.png"), expected)
    cv2.imwrite(str(tmp_path / "bad.png"), (expected + 1) % 255)
    example = REPO_ROOT / "clients" / "examples" / "segment_one.py"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    for name, rc in (("good.png", 0), ("bad.png", 1)):
        result = subprocess.run([sys.executable, str(example), "--url", triton_server.grpc_url, "--model", "seg_unet",
                                 str(tmp_path / "img.png"), str(tmp_path / name)],
                                capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == rc, result.stderr
        assert ("PASS" in result.stdout) == (rc == 0)
    assert len(example.read_text().splitlines()) <= 40  # fits on one screen


def gated_infer_setup(zoo_repository: Path, tmp_path: Path, monkeypatch, total: int, first: int,
                      seed: int) -> tuple[Path, Path, threading.Event]:
    """(repository with seg_unet alone, a folder of `total` images, a gate): `infer` loads the
    first `first` images at once and the rest only once the test opens the gate, so a test can act
    on the server between the two by construction, not by timing."""
    repository = tmp_path / "repo"  # one model only: a quicker restart
    shutil.copytree(zoo_repository / "seg_unet", repository / "seg_unet")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, img in enumerate(images([(40 + i % 50, 90 - i % 40) for i in range(total)], seed=seed)):
        Image.fromarray(img).save(inputs / f"{i:03d}.png")
    gate = threading.Event()
    load_image = clients.cli_infer.load_image

    def gated_load(path, *args):
        if int(Path(path).stem) >= first:
            assert gate.wait(timeout=300), "the test never opened the gate"
        return load_image(path, *args)

    monkeypatch.setattr(clients.cli_infer, "load_image", gated_load)
    return repository, inputs, gate


def infer_in_background(settings: InferSettings, report: InferReport) -> tuple[threading.Thread, dict]:
    """run_infer on a started thread; the dict gets the exception, if the run raised one."""
    box: dict = {}

    def run():
        try:
            run_infer(settings, report)
        except Exception as exc:  # surfaced by the caller's asserts
            box["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    return worker, box


@pytest.mark.slow
def test_server_restart_mid_infer_loses_no_image(zoo_repository, server_settings_factory, tmp_path, monkeypatch):
    """The server stops after the first images are written and before the rest are sent (held
    there by a gate on loading, not by timing); the rest meet the dead server, are retried (counted)
    and all get written once it is back."""
    from serving import start_server

    total, first = 40, 10
    repository, inputs, gate = gated_infer_setup(zoo_repository, tmp_path, monkeypatch, total, first, seed=5)
    settings = server_settings_factory(repository)
    out = tmp_path / "out"
    report = InferReport()
    server = start_server(settings)
    worker, box = infer_in_background(InferSettings(urls=[server.grpc_url], model="seg_unet", inputs=[inputs],
                                                    out=out, concurrency=2, retries=12, backoff_s=0.25), report)
    try:
        wait_until(lambda: len(report.written) == first or not worker.is_alive(), 120, f"{first} images are written")
        assert len(report.written) == first and report.retries == 0, box.get("error")
        server.stop()
        gate.set()
        wait_until(lambda: report.retries > 0 or not worker.is_alive(), 60, "a request meets the stopped server")
        assert report.retries > 0 and len(report.written) == first
        # Restarted from this (main) thread, on the same ports: the client reconnects on its own.
        server = start_server(settings)
        worker.join(timeout=240)
        assert not worker.is_alive(), "infer did not finish"
    finally:
        gate.set()
        server.stop()
        worker.join(timeout=30)
    assert "error" not in box, box.get("error")
    assert report.failed == {} and report.stats.failures == 0
    assert len(report.written) == total and all((out / f"{i:03d}.png").exists() for i in range(total))
    assert json.loads((out / "failed.json").read_text()) == []


def test_server_sigkilled_mid_infer_stops_the_run_and_accounts_for_every_image(zoo_repository, own_server,
                                                                              tmp_path, monkeypatch):
    """SIGKILL, and no server comes back within the retry budget: the image that met it fails as
    unavailable, the images not yet sent are listed as not processed (none waits out the retries
    again), and the same command writes them all once a server is back."""
    total, first = 30, 6
    repository, inputs, killed = gated_infer_setup(zoo_repository, tmp_path, monkeypatch, total, first, seed=6)
    server = own_server(repository)
    out, report = tmp_path / "out", InferReport()
    settings = InferSettings(urls=[server.grpc_url], model="seg_unet", inputs=[inputs], out=out, concurrency=2,
                             retries=3, backoff_s=0.05)
    worker, box = infer_in_background(settings, report)
    try:
        wait_until(lambda: len(report.written) == first or not worker.is_alive(), 120, f"{first} images are written")
        os.kill(server.pid, signal.SIGKILL)
        killed.set()
        worker.join(timeout=120)
        assert not worker.is_alive(), "infer did not stop after the server died"
    finally:
        killed.set()
        worker.join(timeout=30)
    assert "error" not in box, box.get("error")
    assert len(report.written) == first and len(report.written) + len(report.failed) == total
    reasons = list(report.failed.values())
    unavailable = [r for r in reasons if not r.startswith("not processed")]
    assert 1 <= len(unavailable) <= 4 and all("UNAVAILABLE" in r or "unavailable" in r.lower() for r in unavailable)
    assert len(reasons) - len(unavailable) >= total - first - 4  # listed, never sent
    assert {e["input"] for e in json.loads((out / "failed.json").read_text())} == set(report.failed)

    back = own_server(repository, http_port=server.record.http_port, grpc_port=server.record.grpc_port,
                      metrics_port=server.record.metrics_port)
    again = run_infer(settings)
    assert again.failed == {} and len(again.written) == total and back.grpc_url == server.grpc_url

@pytest.mark.slow
def test_tls_against_a_real_triton(triton_server, zoo_repository, own_server, tmp_path):
    """Triton serving gRPC over TLS (`serving start --ssl-cert/--ssl-key`) with a certificate made
    here: the sync and asyncio clients and the infer CLI get what the plaintext server gives."""
    from clientkit import self_signed
    from clients.client import ServerUnavailableError

    repository = tmp_path / "repo"
    shutil.copytree(zoo_repository / "seg_unet", repository / "seg_unet")
    key, cert = self_signed(tmp_path)
    server = own_server(repository, ssl_cert=cert, ssl_key=key)
    imgs = images()[:3]
    with DenseClient(triton_server.grpc_url, "seg_unet") as plain:
        want = plain.predict_batch(imgs)
    with DenseClient(f"grpcs://{server.grpc_url}", "seg_unet", root_cert=str(cert)) as client:
        for got, expected in zip(client.predict_batch(imgs), want):
            assert_same(got, expected)

    async def run():
        async with AsyncDenseClient(server.grpc_url, "seg_unet", ssl=True, root_cert=str(cert)) as client:
            return await client.predict(imgs[0])

    assert_close(asyncio.run(run()), want[0])
    with pytest.raises(ServerUnavailableError):  # plaintext to a TLS endpoint
        DenseClient(server.grpc_url, "seg_unet", retries=0, timeout_s=10)
    Image.fromarray(imgs[0]).save(tmp_path / "a.png")
    out = tmp_path / "out"
    result = run_cli("infer", "--url", server.grpc_url, "--ssl", "--root-cert", str(cert), "--model", "seg_unet",
                     str(tmp_path / "a.png"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert np.array_equal(cv2.imread(str(out / "a.png"), cv2.IMREAD_UNCHANGED), want[0].labels)


def test_a_full_queue_is_retried_not_a_hang(own_server, tmp_path, monkeypatch, caplog):
    """A slow model (every execution ~0.4 s or more) with max_queue_size 1: a burst of 8 sent at
    once finds one request running and one queued, so Triton turns the rest away ("Exceeds maximum
    queue size", UNAVAILABLE) by construction; the client retries them and every image gets its
    own answer, well within a deadline."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "serving"))
    import serving_toys as toys
    from slow_toy import slow_segmentation_onnx

    repository = tmp_path / "repo"
    toys.publish(repository, toys.segmentation_contract("seg_busy", max_batch_size=2, max_queue_size=1),
                 slow_segmentation_onnx(seed=0), version=1)
    server = own_server(repository)
    imgs = images([(20 + i, 30 - i) for i in range(8)], seed=7)

    async def burst():
        async with AsyncDenseClient(server.grpc_url, "seg_busy", concurrency=8, retries=60, backoff_s=0.05,
                                    max_backoff_s=1.0) as client:
            assert client.contract.max_queue_size == 1
            preds = await asyncio.wait_for(client.predict_many(imgs), timeout=240)
            return preds, client.stats

    with caplog.at_level("WARNING", logger="clients.client"):
        preds, stats = asyncio.run(burst())
    assert stats.retries >= 1 and stats.failures == 0
    assert any("Exceeds maximum queue size" in r.getMessage() for r in caplog.records)  # turned away, retried
    with DenseClient(server.grpc_url, "seg_busy") as client:  # one at a time: never turned away
        for img, pred in zip(imgs, preds):
            assert_close(pred, client.predict(img))
        assert client.stats.retries == 0
