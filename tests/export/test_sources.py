"""The other model sources: TorchScript and torch.export .pt2 files, through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch.export import Dim

from export.__main__ import main
from export_helpers import assert_repository_consistent
from user_models import PoolNet


def _export(capsys, tmp_path, *source: str) -> dict:
    report = tmp_path / "parity.json"
    code = main(["--name", "m", "--repository", str(tmp_path / "repo"), *source, "--resize", "letterbox:64x64",
                 "--report", str(report)])
    assert code == 0, capsys.readouterr().err
    data = json.loads(report.read_text())
    assert data["passed"] and {(97, 131), (250, 333)} <= {tuple(c["hw"]) for c in data["cases"]}
    assert assert_repository_consistent(tmp_path / "repo") == [("m", 1)]
    return data


@pytest.mark.slow
def test_torchscript_model_with_adaptive_pooling(tmp_path, capsys):
    traced = torch.jit.trace(PoolNet().eval(), torch.randn(1, 3, 64, 64))
    torch.jit.save(traced, tmp_path / "poolnet.ts")
    _export(capsys, tmp_path, "--torchscript", str(tmp_path / "poolnet.ts"))


@pytest.mark.slow
def test_exported_program_with_dynamic_shapes(tmp_path, capsys):
    dims = {0: Dim("batch", min=1, max=16), 2: Dim("h", min=32, max=2048), 3: Dim("w", min=32, max=2048)}
    program = torch.export.export(PoolNet().eval(), (torch.randn(2, 3, 64, 64),), dynamic_shapes=(dims,))
    torch.export.save(program, tmp_path / "poolnet.pt2")
    _export(capsys, tmp_path, "--exported", str(tmp_path / "poolnet.pt2"))


def test_exported_program_with_a_fixed_size_is_refused_clearly(tmp_path, capsys):
    program = torch.export.export(PoolNet().eval(), (torch.randn(2, 3, 64, 64),))
    torch.export.save(program, tmp_path / "fixed.pt2")
    code = main(["--name", "m", "--repository", str(tmp_path / "repo"), "--exported", str(tmp_path / "fixed.pt2"),
                 "--resize", "letterbox:64x64"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "has a fixed input size (2, 3, 64, 64)" in err and "dynamic_shapes" in err


def test_a_file_that_is_not_torchscript(tmp_path, capsys):
    (tmp_path / "x.ts").write_bytes(b"nope")
    code = main(["--name", "m", "--repository", str(tmp_path / "repo"), "--torchscript", str(tmp_path / "x.ts"),
                 "--resize", "letterbox:64x64"])
    assert code == 2 and "is not a TorchScript file" in capsys.readouterr().err
