"""Augmentation on the device (train.augment_device): the loader's uint8 letterboxed frames and
per-sample parameter rows, warped, jittered and normalised as one batch (here on the CPU, the
same code as on CUDA), with the boxes moved on the CPU by the same map."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ros_support.bags import train_val_bags
from vit_perception.cli import main
from vit_perception.models.box_ops import box_cxcywh_to_xyxy
from vit_perception.training.augment_draw import AugmentDraw, FrameAugment
from vit_perception.training.batch_augment import batch_augment, needs_jitter, needs_warp
from vit_perception.training.dataset import Sample, to_model_input
from vit_perception.training.device_data import LetterboxedDataset, collate

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIZE = (160, 128)
RED, GREEN, BACKGROUND = (250, 40, 40), (40, 220, 60), (20, 20, 90)


def _painted(w: int = 200, h: int = 150) -> Sample:
    """Two filled rectangles (their boxes) on a plain background."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BACKGROUND
    boxes = np.array([[20, 30, 70, 80], [120, 60, 180, 130]], np.float32)
    for (x1, y1, x2, y2), colour in zip(boxes.astype(int), (RED, GREEN)):
        img[y1:y2, x1:x2] = colour
    return Sample(boxes, np.array([0, 1]), w, h, "painted", _image=img)


def _batch(ds, items):
    frames, targets, params = collate([ds[i] for i in items])
    images = batch_augment(frames, params, MEAN, STD, warp=needs_warp(params),
                           jitter=needs_jitter(params))
    return images, targets, params


def _pixels(images: torch.Tensor) -> torch.Tensor:
    """Normalised model input -> 0..255 RGB ``[B, 3, H, W]``."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    return images * torch.tensor(STD).view(1, 3, 1, 1) * 255 + mean


def _input_boxes(target: dict) -> torch.Tensor:
    w, h = SIZE
    return box_cxcywh_to_xyxy(target["boxes"]) * torch.tensor([w, h, w, h])


@pytest.mark.parametrize("frame_size", [(200, 120), (160, 128), (100, 128)])
def test_identity_parameters_reproduce_the_cpu_preprocess(frame_size):
    w, h = frame_size
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    s = Sample(np.array([[10.0, 12.0, 50.0, 60.0]], np.float32), np.array([1]), w, h, "x",
               _image=img)
    frames, targets, params = collate([LetterboxedDataset([s], SIZE, MEAN)[(0, 3)]])
    assert frames.dtype == torch.uint8 and frames.shape == (1, 3, SIZE[1], SIZE[0])
    assert not needs_warp(params) and not needs_jitter(params)
    ref, ref_target = to_model_input(torch.from_numpy(img).permute(2, 0, 1),
                                     torch.from_numpy(s.boxes), torch.from_numpy(s.labels),
                                     SIZE, MEAN, STD)
    assert torch.equal(batch_augment(frames, params, MEAN, STD, warp=False, jitter=False)[0],
                       ref)
    # the warp itself with identity rows moves nothing (pixel centres sample pixel centres)
    warped = batch_augment(frames, params, MEAN, STD)[0]
    assert (warped - ref).abs().max() < 1e-3
    assert torch.equal(targets[0]["labels"], ref_target["labels"])
    assert torch.allclose(targets[0]["boxes"], ref_target["boxes"], atol=1e-6)


def test_flip_mirrors_image_and_boxes_of_each_sample_only():
    s = _painted()  # letterboxed with top/bottom padding: the flip keeps the frame in place
    ds = LetterboxedDataset([s], SIZE, MEAN)
    frames, targets, _ = collate([ds[0], ds[0]])
    flip, plain = FrameAugment(200, 150, flip=True), FrameAugment(200, 150)
    params = torch.stack([flip.params(_lb(s)), plain.params(_lb(s))])
    out = batch_augment(frames, params, MEAN, STD)
    base = batch_augment(frames, params[1:].repeat(2, 1), MEAN, STD, warp=False)
    assert (out[0] - base[0].flip(-1)).abs().max() < 1e-3
    assert (out[1] - base[1]).abs().max() < 1e-3  # its neighbour in the batch is not flipped
    boxes, labels = flip.boxes(s.boxes, s.labels)
    assert labels.tolist() == [0, 1]
    assert boxes.tolist() == [[130, 30, 180, 80], [20, 60, 80, 130]]  # 200 - x2, 200 - x1
    # and the flipped boxes frame the flipped pixels
    target = LetterboxedDataset([s], SIZE, MEAN, _Fixed(flip))[0][1]
    x1, y1, x2, y2 = _input_boxes(target)[0].round().int().tolist()
    red = _pixels(out[:1])[0]
    assert (red[:, y1 + 1:y2 - 1, x1 + 1:x2 - 1] - torch.tensor(RED).view(3, 1, 1)).abs().max() \
        < 3


class _Fixed:
    """An ``AugmentDraw`` stand-in that returns one given augmentation."""

    def __init__(self, aug: FrameAugment):
        self.aug = aug

    def __call__(self, seed, w, h, boxes):
        return self.aug


def _lb(s: Sample):
    from vit_perception.models.preprocess import letterbox_params

    return letterbox_params(s.width, s.height, *SIZE)


def test_zoom_and_crop_move_the_pixels_where_the_boxes_go():
    s = _painted()
    draw = AugmentDraw(hflip=0.5, crop=1.0, crop_min_scale=0.4, zoom_out=0.5, zoom_out_max=1.6,
                       photometric=0.0)
    ds = LetterboxedDataset([s], SIZE, MEAN, draw)
    items = [(0, seed) for seed in range(10)]
    images, targets, params = _batch(ds, items)
    assert needs_warp(params)
    zoomed = cropped = 0
    for k, ((_, seed), image, target, row) in enumerate(zip(items, _pixels(images), targets,
                                                            params)):
        aug = draw(seed, s.width, s.height, s.boxes)
        zoomed += aug.offset_x > 0 or aug.offset_y > 0
        cropped += aug.size != (s.width, s.height)
        # the crop keeps every box whole: both kept, each scaled exactly by the map
        assert target["labels"].tolist() == [0, 1], seed
        boxes = _input_boxes(target)
        lb = _lb(s)  # frame -> source input, then the row's map -> output (per axis)
        scale = torch.tensor([abs(float(row[0])) * lb.scale_x, float(row[2]) * lb.scale_y])
        sizes = boxes[:, 2:] - boxes[:, :2]
        assert torch.allclose(sizes, torch.from_numpy(s.boxes[:, 2:] - s.boxes[:, :2]) * scale,
                              atol=1e-3), seed
        x0, y0, x1, y1 = row[4:8].tolist()  # the augmented frame's extent in the input
        assert (boxes[:, 0] >= x0 - 1e-4).all() and (boxes[:, 2] <= x1 + 1e-4).all(), seed
        assert (boxes[:, 1] >= y0 - 1e-4).all() and (boxes[:, 3] <= y1 + 1e-4).all(), seed
        for (bx1, by1, bx2, by2), colour in zip(boxes.tolist(), (RED, GREEN)):
            inner = image[:, int(by1) + 2:int(by2) - 1, int(bx1) + 2:int(bx2) - 1]
            assert inner.numel() > 0, seed
            err = (inner - torch.tensor(colour, dtype=torch.float32).view(3, 1, 1)).abs()
            assert err.max() < 3, (seed, colour, err.max())
            # a ring two pixels outside the box is not the box's colour
            ring = [image[:, int(by1) - 2, int(bx1):int(bx2)], image[:, int(by2) + 2,
                                                                  int(bx1):int(bx2)]]
            for line in ring:
                if line.numel() and int(by1) - 2 >= 0 and int(by2) + 2 < SIZE[1]:
                    off = (line - torch.tensor(colour, dtype=torch.float32).view(3, 1)).abs()
                    assert off.amax(0).min() > 20, (seed, colour)
        # outside the augmented frame's extent: the letterbox padding, zero after normalising
        outside = images.new_ones(SIZE[1], SIZE[0], dtype=torch.bool)
        outside[int(y0):int(y1), int(x0):int(x1)] = False
        if outside.any():
            assert images[k][:, outside].abs().max() == 0, seed
    assert zoomed >= 2 and cropped >= 5  # the seeds exercised both


def test_boxes_are_clipped_to_the_crop_and_dropped_below_a_pixel():
    aug = FrameAugment(200, 150, offset_x=-30, offset_y=0, aug_w=100, aug_h=150)
    boxes, labels = aug.boxes(np.array([[20, 10, 60, 40], [25, 10, 30.5, 40], [110, 5, 140, 9]],
                                       np.float32), np.array([0, 1, 2]))
    # box 0 clipped at the window's left edge, box 1 now 0.5 px wide (dropped), box 2 kept
    assert labels.tolist() == [0, 2]
    assert boxes.tolist() == [[0, 10, 30, 40], [80, 5, 100, 9]]


def test_photometric_factors_apply_per_sample():
    s = _painted()
    ds = LetterboxedDataset([s], SIZE, MEAN)
    frames, _, _ = collate([ds[0], ds[0]])
    bright = FrameAugment(s.width, s.height, brightness=1.2).params(_lb(s))
    plain = FrameAugment(s.width, s.height).params(_lb(s))
    params = torch.stack([bright, plain])
    assert needs_jitter(params) and not needs_warp(params)
    out = _pixels(batch_augment(frames, params, MEAN, STD, warp=False))
    inside = frames[0].float()[:, 20:100, 10:150]  # inside the frame's extent
    assert torch.allclose(out[0][:, 20:100, 10:150], (inside * 1.2).clamp(0, 255), atol=1e-3)
    assert torch.allclose(out[1][:, 20:100, 10:150], inside, atol=1e-3)


def test_brightness_contrast_saturation_compose_as_torchvision_applies_them():
    from torchvision.transforms.v2 import functional as TF

    rng = np.random.default_rng(1)
    img = rng.integers(60, 190, (SIZE[1], SIZE[0], 3), dtype=np.uint8)  # fills the input
    s = Sample(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), *SIZE, "x", _image=img)
    frames, _, _ = collate([LetterboxedDataset([s], SIZE, MEAN)[0]] * 2)
    factors = [(0.8, 1.25, 0.75), (1.1, 0.7, 1.3)]
    params = torch.stack([FrameAugment(*SIZE, brightness=b, contrast=c, saturation=t)
                          .params(_lb(s)) for b, c, t in factors])
    out = _pixels(batch_augment(frames, params, MEAN, STD, warp=False))
    for k, (b, c, t) in enumerate(factors):  # no step overshoots 0..255 on these pixels
        ref = frames[k].float() / 255
        ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(ref, b), c), t)
        assert (out[k] - ref * 255).abs().max() < 0.05, k


def test_the_same_seed_gives_the_same_batch():
    s = _painted()
    draw = AugmentDraw(hflip=0.5, crop=0.7, zoom_out=0.5, photometric=1.0)
    ds = LetterboxedDataset([s, s], SIZE, MEAN, draw)
    items = [(0, 11), (1, 12), (0, 13)]
    a, b = _batch(ds, items), _batch(ds, items)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    for ta, tb in zip(a[1], b[1]):
        assert torch.equal(ta["boxes"], tb["boxes"])
    other = _batch(ds, [(0, 14), (1, 15), (0, 16)])
    assert not torch.equal(a[2], other[2])


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    return train_val_bags(tmp_path_factory.mktemp("bags"), 6, 2)


def _train_argv(bags, out, *extra):
    return ["train", "--config", "vit_tiny_detr", "--train", bags[0], "--val", bags[1],
            "--out", str(out), "--no-progress", "--epochs", "1", "--batch-size", "2",
            "--set", "input.width=96", "--set", "input.height=64",
            "--set", "train.threads=1", "--set", "train.warmup_steps=0",
            "--set", "train.log_every_steps=1", "--set", "train.checkpoint_every_s=0",
            "--set", "train.augment.photometric=1.0", "--set", "train.augment.crop=1.0",
            "--set", "train.augment.zoom_out=0.5", *extra]


def test_train_runs_with_augmentation_on_the_device(bags, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    with caplog.at_level("INFO", logger="vit_perception.training.loop"):
        assert main(_train_argv(bags, out, "--set", "train.augment_device=device")) == 0
    assert "augmentation in batches on cpu" in caplog.text
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3 and (out / "best.pt").is_file()
    losses = [json.loads(line)["loss"] for line in (out / "steps.jsonl").read_text()
              .splitlines()]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert "augment_device: device" in (out / "config.yaml").read_text()


def test_an_unknown_augment_device_is_refused(bags, tmp_path, capsys):
    assert main(_train_argv(bags, tmp_path / "run", "--set", "train.augment_device=gpu")) == 2
    err = capsys.readouterr().err
    assert "train.augment_device" in err and "'gpu'" in err


def _train_cfg(**train) -> dict:
    from vit_perception.config import load_config

    cfg = load_config("vit_tiny_detr", {
        "input": {"width": 96, "height": 64},
        "train": {"batch_size": 2, "warmup_steps": 0, "log_every_steps": 1, "ema_decay": 0.9,
                  "checkpoint_every_s": 0, "seed": 3, "threads": 1, "augment_device": "device",
                  "augment": {"crop": 1.0, "zoom_out": 0.5, "photometric": 1.0}}})
    cfg["train"].update(train)
    return cfg


def test_killed_run_resumes_on_the_same_curve_with_device_augmentation(bags, tmp_path):
    from vit_perception.training import StopTraining, train

    kwargs = {"epochs": 2, "samples_per_epoch": 4, "checkpoint_every_steps": 1,
              "eval_every": 0}  # validation only at the end: faster
    full = train(_train_cfg(**kwargs), [bags[0]], [bags[1]], tmp_path / "full", progress=False)

    def kill_at_4(step, losses):  # last.pt was written at step 3, mid epoch 2
        if step == 4:
            raise StopTraining("simulated kill")

    with pytest.raises(StopTraining):
        train(_train_cfg(**kwargs), [bags[0]], [bags[1]], tmp_path / "cut", progress=False,
              step_callback=kill_at_4)
    train(_train_cfg(**kwargs), [bags[0]], [bags[1]], tmp_path / "cut", resume=True,
          progress=False)
    a, b = [{r["step"]: r["loss"] for r in map(json.loads, (tmp_path / run / "steps.jsonl")
                                                .read_text().splitlines())}
            for run in ("full", "cut")]
    assert full["steps"] == 4 and sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:  # the resumed step 4 saw the same frames under the same augmentation
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-5), (step, a, b)


def test_distill_augments_the_teachers_frames_with_the_same_draw(bags, tmp_path):
    """Without augmentation the device path gives the CPU path's student and teacher inputs
    and coordinate map; with it, a short distillation runs."""
    from vit_perception.config import load_config
    from vit_perception.models.builder import build
    from vit_perception.models.checkpoint import save_checkpoint
    from vit_perception.training.dataset import load_frames
    from vit_perception.training.distill import distill
    from vit_perception.training.distill_data import DistillDataset, DistillLetterboxedDataset

    samples = load_frames([bags[1]], ["green_ball", "red_cube"], "/camera/image_raw", "/labels")
    student, teacher = ((96, 64), MEAN, STD), ((96, 96), [0.5] * 3, [0.25] * 3)
    cpu = DistillDataset(samples, [True] * len(samples), student, teacher)
    dev = DistillLetterboxedDataset(samples, [True] * len(samples), student[:2], teacher[:2])
    ref_image, ref = cpu[(0, 5)]
    frame, target, params = dev[(0, 5)]
    assert torch.equal(batch_augment(frame[None], params[None], MEAN, STD, warp=False)[0],
                       ref_image)
    t = batch_augment(target["teacher_image"][None], target["teacher_params"][None], [0.5] * 3,
                      [0.25] * 3, warp=False)[0]
    assert torch.equal(t, ref["teacher_image"])
    assert torch.allclose(target["input_map"], ref["input_map"])
    assert torch.allclose(target["boxes"], ref["boxes"], atol=1e-6)

    cfg = load_config("vit_tiny_detr", {"input": {"width": 96, "height": 96},
                                        "classes": ["green_ball", "red_cube"],
                                        "model": {"backbone": {"embed_dim": 96, "depth": 2}}})
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "teacher.pt", build(cfg)[0], cfg)
    result = distill(_train_cfg(epochs=1, samples_per_epoch=4, ema_decay=0.0),
                     tmp_path / "teacher.pt", [bags[0]], [bags[1]], tmp_path / "run",
                     progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert result["steps"] == 2 and all(np.isfinite(r["loss_kd_ce"]) for r in rows)
