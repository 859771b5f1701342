"""probe: k-NN / linear / attention-in-box on box-pooled features; backbones from every kind of
file; the command's JSON and PNG on a small synthetic photo bag."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from vit_perception.cli import main
from vit_perception.data.synth import write_synthetic_bag
from vit_perception.evaluation.probe import (
    attention_fraction,
    knn_accuracy,
    linear_accuracy,
    pool_box_features,
    split_by_frame,
    union_coverage,
)
from vit_perception.evaluation.probe_backbone import BackboneSpecError, load_backbone


def _class_features(n: int, classes: int, dim: int, signal: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, dim, generator=g)
    x[:, :classes] += signal * torch.nn.functional.one_hot(y, classes)
    return x, y


def test_perfect_features_score_one_and_random_features_chance():
    x, y = _class_features(200, 5, 16, signal=20.0)
    assert knn_accuracy(x[:100], y[:100], x[100:], y[100:]) == 1.0
    assert linear_accuracy(x[:100], y[:100], x[100:], y[100:]) == 1.0
    noise, y2 = _class_features(200, 5, 16, signal=0.0)
    assert knn_accuracy(noise[:100], y2[:100], noise[100:], y2[100:]) < 0.4
    assert linear_accuracy(noise[:100], y2[:100], noise[100:], y2[100:]) < 0.4


def test_split_by_frame_keeps_each_frame_on_one_side():
    frame_ids = np.array([0, 0, 1, 2, 2, 2, 3, 5, 5, 7])
    train, test = split_by_frame(frame_ids, 0.5)
    assert not set(frame_ids[train]) & set(frame_ids[test])
    assert set(frame_ids[test]) == {3, 5, 7} or set(frame_ids[test]) == {5, 7}
    assert frame_ids[train].max() < frame_ids[test].min()  # the last frames are the test part
    with pytest.raises(ValueError, match="2 frames"):
        split_by_frame(np.array([4, 4, 4]))


def test_box_pooling_and_attention_share():
    feats = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # [C, h, w], cell 16
    one_cell = pool_box_features(feats, np.array([[16, 16, 32, 32]]), (16.0, 16.0))
    torch.testing.assert_close(one_cell[0], feats[:, 1, 1])
    tiny = pool_box_features(feats, np.array([[50, 2, 54, 6]]), (16.0, 16.0))  # inside (0, 3)
    torch.testing.assert_close(tiny[0], feats[:, 0, 3])
    two = pool_box_features(feats, np.array([[0, 0, 32, 16]]), (16.0, 16.0))
    torch.testing.assert_close(two[0], feats[:, 0, :2].mean(1))
    cov = union_coverage(np.array([[0, 0, 32, 16], [16, 0, 32, 32]]), (3, 4), (16.0, 16.0),
                         (48, 64))
    assert cov.sum() == pytest.approx(3.0) and cov[0, :2].tolist() == [1.0, 1.0]
    inside = torch.zeros(2, 3, 4)
    inside[:, 0, 0] = 1.0
    assert attention_fraction(inside, cov) == pytest.approx(1.0)
    assert attention_fraction(torch.ones(3, 4), cov) == pytest.approx(3 / 12)


def _same_output(a, b, size=(64, 48)):
    x = torch.randn(1, 3, size[1], size[0], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a(x)["features"], b(x)["features"])


def test_load_backbone_from_config_checkpoint_backbone_file_and_dino_weights(tmp_path):
    from vit_perception.config import load_config
    from vit_perception.models import build
    from vit_perception.models.backbone_model import BackboneModel
    from vit_perception.models.checkpoint import save_checkpoint
    from vit_perception.models.vit import ViTBackbone

    base, cfg = load_backbone("vit_tiny_detr", input_size=(64, 48))
    again, _ = load_backbone("vit_tiny_detr", input_size=(64, 48))
    _same_output(base, again)  # a config gives the same seeded random weights every time
    assert cfg["input"]["width"] == 64

    dcfg = load_config("vit_tiny_detr", {"classes": ["a", "b"]})
    torch.manual_seed(3)
    detector, _, _ = build(dcfg)
    save_checkpoint(tmp_path / "best.pt", detector, dcfg)
    net, _ = load_backbone(tmp_path / "best.pt")
    _same_output(net, detector.backbone.eval())

    bcfg = load_config("vit_tiny_detr", {"model": {"backbone_only": True}})
    save_checkpoint(tmp_path / "backbone.pt", BackboneModel(detector.backbone), bcfg)
    net, _ = load_backbone(tmp_path / "backbone.pt")  # pretrain's backbone.pt
    _same_output(net, detector.backbone.eval())
    torch.save({"config": dcfg, "state_dict": detector.backbone.state_dict()},
               tmp_path / "plain.pt")
    net, _ = load_backbone(tmp_path / "plain.pt")
    _same_output(net, detector.backbone.eval())

    vit = ViTBackbone(input_size=(64, 64), patch_size=16, embed_dim=128, depth=2, num_heads=2)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in vit.state_dict().items()}},
               tmp_path / "dino_vit.pth")  # DINO's published layout
    net, wcfg = load_backbone(tmp_path / "dino_vit.pth", input_size=(64, 64))
    assert wcfg["model"]["backbone"]["depth"] == 2 and wcfg["model"]["backbone"]["num_heads"] == 2
    _same_output(net, vit.eval(), (64, 64))
    conv = ViTBackbone(input_size=(64, 64), patch_size=16, embed_dim=64, depth=1, num_heads=1,
                       stem="conv")
    torch.save(conv.state_dict(), tmp_path / "conv_vit.pth")
    net, wcfg = load_backbone(tmp_path / "conv_vit.pth", input_size=(64, 64))
    assert wcfg["model"]["backbone"]["stem"] == "conv"
    assert wcfg["model"]["backbone"]["patch_size"] == 16
    _same_output(net, conv.eval(), (64, 64))

    with pytest.raises(BackboneSpecError, match="not found"):
        load_backbone(tmp_path / "missing.pt")


def test_load_backbone_from_a_config_yaml_file_gives_its_random_weights(tmp_path):
    # a run's own config.yaml (here one with the conv stem) is a config: the baseline of that
    # architecture, with the same seeded random weights as the config's name would give
    import yaml

    from vit_perception.config import load_config

    cfg = load_config("vit_tiny_detr", {"model": {"backbone": {"stem": "conv"}}})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    net, got = load_backbone(tmp_path / "config.yaml", input_size=(64, 48))
    assert got["model"]["backbone"]["stem"] == "conv" and net.stem_kind == "conv"
    again, _ = load_backbone(str(tmp_path / "config.yaml"), input_size=(64, 48))
    _same_output(net, again)


@pytest.fixture(scope="module")
def photo_bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "bag"
    return write_synthetic_bag(out, frames=16, seed=4, size=(160, 120), num_classes=4,
                               compressed=True, style="photo", objects_per_frame=(2, 4))


def test_probe_command_json_and_png(photo_bag, tmp_path, capsys):
    js = tmp_path / "out" / "probe.json"
    assert main(["probe", "--backbone", "vit_tiny_detr", "--bag", str(photo_bag),
                 "--json", str(js), "--input-size", "160x128", "--no-progress",
                 "--figure-frames", "3"]) == 0
    metrics = json.loads(js.read_text())
    assert sorted(metrics) == ["attention_in_box", "knn_accuracy", "knn_accuracy_crop",
                               "linear_accuracy", "linear_accuracy_crop"]
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    img = cv2.imread(str(js.with_suffix(".png")))
    assert img is not None and img.shape[0] > 3 * 128 and img.shape[1] == 3 * 160
    assert "knn_accuracy_crop" in capsys.readouterr().out
    assert main(["probe", "--backbone", "vit_tiny_detr", "--bag", str(photo_bag),
                 "--json", str(js), "--input-size", "160x128", "--no-progress",
                 "--crop-size", "0", "--figure-frames", "1"]) == 0
    assert sorted(json.loads(js.read_text())) == ["attention_in_box", "knn_accuracy",
                                                  "linear_accuracy"]
    assert main(["probe", "--backbone", "vit_tiny_detr", "--bag", str(photo_bag),
                 "--crop-size", "-1", "--no-progress"]) == 2
    assert "--crop-size -1" in capsys.readouterr().err


def test_box_crops_are_centred_squares_with_the_edge_repeated():
    from vit_perception.evaluation.probe import box_crops

    img = np.zeros((48, 64, 3), np.uint8)
    img[10:20, 20:30] = 255  # a 10-pixel mark
    img[0:10, 0:10] = 128  # one in the corner
    (mid, corner) = box_crops(img, np.array([[20, 10, 30, 20], [0, 0, 10, 10.0]]), 20)
    assert (mid[5:15, 5:15] == 255).all() and mid.sum() == 100 * 3 * 255  # side 2 x 10
    assert (corner[5:15, 5:15] == 128).all()
    assert (corner[:5, 5:15] == 128).all() and (corner[5:15, :5] == 128).all()  # repeated edge
    assert (corner[15:, 15:] == 0).all()
    small = box_crops(img, np.array([[20, 10, 30, 20.0]]), 8)[0]  # resized: 20 -> 8 pixels
    assert small.shape == (8, 8, 3) and small[4, 4, 0] == 255 and small[0, 0, 0] == 0


def test_crop_probe_tells_apart_marks_smaller_than_a_patch():
    """Two classes of 6-pixel marks (red, blue) at random places on noise: box pooling of
    16-pixel patches mostly sees the noise; each box's own crop shows the mark."""
    from vit_perception.data.bags import Frame
    from vit_perception.evaluation.probe import probe_frames
    from vit_perception.models.vit import ViTBackbone

    torch.manual_seed(0)
    net = ViTBackbone(input_size=(64, 48), patch_size=16, embed_dim=32, depth=1, num_heads=2)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(24):
        img = rng.integers(0, 256, (48, 64, 3)).astype(np.uint8)
        x, y = rng.integers(2, 56), rng.integers(2, 40)
        img[y:y + 6, x:x + 6] = (255, 0, 0) if i % 2 else (0, 0, 255)
        frames.append(Frame(i, i, "f", img, np.array([[x, y, x + 6, y + 6.0]]),
                            ["blue" if i % 2 == 0 else "red"], np.array([i % 2])))
    result = probe_frames(net, frames, ["blue", "red"], (64, 48), None, None, crop_size=32)
    assert result.knn_accuracy_crop == 1.0 and result.linear_accuracy_crop == 1.0
    assert "knn_accuracy_crop" in result.metrics()
    plain = probe_frames(net, frames, ["blue", "red"], (64, 48), None, None)
    assert plain.knn_accuracy_crop is None and "knn_accuracy_crop" not in plain.metrics()


def test_probe_command_bad_input_is_one_clear_line(photo_bag, tmp_path, capsys):
    assert main(["probe", "--backbone", str(tmp_path / "nope.pt"), "--bag",
                 str(photo_bag)]) == 2
    err = capsys.readouterr().err
    assert "nope.pt" in err and "Traceback" not in err
    assert main(["probe", "--backbone", "vit_tiny_detr", "--bag", str(photo_bag),
                 "--labels-topic", "/nothing", "--no-progress"]) == 2
    assert "/nothing" in capsys.readouterr().err


def test_probe_counts_test_objects_of_classes_missing_from_train():
    from vit_perception.data.bags import Frame
    from vit_perception.evaluation.probe import probe_frames
    from vit_perception.models.vit import ViTBackbone

    net = ViTBackbone(input_size=(64, 48), patch_size=16, embed_dim=32, depth=1, num_heads=2)
    img = np.full((48, 64, 3), 90, np.uint8)
    box = np.array([[8.0, 8.0, 40.0, 40.0]])
    frames = [Frame(i, i, "f", img, box, ["a" if i < 2 else "b"],
                    np.array([0 if i < 2 else 1])) for i in range(4)]
    result = probe_frames(net, frames, ["a", "b"], (64, 48), None, None, keep=[0, 3])
    assert (result.train_objects, result.test_objects, result.unseen_test_objects) == (2, 2, 2)
    assert result.knn_accuracy == 0.0  # class b never seen: nothing can be right
    assert [s.index for s in result.samples] == [0, 3]
