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


def test_a_pt2_is_traced_within_its_own_input_ranges(tmp_path):
    """Asking torch for wider ranges than the program's own fails its range checks and makes the
    ONNX exporter trace the model twice; export asks for the intersection up front."""
    from export.onnx_export import _dynamic_shapes, _narrowed
    from export.settings import Profile
    from export.sources import FrozenProgram, _input_ranges

    dims = {0: Dim("batch", min=1, max=16), 2: Dim("h", min=32, max=2048), 3: Dim("w", min=32, max=2048)}
    torch.export.save(torch.export.export(PoolNet().eval(), (torch.randn(2, 3, 64, 64),), dynamic_shapes=(dims,)),
                      tmp_path / "p.pt2")
    program = torch.export.load(tmp_path / "p.pt2")
    assert _input_ranges(program) == {0: (1, 16), 2: (32, 2048), 3: (32, 2048)}

    class Served(torch.nn.Module):  # what _dynamic_shapes reads: served.model.input_ranges
        def __init__(self) -> None:
            super().__init__()
            self.model = FrozenProgram(program.module(), _input_ranges(program))

    class Contract:
        hw_axes = (1, 2)

    profile = Profile((32, 32), (64, 64), (384, 384), 8)
    (got,) = _dynamic_shapes(Contract(), profile, Served())
    assert [(d.min, d.max) for d in (got[0], got[1], got[2])] == [(1, 8), (32, 2048), (32, 2048)]
    (plain,) = _dynamic_shapes(Contract(), profile)  # other sources: no upper bound on H/W
    assert plain[1].min == 32 and plain[1].max > 2**30
    # a range that would exclude the traced size, or leave only it, is left to torch
    assert _narrowed((32, None), (100, 2048), 64) == (32, None)
    assert _narrowed((1, 8), (1, 2), 2) == (1, 8)
    assert _narrowed((32, None), (5, None), 64) == (32, None)
