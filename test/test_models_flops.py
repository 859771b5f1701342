"""`vit-perception models` prints the GFLOPs torch.utils.flop_counter counts, attention included."""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from vit_perception.cli import main
from vit_perception.config import load_config
from vit_perception.models.builder import build


def test_printed_gflops_equal_flop_counter(capsys):
    """The reference: flop_counter with attention run as plain matmuls (the math backend), which
    it counts op by op; the CPU's fused attention kernel it would otherwise skip (the 58.8 vs
    87.6 of vit_s16_detr)."""
    assert main(["models", "vit_tiny_detr", "--width", "160", "--height", "128"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("vit_tiny_detr"))
    printed, printed_attention = (float(v) for v in row.split()[-2:])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, _, _ = build(load_config("vit_tiny_detr"), load_pretrained=False)
    reference = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), reference:
        model.eval()(torch.zeros(1, 3, 128, 160))
    assert printed == round(reference.get_total_flops() / 1e9, 2)
    fused_only = FlopCounterMode(display=False)  # flop_counter as is, fused attention unseen
    with torch.no_grad(), fused_only:
        model(torch.zeros(1, 3, 128, 160))
    missed = (reference.get_total_flops() - fused_only.get_total_flops()) / 1e9
    assert printed_attention > 0 and abs(printed_attention - missed) < 0.01
