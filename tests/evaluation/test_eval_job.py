"""The Kubernetes Indexed Job for sharded evaluation: the manifest parses and is consistent, and its
exact shell commands, run here for N = 3 against a real Triton, give the unsharded report; the merge
step refuses an incomplete or mismatched set."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evaluation.cli_eval import EXIT_CODES, EXIT_USAGE
from evalkit import make_pixelport, publish_toy

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "serving" / "deploy" / "kubernetes" / "eval" / "eval-job.yaml"


def docs() -> dict[str, dict]:
    out = {}
    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        out[doc["metadata"]["name"] if doc["kind"] != "PersistentVolumeClaim" else "pvc"] = doc
    return out


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def script(container: dict) -> str:
    assert container["command"] == ["sh", "-c"]
    (text,) = container["args"]
    assert "$(" not in text  # kubelet would try to expand $(NAME) itself; the scripts use the shell's
    return text


def test_manifest_is_an_indexed_job_with_a_merge_step():
    d = docs()
    job, merge = d["pixelport-eval"], d["pixelport-eval-merge"]
    spec = job["spec"]
    assert job["apiVersion"] == "batch/v1" and spec["completionMode"] == "Indexed"
    (eval_c,) = spec["template"]["spec"]["containers"]
    n = int(env_of(eval_c)["SHARDS"])
    assert spec["completions"] == spec["parallelism"] == n == 3
    assert int(env_of(merge["spec"]["template"]["spec"]["initContainers"][0])["SHARDS"]) == n
    text = script(eval_c)
    for part in ('--shard "$JOB_COMPLETION_INDEX/$SHARDS"', '--state "$WORK/state/shard-$JOB_COMPLETION_INDEX.json"',
                 "--backend triton", '--url "$TRITON_URL"', "--allow-failures"):
        assert part in text
    # A retry is a new pod with the same index (restartPolicy Never); codes that retrying cannot fix
    # are the CLI's own.
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    (rule, _) = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailIndex"
    assert set(rule["onExitCodes"]["values"]) == {EXIT_USAGE, EXIT_CODES["nothing_evaluated"],
                                                  EXIT_CODES["unknown_ids"]}
    mounts = {m["mountPath"]: m["name"] for m in eval_c["volumeMounts"]}
    assert mounts["/work"] == "work" and env_of(eval_c)["WORK"] == "/work"
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["template"]["spec"]["volumes"]}
    assert claims["work"] == d["pvc"]["metadata"]["name"] and d["pvc"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "--allow-failures" not in script(merge["spec"]["template"]["spec"]["containers"][0])  # the gate


def run_sh(text: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    full = dict(os.environ, **env, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                PYTHONPATH=str(ROOT))
    return subprocess.run(["sh", "-c", text], env=full, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.integration
@pytest.mark.slow
def test_the_manifests_commands_for_3_shards_merge_to_the_unsharded_report(tmp_path, own_server):
    repo = tmp_path / "repo"
    publish_toy(repo, "seg", "segmentation")
    publish_toy(repo, "seg_b", "segmentation")
    data = make_pixelport(tmp_path / "data", n=7)
    server = own_server(repo)
    d = docs()
    eval_c = d["pixelport-eval"]["spec"]["template"]["spec"]["containers"][0]
    merge_spec = d["pixelport-eval-merge"]["spec"]["template"]["spec"]
    work = tmp_path / "work"
    env = {**env_of(eval_c), "TRITON_URL": server.grpc_url, "MODEL": "seg", "DATA": str(data), "WORK": str(work)}

    for i in range(3):  # pod i of the Indexed Job
        done = run_sh(script(eval_c), {**env, "JOB_COMPLETION_INDEX": str(i)})
        assert done.returncode == 0, done.stderr
    wait = run_sh(script(merge_spec["initContainers"][0]), {"SHARDS": "3", "WORK": str(work)}, timeout=20)
    assert wait.returncode == 0  # all three reports are there: no waiting
    merge = script(merge_spec["containers"][0])
    merged = run_sh(merge, {"WORK": str(work)})
    assert merged.returncode == 0, merged.stderr
    whole = run_sh(f'python -m evaluation eval --backend triton --url "{server.grpc_url}" --model seg '
                   f'--data "{data}" --out "{tmp_path / "whole"}"', {})
    assert whole.returncode == 0, whole.stderr
    got = json.loads((work / "reports" / "merged" / "report.json").read_text())
    ref = json.loads((tmp_path / "whole" / "report.json").read_text())
    assert got["shard"] == "0/1" and got["num_evaluated"] == ref["num_evaluated"] == 7
    assert got["confusion_matrix"] == ref["confusion_matrix"] and got["fingerprint"] == ref["fingerprint"]
    assert (work / "state" / "shard-2.json").is_file()  # the resume point of pod 2

    # A shard produced by another model is refused, naming what differs ...
    (work / "reports" / "merged").rename(tmp_path / "merged-ok")
    redo = run_sh(script(eval_c), {**env, "MODEL": "seg_b", "JOB_COMPLETION_INDEX": "1",
                                   "WORK": str(tmp_path / "work_b")})
    assert redo.returncode == 0, redo.stderr
    (work / "reports" / "shard-1").rename(tmp_path / "shard-1-seg")
    (tmp_path / "work_b" / "reports" / "shard-1").rename(work / "reports" / "shard-1")
    mismatched = run_sh(merge, {"WORK": str(work)})
    assert mismatched.returncode == 1 and "cannot merge reports with different model" in mismatched.stderr
    # ... and so is an incomplete set.
    shutil.rmtree(work / "reports" / "shard-1")
    incomplete = run_sh(merge, {"WORK": str(work)})
    assert incomplete.returncode == 1 and "missing: 1/3" in incomplete.stderr
    # The merge Job's init container keeps waiting while a shard report is missing.
    with pytest.raises(subprocess.TimeoutExpired):
        run_sh(script(merge_spec["initContainers"][0]), {"SHARDS": "3", "WORK": str(work)}, timeout=3)
