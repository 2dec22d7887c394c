"""Third-party architectures (Hugging Face `transformers`, tiny configs, random weights, no
downloads) export with the README's plain `--module file.py:factory` command, pass the gate, and
onnxruntime on the published model.onnx matches the eager model.

SegFormer (logits at H/4), UperNet-ConvNeXt (PSP pooling in a plain list), BEiT (patch 16,
relative position bias resized to the patch grid), DPT (patch 16, a baked patch grid) and Depth
Anything (Dinov2, patch 14, `int()` sizes): the last two only run at their traced size, so letterbox
mode falls back to a fixed-size graph by itself. (MobileViT was tried too: with random weights its
H/32 logits give one class everywhere, which the gate rightly refuses as degenerate.)
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
    "beit": ("beit", ["--task", "segmentation", "--num-classes", "5"], 64, None),
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
    return pred.argmax(1).numpy().astype(contract.label_dtype) if contract.task == "segmentation" else pred[:, 0].numpy()


PUBLISHED: dict[str, dict] = {}  # case -> its parity report; each model is exported once per session


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("third_party") / "repo"


def publish(repository: Path, case: str, capsys) -> dict:
    """Export `case` with the README's plain command (once); returns its parity report."""
    if case not in PUBLISHED:
        factory, flags, size, _ = CASES[case]
        report = repository.parent / f"{case}.json"
        code = main(["--name", case, "--repository", str(repository), "--module", f"{HF_MODELS}:{factory}", *flags,
                     "--resize", f"letterbox:{size}x{size}", "--report", str(report)])
        assert code == 0, capsys.readouterr().err
        PUBLISHED[case] = json.loads(report.read_text())
    return PUBLISHED[case]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_third_party_model_exports_with_the_plain_command_and_matches_eager(repository, capsys, case):
    factory, flags, size, fixed = CASES[case]
    data = publish(repository, case, capsys)
    assert data["passed"] and data["degenerate"] is None
    if fixed is not None:
        assert (data["fallback"] is not None) == fixed, data["fallback"]
    contract = ModelContract.from_model_config(read_config_file(repository / case))
    assert contract.size_limit == (size, size)
    if contract.task == "depth":
        assert contract.depth_kind == "disparity"

    image = np.random.default_rng(7).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    session = ort.InferenceSession(str(repository / case / "1" / ONNX_FILE), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": image})[0]
    want = eager(getattr(hf_models, factory)(), image, contract)
    assert got.shape == want.shape == (2, size, size)
    assert_matches(got, want, contract)


def assert_matches(got: np.ndarray, want: np.ndarray, contract: ModelContract) -> None:
    """Labels >= 99.9 % equal (and not one class); depth within 1e-3 of its range."""
    if contract.task == "segmentation":
        assert (got == want).mean() >= 0.999
        assert len(np.unique(want)) > 1, "a one-class prediction would make agreement trivial"
    else:
        span = float(want.max() - want.min())
        assert span > 1e-3 and np.abs(got - want).max() <= 1e-3 * span


@pytest.mark.integration
@pytest.mark.slow
def test_triton_serves_them_and_dense_client_matches_eager_on_an_odd_size_image(repository, capsys, own_server):
    from clients import DenseClient
    from clients.pipeline import postprocess, preprocess

    for case in CASES:
        publish(repository, case, capsys)
    server = own_server(repository)
    image = np.random.default_rng(3).integers(0, 256, (45, 77, 3), dtype=np.uint8)  # odd, wide: letterboxed
    for case, (factory, *_rest) in CASES.items():
        with DenseClient(server.grpc_url, case) as client:
            contract = client.contract
            got = client.predict(image).primary
        batch, transforms = preprocess([image], contract)
        name = contract.output_names[0]
        want = postprocess({name: eager(getattr(hf_models, factory)(), batch, contract)}, transforms, contract)[0]
        assert got.shape == want.primary.shape == image.shape[:2], case
        assert_matches(got, want.primary, contract)


@pytest.mark.slow
def test_depth_anything_in_stride_mode_is_refused_naming_the_line_that_fixes_its_size(tmp_path, capsys):
    repo, report = tmp_path / "repo", tmp_path / "parity.json"
    code = main(["--name", "da", "--repository", str(repo), "--module", f"{HF_MODELS}:depth_anything",
                 "--task", "depth", "--depth-kind", "disparity", "--resize", "stride:14", "--report", str(report)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code in (1, 2), err
    assert "Traceback" not in err and err.endswith("nothing was published")
    # torch.export's guard, in the user's (here: transformers') source, with the line itself
    assert "torch.export guard Eq(" in err and "at transformers/models/" in err and ".py:" in err and ": `" in err
    assert not (repo / "da").exists()
    assert json.loads(report.read_text())["passed"] is False
