"""`vit-perception bench` end to end: a teacher and its student benched in one run."""

from __future__ import annotations

import json

import torch

from vit_perception.cli import main


def test_two_models_in_one_run_share_the_frames_and_are_compared(tmp_path, capsys):
    out = tmp_path / "bench.json"
    torch.set_num_threads(1)
    rc = main(["bench", "--model", "vit_tiny_detr", "vit_nano_detr", "--backend", "torch",
               "--iters", "2", "--warmup", "0", "--threads", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    result = json.loads(out.read_text())
    teacher, student = result["vit_tiny_detr torch"], result["vit_nano_detr torch"]
    assert teacher["input_size"] == [320, 240] and student["input_size"] == [256, 192]
    assert student["model"] == "vit_nano_detr" and teacher["fps"] > 0 and student["fps"] > 0
    # both models see the same camera frame: the first model's input size
    assert result["machine"]["frame_size"] == [320, 240]
    assert result["machine"]["models"] == ["vit_tiny_detr", "vit_nano_detr"]
    assert "model vit_tiny_detr  input 320x240  model vit_nano_detr  input 256x192" in printed
    ratio = student["fps"] / teacher["fps"]
    assert "vit_nano_detr torch vs vit_tiny_detr torch: infer " in printed
    assert f"end to end {ratio:.2f}x fps" in printed


def test_one_model_keeps_its_labels(tmp_path, capsys):
    out = tmp_path / "bench.json"
    torch.set_num_threads(1)
    rc = main(["bench", "--config", "vit_nano_detr", "--size", "96x64", "--backend", "torch",
               "--iters", "2", "--warmup", "0", "--threads", "1", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert set(result) == {"torch", "machine", "visuals"}
    assert result["torch"]["input_size"] == [96, 64]
    assert result["machine"]["model"] == "vit_nano_detr"
    assert result["machine"]["frame_size"] == [96, 64]
    assert " vs " not in capsys.readouterr().out
