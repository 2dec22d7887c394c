"""Wrong inputs give one clear line on stderr and exit 2, never a traceback, and touch nothing."""

from __future__ import annotations

import pytest
import torch

from export.__main__ import main
from export_helpers import USER_MODELS, run_cli, save_zoo_checkpoint
from models import create_model


def _fail(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err and err[-1].startswith("export: error: ")
    return err[-1]


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory):
    return save_zoo_checkpoint(tmp_path_factory.mktemp("ck") / "unet.pt", "unet")


def test_unknown_arch_lists_the_known_ones(tmp_path, capsys, unet_ckpt):
    msg = _fail(["--name", "m", "--repository", str(tmp_path / "r"), "--arch", "resnet", "--checkpoint",
                 str(unet_ckpt)], capsys)
    assert "unknown arch 'resnet'" in msg and "fcn, pspnet, unet, upernet" in msg


def test_checkpoint_of_another_arch_names_the_keys_and_the_fix(tmp_path, capsys, unet_ckpt):
    msg = _fail(["--name", "m", "--repository", str(tmp_path / "r"), "--arch", "pspnet", "--checkpoint",
                 str(unet_ckpt)], capsys)
    assert "missing keys (first: 'decoder.ppm." in msg
    assert "unexpected keys (first: 'decoder.blocks." in msg
    assert "did you mean --arch unet?" in msg


def test_plain_state_dict_of_another_arch_is_recognised_by_its_keys(tmp_path, capsys):
    torch.save(create_model("upernet", num_classes=5, width=8).state_dict(), tmp_path / "plain.pt")
    msg = _fail(["--name", "m", "--repository", str(tmp_path / "r"), "--arch", "fcn", "--checkpoint",
                 str(tmp_path / "plain.pt")], capsys)
    assert "unexpected keys" in msg and "did you mean --arch upernet?" in msg


def test_wrong_class_count_names_the_mismatched_shape(tmp_path, capsys, unet_ckpt):
    msg = _fail(["--name", "m", "--repository", str(tmp_path / "r"), "--arch", "unet", "--checkpoint",
                 str(unet_ckpt), "--num-classes", "7"], capsys)
    assert "shape mismatches (first: 'classifier.weight'" in msg


@pytest.mark.parametrize("flag", ["--checkpoint", "--torchscript", "--exported"])
def test_missing_files_are_named(tmp_path, capsys, flag):
    source = ["--arch", "unet", "--checkpoint"] if flag == "--checkpoint" else [flag]
    msg = _fail(["--name", "m", "--repository", str(tmp_path / "r"), *source, str(tmp_path / "nope.pt")], capsys)
    assert f"{flag} '{tmp_path / 'nope.pt'}': no such file" in msg


def test_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    msg = _fail(["--name", "m", "--repository", str(tmp_path / "r"), "--arch", "unet", "--checkpoint",
                 str(tmp_path / "junk.pt")], capsys)
    assert "cannot load checkpoint" in msg


@pytest.mark.parametrize("name", ["../evil", "a/b", "bad name", "-dash", ".hidden", "x" * 200, "semi;colon"])
def test_unsafe_model_names_are_refused_before_anything_is_written(tmp_path, capsys, unet_ckpt, name):
    msg = _fail([f"--name={name}", "--repository", str(tmp_path / "r"), "--arch", "unet", "--checkpoint",
                 str(unet_ckpt)], capsys)
    assert "is not a safe model name" in msg
    assert not (tmp_path / "r").exists() and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("argv,expect", [
    ([], "give exactly one model source"),
    (["--arch", "unet"], "--arch needs --checkpoint"),
    (["--arch", "unet", "--checkpoint", "x.pt", "--torchscript", "y.ts"], "give exactly one model source"),
    (["--module", "no_colon"], "--module must look like 'pkg.mod:factory'"),
    (["--module", "not_a_module_anywhere:f"], "cannot import 'not_a_module_anywhere'"),
    (["--module", f"{USER_MODELS}:Missing"], "has no attribute 'Missing'"),
    (["--module", f"{USER_MODELS}:TinyNet", "--resize", "fit:64"], "--resize must look like"),
    (["--module", f"{USER_MODELS}:TinyNet", "--fp16", "--int8", "--calibration", "d"],
     "choose one of --fp16 and --int8"),
    (["--module", f"{USER_MODELS}:TinyNet", "--int8"], "--int8 needs --calibration"),
    (["--module", f"{USER_MODELS}:TinyNet", "--mean", "0.5,0.5"], "--mean needs three numbers"),
    (["--module", f"{USER_MODELS}:TinyNet"], "no input size known: pass --resize"),
    (["--module", f"{USER_MODELS}:TinyNet", "--resize", "stride:32", "--static"], "--static needs a fixed size"),
    (["--module", f"{USER_MODELS}:PoolNet", "--task", "depth", "--resize", "letterbox:64x64"],
     "the model outputs 4 channel(s) but a depth model needs 1; check --task and --num-classes"),
    pytest.param(["--module", f"{USER_MODELS}:TinyNet", "--resize", "letterbox:64x64", "--tensorrt"],
                 "--tensorrt needs the `tensorrt`", marks=pytest.mark.needs_no_tensorrt),
])
def test_bad_flag_combinations(tmp_path, capsys, argv, expect):
    msg = _fail(["--name", "m", "--repository", str(tmp_path / "r"), *argv], capsys)
    assert expect in msg
    assert not list((tmp_path / "r").glob("m")), "nothing published"


def test_the_cli_prints_one_line_and_no_traceback(tmp_path):
    done = run_cli("--name", "m", "--repository", str(tmp_path / "r"), "--arch", "resnet", "--checkpoint", "x.pt",
                   timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["export: error: unknown arch 'resnet'; known archs: "
                                                "fcn, pspnet, unet, upernet"]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_the_report_is_written_even_when_the_export_stops_before_the_gate(tmp_path, capsys):
    import json

    report = tmp_path / "parity.json"
    msg = _fail(["--name", "m", "--repository", str(tmp_path / "r"), "--module", f"{USER_MODELS}:TinyNet",
                 "--report", str(report)], capsys)
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["cases"] == [] and "no input size known" in data["error"]
    assert msg.endswith(data["error"])


def test_an_unexpected_failure_is_one_line_too(tmp_path, capsys, monkeypatch):
    import export.api

    def boom(*args, **kwargs):
        raise KeyError("pixel_values")

    monkeypatch.setattr(export.api, "export_model", boom)
    msg = _fail(["--name", "m", "--repository", str(tmp_path / "r"), "--module", f"{USER_MODELS}:TinyNet"], capsys)
    assert msg == "export: error: unexpected KeyError: 'pixel_values' (run with -v for the traceback)"
