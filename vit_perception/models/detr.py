"""DETR head (encoder, decoder with N object queries, class + box heads) and the full detector.

Convergence aids for small data, both simple and export-friendly (fixed shapes, no data-dependent
Python control flow):

- iterative box refinement: every decoder layer predicts a box delta (in logit space) on the
  previous layer's box, and the box's sine embedding is the query position (DAB-DETR);
- two-stage query selection (Deformable DETR / RT-DETR): every encoder token proposes a box
  around its own cell; the top-N proposals (``torch.topk``) seed the decoder queries.
  Their outputs (``enc_outputs``) get the same set loss during training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vit_perception.models.box_ops import inverse_sigmoid
from vit_perception.models.position_encoding import (
    PositionEmbeddingSine,
    box_sine_embedding,
    cached_constant,
)
from vit_perception.models.transformer import MLP, DecoderLayer, EncoderLayer


class DETRHead(nn.Module):
    """``features [B, C, h, w]`` -> ``pred_logits [B, N, K+1]``, ``pred_boxes [B, N, 4]``.

    Boxes are normalised cxcywh relative to the feature map's extent. In training mode also
    ``aux_outputs`` (one dict per earlier decoder layer) and, with two-stage, ``enc_outputs``.
    """

    def __init__(self, *, in_channels: int, num_classes: int, hidden_dim: int = 256,
                 num_queries: int = 100, enc_layers: int = 1, dec_layers: int = 6,
                 nheads: int = 8, ffn_dim: int = 1024, dropout: float = 0.0,
                 two_stage: bool = True, anchor_size: float = 0.1):
        super().__init__()
        d = hidden_dim
        self.num_queries, self.two_stage, self.anchor_size = num_queries, two_stage, anchor_size
        self.input_proj = nn.Sequential(nn.Conv2d(in_channels, d, 1),
                                        nn.GroupNorm(32 if d % 32 == 0 else 1, d))
        self.position = PositionEmbeddingSine(d // 2)
        self.encoder = nn.ModuleList(EncoderLayer(d, nheads, ffn_dim, dropout)
                                     for _ in range(enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(d, nheads, ffn_dim, dropout)
                                     for _ in range(dec_layers))
        self.class_head = nn.Linear(d, num_classes + 1)
        self.box_head = MLP(d, d, 4, 3)
        self.query_pos_head = MLP(2 * d, d, d, 2)
        if two_stage:
            self.enc_proj = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d))
            self.enc_class_head = nn.Linear(d, num_classes + 1)
            self.enc_box_head = MLP(d, d, 4, 3)
            nn.init.zeros_(self.enc_box_head.layers[-1].weight)
            nn.init.zeros_(self.enc_box_head.layers[-1].bias)
        else:
            self.query_content = nn.Embedding(num_queries, d)
            self.query_ref = nn.Embedding(num_queries, 4)
            nn.init.uniform_(self.query_ref.weight[:, :2], -2.0, 2.0)
            nn.init.constant_(self.query_ref.weight[:, 2:], float(inverse_sigmoid(
                torch.tensor(anchor_size))))
        nn.init.zeros_(self.box_head.layers[-1].weight)
        nn.init.zeros_(self.box_head.layers[-1].bias)

    def anchors(self, h: int, w: int, device: torch.device,
                dtype: torch.dtype = torch.float32) -> Tensor:
        """One box per cell, centred on it, side ``anchor_size``: ``[1, h*w, 4]`` logits (cached
        per grid, device and dtype; computed in float32; do not modify in place)."""
        key = ("anchors", int(h), int(w), float(self.anchor_size), str(device), str(dtype))
        return cached_constant(key, lambda: self._anchors(int(h), int(w), device).to(dtype))

    def _anchors(self, h: int, w: int, device: torch.device) -> Tensor:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        size = torch.full_like(cx, self.anchor_size)
        return inverse_sigmoid(torch.stack((cx, cy, size, size), dim=-1).reshape(1, h * w, 4))

    def forward(self, features: Tensor) -> dict:
        src = self.input_proj(features)
        b, d, h, w = src.shape
        pos = self.position(h, w, src.device, src.dtype).flatten(2).transpose(1, 2)  # [1,hw,d]
        memory = src.flatten(2).transpose(1, 2)  # [B, hw, d]
        for layer in self.encoder:
            memory = layer(memory, pos)
        out: dict = {}
        if self.two_stage:
            tgt, ref_logit, enc_out = self._select_queries(memory, h, w)
            if self.training:
                out["enc_outputs"] = enc_out
        else:
            tgt = self.query_content.weight[None].expand(b, -1, -1)
            ref_logit = self.query_ref.weight[None].expand(b, -1, -1)
        layers = []
        for layer in self.decoder:
            query_pos = self.query_pos_head(box_sine_embedding(ref_logit.sigmoid(), d // 2))
            tgt = layer(tgt, query_pos, memory, pos)
            new_logit = self.box_head(tgt) + ref_logit
            layers.append({"pred_logits": self.class_head(tgt), "pred_boxes": new_logit.sigmoid()})
            ref_logit = new_logit.detach()
        out.update(layers[-1])
        if self.training:
            out["aux_outputs"] = layers[:-1]
        return out

    def _select_queries(self, memory: Tensor, h: int, w: int) -> tuple[Tensor, Tensor, dict]:
        """Top-N encoder proposals -> (content ``[B, N, d]``, box logits ``[B, N, 4]``, enc)."""
        enc = self.enc_proj(memory)
        logits = self.enc_class_head(enc)  # [B, hw, K+1]
        box_logit = self.enc_box_head(enc) + self.anchors(h, w, memory.device, enc.dtype)
        scores = logits.softmax(-1)[..., :-1].max(-1).values  # [B, hw]
        k = min(self.num_queries, h * w)
        idx = scores.topk(k, dim=1).indices  # [B, k]
        content = enc.gather(1, idx[..., None].expand(-1, -1, enc.shape[-1])).detach()
        ref_logit = box_logit.gather(1, idx[..., None].expand(-1, -1, 4)).detach()
        return content, ref_logit, {"pred_logits": logits, "pred_boxes": box_logit.sigmoid()}


class Detector(nn.Module):
    """Backbone + DETR head. ``images [B, 3, H, W]`` (normalised) -> dict of named tensors:

    ``pred_logits [B, N, K+1]`` (last = no-object), ``pred_boxes [B, N, 4]`` normalised cxcywh of
    the input, ``features [B, C, h, w]``, ``embedding [B, C]``, ``attention [B, heads, h, w]``;
    training mode adds ``aux_outputs`` (and ``enc_outputs`` with two-stage queries).
    """

    def __init__(self, backbone: nn.Module, head: DETRHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: Tensor) -> dict:
        height, width = images.shape[-2:]
        feats = self.backbone(images)
        out = self.head(feats["features"])
        padded_h, padded_w = feats["padded_size"]
        if (padded_h, padded_w) != (height, width):  # boxes were relative to the padded input
            scale = [padded_w / width, padded_h / height] * 2
            dtype = out["pred_boxes"].dtype  # cached: no host-to-device copy in a CUDA graph
            s = cached_constant(("box_scale", *scale, str(images.device), str(dtype)),
                                lambda: torch.tensor(scale, device=images.device, dtype=dtype))
            for d in [out, *out.get("aux_outputs", []), out.get("enc_outputs", {})]:
                if "pred_boxes" in d:
                    d["pred_boxes"] = d["pred_boxes"] * s
        out["features"] = feats["features"]
        out["embedding"] = feats["embedding"]
        out["attention"] = feats["attention"]
        return out
