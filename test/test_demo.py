"""`vit-perception demo`, the README's main job, end to end on a miniature budget: bags, a short
training run, evaluation, perception_node over real ROS 2 topics, `AP50 <value>`, images."""

from __future__ import annotations

import json
import re

from ros_support.processes import require_ros
from vit_perception.cli import main


def test_demo_runs_the_whole_loop(tmp_path, capsys):
    require_ros()
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--train-minutes", "0.1", "--train-frames", "16",
            "--val-frames", "6", "--size", "160x120", "--classes", "2"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 0  # a second run into the same folder reuses and replaces its outputs
    text = capsys.readouterr().out
    ap50 = re.search(r"^AP50 (\d\.\d+)$", text, re.MULTILINE)
    assert ap50, text
    report = json.loads((out / "demo.json").read_text())
    assert abs(report["AP50"] - float(ap50.group(1))) < 1e-3 and 0.0 <= report["AP50"] <= 1.0
    # the node scored the same held-out frames through DDS, answered every one of them, and
    # (same model, same preprocessing) agrees with the in-process predictor
    node = report["node"]
    assert node["answered"] == node["frames"] == node["same_top_detection"] == 6, node
    assert abs(node["AP50"] - report["AP50"]) < 0.02, report
    assert report["node"]["latency_ms"]["median"] > 0
    for path in ("run/best.pt", "run/last.pt", "run/curves.png", "eval/pr_curve.png"):
        assert (out / path).is_file(), path
    assert list((out / "node_frames").glob("*.png"))
