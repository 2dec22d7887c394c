"""The house rules: rooms import one way, and the client room needs only the client extra.

Imports flow clients (torch-free) <- models <- export <- evaluation <- benchmarks; serving reads
only the contract (clients.contract). Every import counts, lazy ones inside
functions included, so a wrong-way import cannot hide behind "it only runs on that path".
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("clients", "models", "export", "serving", "evaluation", "benchmarks")
# room -> the rooms it may import (itself included)
ALLOWED = {
    "clients": {"clients"},
    "models": {"clients", "models"},
    "export": {"clients", "models", "export"},
    "serving": {"clients", "serving"},
    "evaluation": {"clients", "models", "export", "evaluation"},
    "benchmarks": set(ROOMS),
}
# rooms held to single modules of another room: serving reads only the contract
ONLY_MODULES = {("serving", "clients"): ("clients.contract",)}
# third-party top-level modules a production client may import, and the distribution behind each
CLIENT_MODULES = {"numpy": "numpy", "cv2": "opencv-python-headless", "tritonclient": "tritonclient",
                  "PIL": "pillow", "grpc": "tritonclient", "google": "tritonclient"}
FORBIDDEN_IN_CLIENTS = {"torch", "onnx", "onnxruntime", "onnxscript", "transformers", "matplotlib"}


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            else:
                found.append((node.lineno, node.module or ""))
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))  # importlib.import_module("room.x")
    return found


def room_files(room: str, root: Path = ROOT) -> list[Path]:
    return sorted((root / room).rglob("*.py"))


def wrong_way_imports(root: Path = ROOT) -> list[str]:
    problems = []
    for room in ROOMS:
        for path in room_files(room, root):
            for line, module in imports_of(path, root):
                target = module.split(".")[0]
                if target in ROOMS and target not in ALLOWED[room]:
                    problems.append(f"{path.relative_to(root)}:{line} imports {module} ({room} may import "
                                    f"{', '.join(sorted(ALLOWED[room]))})")
                only = ONLY_MODULES.get((room, target))
                if only and not any(module == m or module.startswith(m + ".") for m in only):
                    problems.append(f"{path.relative_to(root)}:{line} imports {module} ({room} may import only "
                                    f"{', '.join(only)} of {target})")
    return problems


def test_rooms_import_one_way():
    # The one sanctioned exception: `python -m clients eval` forwards to the evaluation room by a
    # string import, for one release (see clients/__main__.py).
    problems = [p for p in wrong_way_imports() if not p.startswith("clients/__main__.py")]
    assert not problems, "wrong-way imports:\n" + "\n".join(problems)


def test_the_direction_check_catches_a_wrong_way_import(tmp_path):
    # A copy of the tree with one lazy wrong-way import planted deep in a function must fail.
    for room in ROOMS:
        for path in room_files(room):
            dest = tmp_path / path.relative_to(ROOT)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    assert [p for p in wrong_way_imports(tmp_path) if not p.startswith("clients/__main__.py")] == []
    planted = tmp_path / "clients" / "letterbox.py"
    planted.write_text(planted.read_text(encoding="utf-8") + textwrap.dedent("""

        def _sneaky():
            from evaluation.report import write_report  # wrong way: clients must not reach up
            return write_report
        """), encoding="utf-8")
    problems = wrong_way_imports(tmp_path)
    assert any(p.startswith("clients/letterbox.py") and "evaluation.report" in p for p in problems), problems
    (tmp_path / "models" / "zoo.py").write_text("import export.api\n", encoding="utf-8")
    assert any(p.startswith("models/zoo.py:1 imports export.api") for p in wrong_way_imports(tmp_path))
    (tmp_path / "serving" / "stats.py").write_text("from clients.client import DenseClient\n", encoding="utf-8")
    assert any(p.startswith("serving/stats.py:1 imports clients.client") and "only clients.contract" in p
               for p in wrong_way_imports(tmp_path))


def _client_extra() -> set[str]:
    names = set()
    for req in importlib.metadata.requires("pixelport") or []:
        if re.search(r"""extra\s*==\s*["']client["']""", req):
            names.add(re.split(r"[\s\[<>=;!~]", req, maxsplit=1)[0].lower())
    return names


def test_client_room_needs_only_the_client_extra():
    extra = _client_extra()
    assert {"numpy", "opencv-python-headless", "tritonclient", "pillow"} <= extra, extra
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for path in room_files("clients"):
        if path.name == "__main__.py":
            continue
        for line, module in imports_of(path):
            top = module.split(".")[0]
            if top in stdlib or top in ROOMS or top == "__future__":
                continue
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            if top in FORBIDDEN_IN_CLIENTS:
                problems.append(where + " (not in the client extra)")
            elif CLIENT_MODULES.get(top) not in extra:
                problems.append(where + f" (needs {CLIENT_MODULES.get(top, top)!r} in the client extra)")
    assert not problems, "\n".join(problems)


BLOCK_HEAVY = textwrap.dedent("""
    import importlib.abc, sys
    class Absent(importlib.abc.MetaPathFinder):
        # as if only `pip install .[client]` had run: these distributions are not there
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "onnx", "onnxruntime", "onnxscript", "transformers",
                                      "matplotlib", "models", "export", "evaluation", "serving", "benchmarks"}:
                raise ModuleNotFoundError(f"No module named {name!r}")
    sys.meta_path.insert(0, Absent())
""")


@pytest.mark.integration
def test_dense_client_runs_with_only_the_client_extra(triton_server, zoo_dataset):
    image = sorted((zoo_dataset / "images" / "val").glob("*.png"))[0]
    code = BLOCK_HEAVY + textwrap.dedent(f"""
        import pkgutil, importlib, clients
        for info in pkgutil.walk_packages(clients.__path__, "clients."):
            if not info.name.startswith("clients.__main__"):
                importlib.import_module(info.name)
        from clients import DenseClient, load_image
        with DenseClient({triton_server.grpc_url!r}, "seg_unet") as client:
            pred = client.predict(load_image({str(image)!r}))
        assert pred.labels.shape == load_image({str(image)!r}).shape[:2], pred.labels.shape
        assert pred.labels.max() > 0
        print("OK", pred.labels.shape)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_contract_facts_import_without_grpc():
    code = ("import sys; import clients.contract as c; from clients.metrics.tasks import TASK_METRICS; "
            "assert c.default_palette(3); bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('grpc', 'tritonclient', 'torch')); assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
