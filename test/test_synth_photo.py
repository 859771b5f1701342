"""synth --style photo: deterministic, shape-only classes (no colour cue), boxes inside frames,
photographs used when bundled and textures when not, JPEG bags readable by read_frames."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from vit_perception.cli import main
from vit_perception.data import synth_photo
from vit_perception.data.bags import bag_topics, read_frames
from vit_perception.data.synth import SyntheticScene, stamp_ns
from vit_perception.data.synth_photo import PHOTO_CLASSES, PhotoScene


def _class_mean_colours(scene, frames: int) -> np.ndarray:
    """Mean RGB inside the boxes of each class over `frames` frames: `[classes, 3]`."""
    sums: dict[int, list[np.ndarray]] = {}
    for i in range(frames):
        img, boxes, labels = scene.render(i)
        for (x1, y1, x2, y2), k in zip(boxes.astype(int), labels):
            sums.setdefault(int(k), []).append(img[y1:y2, x1:x2].reshape(-1, 3).mean(0))
    assert len(sums) == len(scene.names)  # every class appears
    return np.array([np.mean(sums[k], axis=0) for k in sorted(sums)])


def test_photo_scene_deterministic_boxes_inside_and_every_class():
    kw = dict(scene_length=(2, 4))
    a, b = PhotoScene(160, 128, 10, seed=3, **kw), PhotoScene(160, 128, 10, seed=3, **kw)
    c = PhotoScene(160, 128, 10, seed=4, **kw)
    seen, differs = set(), False
    for i in range(120):
        ia, ba, la = a.render(i)
        ib, bb, lb = b.render(i)
        ic, _, _ = c.render(i)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ba, bb)
        np.testing.assert_array_equal(la, lb)
        differs |= not np.array_equal(ia, ic)
        assert ia.shape == (128, 160, 3) and ia.dtype == np.uint8
        assert (ba[:, :2] >= 0).all() and (ba[:, 2] <= 160).all() and (ba[:, 3] <= 128).all()
        assert (ba[:, 2:] > ba[:, :2]).all()
        seen.update(la.tolist())
    assert differs  # another seed gives other frames
    assert seen == set(range(10))


def test_photo_scene_marks_differ_only_in_shape():
    # one scene per frame: every frame's marks are independent draws
    photo = _class_mean_colours(PhotoScene(160, 128, 8, seed=1, scene_length=(1, 1)), 300)
    lab = _class_mean_colours(SyntheticScene(160, 128, 8, seed=1, scene_length=(1, 2)), 300)
    spread = lambda m: np.abs(m[:, None] - m[None]).max()  # noqa: E731
    assert spread(lab) > 80  # the lab style's classes are told apart by colour ...
    assert spread(photo) < 30  # ... the photo style's are not


def test_photo_scene_mark_scale_range():
    scene = PhotoScene(240, 180, 10, seed=2, scene_length=(1, 1))
    sides = []
    for i in range(150):
        _, boxes, _ = scene.render(i)
        full = boxes[(boxes[:, 0] > 0) & (boxes[:, 1] > 0) & (boxes[:, 2] < 240)
                     & (boxes[:, 3] < 180)]  # marks cut by the frame edge say nothing
        sides += np.maximum(full[:, 2] - full[:, 0], full[:, 3] - full[:, 1]).tolist()
    sides_frac = np.asarray(sides) / 180
    # longer side 3-30% of the short side (rotation can grow the bounds by up to sqrt(2))
    assert sides_frac.min() >= 0.02 and sides_frac.max() <= 0.30 * 1.45
    assert (sides_frac < 0.06).any() and (sides_frac > 0.2).any()


def test_photographs_bundled_and_absence_handled(monkeypatch):
    synth_photo.photographs.cache_clear()
    try:
        monkeypatch.setattr(synth_photo, "PHOTOGRAPHS", ["astronaut", "no_such_photograph"])
        photos = synth_photo.photographs()
        assert len(photos) == 1 and photos[0].shape[2] == 3 and photos[0].dtype == np.uint8
        synth_photo.photographs.cache_clear()
        monkeypatch.setitem(sys.modules, "skimage.data", None)  # scikit-image not installed
        assert synth_photo.photographs() == ()
        img, boxes, _ = PhotoScene(96, 64, 3, seed=0).render(0)  # textures only
        assert img.shape == (64, 96, 3) and boxes.shape[1] == 4
    finally:
        synth_photo.photographs.cache_clear()


def test_cli_photo_style_jpeg_bag(tmp_path):
    out = tmp_path / "bag"
    assert main(["synth", str(out), "--style", "photo", "--frames", "6", "--size", "128x96",
                 "--classes", "10", "--compressed", "--seed", "1"]) == 0
    topics = bag_topics(out)
    assert topics["/camera/image_raw"] == "sensor_msgs/msg/CompressedImage"
    assert topics["/labels"] == "vision_msgs/msg/Detection2DArray"
    assert (out / "classes.txt").read_text().split() == sorted(PHOTO_CLASSES)
    frames = list(read_frames(out, classes=out / "classes.txt"))
    assert [f.stamp_ns for f in frames] == [stamp_ns(i) for i in range(6)]
    assert all(f.labelled and f.image.shape == (96, 128, 3) for f in frames)
    assert sum(len(f.boxes) for f in frames) > 0
    assert set(n for f in frames for n in f.class_names) <= set(PHOTO_CLASSES)


def test_cli_photo_style_rejects_too_many_classes(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "bag"), "--style", "photo", "--classes", "11"]) == 2
    assert "1..10" in capsys.readouterr().err
    assert not (tmp_path / "bag").exists()


@pytest.mark.parametrize("style", ["lab", "photo"])
def test_class_names_by_style(style):
    from vit_perception.data.synth import class_names

    assert len(class_names(3, style)) == 3


def test_scene_length_option(tmp_path, capsys):
    from vit_perception.data.synth import write_synthetic_bag

    def first_frames(style, scene_length):
        out = tmp_path / f"{style}_{scene_length}"
        write_synthetic_bag(out, frames=3, seed=5, size=(96, 64), num_classes=3, style=style,
                            scene_length=scene_length)
        return [f.image.astype(int) for f in read_frames(out, classes=out / "classes.txt")]

    for style in ("lab", "photo"):
        same = first_frames(style, (3, 3))  # one scene: the background pans slowly
        cuts = first_frames(style, (1, 1))  # a new scene every frame
        assert np.abs(same[1] - same[0]).mean() < np.abs(cuts[1] - cuts[0]).mean()
    with pytest.raises(ValueError, match="scene length"):
        write_synthetic_bag(tmp_path / "bad", frames=1, scene_length=(0, 2))
    assert main(["synth", str(tmp_path / "cli"), "--style", "photo", "--frames", "2", "--size",
                 "96x64", "--scene-length", "1-2"]) == 0


def _flat_share(image: np.ndarray) -> float:
    """Share of pixels within 12 levels of the frame's median, in every channel."""
    near = np.abs(image.astype(int) - np.median(image, axis=(0, 1))) <= 12
    return float(near.all(axis=2).mean())


def test_plain_background_is_flat_and_keeps_the_marks(tmp_path, capsys):
    plain = PhotoScene(160, 120, 10, seed=2, scene_length=(1, 1), background="plain")
    mixed = PhotoScene(160, 120, 10, seed=2, scene_length=(1, 1))
    plain_share, mixed_share, marks = [], [], 0
    for i in range(12):
        img, boxes, labels = plain.render(i)
        plain_share.append(_flat_share(img))
        mixed_share.append(_flat_share(mixed.render(i)[0]))
        marks += len(boxes)
        for x1, y1, x2, y2 in boxes.astype(int):  # the mark is drawn: its box is not flat
            assert _flat_share(img[y1:y2, x1:x2]) < 0.95
    assert min(plain_share) > 0.5 and np.median(mixed_share) < 0.5
    assert marks >= 12
    with pytest.raises(ValueError, match="background"):
        PhotoScene(64, 48, 2, background="sky")
    # the command: photo style only, a clear one-line error otherwise
    assert main(["synth", str(tmp_path / "p"), "--style", "photo", "--background", "plain",
                 "--frames", "2", "--size", "96x64"]) == 0
    assert "plain background" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "lab"), "--background", "plain", "--frames", "2"]) == 2
    assert "--style photo only" in capsys.readouterr().err
    assert not (tmp_path / "lab").exists()


def test_scale_sets_the_marks_size(tmp_path, capsys):
    def longer_sides(**kw) -> list[float]:
        scene = PhotoScene(320, 240, 4, seed=3, scene_length=(1, 1), **kw)
        sides = []
        for i in range(30):
            boxes = scene.render(i)[1]
            sides += list(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
        return sides

    large, default = longer_sides(scale=(0.25, 0.3)), longer_sides()
    assert len(large) >= 20 and len(default) >= 20
    # a mark's longer side is 60-72 px here (more when rotated, less when cut by the border)
    assert np.median(large) > 50 and max(large) <= 0.3 * 240 * 1.2 * 1.45
    assert np.median(default) < 35
    with pytest.raises(ValueError, match="mark scale"):
        PhotoScene(64, 48, 2, scale=(0.3, 0.1))
    assert main(["synth", str(tmp_path / "p"), "--style", "photo", "--scale", "0.2-0.3",
                 "--frames", "2", "--size", "96x64"]) == 0
    assert "marks 0.2-0.3 of the frame" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "lab"), "--scale", "0.2-0.3", "--frames", "2"]) == 2
    assert "--style photo only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", str(tmp_path / "bad"), "--style", "photo", "--scale", "0.5-2"])
    assert "scale must be" in capsys.readouterr().err
    assert not (tmp_path / "lab").exists() and not (tmp_path / "bad").exists()
