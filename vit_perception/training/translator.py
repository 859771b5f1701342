"""Feature translator for dense distillation: student patch features -> the teacher's grid and
channels (Theia / AM-RADIO style), and the map between the two models' letterboxed inputs.

Teacher and student see the same augmented frame, each letterboxed into its own input size, so
their feature grids cover different regions when the aspect ratios differ. ``InputMap`` holds
the per-frame affine map from teacher-input to student-input normalised coordinates; the
translator samples the student's map at the teacher's cell centres through it (bilinear, the
same as plain interpolation when the geometry agrees), then a 1x1 conv, GELU and a 3x3 conv
produce the teacher's channels. Cells outside the frame (letterbox padding) are masked out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vit_perception.models.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from vit_perception.models.preprocess import Letterbox


def input_map(teacher: Letterbox, student: Letterbox, where: Tensor | None = None) -> Tensor:
    """``[8]`` float: ``(ax, bx, ay, by)`` mapping teacher-input normalised coordinates to
    student-input ones (``x_s = ax * x_t + bx``; a flip makes ``ax`` negative), then the extent
    of the frame the student still sees, in the teacher input, as normalised ``(x0, y0, x1,
    y1)``. ``where`` None: both letterboxes hold the same frame. Else the teacher saw the frame
    un-augmented (``teacher_cache``) and the student the augmented one, and ``where`` is
    ``augment.source_map``: ``x_aug = sx * x + tx``, ``y_aug = y + ty`` and the part of the
    frame still shown (a crop cuts cells off)."""
    if where is None:
        if (teacher.src_w, teacher.src_h) != (student.src_w, student.src_h):
            raise ValueError("teacher and student letterboxes hold frames of different sizes")
        sx, tx, ty, vx0, vy0 = 1.0, 0.0, 0.0, 0.0, 0.0
        vx1, vy1 = float(teacher.src_w), float(teacher.src_h)
    else:
        sx, tx, ty, vx0, vy0, vx1, vy1 = (float(v) for v in where)
    kx, ky = student.scale_x / student.dst_w, student.scale_y / student.dst_h
    ax = sx * teacher.dst_w / teacher.scale_x * kx
    bx = (tx - sx * teacher.pad_x / teacher.scale_x) * kx + student.pad_x / student.dst_w
    ay = teacher.dst_h / teacher.scale_y * ky
    by = (ty - teacher.pad_y / teacher.scale_y) * ky + student.pad_y / student.dst_h
    x0 = (vx0 * teacher.scale_x + teacher.pad_x) / teacher.dst_w
    y0 = (vy0 * teacher.scale_y + teacher.pad_y) / teacher.dst_h
    x1 = (vx1 * teacher.scale_x + teacher.pad_x) / teacher.dst_w
    y1 = (vy1 * teacher.scale_y + teacher.pad_y) / teacher.dst_h
    return torch.tensor([ax, bx, ay, by, x0, y0, x1, y1], dtype=torch.float32)


def map_boxes(boxes: Tensor, maps: Tensor) -> Tensor:
    """Teacher-input normalised cxcywh ``[B, N, 4]`` -> student-input normalised cxcywh (a map
    with ``ax < 0`` mirrors them), clipped to the frame first (no box reaches into letterbox
    padding, as no ground-truth box does). ``maps [B, 8]`` from ``input_map``."""
    a = maps[:, None, [0, 2, 0, 2]]
    b = maps[:, None, [1, 3, 1, 3]]
    lo, hi = maps[:, None, [4, 5, 4, 5]], maps[:, None, [6, 7, 6, 7]]
    xyxy = torch.minimum(torch.maximum(box_cxcywh_to_xyxy(boxes), lo), hi) * a + b
    x1, x2 = torch.minimum(xyxy[..., 0], xyxy[..., 2]), torch.maximum(xyxy[..., 0], xyxy[..., 2])
    xyxy = torch.stack((x1, xyxy[..., 1], x2, xyxy[..., 3]), dim=-1)  # ax < 0: a flip
    return box_xyxy_to_cxcywh(xyxy.clamp(0, 1))


def teacher_cells(maps: Tensor, grid: tuple[int, int], cell_extent: tuple[float, float],
                  student_extent: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Sampling grid and validity mask for the teacher's ``grid = (h, w)`` feature cells.

    ``cell_extent`` is the teacher's padded input over its input (``(W'/W, H'/H)``: the grid
    covers the padded input), ``student_extent`` the same for the student. Returns ``grid
    [B, h, w, 2]`` in ``grid_sample``'s [-1, 1] coordinates of the student's feature map and
    ``mask [B, h, w]``, true where the cell centre lies on the frame (not letterbox padding).
    """
    h, w = grid
    dev = maps.device
    u = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w * cell_extent[0]
    v = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h * cell_extent[1]
    xs = maps[:, 0, None] * u[None] + maps[:, 1, None]  # [B, w] student input normalised
    ys = maps[:, 2, None] * v[None] + maps[:, 3, None]  # [B, h]
    gx = (xs / student_extent[0]) * 2 - 1
    gy = (ys / student_extent[1]) * 2 - 1
    sample = torch.stack((gx[:, None, :].expand(-1, h, -1), gy[:, :, None].expand(-1, -1, w)),
                         dim=-1)
    in_x = (u[None] >= maps[:, 4, None]) & (u[None] <= maps[:, 6, None])  # [B, w]
    in_y = (v[None] >= maps[:, 5, None]) & (v[None] <= maps[:, 7, None])  # [B, h]
    return sample, in_y[:, :, None] & in_x[:, None, :]


class FeatureTranslator(nn.Module):
    """``student [B, Cs, hs, ws]`` sampled at ``grid [B, ht, wt, 2]`` -> ``[B, Ct, ht, wt]``."""

    def __init__(self, in_channels: int, out_channels: int, hidden_dim: int = 256,
                 kernel_size: int = 3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, hidden_dim, 1), nn.GELU(),
            nn.Conv2d(hidden_dim, out_channels, kernel_size, padding=kernel_size // 2))

    def forward(self, features: Tensor, grid: Tensor) -> Tensor:
        x = F.grid_sample(features.float(), grid.to(torch.float32), mode="bilinear",
                          padding_mode="border", align_corners=False)
        return self.net(x)
