"""Plain ViT backbone in the DINO / DINOv2 key layout, built from timm's transformer blocks.

Parameter names follow the published checkpoints (``cls_token``, ``pos_embed``,
``register_tokens``, ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,ls1,norm2,
mlp,ls2}``, ``norm``) so DINO/DINOv2 files load without renaming. The positional embedding is
stored for the configured input grid and bicubically interpolated when another input size
arrives (the higher-resolution fine-tuning recipe of the ViT paper).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn


def interpolate_pos_embed(pos_embed: Tensor, src_grid: tuple[int, int],
                          dst_grid: tuple[int, int], num_prefix: int = 1) -> Tensor:
    """Resample ``[1, P + h0*w0, D]`` to ``[1, P + h*w, D]`` (bicubic over the patch grid).

    ``P`` prefix positions ([CLS]) are kept as they are; grids are ``(rows, cols)``.
    """
    if tuple(src_grid) == tuple(dst_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, src_grid[0], src_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(dst_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, dst_grid[0] * dst_grid[1], dim)
    return torch.cat((prefix, grid.to(pos_embed.dtype)), dim=1)


class PatchEmbed(nn.Module):
    """``[B, 3, H, W]`` -> ``[B, (H/p)*(W/p), D]`` by a strided convolution (``proj``)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ViTBackbone(nn.Module):
    """ViT returning dense patch features, the [CLS] embedding and the last block's [CLS] attention.

    Inputs whose sides are not multiples of the patch are zero-padded bottom/right; ``forward``
    returns the padded size so the detector can express boxes relative to the true input.
    """

    def __init__(self, *, input_size: tuple[int, int], patch_size: int = 16, embed_dim: int = 384,
                 depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0,
                 num_registers: int = 0, layer_scale: float | None = None,
                 drop_path: float = 0.0):
        super().__init__()
        width, height = input_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_registers = num_registers
        self.grid = (-(-height // patch_size), -(-width // patch_size))  # rows, cols
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], embed_dim))
        if num_registers:
            self.register_tokens = nn.Parameter(torch.zeros(1, num_registers, embed_dim))
        rates = torch.linspace(0, drop_path, depth).tolist()
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, init_values=layer_scale,
                  drop_path=r, norm_layer=norm)
            for r in rates
        )
        self.norm = norm(embed_dim)
        self.out_channels = embed_dim
        self.stride = patch_size
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if num_registers:
            nn.init.normal_(self.register_tokens, std=1e-6)

    def pos_embed_for(self, grid: tuple[int, int]) -> Tensor:
        """Positional embedding ``[1, 1 + h*w, D]`` for a ``(rows, cols)`` patch grid."""
        return interpolate_pos_embed(self.pos_embed, self.grid, grid)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``[B, 3, H, W]`` -> ``features [B, D, h, w]``, ``embedding [B, D]``,
        ``attention [B, heads, h, w]``, plus ``padded_size`` (H', W') as python ints."""
        b, _, height, width = x.shape
        p = self.patch_size
        pad_h, pad_w = (-height) % p, (-width) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        grid = ((height + pad_h) // p, (width + pad_w) // p)
        tokens = self.patch_embed(x)
        pos = self.pos_embed_for(grid)
        parts = [self.cls_token.expand(b, -1, -1) + pos[:, :1]]
        if self.num_registers:
            parts.append(self.register_tokens.expand(b, -1, -1))
        parts.append(tokens + pos[:, 1:])
        x = torch.cat(parts, dim=1)
        for blk in self.blocks[:-1]:
            x = blk(x)
        attention = self.cls_attention(self.blocks[-1], x, grid)
        x = self.norm(self.blocks[-1](x))
        prefix = 1 + self.num_registers
        features = x[:, prefix:].transpose(1, 2).reshape(b, self.embed_dim, grid[0], grid[1])
        return {"features": features, "embedding": x[:, 0], "attention": attention,
                "padded_size": (height + pad_h, width + pad_w)}

    def cls_attention(self, blk: Block, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """Softmax attention of [CLS] over all tokens in ``blk``, patch part ``[B, heads, h, w]``.

        Computed explicitly (q . k, softmax) so it exports to ONNX/TensorRT.
        """
        b, n, _ = x.shape
        attn = blk.attn
        qkv = attn.qkv(blk.norm1(x)).reshape(b, n, 3, attn.num_heads, attn.head_dim)
        q, k = qkv[:, :1, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)  # [B,h,1,d], [B,h,N,d]
        q, k = attn.q_norm(q), attn.k_norm(k)
        weights = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # [B, h, 1, N]
        prefix = 1 + self.num_registers
        return weights[:, :, 0, prefix:].reshape(b, attn.num_heads, grid[0], grid[1])
