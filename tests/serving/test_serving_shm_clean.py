"""`python -m serving status --clean` takes back the shared memory of pixelport clients that died."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.utils.shared_memory as shm

from serving.__main__ import main as serving_main

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def registered(server) -> set[str]:
    with server.client() as client:
        regions = client.get_system_shared_memory_status(as_json=True).get("regions", {})
    return set(regions) if isinstance(regions, dict) else {r["name"] for r in regions}


def test_status_clean_takes_only_dead_clients_regions(toy_server, capsys):
    # A client that registers a region named as clients.shm names them, then dies without cleaning up.
    code = (
        "import os, sys, tritonclient.grpc as g, tritonclient.utils.shared_memory as shm\n"
        "name = f'pixelport_{os.getpid()}_dead_s0_image'\n"
        "shm.create_shared_memory_region(name, '/' + name, 4096)\n"
        f"g.InferenceServerClient({toy_server.grpc_url!r}).register_system_shared_memory(name, '/' + name, 4096)\n"
        "print(name, flush=True)\n"
        "os._exit(0)\n"
    )
    dead = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True).stdout.strip()
    live = f"pixelport_{os.getpid()}_live_s0_image"
    handle = shm.create_shared_memory_region(live, "/" + live, 4096)
    try:
        with toy_server.client() as client:
            client.register_system_shared_memory(live, "/" + live, 4096)
        # (tritonclient's resource tracker may unlink the dead client's segment; the server still maps it.)
        assert {dead, live} <= registered(toy_server)

        assert serving_main(["status", "--clean", "--state-dir", str(toy_server.state_dir)]) == 0
        out = capsys.readouterr().out
        assert f"cleaned 1 shared-memory region(s) of dead clients: {dead}" in out and "READY" in out
        assert dead not in registered(toy_server) and not Path("/dev/shm", dead).exists()
        assert live in registered(toy_server) and Path("/dev/shm", live).exists()  # its client lives
    finally:
        with toy_server.client() as client:
            client.unregister_system_shared_memory(live)
        shm.destroy_shared_memory_region(handle)
