"""synth: deterministic, labelled, objects inside the frame and big enough; the CLI."""

from __future__ import annotations

import numpy as np

from vit_perception.cli import main
from vit_perception.data.bags import bag_topics, read_frames
from vit_perception.data.synth import SyntheticScene, stamp_ns


def test_scene_boxes_and_determinism():
    a, b = SyntheticScene(160, 120, 4, seed=5), SyntheticScene(160, 120, 4, seed=5)
    seen = set()
    for i in range(40):
        ia, ba, la = a.render(i)
        ib, bb, lb = b.render(i)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ba, bb)
        assert ia.shape == (120, 160, 3) and ia.dtype == np.uint8
        assert (ba[:, :2] >= 0).all() and (ba[:, 2] <= 160).all() and (ba[:, 3] <= 120).all()
        assert ((ba[:, 2:] - ba[:, :2]) >= 8).all()
        seen.update(la.tolist())
    assert seen  # objects are drawn
    # boxes hold the drawn object: the box interior differs from the frame without objects
    c = SyntheticScene(160, 120, 4, seed=5)
    img, boxes, _ = c.render(0)
    x1, y1, x2, y2 = boxes[0].astype(int)
    ax, ay, _, _, ph = c._pan  # the camera pan offset at t=0
    ox, oy = int(round(c.margin + ax * np.sin(ph))), int(round(c.margin + ay * np.sin(2 * ph)))
    bg = c._bg[oy:oy + 120, ox:ox + 160].astype(int)
    assert np.abs(img.astype(int) - bg)[:, :].mean() < np.abs(img[y1:y2, x1:x2].astype(int)
                                                              - bg[y1:y2, x1:x2]).mean()
    assert np.abs(img[y1:y2, x1:x2].astype(int) - bg[y1:y2, x1:x2]).mean() > 20


def test_cli_writes_bag(tmp_path):
    out = tmp_path / "bag"
    assert main(["synth", str(out), "--frames", "5", "--size", "128x96", "--classes", "3",
                 "--storage", "sqlite3", "--seed", "2"]) == 0
    topics = bag_topics(out)
    assert topics["/camera/image_raw"] == "sensor_msgs/msg/Image"
    assert topics["/labels"] == "vision_msgs/msg/Detection2DArray"
    frames = list(read_frames(out, classes=out / "classes.txt"))
    assert [f.stamp_ns for f in frames] == [stamp_ns(i) for i in range(5)]
    assert all(f.frame_id == "camera_optical_frame" and f.labelled for f in frames)
    assert frames[0].image.shape == (96, 128, 3)
