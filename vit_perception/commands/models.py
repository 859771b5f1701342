"""`vit-perception models`: the shipped model configs with parameter count and GFLOPs."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="configs to list (default: all shipped)")
    parser.add_argument("--width", type=int, default=640, help="input width for GFLOPs")
    parser.add_argument("--height", type=int, default=480, help="input height for GFLOPs")
    parser.add_argument("--no-flops", action="store_true", help="skip the GFLOPs count (faster)")


def count(cfg: dict, width: int, height: int, flops: bool = True) -> tuple[float, float | None]:
    """(parameters in millions, forward GFLOPs of one ``width x height`` image) of a config's
    model with random weights (``model.backbone.pretrained`` is not loaded)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vit_perception.models.builder import build

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model, _, _ = build(cfg, load_pretrained=False)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    if not flops:
        return params, None
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, 3, height, width))
    return params, counter.get_total_flops() / 1e9


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
              f"{'params (M)':>10} {'GFLOPs@' + f'{args.width}x{args.height}':>15}")
    print(header)
    print("-" * len(header))
    for name in names:
        cfg = load_config(name)
        params, gflops = count(cfg, args.width, args.height, not args.no_flops)
        head = cfg["model"]["head"]
        head_s = (f"{head['hidden_dim']}/{head['enc_layers']}/{head['dec_layers']}/"
                  f"{head['num_queries']}")
        size = f"{cfg['input']['width']}x{cfg['input']['height']}"
        flops_s = "-" if gflops is None else f"{gflops:.1f}"
        print(f"{name:<18} {describe_backbone(cfg['model']['backbone']):<22} {size:>9} "
              f"{head_s:>19} {params:>10.1f} {flops_s:>15}")
    return 0
