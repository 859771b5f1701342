"""Bad input to every command: one clear line naming the file or value, the right exit code, no
traceback unless asked, and nothing lost or left half-written (issue 16, one test per item)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import types

import pytest
import torch

from vit_perception.cli import main
from vit_perception.config import load_config
from vit_perception.data.synth import write_synthetic_bag
from vit_perception.models.builder import build
from vit_perception.models.checkpoint import CheckpointError, read_checkpoint, save_checkpoint

SMALL = {"input": {"width": 96, "height": 64}}


def _one_error_line(err: str, command: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith(f"vit-perception {command}: ")]
    assert lines, err
    assert "Traceback" not in err, err
    return lines[-1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small bag, a truncated copy, a tiny checkpoint, one of another architecture, broken
    files; made once for the module."""
    root = tmp_path_factory.mktemp("errors")
    bag = write_synthetic_bag(root / "bag", frames=4, seed=0, size=(128, 96), num_classes=2)
    trunc = root / "truncbag"
    shutil.copytree(bag, trunc)
    for f in trunc.glob("*.mcap"):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    cfg = load_config("vit_tiny_detr", {**SMALL, "classes": ["blue_cylinder", "red_cube"]})
    model, _c, _p = build(cfg, load_pretrained=False)
    ckpt = save_checkpoint(root / "tiny.pt", model, cfg)
    other_cfg = load_config("vit_tiny_detr", {**SMALL, "model": {"backbone": {
        "embed_dim": 96, "depth": 2}, "head": {"hidden_dim": 64, "ffn_dim": 128}}})
    other = save_checkpoint(root / "other.pt", build(other_cfg, load_pretrained=False)[0],
                            other_cfg)
    (root / "empty.pt").write_bytes(b"")
    (root / "trunc.pt").write_bytes(ckpt.read_bytes()[:5000])
    torch.save({"format": "x", "ns": argparse.Namespace(a=1)}, root / "object.pt")
    (root / "random.onnx").write_bytes(bytes(range(256)) * 8)
    return types.SimpleNamespace(root=root, bag=bag, trunc=trunc, ckpt=ckpt, other=other,
                                 cfg=cfg)


def _train_argv(data, out, *extra):
    return ["train", "--config", "vit_tiny_detr", "--train", str(data.bag), "--val",
            str(data.bag), "--out", str(out), "--no-progress", *extra]


# 1 ------------------------------------------------------------------------------------------
def test_train_into_an_existing_run_is_refused_and_the_run_kept(data, tmp_path, capsys):
    from vit_perception.training.run_dir import claim_run_dir

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(data.ckpt, run / "last.pt")
    shutil.copy(data.ckpt, run / "best.pt")
    (run / "metrics.jsonl").write_text('{"epoch": 1, "AP50": 0.5}\n')
    (run / "notes.txt").write_text("mine")
    before = {f.name: f.read_bytes() for f in run.iterdir()}
    assert main(_train_argv(data, run)) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert str(run) in line and "--resume" in line and "--overwrite" in line
    assert "another --out folder" in line
    assert {f.name: f.read_bytes() for f in run.iterdir()} == before  # the earlier run intact
    with pytest.raises(ValueError, match="exclude each other"):
        claim_run_dir(run, resume=True, overwrite=True)
    with pytest.raises(ValueError, match="no run to continue"):
        claim_run_dir(tmp_path / "fresh", resume=True)
    stale = run / ".last.pt.abc123.tmp"  # what a kill during save_checkpoint leaves
    stale.write_bytes(b"\0" * 64)
    assert claim_run_dir(run, resume=True) == run and not stale.exists()
    claim_run_dir(run, overwrite=True)  # deletes the run's files, nothing else
    assert sorted(f.name for f in run.iterdir()) == ["notes.txt"]


def test_checkpoint_save_leaves_no_temporary_when_it_fails(data, tmp_path, monkeypatch):
    model, _c, _p = build(data.cfg, load_pretrained=False)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "last.pt", model, data.cfg)
    assert list(tmp_path.iterdir()) == []


# 2 ------------------------------------------------------------------------------------------
def test_error_boundary_one_line_exit_code_and_debug(data, tmp_path, capsys, monkeypatch):
    argv = ["eval", "--bag", str(data.bag), "--model", str(data.root / "trunc.pt")]
    assert main(argv) == 1
    line = _one_error_line(capsys.readouterr().err, "eval")
    assert line.startswith("vit-perception eval: error: ")
    assert str(data.root / "trunc.pt") in line and "truncated or corrupt" in line
    with pytest.raises(CheckpointError):  # --debug: the exception and its traceback
        main(["--debug", *argv])
    with pytest.raises(CheckpointError):
        main([*argv, "--debug"])
    monkeypatch.setenv("VIT_PERCEPTION_DEBUG", "1")
    with pytest.raises(CheckpointError):
        main(argv)
    monkeypatch.delenv("VIT_PERCEPTION_DEBUG")
    # an unwritable output: PermissionError names the path
    assert main(["eval", "--bag", str(data.bag), "--model", str(data.ckpt), "--out-bag", "none",
                 "--json", "/sys/vit_perception_test/m.json"]) == 1
    line = _one_error_line(capsys.readouterr().err, "eval")
    assert "/sys/vit_perception_test" in line and "not permitted" in line
    # an unsafe YAML tag in --set: exit 2 naming the key
    assert main(_train_argv(data, tmp_path / "r", "--set",
                            "train.lr=!!python/object/apply:os.getcwd []")) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "train.lr" in line and "not a plain YAML value" in line


def test_error_boundary_messages_of_library_errors():
    from google.protobuf.message import DecodeError
    from rosbags.rosbag2 import ReaderError, WriterError

    from vit_perception.errors import describe

    assert describe(WriterError("/x/bag exists already, not overwriting.")) == (
        1, "/x/bag exists already, not overwriting.")
    assert describe(ReaderError("bad"))[0] == 1
    code, text = describe(DecodeError("Wire format was corrupt"))
    assert code == 1 and "ONNX" in text
    assert describe(PermissionError(13, "Permission denied", "/ro/out")) == (
        1, "/ro/out: Permission denied")
    code, text = describe(KeyError("surprise"))
    assert code == 1 and "--debug" in text


# 3 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, expected", [
    ("missing", "no such bag (the path does not exist)"),
    ("empty_dir", "not a bag: a folder without metadata.yaml"),
    ("metadata_only", "not a readable bag: it has a metadata.yaml but no .mcap or .db3"),
])
def test_paths_that_are_not_bags(data, tmp_path, capsys, kind, expected):
    path = tmp_path / kind
    if kind != "missing":
        path.mkdir()
    if kind == "metadata_only":
        shutil.copy(data.bag / "metadata.yaml", path / "metadata.yaml")
    assert main(["eval", "--bag", str(path), "--predictions-topic", "/detections"]) == 1
    line = _one_error_line(capsys.readouterr().err, "eval")
    assert f"{path}: {expected}" in line


def test_checkpoint_messages(data):
    from vit_perception.training.state import init_weights

    empty = data.root / "empty.pt"
    with pytest.raises(CheckpointError, match="the file is empty"):
        read_checkpoint(empty)
    model, _c, _p = build(data.cfg, load_pretrained=False)
    with pytest.raises(CheckpointError, match="the file is empty"):
        init_weights(model, empty)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(data.root / "object.pt")
    text = str(info.value)
    assert ("this file holds code or objects that are not plain tensors; refusing to load it"
            in text and "argparse.Namespace" in text and "weights_only=False" not in text)


@pytest.mark.parametrize("model, expected", [
    ("random.onnx", "random.onnx: not a readable ONNX model"),
    ("", "is a folder"),
])
def test_model_paths_named_in_messages(data, capsys, model, expected):
    assert main(["eval", "--bag", str(data.bag), "--model", str(data.root / model)]) == 1
    assert expected in _one_error_line(capsys.readouterr().err, "eval")


def test_export_of_an_onnx_file_is_not_read_as_yaml(data, capsys):
    assert main(["export", "--model", str(data.root / "random.onnx")]) == 1
    line = _one_error_line(capsys.readouterr().err, "export")
    assert "random.onnx: an exported model" in line and "checkpoint .pt" in line


def test_devices_and_backends_that_are_not_there(data, capsys, monkeypatch):
    base = ["eval", "--bag", str(data.bag), "--model", str(data.ckpt), "--out-bag", "none"]
    assert main([*base, "--device", "tpu"]) == 2
    assert "--device 'tpu': not a device" in _one_error_line(capsys.readouterr().err, "eval")
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda"]) == 1
        assert "CUDA is not available" in _one_error_line(capsys.readouterr().err, "eval")
    # a `tensorrt` package that is only type stubs (tensorrt-stubs) is not TensorRT
    from vit_perception.runtime.base import RunnerError
    from vit_perception.runtime.tensorrt_runner import import_tensorrt, tensorrt_available

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(RunnerError, match="TensorRT is not installed.*lacks Builder"):
        import_tensorrt()
    assert not tensorrt_available()


# 4 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting, expected", [
    ("nonexistent.key=1", "unknown config key 'nonexistent'"),
    ("train.lrr=1", "unknown config key 'train.lrr'; did you mean 'train.lr'?"),
    ("model.head.num_queris=5", "did you mean 'model.head.num_queries'?"),
    ("train.lr=notanumber", "train.lr takes a number, not 'notanumber'"),
    ("train.lr=0", "train.lr must be more than 0, not 0"),
    ("pretrain.local_crops=-2", "pretrain.local_crops must be a whole number, 0 or more, not -2"),
    ("pretrain.global_scale=[0.5,0.1]", "pretrain.global_scale must be a pair [low, high] with "
     "0 < low <= high <= 1, not [0.5, 0.1]"),
    ("distill.teacher_threshold=1.5", "distill.teacher_threshold must be between 0 and 1, not "
     "1.5"),
])
def test_set_refuses_unknown_keys_and_wrong_kinds(data, tmp_path, capsys, setting, expected):
    assert main(_train_argv(data, tmp_path / "run", "--set", setting)) == 2
    assert expected in _one_error_line(capsys.readouterr().err, "train")
    assert not (tmp_path / "run").exists()


def test_set_accepts_keys_of_every_section_and_model_type():
    from vit_perception.config import parse_overrides

    cfg = parse_overrides(["train.lr=1e-4", "train.augment.hflip=0", "model.backbone.variant=s",
                           "model.backbone.num_registers=4", "pretrain.teacher_temp=0.05",
                           "distill.temperature=3", "input.width=96", "classes=[a, b]"])
    assert cfg["train"]["lr"] == 1e-4  # YAML alone would read "1e-4" as a string


@pytest.mark.parametrize("argv", [
    ["synth", "OUT", "--frames", "-3"],
    ["train", "--train", "b", "--val", "b", "--out", "o", "--time-budget", "-1"],
    ["export", "--model", "vit_tiny_detr", "--size", "0x0"],
    ["bench", "--size", "0x0"],
])
def test_impossible_numbers_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and ("must be" in err or "at least" in err)


def test_init_that_fits_few_tensors_fails_unless_partial(data, tmp_path, capsys):
    from vit_perception.training.state import check_init

    assert main(_train_argv(data, tmp_path / "run", "--init", str(data.other),
                            *[a for kv in SMALL["input"].items()
                              for a in ("--set", f"input.{kv[0]}={kv[1]}")])) == 1
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "fit the model" in line and "--init-partial" in line and str(data.other) in line
    assert not (tmp_path / "run").exists()
    cfg = load_config("vit_tiny_detr", SMALL)
    assert "tensors fit" in check_init(cfg, data.other, partial=True)
    assert check_init(cfg, data.ckpt).startswith(f"--init {data.ckpt}: ")


def test_resume_says_which_config_wins(data, tmp_path, capsys):
    from vit_perception.commands.train import resume_config

    run = tmp_path / "run"
    model, _c, _p = build(data.cfg, load_pretrained=False)
    save_checkpoint(run / "last.pt", model, data.cfg, {"trainer": {}})
    cfg = resume_config(run, "vit_s16_detr", {"train": {"epochs": 3}})
    assert cfg["name"] == "vit_tiny_detr" and cfg["train"]["epochs"] == 3
    err = capsys.readouterr().err
    assert "--config vit_s16_detr is ignored" in err and "run's own config (vit_tiny_detr)" in err
    resume_config(run, "vit_tiny_detr", {})  # the same config: nothing to say
    assert capsys.readouterr().err == ""


def test_overwrite_deletes_nothing_when_another_check_fails(data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(data.ckpt, run / "last.pt")
    assert main(_train_argv(data, run, "--overwrite", "--set", "train.lrr=1")) == 2
    assert main(["train", "--train", str(tmp_path / "typo"), "--val", str(data.bag), "--out",
                 str(run), "--overwrite"]) == 1
    assert "typo: no such bag" in capsys.readouterr().err
    assert (run / "last.pt").read_bytes() == data.ckpt.read_bytes()


# 5 ------------------------------------------------------------------------------------------
def test_eval_of_a_truncated_bag_leaves_no_predictions_bag(data, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["eval", "--bag", str(data.trunc), "--model", str(data.ckpt), "--json",
                 str(out)]) == 1
    assert "truncated or corrupt bag" in _one_error_line(capsys.readouterr().err, "eval")
    assert list(tmp_path.iterdir()) == []


def test_extract_of_a_truncated_bag_writes_nothing(data, tmp_path, capsys):
    out = tmp_path / "frames"
    assert main(["extract", str(data.trunc), str(out)]) == 1
    assert "truncated or corrupt bag" in _one_error_line(capsys.readouterr().err, "extract")
    assert list(tmp_path.iterdir()) == []


def test_from_coco_with_a_missing_image_leaves_nothing_and_a_rerun_works(data, tmp_path,
                                                                          capsys):
    frames = tmp_path / "frames"
    assert main(["extract", str(data.bag), str(frames)]) == 0
    image = sorted((frames / "images").iterdir())[2]
    image.rename(tmp_path / "aside.png")
    out = tmp_path / "out_bag"
    assert main(["extract", "--from-coco", str(frames / "annotations.json"), str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err, "extract")
    assert f"image images/{image.name} not found" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aside.png", "frames"]
    (tmp_path / "aside.png").rename(image)
    assert main(["extract", "--from-coco", str(frames / "annotations.json"), str(out)]) == 0
    assert (out / "classes.txt").is_file() and (out / "metadata.yaml").is_file()


# 6 ------------------------------------------------------------------------------------------
def test_from_coco_refuses_file_names_outside_the_image_folder(data, tmp_path, capsys):
    frames = tmp_path / "frames"
    assert main(["extract", str(data.bag), str(frames)]) == 0
    secret = tmp_path / "secret.png"
    shutil.copy(next((frames / "images").iterdir()), secret)
    coco = json.loads((frames / "annotations.json").read_text())
    coco["images"][0]["file_name"] = "../secret.png"
    coco["images"][1]["file_name"] = str(secret)
    (frames / "bad.json").write_text(json.dumps(coco))
    out = tmp_path / "out_bag"
    assert main(["extract", "--from-coco", str(frames / "bad.json"), str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err, "extract")
    assert "'../secret.png'" in line and repr(str(secret)) in line and "leaves the" in line
    assert not out.exists()
    # a link inside the folder that points out of it is not followed either
    coco["images"][0]["file_name"] = coco["images"][1]["file_name"] = "images/link.png"
    coco["images"] = coco["images"][:1]
    (frames / "images" / "link.png").symlink_to(secret)
    (frames / "link.json").write_text(json.dumps(coco))
    assert main(["extract", "--from-coco", str(frames / "link.json"), str(out)]) == 1
    assert "images/link.png not found" in _one_error_line(capsys.readouterr().err, "extract")
    assert not out.exists()


# 7 ------------------------------------------------------------------------------------------
def test_eval_tensorrt_without_tensorrt_fails_before_exporting(data, tmp_path, capsys,
                                                               monkeypatch):
    from vit_perception.runtime.tensorrt_runner import tensorrt_available

    if tensorrt_available():
        pytest.skip("TensorRT and a GPU are here")
    cache = tmp_path / "cache"
    monkeypatch.setenv("VIT_PERCEPTION_CACHE", str(cache))
    assert main(["eval", "--bag", str(data.bag), "--model", str(data.ckpt), "--backend",
                 "tensorrt", "--out-bag", "none"]) == 1
    line = _one_error_line(capsys.readouterr().err, "eval")
    assert "TensorRT" in line
    assert not cache.exists() or not list(cache.rglob("*.onnx"))


def test_values_out_of_range_in_a_config_file_or_a_resume_are_refused(data, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nclasses: [blue_cylinder, red_cube]\n"
                   "input: {width: 96, height: 64}\nmodel:\n  backbone: {type: vit, "
                   "patch_size: 16, embed_dim: 64, depth: 1, num_heads: 1}\n"
                   "train: {batch_size: 0}\n")
    argv = _train_argv(data, tmp_path / "run")
    argv[argv.index("vit_tiny_detr")] = str(bad)
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert f"{bad}: train.batch_size must be a whole number, 1 or more, not 0" in line
    assert not (tmp_path / "run").exists()
    # a resumed run's --set is checked the same way, and the run is left as it was
    run = tmp_path / "done"
    assert main(_train_argv(data, run, "--set", f"input.width={SMALL['input']['width']}",
                            "--set", f"input.height={SMALL['input']['height']}",
                            "--epochs", "1")) == 0
    capsys.readouterr()
    before = (run / "last.pt").read_bytes()
    assert main(_train_argv(data, run, "--resume", "--set", "train.ema_decay=1.5")) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert "train.ema_decay must be between 0 and 1, not 1.5" in line
    assert (run / "last.pt").read_bytes() == before


def test_a_run_folder_given_as_a_file_names_its_checkpoints(data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(data.ckpt, run / "last.pt")
    shutil.copy(data.ckpt, run / "best.pt")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(run)
    assert str(info.value) == (f"{run} is a folder, not a checkpoint file; it holds best.pt, "
                               f"last.pt: pass one of them, e.g. {run / 'best.pt'}")


def test_distill_refuses_a_backbone_only_teacher(data, tmp_path, capsys):
    from ros_support.models import tiny_backbone_checkpoint

    backbone = tiny_backbone_checkpoint(tmp_path)
    argv = ["distill", "--teacher", str(backbone), "--student-config", "vit_nano_detr",
            "--train", str(data.bag), "--val", str(data.bag), "--out", str(tmp_path / "run"),
            "--no-progress"]
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err, "distill")
    assert f"--teacher {backbone}: a backbone-only checkpoint" in line
    assert "give a detector checkpoint" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train", "pretrain", "distill"])
def test_a_wrong_topic_fails_before_the_run_folder_is_claimed(data, tmp_path, capsys, command):
    out = tmp_path / "run"
    bag = str(data.bag)
    argv = {"train": _train_argv(data, out),
            "pretrain": ["pretrain", "--config", "vit_tiny_detr", "--bags", bag, "--out",
                         str(out), "--no-progress"],
            "distill": ["distill", "--teacher", str(data.ckpt), "--student-config",
                        "vit_nano_detr", "--train", bag, "--val", bag, "--out", str(out),
                        "--no-progress"]}[command]
    assert main([*argv, "--image-topic", "/camera/nope"]) == 1
    line = _one_error_line(capsys.readouterr().err, command)
    assert f"{bag}: no topic /camera/nope (--image-topic); topics: [" in line
    assert "/camera/image_raw" in line
    assert not out.exists()  # nothing to --overwrite when the topic is put right
    assert main([*argv, "--image-topic", "/labels"]) == 1
    assert "/labels is vision_msgs/msg/Detection2DArray, not an image topic (--image-topic)" in (
        _one_error_line(capsys.readouterr().err, command))
    assert not out.exists()
    if command != "pretrain":  # the labelled bags need their labels topic too
        assert main([*argv, "--labels-topic", "/nolabels"]) == 1
        assert f"{bag}: no topic /nolabels (--labels-topic)" in (
            _one_error_line(capsys.readouterr().err, command))
        assert main([*argv, "--labels-topic", "/camera/image_raw"]) == 1
        assert "/camera/image_raw is sensor_msgs/msg/Image, not a labels topic" in (
            _one_error_line(capsys.readouterr().err, command))
        assert not out.exists()
