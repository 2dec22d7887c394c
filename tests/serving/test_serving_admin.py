"""Model control is locked by default: the admin endpoints need the key `start` keeps in its state dir."""

from __future__ import annotations

import base64
import json
import stat
import urllib.error
import urllib.request

import pytest
from tritonclient.utils import InferenceServerException

from serving import admin
from serving.__main__ import main as serving_main
from serving_toys import assert_matches, image, infer_input, reference

pytestmark = pytest.mark.integration


def http(server, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_key_file_is_private(toy_server):
    path = toy_server.state_dir / admin.KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(admin.read_key(toy_server.state_dir)) >= 32


def test_uploading_a_model_without_the_key_is_refused(toy_server, toy_repository):
    evil = base64.b64encode(b"import os\nos.system('touch /tmp/pwned')\n").decode()
    config = json.dumps({"name": "evil", "backend": "python", "max_batch_size": 0,
                         "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
                         "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]})
    body = {"parameters": {"config": config, "file:1/model.py": evil}}
    for name in ("evil", "seg"):  # a new model, and an override of a serving one
        code, text = http(toy_server, "POST", f"/v2/repository/models/{name}/load", body)
        assert code >= 400 and "restricted" in text, (code, text)
    with toy_server.client() as client:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.load_model("evil", config=config, files={"file:1/model.py": evil.encode()})
        assert not client.is_model_ready("evil")
        x = image(31)
        assert_matches(client.infer("seg", infer_input(x)), reference(toy_repository, "seg", "1", x))


def test_unload_and_index_without_the_key_are_refused(toy_server, toy_repository):
    code, text = http(toy_server, "POST", "/v2/repository/models/seg/unload", {})
    assert code >= 400 and "restricted" in text, (code, text)
    code, text = http(toy_server, "POST", "/v2/repository/index", {})
    assert code >= 400 and "restricted" in text, (code, text)
    with toy_server.client() as client:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.unload_model("seg")
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_log_settings()
        x = image(32)
        assert client.is_model_ready("seg")
        assert_matches(client.infer("seg", infer_input(x)), reference(toy_repository, "seg", "1", x))
    # With the key the index answers (and open endpoints never needed it).
    key = admin.read_key(toy_server.state_dir)
    code, text = http(toy_server, "POST", "/v2/repository/index", {}, admin.http_headers(key))
    assert code == 200 and '"seg"' in text
    code, _ = http(toy_server, "GET", "/v2/models/seg/config")
    assert code == 200


def test_cli_reload_and_status_carry_the_key(toy_server, capsys):
    # seg_live: the other tests use seg and depth, whose stubs a reload would replace under them.
    assert serving_main(["reload", "seg_live", "--state-dir", str(toy_server.state_dir)]) == 0
    assert "reloaded seg_live: serving version 1" in capsys.readouterr().out
    assert serving_main(["status", "--state-dir", str(toy_server.state_dir)]) == 0
    assert "READY" in capsys.readouterr().out
