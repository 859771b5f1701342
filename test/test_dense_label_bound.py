"""scripts/dense_label_bound.py (issue 12's fifteenth look): every patch cell gets the class of
the box covering most of it, or background; a short run writes a backbone.pt that probe reads
and reports the held-out cells' accuracy; the CNN reference (seventeenth look) is probed by
the script itself; a missing bag is one line, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from script_loader import load_script

from vit_perception.data.synth import write_synthetic_bag
from vit_perception.evaluation.probe_backbone import load_backbone


def _script():
    return load_script("dense_label_bound")


def test_each_cell_takes_the_box_that_covers_most_of_it():
    cell_targets = _script().cell_targets
    boxes = np.array([[0.0, 0.0, 16.0, 16.0],  # all of cell (0, 0)
                      [20.0, 0.0, 48.0, 16.0],  # 3/4 of (0, 1), all of (0, 2)
                      [28.0, 0.0, 36.0, 16.0],  # half of (0, 1), half of (0, 2): less
                      [0.0, 40.0, 2.0, 48.0]])  # a sliver of (2, 0): under min_cover
    target = cell_targets(boxes, [3, 1, 2, 0], (3, 4), (16.0, 16.0), background=9,
                          min_cover=0.25)
    assert target.tolist() == [[3, 1, 1, 9], [9, 9, 9, 9], [9, 9, 9, 9]]


def test_a_short_run_writes_a_backbone_probe_reads(tmp_path, capsys):
    bag = write_synthetic_bag(tmp_path / "photo", frames=6, seed=1, size=(96, 64), style="photo",
                              num_classes=2)
    out = tmp_path / "bound"
    rc = _script().main([str(bag), "--out", str(out), "--config", "vit_tiny_detr",
                         "--input-size", "96x64", "--time-budget", "0.001", "--batch-size", "2",
                         "--val", str(bag)])
    assert rc == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert final["steps"] >= 1 and 0.0 <= final["held_out_object_cell_accuracy"] <= 1.0
    assert Path(final["curves"]).stat().st_size > 0
    backbone, cfg = load_backbone(out / "backbone.pt")
    assert cfg["model"]["backbone_only"] and (cfg["input"]["width"], cfg["input"]["height"]) \
        == (96, 64)
    assert sum(p.numel() for p in backbone.parameters()) > 0
    curves = load_script("dense_bound_curves")  # several runs' curves in one PNG
    png = tmp_path / "fig" / "bounds.png"
    assert curves.main([str(png), f"vit={out}", f"again={out}"]) == 0 and png.stat().st_size
    with pytest.raises(SystemExit, match="nope/log.jsonl: not found"):
        curves.main([str(png), f"x={tmp_path / 'nope'}"])


def test_the_cnn_reference_has_stride_16_and_is_probed_here(tmp_path, capsys):
    import torch

    out = _script().small_cnn(32)(torch.zeros(2, 3, 70, 100))  # padded to 80x112
    assert out["features"].shape == (2, 32, 5, 7) and out["padded_size"] == (80, 112)
    assert out["embedding"].shape == (2, 32) and out["attention"].shape == (2, 1, 5, 7)
    bag = write_synthetic_bag(tmp_path / "photo", frames=6, seed=1, size=(96, 64), style="photo",
                              num_classes=2)
    run = tmp_path / "cnn"
    rc = _script().main([str(bag), "--out", str(run), "--arch", "cnn", "--input-size", "96x64",
                         "--time-budget", "0.001", "--batch-size", "2", "--probe", str(bag)])
    assert rc == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    probed = final[f"probe {bag}"]
    assert final["steps"] >= 1 and set(probed) == {"knn_accuracy", "linear_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in probed.values())
    assert not (run / "backbone.pt").exists() and "backbone" not in final


def test_init_with_the_cnn_reference_is_refused_in_one_line(tmp_path, capsys):
    rc = _script().main([str(tmp_path / "bag"), "--out", str(tmp_path / "o"), "--arch", "cnn",
                         "--init", "vit_tiny_detr"])
    err = capsys.readouterr().err
    assert rc == 2 and "--init" in err and "--arch cnn" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_missing_bag_is_one_line(tmp_path, capsys):
    rc = _script().main([str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
