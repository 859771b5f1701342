"""Plain ViT backbone in the DINO / DINOv2 key layout (timm-compatible transformer blocks).

Parameter names follow the published checkpoints (``cls_token``, ``pos_embed``,
``register_tokens``, ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,ls1,norm2,
mlp,ls2}``, ``norm``) so DINO/DINOv2 files load without renaming. The positional embedding is
stored for the configured input grid and bicubically interpolated when another input size
arrives (the higher-resolution fine-tuning recipe of the ViT paper).

The blocks are a local copy of timm's ``Block`` (same parameters, names and arithmetic): importing
timm costs seconds on every model build and ``Predictor.load``, for ~60 lines of modules.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


class Attention(nn.Module):
    """timm's ``Attention``: fused ``qkv``, ``q_norm``/``k_norm`` (identity), ``proj``.

    Eager runs ``scaled_dot_product_attention``; export writes the plain
    ``softmax((q * scale) @ k^T) @ v`` graph that TensorRT and ONNX Runtime's fusions recognise.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        assert dim % num_heads == 0, "dim should be divisible by num_heads"
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_dim = dim
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm = nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if _exporting():
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        else:
            x = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        x = self.norm(x.transpose(1, 2).reshape(b, n, self.attn_dim))
        return self.proj_drop(self.proj(x))


class LayerScale(nn.Module):
    """timm's ``LayerScale``: ``x * gamma``."""

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """timm's ``DropPath``: stochastic depth per sample, scaled by the keep probability."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
        if keep_prob > 0.0 and self.scale_by_keep:
            random_tensor.div_(keep_prob)
        return x * random_tensor


class Mlp(nn.Module):
    """timm's ``Mlp``: ``fc1`` -> GELU -> ``fc2`` (dropouts and ``norm`` identity by default)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class Block(nn.Module):
    """timm's pre-norm ``vision_transformer.Block`` (same state-dict keys)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 init_values: float | None = None, drop_path: float = 0.0,
                 norm_layer: type[nn.Module] | partial = nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


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


def _halving_widths(stem: str, patch_size: int, embed_dim: int) -> list[int]:
    """Channels after each of a convolutional stem's log2(``patch_size``) halvings, doubling up
    to ``embed_dim`` (at least 16)."""
    n = patch_size.bit_length() - 1
    if patch_size < 2 or 1 << n != patch_size:
        raise ValueError(f"stem: {stem} needs a power-of-two patch_size, got {patch_size}")
    return [max(16, embed_dim >> (n - 1 - i)) for i in range(n)]


class ConvStem(nn.Module):
    """The convolutional stem of "Early convolutions help transformers see better" (Xiao et al.,
    2021) in place of the patch projection: log2(p) 3x3 stride-2 convolutions with BatchNorm and
    ReLU (channels doubling up to ``embed_dim``), then a 1x1 convolution (``proj``) to
    ``embed_dim``. Same output as ``PatchEmbed``: ``[B, 3, H, W]`` -> ``[B, (H/p)*(W/p), D]``
    for ``H, W`` multiples of ``p``."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        widths = _halving_widths("conv", patch_size, embed_dim)
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_chans, *widths[:-1]], widths):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(widths[-1], embed_dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.stem(x)).flatten(2).transpose(1, 2)


class _Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, dilation, dilation, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class CNNStem(nn.Module):
    """A small ResNet-like network as the stem (the hybrid of the ViT paper, in miniature): per
    halving two 3x3 convolutions (the first of stride 2) with BatchNorm and ReLU, channels as in
    ``ConvStem``; then two dilated (2) 3x3 residual convolutions at the patch stride, for a
    receptive field of 219 pixels at ``patch_size`` 16; then ``proj`` (1x1) to
    ``embed_dim``. Every token then starts from local, translation-equivariant features of its
    neighbourhood, which the transformer would otherwise have to learn from data. Same output as
    ``PatchEmbed``."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        widths = _halving_widths("cnn", patch_size, embed_dim)
        layers: list[nn.Module] = []
        for c_in, c_out in zip([in_chans, *widths[:-1]], widths):
            layers += [_conv_bn_relu(c_in, c_out, stride=2), _conv_bn_relu(c_out, c_out)]
        layers += [_Residual(_conv_bn_relu(widths[-1], widths[-1], dilation=2))
                   for _ in range(2)]
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(widths[-1], embed_dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.stem(x)).flatten(2).transpose(1, 2)


STEMS = {"patch": PatchEmbed, "conv": ConvStem, "cnn": CNNStem}


class ViTBackbone(nn.Module):
    """ViT returning dense patch features, the [CLS] embedding and the last block's [CLS] attention.

    Inputs whose sides are not multiples of the patch are zero-padded bottom/right; ``forward``
    returns the padded size so the detector can express boxes relative to the true input.
    """

    def __init__(self, *, input_size: tuple[int, int], patch_size: int = 16, embed_dim: int = 384,
                 depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0,
                 num_registers: int = 0, layer_scale: float | None = None,
                 drop_path: float = 0.0, stem: str = "patch"):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"model.backbone.stem must be one of {', '.join(STEMS)}, "
                             f"got {stem!r}")
        width, height = input_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_registers = num_registers
        self.grid = (-(-height // patch_size), -(-width // patch_size))  # rows, cols
        self.stem_kind = stem
        self.patch_embed = STEMS[stem](patch_size, embed_dim)
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

    def embed(self, x: Tensor, masks: Tensor | None = None, mask_token: Tensor | None = None
              ) -> tuple[Tensor, tuple[int, int], tuple[int, int]]:
        """``[B, 3, H, W]`` -> (tokens ``[B, 1 + registers + h*w, D]`` before the blocks, grid
        ``(h, w)``, padded size ``(H', W')``). Sides that are not patch multiples are padded;
        ``masks [B, h*w]`` (True = masked) replaces those patch embeddings by ``mask_token
        [1, D]`` before the positional embedding is added (iBOT)."""
        b, _, height, width = x.shape
        p = self.patch_size
        pad_h, pad_w = (-height) % p, (-width) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        grid = ((height + pad_h) // p, (width + pad_w) // p)
        tokens = self.patch_embed(x)
        if masks is not None and mask_token is not None:
            tokens = torch.where(masks[..., None], mask_token.to(tokens.dtype), tokens)
        pos = self.pos_embed_for(grid)
        parts = [self.cls_token.expand(b, -1, -1) + pos[:, :1]]
        if self.num_registers:
            parts.append(self.register_tokens.expand(b, -1, -1))
        parts.append(tokens + pos[:, 1:])
        return torch.cat(parts, dim=1), grid, (height + pad_h, width + pad_w)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``[B, 3, H, W]`` -> ``features [B, D, h, w]``, ``embedding [B, D]``,
        ``attention [B, heads, h, w]``, plus ``padded_size`` (H', W') as python ints."""
        b = x.shape[0]
        x, grid, padded_size = self.embed(x)
        for blk in self.blocks[:-1]:
            x = blk(x)
        attention = self.cls_attention(self.blocks[-1], x, grid)
        x = self.norm(self.blocks[-1](x))
        prefix = 1 + self.num_registers
        features = x[:, prefix:].transpose(1, 2).reshape(b, self.embed_dim, grid[0], grid[1])
        return {"features": features, "embedding": x[:, 0], "attention": attention,
                "padded_size": padded_size}

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
