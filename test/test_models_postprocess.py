"""Letterbox geometry, preprocessing and the post-processor's round trip to frame pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vit_perception.models.box_ops import box_xyxy_to_cxcywh
from vit_perception.models.postprocess import PostProcessor
from vit_perception.models.preprocess import IMAGENET_STD, letterbox_params, preprocess

SIZES = [(640, 480), (1280, 720), (480, 640), (333, 517), (320, 240), (1000, 100)]


@pytest.mark.parametrize("src", SIZES)
def test_postprocessor_round_trips_boxes_through_letterbox(src):
    src_w, src_h = src
    dst_w, dst_h = 320, 240
    lb = letterbox_params(src_w, src_h, dst_w, dst_h)
    assert lb.resized_w <= dst_w and lb.resized_h <= dst_h
    assert lb.resized_w == dst_w or lb.resized_h == dst_h  # fills one side
    frame_boxes = np.array([[0.1 * src_w, 0.2 * src_h, 0.5 * src_w, 0.9 * src_h],
                            [0.0, 0.0, src_w, src_h],
                            [0.7 * src_w, 0.05 * src_h, 0.75 * src_w, 0.3 * src_h]])
    inp = lb.to_input(frame_boxes) / np.array([dst_w, dst_h, dst_w, dst_h])
    pred_boxes = box_xyxy_to_cxcywh(torch.tensor(inp, dtype=torch.float32))[None]
    logits = torch.full((1, 3, 3), -5.0)
    logits[0, torch.arange(3), torch.tensor([0, 1, 0])] = 5.0
    dets = PostProcessor(["a", "b"])({"pred_logits": logits, "pred_boxes": pred_boxes}, [lb])[0]
    order = np.argsort(dets.boxes[:, 0] + 1e-3 * dets.boxes[:, 1])
    expected = frame_boxes[np.argsort(frame_boxes[:, 0] + 1e-3 * frame_boxes[:, 1])]
    tol = 1e-3 * max(src_w, src_h)
    np.testing.assert_allclose(dets.boxes[order], expected, atol=tol)
    assert sorted(dets.labels.tolist()) == [0, 0, 1] and set(dets.class_names) == {"a", "b"}


def test_postprocessor_threshold_order_limit_and_clip():
    lb = letterbox_params(640, 480, 320, 240)
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 9.0], [3.0, 0.0, 0.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 2.0, 2.0]] * 4])  # larger than the frame: clipped
    post = PostProcessor(["a", "b"], score_threshold=0.5, max_detections=2)
    dets = post({"pred_logits": logits, "pred_boxes": boxes}, [lb])[0]
    assert dets.labels.tolist() == [1, 0] and np.all(np.diff(dets.scores) <= 0)
    np.testing.assert_allclose(dets.boxes[0], [0, 0, 640, 480])
    assert len(post({"pred_logits": logits, "pred_boxes": boxes}, [lb],
                    score_threshold=0.99)[0].scores) == 0


def test_preprocess_places_content_where_letterbox_says():
    frame = np.zeros((100, 400, 3), np.uint8)
    frame[20:60, 100:200] = 255  # white block, xyxy (100, 20, 200, 60)
    images, (lb,) = preprocess([frame], 200, 200, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert images.shape == (1, 3, 200, 200) and (lb.pad_x, lb.pad_y) == (0, 75)
    x0, y0, x1, y1 = lb.to_input(np.array([100.0, 20.0, 200.0, 60.0]))
    white = images[0, 0] > 0.9
    ys, xs = torch.nonzero(white, as_tuple=True)
    assert abs(xs.min().item() - x0) <= 1 and abs(xs.max().item() + 1 - x1) <= 1
    assert abs(ys.min().item() - y0) <= 1 and abs(ys.max().item() + 1 - y1) <= 1
    assert images[0, :, :75].abs().max() == 0  # padding is the mean colour (zero)
    # contract form and tensor frames give the same result
    same, _ = preprocess([torch.from_numpy(frame)], (200, 200), (0.5,) * 3, (0.5,) * 3, "cpu")
    assert torch.allclose(images, same)


def test_preprocess_mixed_sizes_batch():
    frames = [np.full((240, 320, 3), 10, np.uint8), np.full((480, 320, 3), 200, np.uint8)]
    images, lbs = preprocess(frames, 160, 120, (0.0,) * 3, (1.0,) * 3)
    assert images.shape == (2, 3, 120, 160) and lbs[1].pad_x == 40
    assert images[0].mean().item() == pytest.approx(10 / 255, abs=1e-4)


def test_cpu_uint8_path_agrees_with_the_torch_path():
    """uint8 frames on the CPU go through OpenCV; float frames (and GPUs) through torch: the
    same letterbox and normalisation, within one grey level of rounding."""
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
              rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)]
    fast, lbs = preprocess(frames, (320, 240))
    ref, ref_lbs = preprocess([torch.from_numpy(f).float() for f in frames], (320, 240))
    assert lbs == ref_lbs and fast.shape == ref.shape == (2, 3, 240, 320)
    one_level = 1.0 / (255 * min(IMAGENET_STD))
    assert float((fast - ref).abs().max()) <= one_level + 1e-5
    assert float((fast - ref).abs().mean()) < 0.3 * one_level  # rounding: ~0.25 on average
