"""The config tuner: its search space, frontier and config edits (fast), and one short run on the
real Triton with a tiny model and two candidates (integration, slow). Never asserts on timings."""

from __future__ import annotations

import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from benchmarks.tune import (THREADS_PARAM, Candidate, Point, TuneSettings, apply, at_budget, candidates,
                             default_candidate, frontier)
from clients.contract import list_versions, read_config_file

CONFIG = """
name: "m"
max_batch_size: 8
dynamic_batching { default_queue_policy { max_queue_size: 64 } }
instance_group { count: 1 kind: KIND_CPU }
parameters { key: "pixelport.max_batch_size" value { string_value: "8" } }
"""


def _config() -> mc.ModelConfig:
    return text_format.Parse(CONFIG, mc.ModelConfig())


def _settings(tmp_path, **kw) -> TuneSettings:
    (tmp_path / "config.pbtxt").write_text(CONFIG)
    return TuneSettings(model_dir=str(tmp_path), budget_p99_ms=100, **kw)


def test_candidates_start_with_the_default_and_respect_cores_batching_and_the_bound(tmp_path):
    default = default_candidate(_config())
    assert default == Candidate(1, 0, 8, 0)
    cands = candidates(_settings(tmp_path, cores=2, max_candidates=50), default)
    assert cands[0] == default
    assert len(cands) == len(set(cands))
    assert all(c.instances * max(c.threads, 1) <= 2 for c in cands)
    assert all(c.queue_delay_us == 0 for c in cands if c.max_batch <= 1)  # no delay without batching
    assert all(c.max_batch <= 8 for c in cands)
    assert Candidate(2, 1, 8, 2000) in cands and Candidate(2, 2, 8, 0) not in cands
    assert len(candidates(_settings(tmp_path, cores=2, max_candidates=3), default)) == 3


def test_apply_sets_instances_threads_batch_and_delay_and_keeps_the_rest():
    cfg = apply(_config(), Candidate(2, 1, 4, 2000))
    assert cfg.instance_group[0].count == 2
    assert cfg.parameters[THREADS_PARAM].string_value == "1"
    assert cfg.max_batch_size == 4 and cfg.parameters["pixelport.max_batch_size"].string_value == "4"
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
    assert cfg.dynamic_batching.default_queue_policy.max_queue_size == 64  # untouched
    unbatched = apply(_config(), Candidate(1, 0, 1, 0))
    assert not unbatched.HasField("dynamic_batching") and THREADS_PARAM not in unbatched.parameters
    text_format.Parse(text_format.MessageToString(cfg), mc.ModelConfig())  # still Triton's schema


def test_frontier_and_throughput_at_budget():
    pts = [Point({}, "a", 1, 10.0, 5, 20), Point({}, "a", 2, 15.0, 8, 40),
           Point({}, "b", 1, 9.0, 5, 30), Point({}, "b", 2, 18.0, 9, 90)]
    front = frontier(pts)
    assert [p.label for p in front] == ["a", "a", "b"]  # b@1 is dominated by a@1
    assert not pts[2].frontier
    assert at_budget(pts, "a", 50) == 15.0 and at_budget(pts, "b", 50) == 9.0
    assert at_budget(pts, "b", 10) == 0.0


def test_settings_refuse_a_missing_config_and_a_bad_budget(tmp_path):
    with pytest.raises(ValueError, match="config.pbtxt"):
        TuneSettings(model_dir=str(tmp_path), budget_p99_ms=10)
    (tmp_path / "config.pbtxt").write_text(CONFIG)
    with pytest.raises(ValueError, match="budget"):
        TuneSettings(model_dir=str(tmp_path), budget_p99_ms=0)


def tiny_model_dir(root, name: str = "tiny"):
    """<root>/<name>: a hand-built served graph (uint8 NHWC in -> 1x1 conv -> argmax -> uint8 labels)
    with the contract's config: no torch export, so the test spends its time on Triton only."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from clients.contract import ModelContract, Resize

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 3, 1, 1)).astype(np.float32), "w")
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["nchw"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Conv", ["f", "w"], ["logits"]),
             helper.make_node("ArgMax", ["logits"], ["am"], axis=1, keepdims=0),
             helper.make_node("Cast", ["am"], ["labels"], to=TensorProto.UINT8)]
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("image", TensorProto.UINT8, ["b", "h", "w", 3])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["b", "h", "w"])], [w])
    model_dir = root / name
    (model_dir / "1").mkdir(parents=True)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                    str(model_dir / "1" / "model.onnx"))
    contract = ModelContract(name=name, task="segmentation", resize=Resize.parse("letterbox:32x32"), num_classes=3,
                             max_batch_size=4)
    (model_dir / "config.pbtxt").write_text(contract.to_pbtxt())
    (model_dir / "labels.txt").write_text(contract.labels_txt())
    return model_dir


@pytest.mark.integration
@pytest.mark.slow
def test_tune_two_candidates_on_real_triton_publishes_the_best_as_a_new_version(tmp_path):
    from benchmarks.tune import tune

    model_dir = tiny_model_dir(tmp_path / "repo")
    before = list_versions(model_dir)
    s = TuneSettings(model_dir=str(model_dir), budget_p99_ms=1e6, shape=(32, 32), duration_s=0.3,
                     windows=2, concurrency=(1, 2), instances=(1,), threads=(1,), max_batch=(1,),
                     queue_delay_us=(0,), max_candidates=2, out=str(tmp_path / "out"))
    result = tune(s)
    labels = {p.label for p in result.points}
    assert len(labels) == 2 and {p.concurrency for p in result.points} == {1, 2}
    assert all(p.throughput > 0 and p.p99_ms >= p.p50_ms for p in result.points)
    assert any(p.frontier for p in result.points)
    assert json.loads((tmp_path / "out" / "tune.json").read_text())["model"] == "tiny"
    after = list_versions(model_dir)
    if result.published_version:  # the best beat the default: a new version with the tuned config
        assert sorted(after) == sorted(before) + [result.published_version]
        cfg = read_config_file(model_dir / "config.pbtxt")
        assert cfg.max_batch_size == result.best["max_batch"]
        assert cfg.instance_group[0].count == result.best["instances"]
        assert (model_dir / str(result.published_version) / "model.onnx").is_file()
    else:  # the default won: the repository is as it was
        assert after == before and result.best_throughput == result.default_throughput
