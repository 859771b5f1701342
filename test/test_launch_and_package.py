"""Launch files (the launch package is not on PyPI): they parse, name executables that exist and
files that exist; config/perception.yaml names only declared parameters."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call: ast.Call, key: str):
    for k in call.keywords:
        if k.arg == key and isinstance(k.value, ast.Constant):
            return k.value.value
    return None


def test_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} >= {"perception.launch.py", "bag_eval.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_parses_and_names_real_things(path):
    tree = ast.parse(path.read_text())
    fn = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert any(f.name == "generate_launch_description" for f in fn)
    nodes = _calls(tree, "LifecycleNode") + _calls(tree, "Node")
    assert nodes, "launches no node"
    cmake = (ROOT / "CMakeLists.txt").read_text()
    installed = set(re.findall(r"install\(PROGRAMS scripts/(\S+) DESTINATION lib/", cmake))
    for node in nodes:
        assert _kw(node, "package") == "vit_perception"
        exe = _kw(node, "executable")
        assert exe in installed and (ROOT / "scripts" / exe).is_file()
    # every "config", "<file>" joined into the share directory exists in the source tree
    for call in _calls(tree, "join"):
        parts = [a.value for a in call.args if isinstance(a, ast.Constant)]
        if parts and parts[0] in ("config", "launch"):
            assert (ROOT.joinpath(*parts)).is_file(), parts
    declared = {_kw(c, "name") or (c.args[0].value if c.args else None)
                for c in _calls(tree, "DeclareLaunchArgument")}
    used = {n.args[0].value for n in _calls(tree, "LaunchConfiguration")
            if n.args and isinstance(n.args[0], ast.Constant)}
    assert used <= declared, f"undeclared launch arguments {used - declared}"


def test_perception_launch_arguments():
    tree = ast.parse((ROOT / "launch" / "perception.launch.py").read_text())
    declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
    assert declared >= {"camera_topic", "params_file", "namespace", "use_sim_time"}


def test_params_file_names_declared_parameters():
    from ros_support.processes import require_ros

    require_ros()
    from vit_perception.ros import params

    data = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text())
    values = data["/**"]["ros__parameters"]
    assert set(values) - {"autostart"} == set(params._SPECS)
    settings = params.NodeSettings()
    for key, value in values.items():
        if key != "autostart":
            assert params._check(key, value) == value or value == [], key
    assert settings.score_threshold == values["score_threshold"]


def test_package_xml_dependencies():
    root = ElementTree.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    assert deps >= {"rclpy", "sensor_msgs", "std_msgs", "vision_msgs", "diagnostic_msgs",
                    "lifecycle_msgs"}
    assert "cv_bridge" not in deps  # the package converts images itself
    imports = "\n".join(p.read_text() for p in (ROOT / "vit_perception").rglob("*.py"))
    assert "import cv_bridge" not in imports and "from cv_bridge" not in imports
