"""`vit-perception models`: the shipped model configs with parameter count and GFLOPs.

GFLOPs are what ``torch.utils.flop_counter`` counts for one forward pass: 2 FLOPs per
multiply-add (so GMACs = GFLOPs / 2) of every convolution and matrix product, the attention
products ``Q K^T`` and ``A V`` included. On CUDA flop_counter sees those inside the fused
attention kernels; on the CPU the fused kernel (``_scaled_dot_product_flash_attention_for_cpu``)
has no formula in flop_counter, so it is given the same SDPA formula here. Counting on the CPU
without it gave 58.8 instead of 87.6 for vit_s16_detr at 640x480 (the 28.9 of attention).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="configs to list (default: all shipped)")
    parser.add_argument("--width", type=int, default=640, help="input width for GFLOPs")
    parser.add_argument("--height", type=int, default=480, help="input height for GFLOPs")
    parser.add_argument("--no-flops", action="store_true", help="skip the GFLOPs count (faster)")


def count(cfg: dict, width: int, height: int, flops: bool = True
          ) -> tuple[float, float | None, float | None]:
    """(parameters in millions, forward GFLOPs of one ``width x height`` image, the part of
    those in fused attention kernels) of a config's model with random weights
    (``model.backbone.pretrained`` is not loaded)."""
    import torch

    from vit_perception.models.builder import build

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, _, _ = build(cfg, load_pretrained=False)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    if not flops:
        return params, None, None
    total, attention = count_flops(model, width, height)
    return params, total / 1e9, attention / 1e9


def count_flops(model, width: int, height: int) -> tuple[int, int]:
    """(FLOPs, of which fused attention) of one forward of a ``[1, 3, height, width]`` input,
    as ``torch.utils.flop_counter`` counts them, the CPU's fused attention included."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    fused = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    counter = FlopCounterMode(display=False, custom_mapping={fused: cpu_sdpa})
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, 3, height, width))
    per_op = counter.get_flop_counts().get("Global", {})
    attention = sum(v for op, v in per_op.items() if "scaled_dot_product" in str(op)
                    or "attention_forward" in str(op))
    return counter.get_total_flops(), attention


def describe_backbone(backbone: dict) -> str:
    if backbone.get("type", "vit") == "swin":
        return f"Swin-{str(backbone.get('variant', 't')).upper()}"
    regs = backbone.get("num_registers", 0)
    return (f"ViT p{backbone.get('patch_size', 16)} d{backbone.get('embed_dim')}"
            f" x{backbone.get('depth')}" + (f" +{regs}reg" if regs else ""))


def run(args: argparse.Namespace) -> int:
    import torch

    from vit_perception.config import available_configs, load_config

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    names = args.names or sorted(available_configs())
    header = (f"{'config':<18} {'backbone':<22} {'input':>9} {'head (d/enc/dec/N)':>19} "
              f"{'params (M)':>10} {'GFLOPs@' + f'{args.width}x{args.height}':>15} "
              f"{'of which SDPA':>13}")
    print(header)
    print("-" * len(header))
    for name in names:
        cfg = load_config(name)
        params, gflops, attn = count(cfg, args.width, args.height, not args.no_flops)
        head = cfg["model"]["head"]
        head_s = (f"{head['hidden_dim']}/{head['enc_layers']}/{head['dec_layers']}/"
                  f"{head['num_queries']}")
        size = f"{cfg['input']['width']}x{cfg['input']['height']}"
        flops_s = "-" if gflops is None else f"{gflops:.2f}"
        attn_s = "-" if attn is None else f"{attn:.2f}"
        print(f"{name:<18} {describe_backbone(cfg['model']['backbone']):<22} {size:>9} "
              f"{head_s:>19} {params:>10.1f} {flops_s:>15} {attn_s:>13}")
    if not args.no_flops:
        print("GFLOPs: torch.utils.flop_counter's count of one forward, 2 per multiply-add "
              "(GMACs = GFLOPs / 2), attention's QK^T and AV included; 'of which SDPA': the "
              "part in fused scaled_dot_product_attention kernels (Swin's window attention is "
              "plain matmuls, in the total only).")
    return 0
