"""The deployment files parse as YAML and say what the README promises (they cannot run here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from serving.process import ALLOCATOR_ENV

DEPLOY = Path(__file__).resolve().parents[2] / "serving" / "deploy"
K8S = DEPLOY / "kubernetes"


def load(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    return docs


def by_kind() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load(path):
            out.setdefault(doc["kind"], []).append(doc)
    return out


def assert_restricted(args: list[str], key_reference: str) -> None:
    """Model control, logging and trace are restricted on HTTP and gRPC to the admin key, and no
    gRPC request object is kept for reuse (as `python -m serving start` runs Triton)."""
    from serving import admin

    assert "--grpc-infer-allocation-pool-size=0" in args

    for flag in ("--http-restricted-api=", "--grpc-restricted-protocol="):
        (arg,) = [a for a in args if a.startswith(flag)]
        apis, _, header = arg[len(flag):].partition(":")
        assert set(apis.split(",")) == set(admin.RESTRICTED)
        assert header.startswith(f"{admin.HEADER}={key_reference}")


def test_compose_runs_stock_triton_on_the_repository():
    service = load(DEPLOY / "docker-compose.yml")[0]["services"]["triton"]
    assert service["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert "--model-repository=/models" in service["command"]
    assert "--model-control-mode=explicit" in service["command"] and "--load-model=*" in service["command"]
    assert any(v.endswith(":/models:ro") for v in service["volumes"])
    assert {p.rsplit(":", 2)[1] for p in service["ports"]} == {"8000", "8001", "8002"}
    # Loopback unless told otherwise (PIXELPORT_BIND), and the admin endpoints need the key.
    assert all(p.startswith("${PIXELPORT_BIND:-127.0.0.1}:") for p in service["ports"])
    assert_restricted(service["command"], "${TRITON_ADMIN_KEY:?")
    assert service["environment"] == ALLOCATOR_ENV
    assert "/v2/health/ready" in " ".join(service["healthcheck"]["test"])


def test_deployment_probes_and_repository():
    (deployment,) = by_kind()["Deployment"]
    assert deployment["apiVersion"] == "apps/v1"
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert any(a.startswith("--model-repository=s3://") for a in container["args"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert any(m["mountPath"] == "/dev/shm" for m in container["volumeMounts"])
    assert_restricted(container["args"], "$(TRITON_ADMIN_KEY)")
    (key_env,) = [e for e in container["env"] if e["name"] == "TRITON_ADMIN_KEY"]
    assert key_env["valueFrom"]["secretKeyRef"]["name"] == "pixelport-triton-admin"
    assert {e["name"]: e["value"] for e in container["env"] if e["name"] in ALLOCATOR_ENV} == ALLOCATOR_ENV


def test_services_select_the_deployment():
    kinds = by_kind()
    labels = kinds["Deployment"][0]["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s for s in kinds["Service"]}
    assert {"pixelport-triton", "pixelport-triton-headless"} <= set(services)
    for service in services.values():
        assert service["spec"]["selector"].items() <= labels.items()
    assert {p["port"] for p in services["pixelport-triton"]["spec"]["ports"]} == {8000, 8001, 8002}
    assert services["pixelport-triton-headless"]["spec"]["clusterIP"] == "None"


def test_hpa_scales_the_deployment_on_a_triton_queue_metric():
    kinds = by_kind()
    (hpa,) = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == kinds["Deployment"][0]["metadata"]["name"]
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    # The adapter rule must define the metric the HPA asks for, from Triton's queue counter.
    (adapter,) = kinds["ConfigMap"]
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    rule = next(r for r in rules if r["name"]["as"] == name)
    assert "nv_inference_queue_duration_us" in rule["seriesQuery"]


def test_kustomization_lists_every_manifest():
    (kustomization,) = load(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
