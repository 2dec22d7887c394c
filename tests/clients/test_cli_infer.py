"""The infer CLI without a server: output naming, and the exit-2 paths (nothing can run)."""

import json

import numpy as np
from PIL import Image

from clientkit import unused_port
from clients.__main__ import main
from clients.cli_infer import plan_outputs


def test_plan_outputs_mirrors_folders_and_never_collides(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("a.png", "a.jpg", "b.png", "sub/a.png", "notes.txt"):
        (src / name).write_bytes(b"x")
    out = tmp_path / "out"
    flat = plan_outputs([src], out, recursive=False)
    assert [(p.name, s.relative_to(out).as_posix()) for p, s in flat] == [("a.jpg", "a"), ("a.png", "a_2"),
                                                                            ("b.png", "b")]
    deep = plan_outputs([src, src / "b.png", tmp_path / "missing.png"], out, recursive=True)
    stems = [s.relative_to(out).as_posix() for _, s in deep]
    assert stems == ["a", "a_2", "b", "sub/a", "missing"]  # b.png named twice: processed once


def test_exit_2_without_images_or_server(tmp_path, capsys):
    assert main(["infer", "--url", "127.0.0.1:1", "--model", "m", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no images found" in capsys.readouterr().err

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    rc = main(["infer", "--url", f"127.0.0.1:{unused_port()}", "--model", "seg_unet", str(tmp_path / "a.png"),
               "--out", str(out), "--retries", "0"])
    assert rc == 2
    assert "UNAVAILABLE" in capsys.readouterr().err
    (entry,) = json.loads((out / "failed.json").read_text())  # every input accounted for
    assert entry["input"].endswith("a.png") and "not processed" in entry["error"]
