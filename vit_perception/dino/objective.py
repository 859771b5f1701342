"""One DINO (+ iBOT, + masked-pixel) loss evaluation over a batch of multi-crop views.

``Objective`` holds the losses (their centres are state to save for a resume) and runs
teacher (global views, unmasked, no gradient) and student (all views, global ones masked when
iBOT or the pixel target is on) to a scalar loss and the collapse statistics:
``dino_weight * DINO + ibot_weight * iBOT + pixel_weight * pixel + dense_weight * dense
+ koleo_weight * KoLeo + region_weight * region``:

- ``dino.dense``: the global views' patches matched across views by where they lie in the
  frame; it needs the views' ``geometry``;
- ``dino.sinkhorn``: DINOv2's KoLeo on the student's [CLS] of each global view, and its
  Sinkhorn-Knopp centring for DINO and iBOT with ``centering="sinkhorn"``;
- ``dino.region``: the global views' patch tokens pooled where each local crop lies predict the
  teacher's [CLS] output for that crop (the teacher then also runs on the local views); it
  needs every view's ``geometry``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vit_perception.dino.dense import DenseLoss
from vit_perception.dino.loss import DINOLoss, PatchLoss
from vit_perception.dino.masking import random_masks
from vit_perception.dino.pixels import PixelLoss
from vit_perception.dino.region import pooled_regions, region_loss
from vit_perception.dino.sinkhorn import koleo_loss


def _patch_size(student: nn.Module) -> int:
    return int(getattr(student, "module", student).backbone.patch_size)


def _global_grid(student: nn.Module, views: Sequence[Tensor]
                 ) -> tuple[tuple[int, int], tuple[int, int]]:
    """(size, grid): the global views' (height, width) in pixels and their patch grid (rows,
    cols; sides that are not patch multiples padded, as the ViT pads them)."""
    size = (int(views[0].shape[-2]), int(views[0].shape[-1]))
    p = _patch_size(student)
    return size, (-(-size[0] // p), -(-size[1] // p))


class Objective(nn.Module):
    def __init__(self, opts: dict, ibot: bool):
        super().__init__()
        centring = {"centering": str(opts.get("centering", "ema")),
                    "sinkhorn_iterations": int(opts.get("sinkhorn_iterations", 3))}
        self.dino = DINOLoss(int(opts["out_dim"]), float(opts["student_temp"]),
                             float(opts["center_momentum"]), **centring)
        self.ibot_weight = float(opts.get("ibot_weight") or 0.0) if ibot else 0.0
        self.patch = None
        dim = int(opts["out_dim"]) if not opts.get("ibot_separate_head", True) \
            else int(opts["ibot_out_dim"])  # the patch head's prototypes
        if self.ibot_weight > 0:
            self.patch = PatchLoss(dim, float(opts["student_temp"]),
                                   float(opts["center_momentum"]), **centring)
        self.dino_weight = float(opts.get("dino_weight", 1.0))
        self.dense_weight = float(opts.get("dense_weight") or 0.0) if ibot else 0.0
        self.dense = None
        if self.dense_weight > 0:
            self.dense = DenseLoss(dim, float(opts["student_temp"]),
                                   float(opts["center_momentum"]))
        self.pixel_weight = float(opts.get("pixel_weight") or 0.0) if ibot else 0.0
        self.pixel = PixelLoss(str(opts.get("pixel_loss", "l1")))  # checks the kind
        self.koleo_weight = float(opts.get("koleo_weight") or 0.0)
        self.region_weight = float(opts.get("region_weight") or 0.0) if ibot else 0.0
        self.mask_ratio = tuple(float(v) for v in opts["ibot_mask_ratio"])
        self.mask_prob = float(opts["ibot_mask_prob"])

    def masks_for(self, views: Sequence[Tensor], n_patches: int,
                  generator: torch.Generator) -> list[Tensor]:
        return [random_masks(v.shape[0], n_patches, self.mask_ratio, self.mask_prob,
                             generator).to(v.device) for v in views[:2]]

    def forward(self, student: nn.Module, teacher: nn.Module, views: Sequence[Tensor],
                teacher_temp: float, generator: torch.Generator | None = None,
                geometry: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        with torch.no_grad():
            t_out = teacher(views[:2])
        masks = None
        p = _patch_size(student) if self.pixel_weight > 0 else 0
        if self.patch is not None:
            assert "patch" in t_out, "iBOT needs a patch head (ViT backbones only)"
            n = t_out["patch"].shape[1]
            masks = self.masks_for(views, n, generator or torch.Generator().manual_seed(0))
        elif self.pixel_weight > 0:
            rows, cols = _global_grid(student, views)[1]
            n = rows * cols
            masks = self.masks_for(views, n, generator or torch.Generator().manual_seed(0))
        s_out = student(views, masks)
        loss, stats = self.dino(s_out["cls"], t_out["cls"], teacher_temp, n_global=2)
        stats["dino_loss"] = float(loss.detach())
        if self.dino_weight != 1.0:
            loss = self.dino_weight * loss
        if self.koleo_weight > 0:
            koleo = torch.stack([koleo_loss(e) for e in s_out["embedding"].chunk(2)]).sum()
            stats["koleo_loss"] = float(koleo.detach())
            loss = loss + self.koleo_weight * koleo
        if self.patch is not None and masks is not None:
            patch_loss = self.patch(s_out["patch"], t_out["patch"], torch.cat(masks),
                                    teacher_temp)
            stats["ibot_loss"] = float(patch_loss.detach())
            loss = loss + self.ibot_weight * patch_loss
        if self.pixel_weight > 0 and masks is not None:
            assert "pixel" in s_out, "the pixel target needs a pixel head (ViT backbones only)"
            pixel_loss = self.pixel(s_out["pixel"], torch.cat(list(views[:2])), torch.cat(masks),
                                    p)
            stats["pixel_loss"] = float(pixel_loss.detach())
            loss = loss + self.pixel_weight * pixel_loss
        if self.dense is not None:
            assert geometry is not None, "the dense loss needs the global views' geometry"
            size, grid = _global_grid(student, views)
            dense_loss, overlap = self.dense(s_out["patch"], t_out["patch"], geometry, grid,
                                             size, teacher_temp)
            stats["dense_loss"] = float(dense_loss.detach())
            stats["dense_overlap"] = overlap
            loss = loss + self.dense_weight * dense_loss
        if self.region_weight > 0 and len(views) > 2:
            assert geometry is not None and geometry.shape[1] == len(views), \
                "the region loss needs every view's geometry"
            loss = loss + self.region_weight * self.region(student, teacher, views, s_out,
                                                           geometry, teacher_temp, stats)
        return loss, stats

    def region(self, student: nn.Module, teacher: nn.Module, views: Sequence[Tensor],
               s_out: dict[str, Tensor], geometry: Tensor, teacher_temp: float,
               stats: dict[str, float]) -> Tensor:
        """``dino.region``'s loss; its figures go into ``stats``."""
        with torch.no_grad():
            t_local = teacher(views[2:], n_patch_views=0)["cls"]
        targets = self.dino.targets(t_local, teacher_temp)
        size, grid = _global_grid(student, views)
        pooled, index, valid = pooled_regions(s_out["tokens"], geometry, grid, size)
        head = getattr(student, "module", student).head
        loss = region_loss(head(pooled), targets[index], valid, self.dino.student_temp)
        stats["region_loss"] = float(loss.detach())
        stats["region_valid"] = float(valid.float().mean())
        return loss
