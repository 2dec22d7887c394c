"""The pure helpers of the generic python-backend model (the server tests cover the rest)."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys

import numpy as np
import pytest

from serving_toys import memory_kb


def test_check_input_messages(runtime_model):
    spec = runtime_model.TensorSpec({"name": "image", "data_type": "TYPE_UINT8", "dims": [-1, -1, 3]})
    runtime_model.check_input(spec, np.zeros((2, 5, 7, 3), np.uint8), batched=True)
    with pytest.raises(ValueError, match=r"must be UINT8 \(uint8\), got float32"):
        runtime_model.check_input(spec, np.zeros((1, 5, 7, 3), np.float32), batched=True)
    with pytest.raises(ValueError, match=r"shape \[batch, -1, -1, 3\], got \[1, 5, 7, 4\]"):
        runtime_model.check_input(spec, np.zeros((1, 5, 7, 4), np.uint8), batched=True)
    with pytest.raises(ValueError, match=r"shape \[batch, -1, -1, 3\], got \[5, 7, 3\]"):
        runtime_model.check_input(spec, np.zeros((5, 7, 3), np.uint8), batched=True)
    with pytest.raises(ValueError, match="empty dimension"):
        runtime_model.check_input(spec, np.zeros((1, 0, 7, 3), np.uint8), batched=True)


def test_group_and_split(runtime_model):
    assert runtime_model.group_by_shape([(4, 4), (8, 4), (4, 4), (8, 4), (2, 2)]) == [[0, 2], [1, 3], [4]]
    stacked = np.arange(6 * 2).reshape(6, 2)
    pieces = runtime_model.split_rows(stacked, [1, 3, 2])
    assert [p.shape[0] for p in pieces] == [1, 3, 2]
    np.testing.assert_array_equal(np.concatenate(pieces), stacked)


def test_every_instance_may_use_all_the_cores(runtime_model):
    # as Triton's onnxruntime backend does: a lone request runs at full speed whatever the instance count
    assert runtime_model.default_threads() == len(os.sched_getaffinity(0))


def test_instances_that_share_the_cores_do_not_spin(runtime_model):
    import onnxruntime as ort

    key = "session.intra_op.allow_spinning"
    cores = len(os.sched_getaffinity(0))
    shared = runtime_model.session_options(ort, threads=cores, instances=2)
    assert shared.get_session_config_entry(key) == "0"
    assert shared.intra_op_num_threads == cores and shared.inter_op_num_threads == 1
    alone = runtime_model.session_options(ort, threads=cores, instances=1)
    with pytest.raises(RuntimeError, match="does not have"):  # unset: onnxruntime's default, spinning
        alone.get_session_config_entry(key)
    split = runtime_model.session_options(ort, threads=1, instances=cores)
    with pytest.raises(RuntimeError, match="does not have"):
        split.get_session_config_entry(key)


def test_default_threads_follow_the_cpu_affinity_not_the_machine(runtime_model):
    # A container or taskset limited to one core: the instance gets one thread, whatever cpu_count says.
    from serving.runtime_repo import RUNTIME_MODEL

    code = ("import importlib.util, os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "spec = importlib.util.spec_from_file_location('m', sys.argv[1]); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print(m.default_threads())")
    out = subprocess.run([sys.executable, "-c", code, str(RUNTIME_MODEL)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "1"


def test_copied_constants_match_the_contract(runtime_model):
    """model.py is self-contained (it runs inside the stub), so it copies a few facts: pin them."""
    import clients.contract as contract
    from serving import runtime_repo

    assert runtime_model.ONNX_FILE == contract.ONNX_FILE
    assert runtime_model.CONFIG_FILE == contract.CONFIG_FILE
    assert runtime_model.THREADS_PARAM == contract.PARAM_PREFIX + "intra_op_threads"
    written = contract.ModelContract("m", "depth", contract.Resize("stride", stride=8), output_kind="depth",
                                     intra_op_threads=2).parameters()
    for name in ("THREADS_PARAM", "LAYOUT_PARAM", "MAX_SIZE_PARAM", "MAX_BYTES_PARAM"):
        assert getattr(runtime_model, name) in written, name  # keys export writes and model.py reads
    assert written[runtime_model.LAYOUT_PARAM] in ("NHWC", "NCHW")
    assert (runtime_model.MAX_SIZE_PARAM, runtime_model.MAX_BYTES_PARAM) == (runtime_repo.MAX_SIZE_PARAM,
                                                                             runtime_repo.MAX_BYTES_PARAM)
    for name in ("REQUESTED_KIND_PARAM", "ACCELERATOR_PARAM", "ACCELERATOR_PRECISION_PARAM"):
        assert getattr(runtime_model, name) == getattr(runtime_repo, name), name
    assert {k: np.dtype(v).name for k, v in runtime_model.NUMPY_DTYPES.items()} == contract.NUMPY_DTYPE_NAMES


def test_release_pages_frees_a_refused_input_in_shared_memory_and_nothing_else(runtime_model):
    page, pages = mmap.PAGESIZE, 256
    region = mmap.mmap(-1, pages * page, flags=mmap.MAP_SHARED)  # shmem, like the python backend's pool
    view = np.frombuffer(region, np.uint8)
    view[:] = 7
    before = memory_kb(os.getpid())["RssShmem"]
    assert runtime_model.release_pages(view[100:-100])  # neither end on a page boundary
    after = memory_kb(os.getpid())["RssShmem"]  # before reading the pages faults them back in
    assert after <= before - (pages - 2) * page // 1024 + 16
    assert (view[:page] == 7).all() and (view[-page:] == 7).all()  # partial pages at the ends are kept
    assert not view[page:-page].any()  # the whole pages inside were handed back: they read as zeros
    assert not runtime_model.release_pages(view[10:20])  # no whole page inside
    private = np.full(pages * page, 7, np.uint8)  # private memory: madvise refuses, nothing changes
    assert not runtime_model.release_pages(private) and (private == 7).all()
    del view
    region.close()
