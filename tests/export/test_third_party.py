"""Third-party architectures (Hugging Face `transformers`, tiny configs, random weights, no
downloads) export with the README's plain `--module file.py:factory` command, pass the gate, and
onnxruntime on the published model.onnx matches the eager model.

SegFormer (logits at H/4), UperNet-ConvNeXt (PSP pooling in a plain list), MobileViT (unfold/fold
transformer blocks, logits at H/32), DPT (patch 16, a baked patch grid) and Depth Anything (Dinov2,
patch 14, `int()` sizes): the last two only run at their traced size, so letterbox mode falls back
to a fixed-size graph by itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from clients.contract import ONNX_FILE, ModelContract, read_config_file
from export.__main__ import main

pytest.importorskip("transformers", reason="the dev extra installs transformers")
import hf_models  # noqa: E402  (after the importorskip)

HF_MODELS = Path(hf_models.__file__)
# name: (factory, task flags, letterbox size, whether only a fixed-size graph can pass)
CASES = {
    "segformer": ("segformer", ["--task", "segmentation", "--num-classes", "5"], 64, False),
    "upernet_convnext": ("upernet_convnext", ["--task", "segmentation", "--num-classes", "5"], 64, False),
    "mobilevit": ("mobilevit", ["--task", "segmentation", "--num-classes", "5"], 64, None),
    "dpt": ("dpt", ["--task", "depth", "--depth-kind", "disparity"], 64, True),
    "depth_anything": ("depth_anything", ["--task", "depth", "--depth-kind", "disparity"], 56, True),
}


def eager(model: torch.nn.Module, image: np.ndarray, contract: ModelContract) -> np.ndarray:
    """The user's model as they would run it: normalise, forward, upsample to the input, argmax."""
    x = torch.from_numpy(image).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(contract.mean).view(1, 3, 1, 1)) / torch.tensor(contract.std).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(pixel_values=x)
    pred = out.logits if contract.task == "segmentation" else out.predicted_depth[:, None]
    if pred.shape[-2:] != x.shape[-2:]:
        pred = F.interpolate(pred, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return pred.argmax(1).numpy() if contract.task == "segmentation" else pred[:, 0].numpy()


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_third_party_model_exports_with_the_plain_command_and_matches_eager(tmp_path, capsys, case):
    factory, flags, size, fixed = CASES[case]
    repo, report = tmp_path / "repo", tmp_path / "parity.json"
    code = main(["--name", case, "--repository", str(repo), "--module", f"{HF_MODELS}:{factory}", *flags,
                 "--resize", f"letterbox:{size}x{size}", "--report", str(report)])
    assert code == 0, capsys.readouterr().err
    data = json.loads(report.read_text())
    assert data["passed"] and data["degenerate"] is None
    if fixed is not None:
        assert (data["fallback"] is not None) == fixed, data["fallback"]
    contract = ModelContract.from_model_config(read_config_file(repo / case))
    assert contract.size_limit == (size, size)
    if case.startswith("d"):
        assert contract.depth_kind == "disparity"

    image = np.random.default_rng(7).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(repo / case / "1" / ONNX_FILE), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": image})[0]
    want = eager(getattr(hf_models, factory)(), image, contract)
    assert got.shape == want.shape == (2, size, size)
    if contract.task == "segmentation":
        assert (got == want).mean() >= 0.999
        assert len(np.unique(want)) > 1, "a one-class prediction would make agreement trivial"
    else:
        span = float(want.max() - want.min())
        assert span > 1e-3 and np.abs(got - want).max() <= 1e-3 * span


@pytest.mark.slow
def test_depth_anything_in_stride_mode_is_refused_naming_the_line_that_fixes_its_size(tmp_path, capsys):
    repo, report = tmp_path / "repo", tmp_path / "parity.json"
    code = main(["--name", "da", "--repository", str(repo), "--module", f"{HF_MODELS}:depth_anything",
                 "--task", "depth", "--depth-kind", "disparity", "--resize", "stride:14", "--report", str(report)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code in (1, 2), err
    assert "Traceback" not in err and err.endswith("nothing was published")
    # torch.export's guard, in the user's (here: transformers') source, with the line itself
    assert "torch.export guard " in err and "transformers/models/" in err and ".py:" in err and ": `" in err
    assert not (repo / "da").exists()
    assert json.loads(report.read_text())["passed"] is False
