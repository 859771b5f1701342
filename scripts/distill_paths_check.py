"""Do two `distill` settings compute the same update? The total loss and the gradient of each on
the same batches and student weights (dropout off), and the cosine between the gradients.

Used for issue 13's eighth measurement (docs/RESULTS.md): hard-target KD with frame-share
weighting against `pseudo_labels`, which differ only in how the loss is normalised.

    python scripts/distill_paths_check.py runs/d2/hardf_s0/config.yaml runs/d2/plnms_s0/last.pt \
        --train runs/d2/bags/train --unlabelled runs/d2/bags/unlabelled --val runs/d2/bags/val \
        --a distill.kd_hard_targets=true distill.weight_by_frames=true \
        --b distill.pseudo_labels=true
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
import yaml

from vit_perception.config import deep_merge, parse_overrides
from vit_perception.models.checkpoint import read_checkpoint
from vit_perception.training.distill import DistillTrainer
from vit_perception.training.distributed import Dist


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path, help="a distill run's config.yaml (teacher included)")
    ap.add_argument("weights", type=Path, help="student checkpoint whose weights both start from")
    ap.add_argument("--train", nargs="+", required=True)
    ap.add_argument("--unlabelled", nargs="*", default=[])
    ap.add_argument("--val", nargs="+", required=True)
    ap.add_argument("--a", nargs="*", default=[], metavar="KEY=VALUE", help="setting A")
    ap.add_argument("--b", nargs="*", default=[], metavar="KEY=VALUE", help="setting B")
    ap.add_argument("--batches", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = yaml.safe_load(args.config.read_text())
    weights = read_checkpoint(args.weights)["state_dict"]
    tmp = Path(tempfile.mkdtemp(prefix="distill_paths_"))

    def trainer(name: str, sets: list[str]) -> DistillTrainer:
        cfg = deep_merge(copy.deepcopy(base), parse_overrides(sets))
        t = DistillTrainer(cfg, None, args.train, args.val, tmp / name, Dist(),
                           torch.device("cpu"), unlabelled_bags=args.unlabelled, progress=False)
        t.model.load_state_dict(weights)
        t.model.eval()  # no dropout: both see the same network
        return t

    a, b = trainer("a", args.a), trainer("b", args.b)

    def grad(t: DistillTrainer, images, targets) -> tuple[float, torch.Tensor]:
        t.model.zero_grad(set_to_none=True)
        loss = t.compute_losses(images, targets)["loss"]
        loss.backward()
        return float(loss.detach()), torch.cat([p.grad.flatten() for p in t.model.parameters()
                                       if p.grad is not None])

    torch.manual_seed(0)
    batches = iter(a.loader)
    for n in range(args.batches):
        images, targets = a.device_batch(next(batches))
        la, ga = grad(a, images, targets)
        lb, gb = grad(b, images, targets)
        known = sum(bool(t["has_labels"]) for t in targets)
        cos = torch.nn.functional.cosine_similarity(ga, gb, dim=0).item()
        print(f"batch {n}: {known}/{len(targets)} labelled frames; loss A {la:.4f} B {lb:.4f}; "
              f"gradient norm A {ga.norm():.3f} B {gb.norm():.3f}, cosine {cos:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
