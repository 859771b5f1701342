"""extract: frames + COCO stub out of a bag, and a labelled COCO JSON back into a training bag."""

from __future__ import annotations

import json

import numpy as np

from vit_perception.cli import main
from vit_perception.data.bags import read_frames
from vit_perception.data.synth import write_synthetic_bag


def test_extract_and_back(tmp_path):
    bag = write_synthetic_bag(tmp_path / "lab", frames=9, size=(96, 64), num_classes=3)
    out = tmp_path / "frames"
    assert main(["extract", str(bag), str(out), "--every", "4"]) == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == [
        "images/frame_000000.png", "images/frame_000004.png", "images/frame_000008.png"]
    assert all((out / im["file_name"]).exists() for im in coco["images"])
    assert coco["annotations"] and {c["name"] for c in coco["categories"]} <= {
        "red_cube", "green_ball", "blue_cylinder"}
    # "label" it: drop one box, then import
    coco["annotations"] = coco["annotations"][1:]
    labelled = out / "labelled.json"
    labelled.write_text(json.dumps(coco))
    back = tmp_path / "train_bag"
    assert main(["extract", "--from-coco", str(labelled), str(back)]) == 0
    originals = {f.stamp_ns: f for f in read_frames(bag)}
    frames = list(read_frames(back, classes=back / "classes.txt"))
    assert len(frames) == 3 and all(f.labelled for f in frames)
    assert sum(len(f.boxes) for f in frames) == len(coco["annotations"])
    for f in frames:
        o = originals[f.stamp_ns]  # stamps survive the round trip
        np.testing.assert_array_equal(f.image, o.image)  # PNG is lossless
        assert set(map(tuple, f.boxes.round(6))) <= set(map(tuple, o.boxes.round(6)))


def test_extract_min_change_skips_still_frames(tmp_path):
    bag = write_synthetic_bag(tmp_path / "lab", frames=8, size=(96, 64))
    out = tmp_path / "f"
    assert main(["extract", str(bag), str(out), "--min-change", "250", "--format", "jpg"]) == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 1  # nothing changes by 250 grey levels
