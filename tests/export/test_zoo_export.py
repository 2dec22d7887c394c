"""Zoo models export with default options and pass the parity gate at >= 5 shapes, including sizes
the strides and the pooling bins do not divide (97x131, 250x333).

Every arch and every task, not every pair: an arch is an encoder and decoder, a task is the head and
output that `models.zoo.DenseModel` adds to any of them, so the full 4 x 3 grid ran the same task code
four times (about 250 s of the suite). Each arch runs with a raw-output task (depth or matting: a
max-abs check, stricter through pooling than label agreement), and segmentation runs once."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from clients.contract import CONFIG_FILE, LABELS_FILE, ONNX_FILE, ModelContract
from evaluation.predictors import OnnxPredictor
from export import ExportSettings, export_model
from export_helpers import ZOO_SIZE, parse_config, save_zoo_checkpoint
from models import list_models

TASKS = ("segmentation", "depth", "matting")
CASES = [("fcn", "matting"), ("unet", "segmentation"), ("unet", "depth"), ("pspnet", "depth"), ("upernet", "matting")]


def test_the_cases_cover_every_arch_and_every_task():
    assert {arch for arch, _ in CASES} == set(list_models())
    assert {task for _, task in CASES} == set(TASKS)
    assert all(any(a == arch and t != "segmentation" for a, t in CASES) for arch in list_models())


@pytest.mark.slow
@pytest.mark.parametrize("arch,task", CASES, ids=[f"{a}-{t}" for a, t in CASES])
def test_zoo_model_exports_with_defaults_and_passes_the_gate(tmp_path, arch, task):
    ckpt = save_zoo_checkpoint(tmp_path / f"{arch}_{task}.pt", arch, task)
    repo = tmp_path / "repo"
    result = export_model(ExportSettings(name=f"{arch}_{task}", repository=str(repo), arch=arch,
                                         checkpoint=str(ckpt)))

    report = result.parity
    assert report.passed and report.precision == "fp32"
    shapes = set(report.shapes)
    assert len(shapes) >= 5 and {(97, 131), (250, 333), (ZOO_SIZE, ZOO_SIZE)} <= shapes
    assert {c.batch for c in report.cases} == {1, 4}  # max batch 8 by default, capped at 4
    metric = report.metric  # end to end on a synthetic val split, through the clients' letterbox
    assert (metric["baseline"], metric["candidate"], metric["reference"]) == ("pytorch", "fp32", "ground truth")
    assert metric["drop"] <= 0.005
    if task == "segmentation":
        assert report.worst("labels", "agreement") >= 0.999
    else:
        assert report.worst("raw", "max_abs") <= 1e-3

    # the published directory is what Triton reads, and carries the checkpoint's metadata
    assert result.version == 1 and (result.version_dir / ONNX_FILE).is_file()
    config = parse_config(result.model_dir / CONFIG_FILE)
    contract = ModelContract.from_model_config(config)
    assert contract == result.contract
    assert config.backend == "onnxruntime" and config.max_batch_size == 8
    assert str(contract.resize) == f"letterbox:{ZOO_SIZE}x{ZOO_SIZE}" and contract.pad_value == 114
    assert (result.model_dir / LABELS_FILE).is_file() == (task == "segmentation")
    graph = onnx.load(str(result.version_dir / ONNX_FILE))
    assert [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim][:3] == ["batch", "height", "width"]
    assert not list(result.version_dir.glob("*.data")), "the model must be one self-contained file"

    # the clients' own pipeline reads it back: an odd-sized image comes back at its own size
    image = np.random.default_rng(0).integers(0, 256, (77, 123, 3), dtype=np.uint8)
    prediction = OnnxPredictor(str(result.model_dir)).predict(image)
    assert prediction.shape == (77, 123)


@pytest.mark.slow
def test_the_trainers_checkpoints_publish_with_their_metadata(zoo_repository, zoo_checkpoints):
    """Checkpoints written by models.train (the shared session fixture) export as they are."""
    from export_helpers import assert_repository_consistent
    from models.checkpoint import read_checkpoint

    published = dict(assert_repository_consistent(zoo_repository))
    assert set(published) == set(zoo_checkpoints)
    for name, ckpt in zoo_checkpoints.items():
        meta = read_checkpoint(str(ckpt))[1]
        contract = ModelContract.from_model_config(parse_config(zoo_repository / name / CONFIG_FILE))
        assert contract.task == meta["task"]
        assert str(contract.resize) == "letterbox:{}x{}".format(*meta["input_size"])
        assert contract.mean == tuple(meta["mean"]) and contract.pad_value == meta["pad_value"]
        if contract.task == "segmentation":
            assert contract.class_names == tuple(meta["class_names"])
            assert [list(c) for c in contract.palette] == meta["palette"]
