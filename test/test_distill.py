"""distill end to end on tiny models: the student moves towards the teacher, unlabelled frames get
no ground-truth loss, the command writes a run directory whose checkpoint the predictor and the
node (over DDS) take unchanged, and a teacher that does not know the bags' classes is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from vit_perception.cli import main
from vit_perception.config import load_config
from vit_perception.data.synth import write_synthetic_bag
from vit_perception.models.builder import build
from vit_perception.models.checkpoint import save_checkpoint

CLASSES = ["green_ball", "red_cube"]
NO_AUGMENT = {"hflip": 0, "crop": 0, "zoom_out": 0, "photometric": 0}
STUDENT = {  # student 96x64 (3:2), teacher 96x96 (1:1): the letterboxes differ
    "input": {"width": 96, "height": 64},
    "train": {"batch_size": 2, "warmup_steps": 0, "log_every_steps": 1, "checkpoint_every_s": 0,
              "seed": 3, "threads": 1, "ema_decay": 0.0},
}


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_bags")
    return {name: str(write_synthetic_bag(root / name, frames=n, seed=s, size=(160, 120),
                                          num_classes=2))
            for name, n, s in (("train", 4, 1), ("val", 2, 2), ("unlabelled", 2, 3))}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A random-weight teacher of a different width and input size than the student."""
    cfg = load_config("vit_tiny_detr", {"input": {"width": 96, "height": 96}, "classes": CLASSES,
                                        "model": {"backbone": {"embed_dim": 96, "depth": 2}}})
    torch.manual_seed(0)
    model, _, _ = build(cfg)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, model, cfg)
    return path


def _student(**distill) -> dict:
    cfg = load_config("vit_tiny_detr", STUDENT)
    cfg["distill"] = distill
    return cfg


def _steps(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]


def test_student_moves_towards_the_teacher(bags, teacher, tmp_path):
    from vit_perception.training.distill import distill

    cfg = _student(loss_gt=0.0, teacher_threshold=0.0)  # teacher targets alone, every query
    cfg["train"].update(epochs=1, samples_per_epoch=16, lr=1e-3, augment=NO_AUGMENT)
    result = distill(cfg, teacher, [bags["val"]], [bags["val"]], tmp_path / "run",
                     progress=False)  # batches drawn from the same 2 frames
    rows = _steps(tmp_path / "run")
    assert result["steps"] == len(rows) == 8

    first, last = rows[0], rows[-1]  # measured: cos 1.07 -> 0.21, L1 .50 -> .45, GIoU 2.70 -> 2.62
    assert last["loss_feat_cos"] < 0.5 * first["loss_feat_cos"]
    assert last["loss_kd_bbox"] < 0.95 * first["loss_kd_bbox"]
    assert last["loss_kd_giou"] < first["loss_kd_giou"]


def test_unlabelled_frames_contribute_no_ground_truth_loss(bags, teacher, tmp_path):
    from vit_perception.training.distill import DistillTrainer
    from vit_perception.training.distributed import Dist

    cfg = _student()
    cfg["train"]["augment"] = NO_AUGMENT
    trainer = DistillTrainer(cfg, teacher, [bags["train"]], [bags["val"]], tmp_path / "run",
                             Dist(), torch.device("cpu"), unlabelled_bags=[bags["unlabelled"]],
                             progress=False)
    data = trainer.loader.dataset
    assert data.has_labels == [True] * 4 + [False] * 2
    # the sampler's class frequencies come from the labelled frames; unlabelled ones repeat once
    from vit_perception.training.sampler import repeat_factors

    labelled = repeat_factors([s.labels for s in trainer.train_samples[:4]], 2, 1.0)
    np.testing.assert_allclose(trainer.repeat_factors(1.0), [*labelled, 1.0, 1.0])
    # counting the unlabelled frames as frames without classes would draw the labelled more often
    every = repeat_factors([s.labels for s in trainer.train_samples], 2, 1.0)
    assert (every[:4] > labelled).all()
    (x_l, t_l), (x_u, t_u) = data[0], data[4]
    assert t_l["has_labels"] and len(t_l["boxes"]) > 0
    assert not t_u["has_labels"] and len(t_u["boxes"]) == 0  # the bag's own labels are ignored
    assert t_u["teacher_image"].shape == (3, 96, 96)
    t_u = {**t_u, "labels": t_l["labels"], "boxes": t_l["boxes"]}  # even boxes do not count
    with torch.no_grad():
        alone = trainer.compute_losses(x_l[None], [t_l])
        mixed = trainer.compute_losses(torch.stack([x_l, x_u]), [t_l, t_u])
        only_u = trainer.compute_losses(x_u[None], [t_u])
    assert alone["loss_gt"].item() > 1.0
    torch.testing.assert_close(mixed["loss_gt"], alone["loss_gt"], rtol=1e-4, atol=1e-4)
    assert only_u["loss_gt"].item() == 0.0 and "loss_ce" not in only_u
    d = trainer.dopts
    kd = sum(float(d[k]) * only_u[k] for k in ("loss_kd_ce", "loss_kd_noobj", "loss_kd_bbox",
                                                "loss_kd_giou", "loss_feat_cos", "loss_feat_l1"))
    torch.testing.assert_close(only_u["loss"], kd)


def test_kd_labelled_off_distils_only_the_unlabelled_frames(bags, teacher, tmp_path):
    cfg = _student(kd_labelled=False, teacher_threshold=0.0)
    cfg["train"]["augment"] = NO_AUGMENT
    trainer = _trainer(cfg, teacher, bags, tmp_path / "run", unlabelled_bags=[bags["unlabelled"]])
    (x_l, t_l), (x_u, t_u) = trainer.loader.dataset[0], trainer.loader.dataset[4]
    with torch.no_grad():
        labelled = trainer.compute_losses(x_l[None], [t_l])
        mixed = trainer.compute_losses(torch.stack([x_l, x_u]), [t_l, t_u])
        only_u = trainer.compute_losses(x_u[None], [t_u])
    assert labelled["loss_gt"].item() > 1.0 and labelled["loss_kd_giou"].item() == 0.0
    assert only_u["loss_kd_giou"].item() > 0.0
    for key in ("loss_kd_ce", "loss_kd_noobj", "loss_kd_bbox", "loss_kd_giou"):
        torch.testing.assert_close(mixed[key], only_u[key], rtol=1e-4, atol=1e-5)


def test_weight_by_frames_makes_every_frame_count_the_same(bags, teacher, tmp_path):
    """``weight_by_frames``: a batch of one labelled and one unlabelled frame weighs each part
    by its half of the batch, so its loss is the mean of the two frames' own losses (without
    it, the sum: each part is a mean over its own frames)."""
    losses = {}
    for by_frames in (False, True):
        cfg = _student(kd_labelled=False, teacher_threshold=0.0, weight_by_frames=by_frames,
                       loss_feat_cos=0, loss_feat_l1=0)
        cfg["train"]["augment"] = NO_AUGMENT
        trainer = _trainer(cfg, teacher, bags, tmp_path / f"run{by_frames}",
                           unlabelled_bags=[bags["unlabelled"]])
        (x_l, t_l), (x_u, t_u) = trainer.loader.dataset[0], trainer.loader.dataset[4]
        with torch.no_grad():
            losses[by_frames] = [trainer.compute_losses(x, t) for x, t in (
                (x_l[None], [t_l]), (x_u[None], [t_u]), (torch.stack([x_l, x_u]), [t_l, t_u]))]
    for by_frames, scale in ((False, 1.0), (True, 0.5)):
        labelled, only_u, mixed = losses[by_frames]
        assert labelled["loss_gt"].item() > 1.0 and only_u["loss_kd_giou"].item() > 0.0
        torch.testing.assert_close(mixed["loss_gt"], scale * labelled["loss_gt"], rtol=1e-4,
                                   atol=1e-5)
        torch.testing.assert_close(mixed["loss_kd_giou"], scale * only_u["loss_kd_giou"],
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(mixed["loss"], scale * (labelled["loss"] + only_u["loss"]),
                                   rtol=1e-4, atol=1e-4)


def test_pseudo_labels_train_unlabelled_frames_on_the_teachers_detections(bags, teacher,
                                                                          tmp_path):
    """``pseudo_labels``: an unlabelled frame's set loss is the criterion against the teacher's
    detections on it (boxes and best class), and no detection-distillation term is left."""
    from vit_perception.training.distill_losses import teacher_targets
    from vit_perception.training.translator import map_boxes

    cfg = _student(kd_labelled=False, teacher_threshold=0.0, pseudo_labels=True,
                   loss_feat_cos=0, loss_feat_l1=0)
    cfg["train"]["augment"] = NO_AUGMENT
    trainer = _trainer(cfg, teacher, bags, tmp_path / "run", unlabelled_bags=[bags["unlabelled"]])
    x_u, t_u = trainer.loader.dataset[4]
    assert not t_u["has_labels"]
    trainer.net.eval()
    with torch.no_grad():
        got = trainer.compute_losses(x_u[None], [t_u])
        out = trainer.teacher(t_u["teacher_image"][None])
        pseudo = teacher_targets(out["pred_logits"], map_boxes(out["pred_boxes"],
                                                               t_u["input_map"][None]), 0.0)[0]
        want = trainer.criterion(trainer.net(x_u[None]),
                                 [{"labels": pseudo["labels"], "boxes": pseudo["boxes"]}])
    assert len(pseudo["labels"]) > 0
    torch.testing.assert_close(got["loss_gt"], want["loss"], rtol=1e-4, atol=1e-5)
    assert all(got[k].item() == 0.0 for k in ("loss_kd_ce", "loss_kd_noobj", "loss_kd_bbox",
                                               "loss_kd_giou"))


def test_pseudo_labels_leave_unsure_teacher_boxes_out_of_no_object(bags, teacher, tmp_path):
    """``pseudo_labels`` with ``teacher_ignore_threshold``: the teacher's predictions scoring
    between it and ``teacher_threshold`` reach the set criterion as the frame's
    ``ignore_boxes`` (an object the teacher half-saw is not taught as background)."""
    from vit_perception.training.distill_losses import teacher_targets
    from vit_perception.training.translator import map_boxes

    cfg = _student(kd_labelled=False, pseudo_labels=True, loss_feat_cos=0, loss_feat_l1=0)
    cfg["train"]["augment"] = NO_AUGMENT
    trainer = _trainer(cfg, teacher, bags, tmp_path / "run", unlabelled_bags=[bags["unlabelled"]])
    x_u, t_u = trainer.loader.dataset[4]
    out = trainer.teacher(t_u["teacher_image"][None])
    scores = out["pred_logits"].softmax(-1)[0, :, :-1].max(-1).values
    trainer.threshold, trainer.ignore_threshold = float(scores.median()), 0.0
    seen: list = []
    criterion = trainer.criterion
    trainer.criterion = lambda outputs, targets: seen.append(targets) or criterion(outputs,
                                                                                   targets)
    with torch.no_grad():
        trainer.compute_losses(x_u[None], [t_u])
    want = teacher_targets(out["pred_logits"], map_boxes(out["pred_boxes"],
                                                         t_u["input_map"][None]),
                           trainer.threshold, 0.0)[0]
    assert len(want["labels"]) > 0 and len(want["ignore_boxes"]) > 0
    got, = seen[0]
    torch.testing.assert_close(got["boxes"], want["boxes"])
    torch.testing.assert_close(got["ignore_boxes"], want["ignore_boxes"])


def _trainer(cfg, teacher, bags, run_dir, **kwargs):
    from vit_perception.training.distill import DistillTrainer
    from vit_perception.training.distributed import Dist

    return DistillTrainer(cfg, teacher, [bags["train"]], [bags["val"]], run_dir, Dist(),
                          torch.device("cpu"), progress=False, **kwargs)


def test_cached_teacher_targets_equal_the_live_ones(bags, teacher, tmp_path):
    """Without augmentation, the detections cached once per frame give the targets (and the
    unsure boxes of ``teacher_ignore_threshold``, both without the duplicates
    ``teacher_nms_iou`` drops) and the KD losses the teacher's pass on the batch gives (to
    float rounding)."""
    from vit_perception.training.distill import cached_targets
    from vit_perception.training.distill_losses import teacher_targets
    from vit_perception.training.translator import map_boxes

    def trainer(cache: bool, name: str):
        cfg = _student(teacher_cache=cache, teacher_threshold=0.4, teacher_ignore_threshold=0.2,
                       teacher_nms_iou=0.7)
        cfg["train"]["augment"] = NO_AUGMENT
        return _trainer(cfg, teacher, bags, tmp_path / name, unlabelled_bags=[bags["unlabelled"]])

    live, cached = trainer(False, "live"), trainer(True, "cached")
    assert cached.translator is not None and live.translator is not None
    items = [0, 3, 4]  # labelled and unlabelled frames
    x, targets = zip(*(live.loader.dataset[i] for i in items))
    xc, cached_t = zip(*(cached.loader.dataset[i] for i in items))
    torch.testing.assert_close(torch.stack(x), torch.stack(xc))
    out = live.teacher(torch.stack([t["teacher_image"] for t in targets]))
    want = teacher_targets(out["pred_logits"], map_boxes(
        out["pred_boxes"], torch.stack([t["input_map"] for t in targets])), 0.4, 0.2, 0.7)
    got = cached_targets(list(cached_t), torch.device("cpu"), 0.4, 0.2, 0.7)
    assert sum(len(w["labels"]) for w in want) > 0
    assert sum(len(w["ignore_boxes"]) for w in want) > 0
    for w, g, t in zip(want, got, cached_t):
        torch.testing.assert_close(g["boxes"], w["boxes"], atol=1e-4, rtol=0)
        torch.testing.assert_close(g["ignore_boxes"], w["ignore_boxes"], atol=1e-4, rtol=0)
        torch.testing.assert_close(g["logits"], w["logits"], atol=1e-4, rtol=1e-4)
        assert torch.equal(g["labels"], w["labels"])
        assert "teacher_image" not in t and (t["labels"] >= 0).all()  # GT split off again
    for t, tc, f in zip(targets, cached_t, out["features"]):
        torch.testing.assert_close(tc["boxes"], t["boxes"])
        torch.testing.assert_close(tc["input_map"], t["input_map"], atol=1e-6, rtol=0)
        torch.testing.assert_close(tc["teacher_features"].float(), f, atol=2e-2, rtol=1e-2)
    cached.translator.load_state_dict(live.translator.state_dict())
    with torch.no_grad():
        a = live.compute_losses(torch.stack(x), list(targets))
        b = cached.compute_losses(torch.stack(xc), list(cached_t))
    for key in ("loss_gt", "loss_kd_ce", "loss_kd_noobj", "loss_kd_bbox", "loss_kd_giou",
                "loss_feat_cos", "loss_feat_l1"):
        torch.testing.assert_close(b[key], a[key], atol=2e-3, rtol=2e-3)
    assert b["loss_feat_cos"] > 0


def test_cached_teacher_boxes_move_with_the_augmentation(bags, teacher, tmp_path):
    def item(augment: dict, name: str):
        cfg = _student(teacher_cache=True, teacher_threshold=0.2)
        cfg["train"]["augment"] = {**NO_AUGMENT, **augment}
        return _trainer(cfg, teacher, bags, tmp_path / name).loader.dataset[(1, 7)][1]

    plain, flipped = item({}, "plain"), item({"hflip": 1.0}, "flipped")
    assert len(plain["teacher_boxes"]) == len(flipped["teacher_boxes"]) > 0
    mirrored = plain["teacher_boxes"].clone()
    mirrored[:, 0] = 1 - mirrored[:, 0]  # the student's letterbox pads 5 + 6 pixels of 96
    torch.testing.assert_close(flipped["teacher_boxes"], mirrored, atol=1.5 / 96, rtol=0)
    torch.testing.assert_close(flipped["teacher_logits"], plain["teacher_logits"])
    zoomed = item({"zoom_out": 1.0, "zoom_out_max": 2.0}, "zoomed")  # boxes shrink with frame
    assert zoomed["teacher_boxes"][:, 2:].sum() < 0.9 * plain["teacher_boxes"][:, 2:].sum()


def test_cached_feature_cells_move_with_the_augmentation(bags, teacher, tmp_path):
    """The map from the cached feature cells (un-augmented frame, teacher input) to the student's
    augmented input agrees with where the augmentation moved the teacher's boxes, through flips,
    zoom-outs and crops; cells the crop cut off are masked out."""
    from vit_perception.models.box_ops import box_xyxy_to_cxcywh
    from vit_perception.models.preprocess import letterbox_params
    from vit_perception.training.translator import map_boxes, teacher_cells

    cfg = _student(teacher_cache=True, teacher_threshold=0.2)
    cfg["train"]["augment"] = {**NO_AUGMENT, "hflip": 0.5, "zoom_out": 0.5, "zoom_out_max": 2.0,
                               "crop": 0.7, "crop_min_scale": 0.3}
    data = _trainer(cfg, teacher, bags, tmp_path / "run").loader.dataset
    sample, (frame_boxes, _, features) = data.samples[1], data.teacher_preds[1]
    assert features is not None and len(frame_boxes) > 0
    lb = letterbox_params(sample.width, sample.height, 96, 96)
    t_boxes = box_xyxy_to_cxcywh(lb.to_input(torch.from_numpy(frame_boxes))) / 96
    flips, cut = set(), 0
    for seed in range(12):
        target = data[(1, seed)][1]
        m = target["input_map"]
        flips.add(bool(m[0] < 0))
        moved = map_boxes(t_boxes[None], m[None])[0]
        torch.testing.assert_close(moved, target["teacher_boxes"], atol=1.5 / 64, rtol=0)
        grid, mask = teacher_cells(m[None], tuple(features.shape[-2:]), (1.0, 1.0), (1.0, 1.0))
        cut += int((~mask).sum())
        assert (grid[mask].abs() <= 1 + 1e-5).all()  # every kept cell lands on the input
    assert flips == {True, False} and cut > 0


def test_distill_with_the_teacher_cache_runs_the_teacher_once_per_frame(bags, teacher, tmp_path,
                                                                        monkeypatch):
    from vit_perception.training import teacher as teacher_module
    from vit_perception.training.distill import distill

    frames = []
    call = teacher_module.Teacher.__call__

    def counting(self, images):
        frames.append(len(images))
        return call(self, images)

    monkeypatch.setattr(teacher_module.Teacher, "__call__", counting)
    cfg = _student(loss_gt=0.0, teacher_threshold=0.0, teacher_cache=True)
    cfg["train"].update(epochs=1, samples_per_epoch=16, lr=1e-3)  # default augmentation
    result = distill(cfg, teacher, [bags["train"]], [bags["val"]], tmp_path / "run",
                     unlabelled_bags=[bags["unlabelled"]], progress=False)
    rows = _steps(tmp_path / "run")
    assert result["steps"] == len(rows) == 8
    assert sum(frames) == 6  # 4 labelled + 2 unlabelled frames, once, for 16 samples drawn
    assert rows[-1]["loss_kd_bbox"] < rows[0]["loss_kd_bbox"]
    assert rows[-1]["loss_feat_cos"] < rows[0]["loss_feat_cos"]  # cached feature maps distil


@pytest.fixture(scope="module")
def cli_run(bags, teacher, tmp_path_factory):
    run = tmp_path_factory.mktemp("distill_cli") / "run"
    student = tmp_path_factory.mktemp("student_cfg") / "student.yaml"
    cfg = load_config("vit_tiny_detr", STUDENT)
    cfg["train"].update(epochs=1, samples_per_epoch=4)
    student.write_text(yaml.safe_dump(cfg))
    code = main(["distill", "--teacher", str(teacher), "--student-config", str(student),
                 "--train", bags["train"], "--unlabelled", bags["unlabelled"],
                 "--val", bags["val"], "--out", str(run), "--temperature", "3",
                 "--batch-size", "2", "--no-progress"])
    assert code == 0
    return run


def test_command_writes_a_run_directory_of_a_plain_detector(cli_run):
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.jsonl", "steps.jsonl",
                 "curves.png"):
        assert (cli_run / name).is_file(), name
    assert any((cli_run / "tb").iterdir())
    cfg = yaml.safe_load((cli_run / "config.yaml").read_text())
    assert cfg["distill"]["temperature"] == 3.0 and cfg["classes"] == CLASSES
    row = _steps(cli_run)[0]
    for key in ("loss_gt", "loss_kd_ce", "loss_kd_noobj", "loss_kd_bbox", "loss_kd_giou",
                "loss_feat_cos", "loss_feat_l1"):
        assert np.isfinite(row[key]), key
    from vit_perception.models.checkpoint import read_checkpoint

    sd = read_checkpoint(cli_run / "best.pt")["state_dict"]
    assert not any("translator" in k for k in sd)  # the student alone


def test_resume_continues_with_the_teacher_from_the_run(cli_run, bags, capsys):
    import shutil

    run = cli_run.parent / "resumed"
    shutil.copytree(cli_run, run)
    capsys.readouterr()
    code = main(["distill", "--out", str(run), "--resume", "--epochs", "2", "--val", bags["val"],
                 "--train", bags["train"], "--unlabelled", bags["unlabelled"], "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out[out.index("{"):])
    assert summary["steps"] == 4 and summary["teacher"].endswith("teacher.pt")  # from config
    assert [r["step"] for r in _steps(run)] == [1, 2, 3, 4]


def test_checkpoint_runs_in_the_predictor(cli_run):
    from vit_perception.runtime.predictor import Predictor

    predictor = Predictor.load(cli_run / "best.pt", score_threshold=0.0, max_detections=5)
    pred = predictor.predict(np.full((120, 160, 3), 90, np.uint8))
    assert len(pred.boxes) == 5 and set(pred.label_names) <= set(CLASSES)


@pytest.mark.ros
def test_checkpoint_runs_in_the_node(cli_run):
    from ros_support.processes import require_ros, ros_process

    require_ros()
    import rclpy

    from ros_support.node_client import NodeClient, image_msg
    from vit_perception.runtime.predictor import Predictor

    rgb = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    want = Predictor.load(cli_run / "best.pt", score_threshold=0.0,
                          max_detections=3).predict(rgb)
    args = ["-m", "vit_perception.ros.perception_node", "--ros-args",
            "-p", f"model:={cli_run / 'best.pt'}", "-p", "score_threshold:=0.0",
            "-p", "max_detections:=3", "-p", "qos_reliability:=reliable"]
    log = cli_run.parent / "node.log"
    with rclpy.init(), ros_process(args, log) as proc:
        client = NodeClient()
        try:
            assert client.wait_for_node(proc=proc), log.read_text()
            client.image_pub.publish(image_msg(rgb, 7, 0, "cam"))
            assert client.spin_until(lambda: (7, 0) in client.detections), log.read_text()
            got = client.detections[(7, 0)].detections
            assert [d.results[0].hypothesis.class_id for d in got] == want.label_names
            np.testing.assert_allclose([d.results[0].hypothesis.score for d in got],
                                       want.scores, atol=1e-4)
        finally:
            client.destroy_node()


def test_teacher_without_the_bags_classes_is_refused(bags, tmp_path, capsys):
    cfg = load_config("vit_tiny_detr", {"input": {"width": 64, "height": 64},
                                        "classes": ["person"]})
    model, _, _ = build(cfg)
    save_checkpoint(tmp_path / "other.pt", model, cfg)
    code = main(["distill", "--teacher", str(tmp_path / "other.pt"), "--train", bags["train"],
                 "--val", bags["val"], "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "other.pt" in err and "green_ball" in err and "Traceback" not in err
