"""Per-model status of a running Triton: state, version, counts and average queue/compute time.

Reads Triton's repository index (state and the reason a model failed) and its statistics API;
`python -m serving status` prints `format_status(...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from clients.contract import is_valid_name

from .state import ServerState


@dataclass
class ModelStatus:
    name: str
    state: str  # READY | UNAVAILABLE | LOADING | ... | SKIPPED (embedded mode cannot serve it)
    versions: list[str]
    reason: str = ""
    inference_count: int = 0  # requests' items inferred
    execution_count: int = 0  # model executions: fewer than inferences when batching happens
    success_count: int = 0
    fail_count: int = 0
    avg_queue_ms: Optional[float] = None
    avg_compute_ms: Optional[float] = None

    @property
    def ok(self) -> bool:
        return self.state == "READY"


def short_reason(reason: str) -> str:
    """A load failure on one line: the python backend appends the stub's traceback after "At:"."""
    head = reason.split("\n\nAt:", 1)[0]
    return " ".join(head.split())


def _duration(stats: dict, key: str) -> tuple[int, int]:
    entry = stats.get(key, {})
    return int(entry.get("count", 0)), int(entry.get("ns", 0))


def collect_status(client: Any, skipped: Optional[dict[str, str]] = None,
                   headers: Optional[dict[str, str]] = None) -> list[ModelStatus]:
    """One ModelStatus per model in the repository (and per model the embedded mode skipped).

    The repository index is an admin endpoint: `headers` carry the key (TritonServer.admin_headers)."""
    index = client.get_model_repository_index(as_json=True, headers=headers).get("models", [])
    stats = client.get_inference_statistics(as_json=True).get("model_stats", [])
    by_name: dict[str, ModelStatus] = {}
    for entry in index:
        name = entry["name"]
        status = by_name.setdefault(name, ModelStatus(name, entry.get("state", "") or "NOT LOADED", []))
        if entry.get("state") == "READY":
            status.state = "READY"
            status.versions.append(entry.get("version", ""))
        elif entry.get("reason"):
            status.reason = short_reason(entry["reason"])
            if status.state != "READY":
                status.state = entry.get("state") or "UNAVAILABLE"
    queue = {name: [0, 0] for name in by_name}
    compute = {name: [0, 0] for name in by_name}
    for entry in stats:
        status = by_name.get(entry["name"])
        if status is None:
            continue
        status.inference_count += int(entry.get("inference_count", 0))
        status.execution_count += int(entry.get("execution_count", 0))
        infer = entry.get("inference_stats", {})
        status.success_count += _duration(infer, "success")[0]
        status.fail_count += _duration(infer, "fail")[0]
        count, ns = _duration(infer, "queue")
        queue[status.name][0] += count
        queue[status.name][1] += ns
        # compute = input copy + the model's own run + output copy, per request (Triton's split)
        for key in ("compute_input", "compute_infer", "compute_output"):
            compute[status.name][1] += _duration(infer, key)[1]
        compute[status.name][0] += _duration(infer, "compute_infer")[0]
    for name, status in by_name.items():
        if queue[name][0]:
            status.avg_queue_ms = queue[name][1] / queue[name][0] / 1e6
        if compute[name][0]:
            status.avg_compute_ms = compute[name][1] / compute[name][0] / 1e6
        status.versions.sort(key=lambda v: int(v) if v.isdigit() else -1)
    for name, reason in (skipped or {}).items():
        by_name.setdefault(name, ModelStatus(name, "SKIPPED", [], reason))
    return sorted(by_name.values(), key=lambda s: s.name)


def format_status(record: ServerState, statuses: list[ModelStatus]) -> str:
    """A human table plus one line per model that is not serving, saying why."""
    tls = " (TLS)" if record.grpc_ssl else ""
    lines = [
        f"Triton pid {record.pid} ({record.mode}) gRPC {record.bound(record.grpc_port)}{tls}  "
        f"HTTP {record.bound(record.http_port)}  metrics {record.bound(record.metrics_port)}"
        + (f"  (from this machine: {record.grpc_url})" if record.grpc_url != record.bound(record.grpc_port) else ""),
        f"repository {record.repository}"
        + (f"  (served from {record.served_repository})" if record.served_repository != record.repository else ""),
        f"log {record.log_file}",
        "",
    ]
    header = ("MODEL", "STATE", "VERSION", "INFER", "EXEC", "FAIL", "QUEUE_MS", "COMPUTE_MS")
    rows = [header]
    for s in statuses:
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        rows.append((_shown(s.name), s.state, ",".join(s.versions) or "-", str(s.inference_count),
                     str(s.execution_count), str(s.fail_count), fmt(s.avg_queue_ms), fmt(s.avg_compute_ms)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    problems = [s for s in statuses if not s.ok]
    if problems:
        lines.append("")
        lines += [f"{s.state.lower()}: {_shown(s.name)}: {s.reason or 'no reason given'}" for s in problems]
    return "\n".join(lines)


def _shown(name: str) -> str:
    # A directory named with a newline or a space must not break the table: show it quoted.
    return name if is_valid_name(name) else repr(name)
