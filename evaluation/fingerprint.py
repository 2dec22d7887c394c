"""What produced a report: digests of the model (weights, served config, version) and of the
evaluation settings (inference mode, crop, stride, flips, scales, label map, metric settings).

Every report carries both; `merge` refuses shards whose fingerprints differ and names the field,
and a state file is resumed only by the same model with the same settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Optional

from clients.contract import CONFIG_FILE, PARAM_PREFIX, ModelContract

log = logging.getLogger(__name__)
WHOLE = {"mode": "whole", "crop": None, "stride": None, "flip": False, "scales": [1.0]}
# The exporter may record the weights' digest in config.pbtxt; a remote server shows nothing else of them.
WEIGHTS_PARAM = PARAM_PREFIX + "weights_sha256"


def sha256_file(path: "str | Path", chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def contract_digest(contract: ModelContract) -> str:
    """The served contract (task, resize, mean/std, classes, outputs, ...) as one digest; the same
    whether it was read from config.pbtxt on disk or from the server's get_model_config."""
    return sha256_json(asdict(contract))


def version_files_digest(version_dir: Path) -> str:
    """One digest over every file of a version directory (model.onnx and any external-data files)."""
    files = sorted(p for p in version_dir.rglob("*") if p.is_file())
    return sha256_json([[p.relative_to(version_dir).as_posix(), sha256_file(p)] for p in files])


def onnx_fingerprint(model_file: Path, version: Optional[int], contract: ModelContract) -> dict[str, Any]:
    model_dir = model_file.parent.parent
    return {"name": contract.name, "version": version, "weights_sha256": version_files_digest(model_file.parent),
            "config_sha256": sha256_file(model_dir / CONFIG_FILE), "contract_sha256": contract_digest(contract)}


def torch_fingerprint(checkpoint: str, contract: ModelContract) -> dict[str, Any]:
    return {"name": contract.name, "version": None, "weights_sha256": sha256_file(checkpoint),
            "config_sha256": None, "contract_sha256": contract_digest(contract)}


def triton_fingerprint(predictor: Any) -> dict[str, Any]:
    """What the server tells: its config (digest), the ready version(s), and a weights digest only
    if the published config records one (Triton has no API that reveals the weights)."""
    from clients.client import make_grpc_client

    contract = predictor.contract
    out: dict[str, Any] = {"name": predictor.name, "version": None, "weights_sha256": None, "config_sha256": None,
                           "contract_sha256": contract_digest(contract)}
    url = predictor.client.urls[0]
    client = make_grpc_client(url)
    try:
        config = client.get_model_config(predictor.name, as_json=True).get("config", {})
        out["config_sha256"] = sha256_json(config)
        weights = config.get("parameters", {}).get(WEIGHTS_PARAM, {}).get("string_value")
        out["weights_sha256"] = weights or None
        # Model metadata lists the versions the server serves (the repository index would say more,
        # but it is a model-control endpoint, restricted by default).
        metadata = client.get_model_metadata(predictor.name, as_json=True)
        versions = sorted(int(v) for v in metadata.get("versions", []) if str(v).isdigit())
        out["version"] = versions[0] if len(versions) == 1 else (versions or None)
    except Exception as exc:  # a fingerprint is a record, never a reason to stop an evaluation
        log.warning("could not fingerprint %s on %s: %s", predictor.name, url, exc)
    finally:
        client.close()
    return out


def model_fingerprint(predictor: Any) -> dict[str, Any]:
    """The model's fingerprint for any predictor (a predictor may define its own `fingerprint()`)."""
    own = getattr(predictor, "fingerprint", None)
    if callable(own):
        return dict(own())
    if predictor.backend == "onnx":
        return onnx_fingerprint(Path(predictor.source), getattr(predictor, "version", None), predictor.contract)
    if predictor.backend == "torch":
        return torch_fingerprint(predictor.source, predictor.contract)
    if predictor.backend == "triton":
        return triton_fingerprint(predictor)
    return {"name": predictor.name, "source": predictor.source}


def inference_settings(predictor: Any, override: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """How images were fed to the model: mode (whole | slide), crop, stride, flip, scales: from the
    predictor's sliding window (`predictor.window`, a clients.window.SlideWindow) or its own
    `inference_settings()`; `override` wins over both."""
    if override is not None:
        return {**WHOLE, **override}
    own = getattr(predictor, "inference_settings", None)
    if callable(own):
        return {**WHOLE, **own()}
    window = getattr(predictor, "window", None)
    if window is None:
        return dict(WHOLE)
    return {"mode": "slide", "crop": list(window.crop), "stride": list(window.stride), "flip": bool(window.flip),
            "scales": [float(x) for x in window.scales]}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: the field names a merge error can point at."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out if value else {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): value}


def fingerprint_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    fa, fb = flatten(a), flatten(b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text[:12] + "..." if len(text) > 15 and isinstance(value, str) else text
