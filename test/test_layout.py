"""The package's floors and the direction of its imports (one floor per stage of the data flow).

Every ``import`` / ``from ... import`` in every module under ``selfi_ros/`` (module level or inside a
function) is parsed with :mod:`ast`; relative imports are resolved. A module may import only from its own
floor and the floors below it, and the lower floors import no ROS and (engine) no torch.
"""
from __future__ import annotations

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "selfi_ros"

#: floor -> floors (of selfi_ros) it may import; "" is the package root (selfi_ros/__init__.py, atomic.py, cli.py)
ALLOWED = {
    "": {""},
    "geometry": {"geometry", ""},
    "model": {"model", "geometry", ""},
    "alignment": {"alignment", "model", "geometry", ""},
    "engine": {"engine", "geometry", ""},
    "data": {"data", "engine", "geometry", ""},
    "backends": {"backends", "engine", "alignment", "model", "geometry", ""},
    "ros": {"ros", "backends", "engine", "geometry", "data", ""},
    "apps": {"apps", "ros", "backends", "engine", "alignment", "model", "geometry", "data", ""},
}
ROS_MODULES = ("rclpy", "rosidl_runtime_py", "builtin_interfaces", "std_msgs", "sensor_msgs", "geometry_msgs",
               "nav_msgs", "tf2_msgs", "tf2_ros", "diagnostic_msgs", "std_srvs", "rcl_interfaces",
               "visualization_msgs", "cv_bridge", "sensor_msgs_py", "mcap_ros2", "launch", "launch_ros")
NO_ROS = ("geometry", "model", "alignment", "engine", "backends", "data")
NO_TORCH = ("geometry", "engine", "data")
#: modules allowed over MAX_LINES, each saying why in its docstring (the phrase "one cohesive")
MAX_LINES = 500


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        parts = rel.with_suffix("").parts
        dotted = ".".join(("selfi_ros",) + (parts[:-1] if parts[-1] == "__init__" else parts))
        floor = parts[0] if len(parts) > 1 else ""
        yield path, dotted, floor


def imports_of(path: pathlib.Path, dotted: str) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    pkg = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            if mod == "selfi_ros" or (node.level and not node.module):
                out += [f"{mod}.{a.name}" for a in node.names]
    return out


def floor_of(mod: str) -> str | None:
    parts = mod.split(".")
    if parts[0] != "selfi_ros":
        return None
    if len(parts) == 1:
        return ""
    name = parts[1]
    return name if name in ALLOWED else ""


ALL = list(modules())


def test_every_module_sits_on_a_known_floor():
    floors = {f for _, _, f in ALL}
    assert floors <= set(ALLOWED), floors - set(ALLOWED)
    assert {"geometry", "model", "alignment", "engine", "backends", "ros", "apps"} <= floors


@pytest.mark.parametrize("path,dotted,floor", ALL, ids=[d for _, d, _ in ALL])
def test_imports_point_down(path, dotted, floor):
    bad = []
    for mod in imports_of(path, dotted):
        f = floor_of(mod)
        if f is not None and f not in ALLOWED[floor]:
            bad.append(f"{mod} (floor {f or 'root'!r})")
        top = mod.split(".")[0]
        if floor in NO_ROS and (top in ROS_MODULES or mod.startswith("selfi_ros.ros") or mod.startswith("selfi_ros.msg")):
            bad.append(f"{mod} (ROS in {floor}/)")
        if floor in NO_TORCH and top in ("torch", "torchvision"):
            bad.append(f"{mod} (torch in {floor}/)")
    assert not bad, f"{dotted} imports against the data flow: {bad}"


def test_checker_sees_a_violation(tmp_path):
    """The parser resolves relative and function-level imports (so the test above can fail)."""
    p = tmp_path / "engine" / "x.py"
    p.parent.mkdir()
    p.write_text("def f():\n    from ..ros import node\n    import torch\n")
    mods = imports_of(p, "selfi_ros.engine.x")
    assert "selfi_ros.ros" in mods and "torch" in mods
    assert floor_of("selfi_ros.ros.node") == "ros" and "ros" not in ALLOWED["engine"]


@pytest.mark.parametrize("path,dotted,floor", ALL, ids=[d for _, d, _ in ALL])
def test_module_size(path, dotted, floor):
    n = len(path.read_text().splitlines())
    if n > MAX_LINES:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "one cohesive" in doc, f"{dotted}: {n} lines > {MAX_LINES} without saying why it is one cohesive thing"


def test_no_stale_module_paths():
    """The old homes of moved modules are gone (one definition of each thing)."""
    for old in ("engine/backends", "demo.py", "reconstruct.py", "evaluation.py", "ros/online_hook.py"):
        assert not (ROOT / old).exists(), old
    assert sys.modules.get("selfi_ros.engine.backends") is None


def test_every_package_folder_is_installed():
    """Each folder of selfi_ros/ is a regular package that ``pip install .`` (setuptools.find_packages, as
    setup.py uses it) and colcon install; a folder without __init__.py works from the checkout only."""
    from setuptools import find_packages

    found = set(find_packages(str(ROOT.parent), include=["selfi_ros", "selfi_ros.*"]))
    folders = {".".join(("selfi_ros",) + p.relative_to(ROOT).parts) if p != ROOT else "selfi_ros"
               for p in [ROOT, *ROOT.rglob("*")] if p.is_dir() and any(p.glob("*.py"))}
    assert folders <= found, f"not installed (no __init__.py): {sorted(folders - found)}"
