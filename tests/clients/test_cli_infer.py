"""The infer CLI without a real Triton: output naming, every input accounted for (symbolic-link
loops, unreadable files and folders), file modes, TLS flags, and the exit-2 paths (nothing can run)."""

import json
import os
import stat

import numpy as np
import pytest
from PIL import Image

from clientkit import FakeServer, FakeTriton, self_signed, toy_contract, unused_port
from clients.__main__ import main
from clients.cli_infer import plan_outputs


def test_plan_outputs_mirrors_folders_and_never_collides(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("a.png", "a.jpg", "b.png", "sub/a.png", "notes.txt"):
        (src / name).write_bytes(b"x")
    out = tmp_path / "out"
    flat, failed = plan_outputs([src], out, recursive=False)
    assert [(p.name, s.relative_to(out).as_posix()) for p, s in flat] == [("a.jpg", "a"), ("a.png", "a_2"),
                                                                            ("b.png", "b")]
    deep, failed = plan_outputs([src, src / "b.png", tmp_path / "missing.png"], out, recursive=True)
    stems = [s.relative_to(out).as_posix() for _, s in deep]
    assert stems == ["a", "a_2", "b", "sub/a", "missing"]  # b.png named twice: processed once
    assert failed == {}


def test_links_loops_and_unreadable_entries_are_accounted_for(tmp_path, monkeypatch):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "a.png").write_bytes(b"x")
    (src / "sub" / "b.png").write_bytes(b"x")
    (src / "loop.png").symlink_to(src / "loop.png")  # a link to itself: stat fails with ELOOP
    (src / "ring").symlink_to(src / "ring")  # a looping link without an image extension
    (src / "gone.png").symlink_to(src / "nowhere.png")  # dangling
    (src / "sub" / "up").symlink_to(src)  # a folder link back up: followed once, never round
    (src / "locked").mkdir()
    real_listdir = os.listdir

    def listdir(path):  # tests run as root here, where chmod 000 does not stop anyone
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    top_loop = tmp_path / "argloop.png"
    top_loop.symlink_to(top_loop)
    jobs, failed = plan_outputs([src, top_loop], tmp_path / "out", recursive=True)
    assert sorted(p.relative_to(src).as_posix() for p, _ in jobs) == ["a.png", "sub/b.png"]
    assert set(failed) == {str(src / "loop.png"), str(src / "ring"), str(src / "gone.png"), str(src / "locked"),
                           str(top_loop)}
    assert "symbolic links" in failed[str(top_loop)] and "symbolic links" in failed[str(src / "loop.png")]
    assert "Permission denied" in failed[str(src / "locked")] and "broken" in failed[str(src / "gone.png")]


def test_a_loop_given_by_name_is_a_failed_entry_not_a_traceback(tmp_path, capsys):
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    out = tmp_path / "out"
    assert main(["infer", "--url", "127.0.0.1:1", "--model", "m", str(loop), "--out", str(out)]) == 1
    (entry,) = json.loads((out / "failed.json").read_text())
    assert entry["input"] == str(loop) and "symbolic links" in entry["error"]
    assert "failed 1" in capsys.readouterr().out
    assert stat.S_IMODE((out / "failed.json").stat().st_mode) == 0o644


@pytest.fixture
def toy_server():
    server = FakeServer(FakeTriton(toy_contract()))
    yield server
    server.stop()


def test_outputs_are_0644_and_unreadable_files_fail_with_their_reason(tmp_path, toy_server, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(src / "ok.png")
    (src / "secret.png").write_bytes(b"x")
    real_read_bytes = type(src).read_bytes

    def read_bytes(path):  # root reads anything, so the permission error is simulated
        if path.name == "secret.png":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_bytes(path)

    monkeypatch.setattr(type(src), "read_bytes", read_bytes)
    out = tmp_path / "out"
    old_umask = os.umask(0o077)  # outputs must not inherit a tight umask (mkstemp's 0600)
    try:
        rc = main(["infer", "--url", toy_server.address, "--model", "toy", str(src), "--out", str(out), "--overlay"])
    finally:
        os.umask(old_umask)
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["failed.json", "ok.png", "ok_overlay.png"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in out.iterdir())
    (entry,) = json.loads((out / "failed.json").read_text())
    assert entry["input"] == str(src / "secret.png") and "Permission denied" in entry["error"]


def test_tls_flags(tmp_path, capsys):
    key, cert = self_signed(tmp_path)
    server = FakeServer(FakeTriton(toy_contract()), (key.read_bytes(), cert.read_bytes()))
    try:
        Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "a.png")
        for extra in (["--url", f"grpcs://{server.address}", "--root-cert", str(cert)],
                      ["--url", server.address, "--ssl", "--root-cert", str(cert)]):
            out = tmp_path / f"out{len(extra)}"
            assert main(["infer", *extra, "--model", "toy", str(tmp_path / "a.png"), "--out", str(out)]) == 0
            assert (out / "a.png").exists()
        rc = main(["infer", "--url", server.address, "--client-cert", str(cert), "--model", "toy",
                   str(tmp_path / "a.png"), "--out", str(tmp_path / "o")])
        assert rc == 2 and "--client-key" in capsys.readouterr().err
        (entry,) = json.loads((tmp_path / "o" / "failed.json").read_text())  # still accounted for
        assert "not processed" in entry["error"] and "--client-key" in entry["error"]
    finally:
        server.stop()


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
