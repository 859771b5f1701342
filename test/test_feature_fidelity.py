"""`probe --reference`: how much of a reference backbone's box features another's hold (linear
CKA, held-out ridge R^2), checked on constructed features and through the command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vit_perception.cli import main
from vit_perception.data.synth import write_synthetic_bag
from vit_perception.evaluation.feature_fidelity import fidelity, heldout_r2, linear_cka


def _features(n: int = 400, p: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # unequal variances per direction, as real features have
    return torch.randn(n, p, generator=g) * torch.linspace(0.2, 3.0, p)


def test_cka_is_one_for_a_rotated_and_scaled_copy_and_low_for_unrelated_features():
    x = _features()
    q, _ = torch.linalg.qr(torch.randn(24, 24, generator=torch.Generator().manual_seed(1)))
    assert linear_cka(x, 5.0 * x @ q + 2.0) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, _features(seed=2)) < 0.15
    # a copy with half the channels dropped keeps part of the alignment
    assert 0.3 < linear_cka(x, x[:, 12:]) < 1.0


def test_heldout_r2_of_a_linear_map_is_near_one_and_of_noise_near_zero():
    x = _features(600, 16)
    frames = np.repeat(np.arange(200), 3)
    train, test = frames < 100, frames >= 100
    a = torch.randn(16, 8, generator=torch.Generator().manual_seed(3))
    noise = 0.05 * torch.randn(600, 8, generator=torch.Generator().manual_seed(4))
    assert heldout_r2(x, x @ a + noise, train, test, frames) > 0.99
    unrelated = torch.randn(600, 8, generator=torch.Generator().manual_seed(5))
    assert heldout_r2(x, unrelated, train, test, frames) < 0.05
    out = fidelity(x, x @ a, frames)
    assert sorted(out) == ["reference_cka", "reference_r2"] and out["reference_r2"] > 0.999
    with pytest.raises(ValueError, match="pooled 600 and 599 boxes"):
        fidelity(x, (x @ a)[1:], frames)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("fidelity") / "bag"
    return write_synthetic_bag(out, frames=40, seed=5, size=(160, 120), num_classes=3,
                               objects_per_frame=(2, 4))


def test_probe_reference_against_itself_and_against_another_model(bag, tmp_path, capsys):
    same = tmp_path / "narrow.yaml"  # 16 channels: fewer than the bag's train objects
    same.write_text("name: narrow\ninput: {width: 160, height: 128}\nmodel:\n  backbone: "
                    "{type: vit, patch_size: 16, embed_dim: 16, depth: 1, num_heads: 1}\n")
    js = tmp_path / "probe.json"
    base = ["probe", "--backbone", str(same), "--bag", str(bag), "--json", str(js),
            "--crop-size", "0", "--figure-frames", "1", "--no-progress"]
    assert main([*base, "--reference", str(same)]) == 0
    metrics = json.loads(js.read_text())
    assert metrics["reference_cka"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["reference_r2"] > 0.99
    assert "reference_cka 1.000" in capsys.readouterr().out
    # another architecture and input size: the same boxes, each in its own geometry; the
    # reference has more channels (128) than the bag has train objects, which is said
    assert main([*base, "--reference", "vit_nano_detr"]) == 0
    metrics = json.loads(js.read_text())
    assert 0.0 < metrics["reference_cka"] < 0.999 and metrics["reference_r2"] < 0.999
    assert main(["probe", "--backbone", "vit_nano_detr", "--bag", str(bag), "--crop-size", "0",
                 "--figure-frames", "1", "--no-progress", "--reference", str(same)]) == 0
    out = capsys.readouterr().out
    assert "fewer train objects" in out and "than this backbone's 128 feature channels" in out
    assert main([*base, "--reference", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
