"""A cross-view dense objective: a patch of one global view predicts what the teacher sees at
the same place of the frame in the other global view (``pretrain.dense_weight``).

iBOT compares the student's and the teacher's tokens at the same position of the same view, so
nothing asks a patch token to stay the same when the grid falls elsewhere on the object, the
scale changes or the colours jitter. Here the two global views are different crops of one frame
(``MultiCrop`` keeps where each came from: ``x, y, w, h`` in frame pixels and whether it was
flipped); every patch centre of view A is mapped to frame pixels, then into view B, and the
teacher's patch-head output of B is sampled there (bilinear on the grid of patch centres). The
loss is iBOT's cross-entropy (teacher centred and sharpened, stop-gradient) over the patches of
A that land inside B, both ways round. The same idea as the location-matched losses of PixPro
and VADeR, in DINO's form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vit_perception.dino.loss import PatchCentre


def patch_centres(grid: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """``[h*w, 2]`` (x, y) centres of a ``grid`` (rows, cols) of patches over a view of
    ``size`` (height, width) pixels, row-major like the ViT's tokens."""
    gh, gw = grid
    ys = (torch.arange(gh, dtype=torch.float32) + 0.5) * size[0] / gh
    xs = (torch.arange(gw, dtype=torch.float32) + 0.5) * size[1] / gw
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx.flatten(), yy.flatten()), dim=1)


def view_to_frame(points: Tensor, geom: Tensor, size: tuple[int, int]) -> Tensor:
    """``points [n, 2]`` (x, y) in view pixels -> ``[B, n, 2]`` frame pixels, for the views
    ``geom [B, 5]`` (x, y, w, h, flipped) of ``size`` (height, width)."""
    x0, y0, w, h, flip = (geom[:, i:i + 1] for i in range(5))
    u = points[None, :, 0].to(geom)
    u = torch.where(flip > 0.5, size[1] - u, u)
    return torch.stack((x0 + u * w / size[1], y0 + points[None, :, 1].to(geom) * h / size[0]),
                       dim=-1)


def frame_to_view(points: Tensor, geom: Tensor, size: tuple[int, int]) -> Tensor:
    """``points [B, n, 2]`` frame pixels -> view pixels of ``geom [B, 5]`` (inverse of
    ``view_to_frame``)."""
    x0, y0, w, h, flip = (geom[:, i:i + 1] for i in range(5))
    u = (points[..., 0] - x0) * size[1] / w
    u = torch.where(flip > 0.5, size[1] - u, u)
    return torch.stack((u, (points[..., 1] - y0) * size[0] / h), dim=-1)


def matched_grid(geom_a: Tensor, geom_b: Tensor, grid: tuple[int, int],
                 size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Where each patch centre of view A lies in view B: ``(coords [B, n, 2]`` in
    ``grid_sample``'s [-1, 1] units over B's patch-centre grid, ``inside [B, n]`` bool)."""
    pts = frame_to_view(view_to_frame(patch_centres(grid, size), geom_a, size), geom_b, size)
    inside = ((pts[..., 0] >= 0) & (pts[..., 0] < size[1]) & (pts[..., 1] >= 0)
              & (pts[..., 1] < size[0]))
    # align_corners=False: -1 and 1 are the outer edges of the edge cells, as pixels are
    coords = torch.stack((pts[..., 0] / size[1] * 2 - 1, pts[..., 1] / size[0] * 2 - 1), -1)
    return coords, inside


class DenseLoss(PatchCentre):
    """``forward(student [2B, n, K], teacher [2B, n, K], geometry [B, 2, 5], grid, size,
    teacher_temp)``: rows are view-major (global view 0's batch, then view 1's), as the
    network returns the patch-head outputs of the two global views."""

    def forward(self, student: Tensor, teacher: Tensor, geometry: Tensor,
                grid: tuple[int, int], size: tuple[int, int], teacher_temp: float
                ) -> tuple[Tensor, float]:
        """(loss, the share of patches that land inside the other view)."""
        s_views, t_views = student.float().chunk(2), teacher.float().chunk(2)
        total, count, pairs = student.new_zeros(()), 0.0, 0
        gh, gw = grid
        for a, b in ((0, 1), (1, 0)):
            coords, inside = matched_grid(geometry[:, a], geometry[:, b], grid, size)
            t = t_views[b].transpose(1, 2).reshape(-1, t_views[b].shape[-1], gh, gw)
            t = F.grid_sample(t, coords[:, :, None, :], mode="bilinear",
                              padding_mode="border", align_corners=False)[..., 0]
            q = F.softmax((t.transpose(1, 2) - self.center) / teacher_temp, dim=-1).detach()
            ce = torch.sum(-q * F.log_softmax(s_views[a] / self.student_temp, dim=-1), -1)
            m = inside.float()
            total = total + (ce * m).sum() / m.sum().clamp_min(1.0)
            count += float(m.mean())
            pairs += 1
        self.update_center(teacher)
        return total / pairs, count / pairs
