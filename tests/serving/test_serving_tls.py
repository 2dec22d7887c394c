"""Beyond loopback: a warning, the real bound address in the banner, and TLS on the gRPC endpoint."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import serving_toys as toys
from serving import ServerSettings, format_status, state as state_store
from serving.process import server_command
from serving_toys import assert_matches, image, infer_input, reference


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and localhost (openssl: `cryptography` is not installed)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_settings_and_flags(tmp_path):
    cert, key = self_signed(tmp_path)
    with pytest.raises(ValueError, match="both --ssl-cert and --ssl-key"):
        ServerSettings(repository=tmp_path, ssl_cert=cert)
    with pytest.raises(ValueError, match="does not exist"):
        ServerSettings(repository=tmp_path, ssl_cert=cert, ssl_key=tmp_path / "nope.pem")
    settings = ServerSettings(repository=tmp_path, ssl_cert=cert, ssl_key=key)
    cmd = server_command(Path("/bin/tritonserver"), Path("/r"), Path("/b"), settings, "p_", "K")
    assert {"--grpc-use-ssl=true", f"--grpc-server-cert={cert}", f"--grpc-server-key={key}"} <= set(cmd)
    assert not ServerSettings(repository=tmp_path).exposed
    assert ServerSettings(repository=tmp_path, host="0.0.0.0").exposed
    assert not ServerSettings(repository=tmp_path, host="::1").exposed


def test_banner_shows_the_bound_address():
    record = state_store.ServerState(pid=1, host="0.0.0.0", http_port=1, grpc_port=2, metrics_port=3, mode="embedded",
                                     repository="/r", served_repository="/s", binary="/b", log_file="/l",
                                     shm_prefix="p_", grpc_ssl=True)
    banner = format_status(record, []).splitlines()[0]
    assert "gRPC 0.0.0.0:2 (TLS)" in banner and "HTTP 0.0.0.0:1" in banner and "metrics 0.0.0.0:3" in banner
    assert "from this machine: 127.0.0.1:2" in banner


@pytest.mark.integration
def test_exposed_tls_server_warns_and_serves_only_tls(tmp_path, own_server, caplog):
    repository = tmp_path / "model_repository"
    toys.publish(repository, toys.segmentation_contract("seg"), toys.segmentation_onnx(seed=8), version=1)
    cert, key = self_signed(tmp_path)
    with caplog.at_level(logging.WARNING, logger="serving"):
        server = own_server(repository, host="0.0.0.0", ssl_cert=cert, ssl_key=key)
    assert any("binding Triton to 0.0.0.0" in r.getMessage() for r in caplog.records), caplog.text
    x = image(12)
    with grpcclient.InferenceServerClient(server.grpc_url, ssl=True, root_certificates=str(cert)) as client:
        assert_matches(client.infer("seg", infer_input(x)), reference(repository, "seg", "1", x))
    with grpcclient.InferenceServerClient(server.grpc_url) as plain:  # no TLS: refused
        with pytest.raises(InferenceServerException):
            plain.infer("seg", infer_input(x), client_timeout=10)
    status = format_status(server.record, server.status())  # the launcher's own client speaks TLS
    assert f"gRPC 0.0.0.0:{server.record.grpc_port} (TLS)" in status.splitlines()[0] and "READY" in status
