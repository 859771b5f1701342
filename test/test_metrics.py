"""coco_metrics against pycocotools, identical predictions, empty cases."""

from __future__ import annotations

import numpy as np
import pytest

from vit_perception.evaluation.coco_metrics import (
    METRIC_KEYS,
    class_agnostic_metrics,
    coco_dicts,
    coco_metrics,
    format_table,
)

CLASSES = ["a", "b", "c"]


def _random_set(rng, n_images=25):
    gt, pred = [], []
    for _ in range(n_images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 500, (n, 2))
        wh = np.exp(rng.uniform(np.log(8), np.log(200), (n, 2)))  # small, medium and large
        boxes = np.hstack([xy, xy + wh])
        labels = rng.integers(0, 3, n)
        gt.append({"boxes": boxes, "labels": labels})
        m = int(rng.integers(0, 5))
        noisy = boxes + rng.normal(0, 0.08, boxes.shape) * np.hstack([wh, wh])
        extra = rng.uniform(0, 500, (m, 2))
        extra = np.hstack([extra, extra + rng.uniform(5, 100, (m, 2))])
        pb = np.vstack([noisy, extra])
        pb[:, 2:] = np.maximum(pb[:, 2:], pb[:, :2] + 1)
        pl = np.concatenate([np.where(rng.random(n) < 0.85, labels, (labels + 1) % 3),
                             rng.integers(0, 3, m)])
        pred.append({"boxes": pb, "labels": pl, "scores": rng.random(n + m)})
    return gt, pred


def _pycocotools(gt, pred):
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, results = coco_dicts(gt, pred, CLASSES)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def test_equals_pycocotools(rng):
    gt, pred = _random_set(rng)
    ours = coco_metrics(gt, pred, CLASSES)
    ev = _pycocotools(gt, pred)
    for i, key in enumerate(METRIC_KEYS):
        assert ours[key] == pytest.approx(ev.stats[i], abs=1e-6), key
    assert 0.05 < ours["AP"] < 0.95  # a non-trivial case
    for k, name in enumerate(CLASSES):
        p = ev.eval["precision"][:, :, k, 0, -1]
        assert ours["per_class"][name] == pytest.approx(p[p > -1].mean(), abs=1e-6)
    assert set(ours) == {*METRIC_KEYS, "per_class"}


def test_identical_predictions_give_ap_one(rng):
    gt, _ = _random_set(rng, 10)
    pred = [{"boxes": g["boxes"], "labels": g["labels"], "scores": np.ones(len(g["labels"]))}
            for g in gt]
    m = coco_metrics(gt, pred, CLASSES)
    for key in ("AP", "AP50", "AP75", "AR10", "AR100"):
        assert m[key] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in m["per_class"].values())


def test_wrong_class_gives_zero_and_empty_predictions(rng):
    gt = [{"boxes": [[0, 0, 50, 50]], "labels": [0]}]
    wrong = [{"boxes": [[0, 0, 50, 50]], "labels": [1], "scores": [0.9]}]
    assert coco_metrics(gt, wrong, CLASSES)["AP"] == 0.0
    none = [{"boxes": np.zeros((0, 4)), "labels": [], "scores": []}]
    m = coco_metrics(gt, none, CLASSES)
    assert m["AP"] == 0.0 and m["per_class"] == {"a": 0.0, "b": -1.0, "c": -1.0}
    with pytest.raises(ValueError):
        coco_metrics(gt, [], CLASSES)


def test_class_agnostic_counts_a_found_box_whatever_its_class(rng):
    gt, _ = _random_set(rng, 10)
    # every box found, every class wrong: nothing per class, everything with classes merged
    wrong = [{"boxes": g["boxes"], "labels": (np.asarray(g["labels"]) + 1) % len(CLASSES),
              "scores": np.ones(len(g["labels"]))} for g in gt]
    assert coco_metrics(gt, wrong, CLASSES)["AP50"] == 0.0
    assert class_agnostic_metrics(gt, wrong) == {"AP": pytest.approx(1.0),
                                                 "AP50": pytest.approx(1.0)}
    # a box that misses stays a miss however the classes are merged
    shifted = [{"boxes": np.asarray(g["boxes"], np.float64) + 1000.0, "labels": g["labels"],
                "scores": np.ones(len(g["labels"]))} for g in gt]
    assert class_agnostic_metrics(gt, shifted)["AP50"] == 0.0
    assert "any class" in format_table({"AP": 0.0, "class_agnostic": {"AP": 1.0, "AP50": 1.0}})
