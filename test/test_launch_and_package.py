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
    declared, used = launch_arguments(path)
    assert used <= declared, f"undeclared launch arguments {used - declared}"
    assert declared <= used, f"declared but never used: {declared - used}"


def launch_arguments(path: Path) -> tuple[set[str], set[str]]:
    """(declared, used) launch argument names of a launch file, read from its syntax tree.

    The node arguments are declared in a loop over NODE_ARGUMENTS and read by node_overrides
    (both from vit_perception.ros.launch_args); a file naming them gets all of them."""
    from vit_perception.ros.launch_args import NODE_ARGUMENTS

    tree = ast.parse(path.read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    node_args = set(NODE_ARGUMENTS) if {"NODE_ARGUMENTS", "node_overrides"} <= names else set()
    declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")
                if c.args and isinstance(c.args[0], ast.Constant)} | node_args
    used = {n.args[0].value for n in _calls(tree, "LaunchConfiguration")
            if n.args and isinstance(n.args[0], ast.Constant)} | node_args
    for call in _calls(tree, "DeclareLaunchArgument"):
        desc = next((k.value for k in call.keywords if k.arg == "description"), None)
        assert desc is not None and (not isinstance(desc, ast.Constant) or desc.value), \
            f"{path.name}: {ast.unparse(call)} has no description"
    assert all(text for _, text in NODE_ARGUMENTS.values())
    return declared, used


def test_perception_launch_arguments():
    declared, _ = launch_arguments(ROOT / "launch" / "perception.launch.py")
    assert declared >= {"camera_topic", "params_file", "namespace", "use_sim_time", "log_level",
                        "model", "backend", "device", "precision", "compressed", "autostart",
                        "score_threshold", "image_topics", "threads", "cuda_graphs", "compile"}


def test_node_launch_arguments_are_node_parameters_and_convert():
    from ros_support.processes import require_ros

    require_ros()
    from vit_perception.ros import params
    from vit_perception.ros.launch_args import (
        NODE_ARGUMENTS,
        LaunchArgumentError,
        node_overrides,
    )

    assert set(NODE_ARGUMENTS) <= set(params._SPECS) | {"autostart"}
    samples = {"model": "vit_tiny_detr", "backend": "onnxruntime", "device": "cuda:1",
               "precision": "fp16", "compressed": "true", "autostart": "False",
               "score_threshold": "0.3", "image_topics": "[/front/image_raw, /rear/image]",
               "threads": "4", "cuda_graphs": "false", "compile": "true"}
    assert set(samples) == set(NODE_ARGUMENTS)
    values = node_overrides(samples)
    assert values["compressed"] is True and values["autostart"] is False
    assert values["score_threshold"] == 0.3 and values["threads"] == 4
    assert values["image_topics"] == ["/front/image_raw", "/rear/image"]
    for name, value in values.items():
        if name != "autostart":
            assert params._check(name, value) == value, name
    assert node_overrides({"model": "", "device": "  "}) == {}  # empty: the params file's
    with pytest.raises(LaunchArgumentError, match="score_threshold"):
        node_overrides({"score_threshold": "high"})
    with pytest.raises(LaunchArgumentError, match="compressed"):
        node_overrides({"compressed": "maybe"})


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_readme_documents_every_launch_argument(path):
    readme = (ROOT / "README.md").read_text()
    declared, _ = launch_arguments(path)
    missing = [n for n in sorted(declared) if f"`{n}`" not in readme]
    assert not missing, f"README does not document {path.name} arguments {missing}"


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
    assert deps >= {"ros2bag", "rosbag2_storage_mcap"}  # bag_eval.launch.py runs `ros2 bag`
    imports = "\n".join(p.read_text() for p in (ROOT / "vit_perception").rglob("*.py"))
    assert "import cv_bridge" not in imports and "from cv_bridge" not in imports
