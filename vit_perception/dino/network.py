"""Backbone + projection heads, run over multi-crop views; the teacher as an EMA of the student.

``DINONetwork`` wraps the config's backbone (ViT or Swin): the image-level embedding ([CLS] for
a ViT, the pooled last-stage feature for Swin) goes through the DINO head; with iBOT on, the
ViT's patch tokens go through a patch head and masked patches are replaced by a learned mask
token before the transformer blocks. With the masked-pixel target (``pretrain.pixel_weight``)
a linear pixel head maps the masked views' patch tokens to their patches' pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from vit_perception.dino.head import DINOHead


def is_vit(backbone: nn.Module) -> bool:
    return hasattr(backbone, "blocks") and hasattr(backbone, "patch_embed")


def vit_tokens(vit: nn.Module, x: Tensor, masks: Tensor | None = None,
               mask_token: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """A ViT's final normalised tokens: ``([CLS] [B, D], patches [B, h*w, D])``.

    ``masks [B, h*w]`` (True = masked) replaces those patch embeddings by ``mask_token [1, D]``
    before the positional embedding is added. Sides that are not patch multiples are padded, as
    the backbone's own forward does.
    """
    h, _, _ = vit.embed(x, masks, mask_token)
    for blk in vit.blocks:
        h = blk(h)
    h = vit.norm(h)
    return h[:, 0], h[:, 1 + vit.num_registers:]


def backbone_tokens(backbone: nn.Module, x: Tensor, masks: Tensor | None = None,
                    mask_token: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(embedding [B, D], patch tokens [B, n, D])`` for a ViT or a Swin backbone."""
    if is_vit(backbone):
        return vit_tokens(backbone, x, masks, mask_token)
    out = backbone(x)
    return out["embedding"], out["features"].flatten(2).transpose(1, 2)


class DINONetwork(nn.Module):
    """Backbone + DINO head (+ iBOT patch head, pixel head and mask token).

    ``forward(views, masks)``: ``views`` is a list of ``[B, 3, S, S]`` batches (same-size views
    run through the backbone together); ``masks`` (optional) a list of ``[B, h*w]`` bools for
    the first views. Returns ``cls [V*B, K]`` (view-major), ``embedding [G*B, D]`` (the
    backbone's [CLS] of the first ``n_patch_views`` views, before the head) and, with a patch head,
    ``patch [G*B, n, K2]`` for the first ``len(masks)`` (or 2) views; with a pixel head and
    masks, ``pixel [G*B, n, p*p*3]`` for the same views; with ``keep_tokens`` (the region
    objective), ``tokens [G*B, n, D]``, those views' patch tokens before any head.
    """

    def __init__(self, backbone: nn.Module, head: DINOHead, patch_head: nn.Module | None = None,
                 share_head: bool = False, pixel_head: nn.Module | None = None,
                 keep_tokens: bool = False):
        super().__init__()
        self.keep_tokens = keep_tokens
        self.backbone = backbone
        self.head = head
        self.patch_head = patch_head
        self.share_head = share_head
        self.pixel_head = pixel_head
        self.mask_token = None
        if patch_head is not None or share_head or pixel_head is not None:
            dim = int(backbone.out_channels)
            self.mask_token = nn.Parameter(torch.zeros(1, dim))

    @property
    def has_patch_head(self) -> bool:
        return self.patch_head is not None or self.share_head

    def forward(self, views: Sequence[Tensor], masks: Sequence[Tensor] | None = None,
                n_patch_views: int = 2) -> dict[str, Tensor]:
        cls_out: list[Tensor] = []
        patch_out: list[Tensor] = []
        want_tokens = (self.has_patch_head or self.keep_tokens
                       or (self.pixel_head is not None and masks is not None))
        i = 0
        while i < len(views):  # runs of equal-size views share one backbone call
            j = i + 1
            while j < len(views) and views[j].shape[-2:] == views[i].shape[-2:]:
                j += 1
            x = torch.cat(list(views[i:j]))
            m = None
            if masks is not None and i < len(masks):
                m = torch.cat(list(masks[i:min(j, len(masks))]))
                if m.shape[0] < x.shape[0]:  # views past the masked ones stay unmasked
                    pad = m.new_zeros((x.shape[0] - m.shape[0], m.shape[1]))
                    m = torch.cat((m, pad))
            emb, patches = backbone_tokens(self.backbone, x, m, self.mask_token)
            cls_out.append(emb)
            if want_tokens and i < n_patch_views:
                keep = min(j, n_patch_views) - i
                patch_out.append(patches[: keep * views[i].shape[0]])
            i = j
        embeddings = torch.cat(cls_out)
        out = {"cls": self.head(embeddings),
               "embedding": embeddings[: min(n_patch_views, len(views)) * views[0].shape[0]]}
        if patch_out:
            tokens = torch.cat(patch_out)
            if self.has_patch_head:
                head = self.head if self.share_head else self.patch_head
                assert head is not None
                out["patch"] = head(tokens)
            if self.pixel_head is not None and masks is not None:
                out["pixel"] = self.pixel_head(tokens)
            if self.keep_tokens:
                out["tokens"] = tokens
        return out


def build_network(backbone: nn.Module, opts: dict) -> DINONetwork:
    """``opts`` is the resolved ``cfg["pretrain"]`` section."""
    dim = int(backbone.out_channels)
    head = DINOHead(dim, int(opts["out_dim"]), hidden_dim=int(opts["hidden_dim"]),
                    bottleneck_dim=int(opts["bottleneck_dim"]), layers=int(opts["head_layers"]),
                    norm_last_layer=bool(opts["norm_last_layer"]))
    patch_head = None
    share = False
    patch_losses = float(opts.get("ibot_weight") or 0) + float(opts.get("dense_weight") or 0)
    if patch_losses > 0 and is_vit(backbone):
        if bool(opts.get("ibot_separate_head", True)):
            patch_head = DINOHead(dim, int(opts["ibot_out_dim"]),
                                  hidden_dim=int(opts["hidden_dim"]),
                                  bottleneck_dim=int(opts["bottleneck_dim"]),
                                  layers=int(opts["head_layers"]),
                                  norm_last_layer=bool(opts["norm_last_layer"]))
        else:
            share = True
    pixel_head = None
    if float(opts.get("pixel_weight") or 0) > 0 and is_vit(backbone):
        p = int(backbone.patch_size)
        pixel_head = nn.Linear(dim, p * p * 3)  # SimMIM's one-layer decoder
    keep_tokens = float(opts.get("region_weight") or 0) > 0 and is_vit(backbone)
    return DINONetwork(backbone, head, patch_head, share, pixel_head, keep_tokens)


class Teacher(nn.Module):
    """A frozen copy of the student network, updated as an exponential moving average.

    ``update(student, momentum)``: every floating-point parameter and buffer becomes
    ``momentum * teacher + (1 - momentum) * student``; integer buffers are copied. BatchNorm
    layers (the conv and cnn stems') are the exception, as in DINO's own teacher: they normalise
    with the teacher's batch statistics and keep running statistics of the teacher's own
    batches, which the EMA leaves alone. In eval mode with statistics averaged from the
    student, the teacher's first steps normalise with the initial mean 0 and variance 1: a cnn
    stem's tokens are then the same for every frame (cosine 1.000 between frames), the centred
    targets are uniform and the student learns to copy a constant (docs/RESULTS.md, issue 12,
    eighteenth look). Everything else (dropout, stochastic depth) stays in eval mode.
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        import copy

        self.module = copy.deepcopy(student).requires_grad_(False)
        norms = [(name, m) for name, m in self.module.named_modules()
                 if isinstance(m, _BatchNorm)]
        self._norms = [m for _, m in norms]
        self._own_buffers = {f"{name}.{b}" if name else b for name, m in norms
                             for b, _ in m.named_buffers(recurse=False)}
        self.train()

    def train(self, mode: bool = True) -> Teacher:
        """Always in eval mode, BatchNorm layers excepted (batch statistics, see above)."""
        self.module.eval()
        for m in self._norms:
            m.train()
        return self

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        student = getattr(student, "module", student)  # DDP wrapper
        own = self.module.state_dict()
        for name, value in student.state_dict().items():
            if name in self._own_buffers:
                continue
            target = own[name]
            if target.dtype.is_floating_point:
                target.mul_(momentum).add_(value.detach().to(target.dtype), alpha=1.0 - momentum)
            else:
                target.copy_(value)

    def forward(self, *args, **kwargs):
        self.train()  # the attention-map pass switches the backbone to eval mode
        return self.module(*args, **kwargs)
