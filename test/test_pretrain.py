"""pretrain (DINO): a few steps lower the loss; the teacher is an exact EMA of the student;
centring follows its formula; a collapsing setting is stopped and reported; a killed run resumes
onto the same curve; backbone.pt loads in train --init, the predictor and ONNX export."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vit_perception.cli import main
from vit_perception.config import load_config
from vit_perception.data.synth import write_synthetic_bag
from vit_perception.dino.loss import DINOLoss
from vit_perception.dino.multicrop import MultiCrop, collate_views
from vit_perception.dino.network import Teacher, build_network
from vit_perception.dino.objective import Objective
from vit_perception.models.builder import build_backbone
from vit_perception.training.pretrain import pretrain
from vit_perception.training.pretrain_options import pretrain_options
from vit_perception.training.run import StopTraining

SMALL = {"global_size": 48, "local_size": 32, "local_crops": 2, "out_dim": 128,
         "hidden_dim": 64, "bottleneck_dim": 32, "batch_size": 4, "warmup_steps": 0,
         "teacher_temp_warmup_steps": 0, "freeze_last_layer_steps": 0, "checkpoint_every_s": 0,
         "seed": 5, "threads": 1, "lr": 1e-3}
FAST = {"input": {"width": 64, "height": 64}, "pretrain": SMALL}


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return str(write_synthetic_bag(root / "photo", frames=8, seed=1, size=(96, 72),
                                   style="photo", num_classes=2))


def _cfg(**pretrain_opts) -> dict:
    cfg = load_config("vit_tiny_detr", FAST)
    cfg["pretrain"].update(pretrain_opts)
    return cfg


def _steps(run_dir) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows}


def _network(opts: dict):
    cfg = load_config("vit_tiny_detr", FAST)
    torch.manual_seed(0)
    return build_network(build_backbone(cfg["model"]["backbone"], (64, 64), False), opts), cfg


def _views(opts: dict, cfg: dict, n: int = 4) -> list[torch.Tensor]:
    rng = np.random.default_rng(0)
    mc = MultiCrop(opts, cfg["input"]["mean"], cfg["input"]["std"])
    frames = [(rng.random((64, 80, 3)) * 255).astype(np.uint8) for _ in range(n)]
    return collate_views([mc(f, i) for i, f in enumerate(frames)])


def _optimise(objective, student, teacher, views, n: int) -> list[tuple[float, dict]]:
    """``n`` AdamW steps of the student on ``views`` (teacher EMA 0.9, mask seed = step):
    each step's loss and stats."""
    optim = torch.optim.AdamW(student.parameters(), lr=1e-3)
    out = []
    for step in range(n):
        loss, stats = objective(student, teacher, views, 0.04,
                                torch.Generator().manual_seed(step))
        optim.zero_grad()
        loss.backward()
        optim.step()
        teacher.update(student, 0.9)
        out.append((float(loss.detach()), stats))
    return out


@pytest.mark.parametrize("ibot", [0.0, 1.0])
def test_few_steps_lower_the_dino_loss(ibot):
    torch.set_num_threads(1)
    opts = pretrain_options({"pretrain": {**SMALL, "ibot_weight": ibot}})
    student, cfg = _network(opts)
    teacher, objective = Teacher(student), Objective(opts, True)
    views = _views(opts, cfg)
    assert [tuple(v.shape) for v in views] == [(4, 3, 48, 48)] * 2 + [(4, 3, 32, 32)] * 2
    steps = _optimise(objective, student, teacher, views, 12)
    losses, stats = [loss for loss, _ in steps], steps[-1][1]
    assert ("ibot_loss" in stats) == (ibot > 0)
    assert sum(losses[-2:]) / 2 < 0.85 * losses[0], losses


def test_teacher_is_an_exact_ema_of_the_student():
    opts = pretrain_options({"pretrain": SMALL})
    student, _ = _network(opts)
    teacher = Teacher(student)
    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    teacher.update(student, 0.75)
    after, new = teacher.module.state_dict(), student.state_dict()
    assert not any(p.requires_grad for p in teacher.parameters())
    for name, value in before.items():
        expected = 0.75 * value + 0.25 * new[name]
        torch.testing.assert_close(after[name], expected, rtol=0, atol=1e-6)
    teacher.update(student, 1.0)  # momentum 1 (the schedule's end) freezes the teacher
    torch.testing.assert_close(teacher.module.state_dict()["head.mlp.0.weight"],
                               after["head.mlp.0.weight"], rtol=0, atol=0)


def test_centring_and_sharpening_follow_the_formulas():
    torch.manual_seed(0)
    loss_fn = DINOLoss(6, student_temp=0.2, center_momentum=0.8)
    loss_fn.center.fill_(0.5)
    student = torch.randn(3 * 2, 6)  # 3 views x batch 2
    teacher = torch.randn(2 * 2, 6)  # 2 global views
    loss, stats = loss_fn(student, teacher, teacher_temp=0.05)
    q = torch.softmax((teacher - 0.5) / 0.05, dim=-1).chunk(2)
    s = torch.log_softmax(student / 0.2, dim=-1).chunk(3)
    pairs = [(i, v) for i in range(2) for v in range(3) if v != i]
    expected = sum(-(q[i] * s[v]).sum(-1).mean() for i, v in pairs) / len(pairs)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    torch.testing.assert_close(loss_fn.center, 0.8 * 0.5 + 0.2 * teacher.mean(0, keepdim=True))
    p = torch.cat(q)
    assert stats["teacher_entropy"] == pytest.approx(
        float(-(p * p.log()).sum(-1).mean()), rel=1e-4)
    assert stats["log_k"] == pytest.approx(math.log(6))
    assert stats["kl"] > 0


def test_pretrain_run_directory_and_backbone(bag, tmp_path):
    result = pretrain(_cfg(epochs=2, samples_per_epoch=4), [bag], tmp_path / "run",
                      progress=False)
    run = tmp_path / "run"
    assert result["steps"] == 2 and result["stopped"] == "epochs" and result["collapse"] is None
    assert result["images_per_s"] > 0
    assert result["crops_per_s"] == pytest.approx(4 * result["images_per_s"], rel=0.01)
    for name in ("backbone.pt", "last.pt", "config.yaml", "steps.jsonl", "metrics.jsonl",
                 "curves.png"):
        assert (run / name).is_file(), name
    rows = _steps(run)
    assert sorted(rows) == [1, 2]
    for key in ("loss", "teacher_entropy", "batch_entropy", "kl", "teacher_temp", "momentum"):
        assert key in rows[1], key
    data = torch.load(run / "backbone.pt", weights_only=True)
    assert data["config"]["model"]["backbone_only"] is True
    assert all(k.startswith("backbone.") for k in data["state_dict"])
    assert result["backbone"] == str(run / "backbone.pt")


def test_collapsing_setting_is_detected_and_reported(bag, tmp_path, capsys):
    # no sharpening (teacher as warm as the student, both hot): the teacher goes uniform
    hot = {**SMALL, "samples_per_epoch": 16, "teacher_temp": 5.0,
           "teacher_temp_warmup_start": 5.0, "student_temp": 5.0, "collapse_patience": 3}
    sets = [x for k, v in hot.items() for x in ("--set", f"pretrain.{k}={v}")]
    code = main(["pretrain", "--config", "vit_tiny_detr", "--bags", bag, "--out",
                 str(tmp_path / "run"), "--epochs", "3", "--no-progress",
                 "--set", "input.width=64", "--set", "input.height=64", *sets])
    err = capsys.readouterr().err
    assert code == 1
    assert "collapsed" in err and "uniform" in err and "teacher_temp" in err
    assert "no backbone.pt written" in err
    rows = _steps(tmp_path / "run")
    assert len(rows) == 3  # stopped at the third collapsed step, not after 3 epochs
    assert all(r["teacher_entropy"] > 0.98 * math.log(128) for r in rows.values())
    assert not (tmp_path / "run" / "backbone.pt").exists()


def test_an_existing_run_is_refused_without_resume_or_overwrite(bag, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "backbone.pt").write_bytes(b"earlier run")
    code = main(["pretrain", "--config", "vit_tiny_detr", "--bags", bag, "--out", str(run),
                 "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "already holds a run" in err and "--overwrite" in err and "Traceback" not in err
    assert (run / "backbone.pt").read_bytes() == b"earlier run"  # nothing lost


@pytest.mark.parametrize("attention_crops, pixel, dense", [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0),
                                                           (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)])
def test_killed_run_resumes_on_the_same_curve(bag, tmp_path, attention_crops, pixel, dense):
    # with attention_crops the maps are refreshed at the start of epoch 2 (index 1) from the
    # teacher of step 2; the resumed run (from step 3) must draw from those, not recompute them
    kwargs = {"epochs": 2, "samples_per_epoch": 8, "checkpoint_every_steps": 1,
              "ibot_weight": 0.5, "attention_crops": attention_crops, "attention_every": 1,
              "pixel_weight": pixel, "dense_weight": dense}
    full = pretrain(_cfg(**kwargs), [bag], tmp_path / "full", progress=False)
    assert full["steps"] == 4

    def kill_at_4(step, losses):  # dies in step 4; last.pt was written at step 3 (mid epoch 2)
        if step == 4:
            raise StopTraining("simulated kill")

    with pytest.raises(StopTraining):
        pretrain(_cfg(**kwargs), [bag], tmp_path / "cut", progress=False,
                 step_callback=kill_at_4)
    resumed = pretrain(_cfg(**kwargs), [bag], tmp_path / "cut", resume=True, progress=False)
    assert resumed["steps"] == 4
    a, b = _steps(tmp_path / "full"), _steps(tmp_path / "cut")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        for key in (("loss", "kl", "teacher_entropy", "ibot_loss") + ("pixel_loss",) * (pixel > 0)
                    + ("dense_loss",) * (dense > 0)):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-4, abs=1e-6), (step, key)
    wa = torch.load(tmp_path / "full" / "backbone.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "cut" / "backbone.pt", weights_only=True)["state_dict"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    trainer_state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["extra"]["trainer"]
    for part in ("model", "teacher"):  # the pixel head is saved and resumed with the student
        assert any("pixel_head." in k for k in trainer_state[part]) == (pixel > 0), part
    if attention_crops:  # the resumed run kept the maps of step 2's teacher, bit for bit
        pa, pb = (torch.load(tmp_path / run / "last.pt", weights_only=True)["extra"]["trainer"]
                  ["attention_priors"] for run in ("full", "cut"))
        assert pa["epoch"] == pb["epoch"] == 1 and len(pa["maps"]) == 8
        for ma, mb in zip(pa["maps"], pb["maps"], strict=True):
            assert torch.equal(ma, mb)


@pytest.fixture(scope="module")
def backbone_pt(bag, tmp_path_factory):
    run = tmp_path_factory.mktemp("pretrained") / "run"
    cfg = load_config("vit_tiny_detr", {**FAST, "input": {"width": 96, "height": 64}})
    cfg["pretrain"].update(epochs=1, samples_per_epoch=4)
    torch.set_num_threads(1)
    result = pretrain(cfg, [bag], run, progress=False)
    return run / "backbone.pt", result


def test_backbone_initialises_train(backbone_pt):
    from vit_perception.models.builder import build
    from vit_perception.training.state import init_weights

    path, _ = backbone_pt
    cfg = load_config("vit_tiny_detr", {"input": {"width": 96, "height": 64},
                                         "classes": ["a", "b"]})
    torch.manual_seed(1)
    model, _, _ = build(cfg)
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    message = init_weights(model, path)
    saved = torch.load(path, weights_only=True)["state_dict"]
    own = model.state_dict()
    for name, value in saved.items():
        torch.testing.assert_close(own[name], value, rtol=0, atol=0)
    for name, value in model.head.state_dict().items():  # the head stays as built
        torch.testing.assert_close(value, head_before[name], rtol=0, atol=0)
    assert str(path) in message


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_backbone_runs_in_the_predictor_features_only(backbone_pt, backend, tmp_path):
    from vit_perception.runtime.predictor import Predictor

    path, _ = backbone_pt
    with Predictor.load(path, backend=backend, cache_dir=tmp_path) as predictor:
        assert predictor.has_detector is False
        assert "pred_logits" not in predictor.runner.infer(
            {"images": torch.zeros(1, 3, 64, 96)})
        frame = np.random.default_rng(0).integers(0, 255, (72, 100, 3), dtype=np.uint8)
        pred = predictor.predict(frame)
    assert len(pred) == 0 and pred.boxes.shape == (0, 4)
    assert pred.features.shape == (192, 4, 6) and pred.embedding.shape == (192,)
    assert pred.attention.shape == (3, 4, 6)
    # the detector path still reports its boxes (has_detector True)
    with Predictor.load("vit_tiny_detr", backend="torch", input_size=(96, 64)) as detector:
        assert detector.has_detector is True


def test_swin_backbone_pretrains_on_its_pooled_embedding():
    torch.set_num_threads(1)
    opts = pretrain_options({"pretrain": {**SMALL, "ibot_weight": 1.0,  # iBOT: ViT only
                                          "pixel_weight": 1.0}})  # masked pixels too
    cfg = load_config("swin_t_detr")
    torch.manual_seed(0)
    backbone = build_backbone(cfg["model"]["backbone"], (64, 64), False)
    student = build_network(backbone, opts)
    assert student.patch_head is None and student.mask_token is None
    assert student.pixel_head is None
    teacher, objective = Teacher(student), Objective(opts, False)
    views = [torch.randn(2, 3, 64, 64)] * 2 + [torch.randn(2, 3, 32, 32)]
    loss, stats = objective(student, teacher, views, 0.04)
    loss.backward()
    assert torch.isfinite(loss) and "ibot_loss" not in stats and "pixel_loss" not in stats
    assert student.backbone.features[0][0].weight.grad is not None


def test_explora_trains_lora_and_the_last_blocks_only(bag, tmp_path):
    from vit_perception.training.lora import LoRALinear

    cfg = _cfg(epochs=1, samples_per_epoch=4, lora_rank=2, unfreeze_blocks=1)
    first = pretrain(_cfg(epochs=1, samples_per_epoch=4), [bag], tmp_path / "base",
                     progress=False)
    from vit_perception.training.distributed import Dist
    from vit_perception.training.pretrain import PretrainTrainer

    trainer = PretrainTrainer(cfg, [bag], tmp_path / "explora", Dist(), torch.device("cpu"),
                              init=first["backbone"], progress=False)
    backbone = trainer.student.backbone
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith(("blocks.3.", "norm.")) for n in
                             trainable)
    assert any(n.startswith("blocks.0.") and "lora_" in n for n in trainable)
    assert isinstance(backbone.blocks[0].attn.qkv, LoRALinear)
    frozen = backbone.blocks[0].mlp.fc1.weight.detach().clone()
    result = trainer.run()
    saved = torch.load(result["backbone"], weights_only=True)["state_dict"]
    assert not any("lora_" in k for k in saved)  # merged into plain weights
    torch.testing.assert_close(saved["backbone.blocks.0.mlp.fc1.weight"], frozen)


def test_backbone_initialises_train_at_another_input_size(backbone_pt):
    from vit_perception.models.builder import build
    from vit_perception.models.vit import interpolate_pos_embed
    from vit_perception.training.state import init_weights

    path, _ = backbone_pt  # pretrained at 96x64 (grid 4x6)
    cfg = load_config("vit_tiny_detr", {"input": {"width": 128, "height": 96},
                                         "classes": ["a"]})
    model, _, _ = build(cfg)
    init_weights(model, path)
    saved = torch.load(path, weights_only=True)["state_dict"]
    want = interpolate_pos_embed(saved["backbone.pos_embed"], (4, 6), (6, 8))
    torch.testing.assert_close(model.backbone.pos_embed.detach(), want)
    torch.testing.assert_close(model.backbone.blocks[0].attn.qkv.weight.detach(),
                               saved["backbone.blocks.0.attn.qkv.weight"])


def test_backbone_exports_to_onnx_without_detection_outputs(backbone_pt, tmp_path, capsys):
    import onnx

    path, _ = backbone_pt
    assert main(["export", "--model", str(path), "--out", str(tmp_path / "b.onnx")]) == 0
    assert "embedding" in capsys.readouterr().out  # verified against PyTorch
    outputs = [o.name for o in onnx.load(str(tmp_path / "b.onnx")).graph.output]
    assert outputs == ["features", "embedding", "attention"]


# --------------------------------------------------------------------- masked-pixel target
def test_pixel_target_is_the_normalised_patches_in_token_order():
    from vit_perception.dino.pixels import patchify, pixel_targets

    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 12)  # 2 x 3 patches of 4 pixels
    target = pixel_targets(x, 4)
    assert target.shape == (2, 6, 48)
    for b in range(2):
        for r in range(2):
            for c in range(3):
                patch = x[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].permute(1, 2, 0).reshape(-1)
                want = (patch - patch.mean()) / (patch.var(unbiased=False) + 1e-6).sqrt()
                torch.testing.assert_close(target[b, 3 * r + c], want)
    # the layout round-trips to the image, and sides that are not patch multiples are padded
    # with zeros on the bottom/right as the ViT pads them
    back = patchify(x, 4).reshape(2, 2, 3, 4, 4, 3).permute(0, 5, 1, 3, 2, 4).reshape(2, 3, 8, 12)
    torch.testing.assert_close(back, x, rtol=0, atol=0)
    odd = patchify(x[:, :, :7, :10], 4)
    assert odd.shape == (2, 6, 48)
    torch.testing.assert_close(odd[:, 0], patchify(x, 4)[:, 0], rtol=0, atol=0)
    assert float(odd[:, 5].reshape(2, 4, 4, 3)[:, 3].abs().sum()) == 0.0  # padded last row
    # the loss: per-patch mean error, averaged over the masked patches only
    from vit_perception.dino.pixels import PixelLoss

    pred = target + 0.5
    pred[0, 0] = target[0, 0] + 3.0  # an unmasked patch: not counted
    masks = torch.zeros(2, 6, dtype=torch.bool)
    masks[0, 1] = masks[1, 4] = True
    assert float(PixelLoss("l1")(pred, x, masks, 4)) == pytest.approx(0.5, rel=1e-5)
    assert float(PixelLoss("mse")(pred, x, masks, 4)) == pytest.approx(0.25, rel=1e-5)
    with pytest.raises(ValueError, match="pixel_loss"):
        PixelLoss("l2")


def _ramp_views(opts: dict, cfg: dict, n: int = 4) -> list[torch.Tensor]:
    """Views of colour ramps (a random direction per frame and channel): every patch of a
    frame has the same normalised pixels, so the visible patches predict the masked ones."""
    rng = np.random.default_rng(0)
    mc = MultiCrop(opts, cfg["input"]["mean"], cfg["input"]["std"])
    yy, xx = np.mgrid[0:64, 0:80]
    frames = []
    for _ in range(n):
        a = rng.uniform(-1, 1, (2, 3))
        f = 128 + 1.5 * (a[0] * xx[..., None] + a[1] * yy[..., None])
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return collate_views([mc(f, i) for i, f in enumerate(frames)])


def test_few_steps_lower_the_pixel_loss_without_ibot():
    from vit_perception.dino.pixels import pixel_targets

    torch.set_num_threads(1)
    opts = pretrain_options({"pretrain": {**SMALL, "ibot_weight": 0.0, "pixel_weight": 1.0,
                                          "ibot_mask_prob": 1.0}})
    student, cfg = _network(opts)
    head = student.pixel_head
    assert isinstance(head, torch.nn.Linear) and (head.in_features, head.out_features) == (
        192, 16 * 16 * 3)
    assert student.mask_token is not None and student.patch_head is None
    teacher, objective = Teacher(student), Objective(opts, True)
    views = _ramp_views(opts, cfg)
    zero = float(pixel_targets(torch.cat(views[:2]), 16).abs().mean())  # L1 of predicting 0
    steps = _optimise(objective, student, teacher, views, 15)
    pixel, stats = [st["pixel_loss"] for _, st in steps], steps[-1][1]
    assert "ibot_loss" not in stats
    assert sum(pixel[-3:]) / 3 < min(0.8 * pixel[0], 0.9 * zero), (pixel, zero)
    # DINO weight 0: the loss is the pixel loss alone
    opts0 = pretrain_options({"pretrain": {**SMALL, "ibot_weight": 0.0, "pixel_weight": 2.0,
                                           "dino_weight": 0.0}})
    loss, stats = Objective(opts0, True)(student, teacher, views, 0.04,
                                         torch.Generator().manual_seed(0))
    assert float(loss) == pytest.approx(2.0 * stats["pixel_loss"], rel=1e-6)


@pytest.mark.parametrize("ibot, params, want", [
    # figures of the objective before pixel_weight existed (same seed, views and steps)
    (0.0, 62, [6.1902289390563965, 3.9093196392059326, 2.453998327255249]),
    (1.0, 71, [10.67828369140625, 8.42902660369873, 3.9863998889923096]),
])
def test_pixel_weight_zero_leaves_the_objective_unchanged(ibot, params, want):
    torch.set_num_threads(1)
    opts = pretrain_options({"pretrain": {**SMALL, "ibot_weight": ibot}})
    assert opts["pixel_weight"] == 0
    student, cfg = _network(opts)
    assert student.pixel_head is None and len(list(student.parameters())) == params
    assert (student.mask_token is None) == (ibot == 0)
    teacher, objective = Teacher(student), Objective(opts, True)
    views = _views(opts, cfg)
    steps = _optimise(objective, student, teacher, views, 3)
    losses, stats = [loss for loss, _ in steps], steps[-1][1]
    assert "pixel_loss" not in stats
    assert losses == pytest.approx(want, rel=1e-4)


def test_swin_run_warns_that_the_pixel_target_needs_a_vit(bag, tmp_path, caplog):
    from vit_perception.training.distributed import Dist
    from vit_perception.training.pretrain import PretrainTrainer

    cfg = load_config("swin_t_detr", FAST)
    cfg["pretrain"].update(pixel_weight=1.0, ibot_weight=0.0)
    with caplog.at_level("WARNING"):
        trainer = PretrainTrainer(cfg, [bag], tmp_path / "run", Dist(), torch.device("cpu"),
                                  progress=False)
    assert "pretrain.pixel_weight: the masked-pixel loss needs a ViT" in caplog.text
    assert trainer.student.pixel_head is None and trainer.objective.pixel_weight == 0
