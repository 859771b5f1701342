"""eval: recorded mode against pycocotools, model mode with a stand-in predictor, the CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from vit_perception.cli import main
from vit_perception.data.bag_writer import BagWriter
from vit_perception.data.bags import read_frames
from vit_perception.data.synth import write_synthetic_bag
from vit_perception.evaluation.coco_metrics import METRIC_KEYS, coco_metrics
from vit_perception.evaluation.replay import replay_model, score_recorded

W, H = 128, 96


def _noisy(boxes, rng):
    b = boxes + rng.normal(0, 3, boxes.shape)
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 2)
    return b


@pytest.fixture
def lab_bag(tmp_path):
    return write_synthetic_bag(tmp_path / "lab", frames=12, size=(W, H), num_classes=3, seed=3)


def _record_predictions(bag, out, rng, identical=False):
    """Write a bag with the images' labels plus noisy predictions on /detections."""
    frames = list(read_frames(bag))
    expected = []
    with BagWriter(out, "sqlite3") as w:
        for f in frames:
            w.write_image("/camera/image_raw", f.stamp_ns, f.frame_id, f.image)
            w.write_detections("/labels", f.stamp_ns, f.frame_id, f.boxes, f.class_names)
            if identical:
                boxes, names, scores = f.boxes, f.class_names, np.ones(len(f.boxes))
            else:
                boxes = np.vstack([_noisy(f.boxes, rng), [[5, 5, 40, 30]]])
                names = [*f.class_names, "red_cube"]
                scores = rng.random(len(boxes))
            w.write_detections("/detections", f.stamp_ns, f.frame_id, boxes, names, scores)
            expected.append((f, boxes, names, scores))
    return frames[0].classes, expected


def test_recorded_mode_equals_pycocotools(tmp_path, lab_bag, rng):
    classes, expected = _record_predictions(lab_bag, tmp_path / "rec", rng)
    result = score_recorded(tmp_path / "rec", "/detections")
    gt = [{"boxes": f.boxes, "labels": f.labels} for f, *_ in expected]
    pred = [{"boxes": b, "labels": [classes.index(n) for n in names], "scores": s}
            for _, b, names, s in expected]
    reference = coco_metrics(gt, pred, classes, backend="pycocotools")
    for key in METRIC_KEYS:
        assert result.metrics[key] == pytest.approx(reference[key], abs=1e-6), key
    assert 0 < result.metrics["AP"] < 1
    paths = result.save_figures(tmp_path / "figs")
    assert (tmp_path / "figs" / "pr_curve.png").stat().st_size > 1000
    assert any("worst_0" in p.name for p in paths)


def test_recorded_identical_predictions_give_ap_one(tmp_path, lab_bag, rng):
    _record_predictions(lab_bag, tmp_path / "rec", rng, identical=True)
    m = score_recorded(tmp_path / "rec", "/detections").metrics
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0)


class FakePredictor:
    """Stands in for runtime.Predictor: returns the ground truth of the frame it was given."""

    def __init__(self, bag):
        self.class_names = ["green_ball", "red_cube", "blue_cylinder"]  # model's own order
        self.truth = {f.image.tobytes(): f for f in read_frames(bag)}

    def predict(self, rgb):
        f = self.truth[rgb.tobytes()]
        labels = np.asarray([self.class_names.index(n) for n in f.class_names], np.int64)
        return SimpleNamespace(boxes=f.boxes.astype(np.float32), scores=np.full(len(labels), .9),
                               labels=labels, class_names=self.class_names,
                               timings={"preprocess": 1.0, "infer": 2.0, "postprocess": 0.5})

    def close(self):
        pass


def test_model_mode_writes_prediction_bag(tmp_path, lab_bag):
    result = replay_model(lab_bag, FakePredictor(lab_bag), out_bag=tmp_path / "preds")
    m = result.metrics
    assert m["AP"] == pytest.approx(1.0)
    assert m["latency_ms"]["median"] == pytest.approx(3.5) and m["fps"] > 0
    assert m["frames"] == 12
    # the output bag scores the same when fed back in recorded mode (with the labels bag)
    again = score_recorded(lab_bag, "/detections", prediction_bags=[tmp_path / "preds"])
    assert again.metrics["AP"] == pytest.approx(1.0)


def test_cli_model_mode_json(tmp_path, lab_bag, monkeypatch):
    from vit_perception.runtime import predictor as predictor_module

    monkeypatch.setattr(predictor_module.Predictor, "load",
                        classmethod(lambda cls, *a, **k: FakePredictor(lab_bag)))
    out = tmp_path / "m.json"
    assert main(["eval", "--bag", str(lab_bag), "--model", "x.pt", "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert set(METRIC_KEYS) <= set(metrics)
    assert set(metrics["latency_ms"]) == {"median", "p90", "p99", "mean"} and "fps" in metrics
    # the fake predicts the ground truth: found and named, so merging the classes changes nothing
    assert metrics["class_agnostic"]["AP50"] == pytest.approx(metrics["AP50"])
    assert (tmp_path / "m_predictions" / "metadata.yaml").exists()
    assert (tmp_path / "m_eval" / "pr_curve.png").exists()


def test_cli_recorded_missing_topic_fails_cleanly(lab_bag, capsys):
    assert main(["eval", "--bag", str(lab_bag), "--predictions-topic", "/nothing"]) == 1
    assert "/nothing" in capsys.readouterr().err
