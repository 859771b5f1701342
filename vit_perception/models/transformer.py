"""DETR transformer layers: positional encodings are added to queries and keys in every layer.

Post-norm layers as in DETR; all tensors are batch-first ``[B, L, d]``.
"""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU in between: ``[..., in] -> [..., out]``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = x.relu()
        return x


class FFN(nn.Module):
    """Linear -> ReLU -> dropout -> Linear, residual and LayerNorm (post-norm)."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, d_model), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.net(x))


class EncoderLayer(nn.Module):
    """Self-attention over the ``[B, hw, d]`` memory with ``pos`` added to queries and keys."""

    def __init__(self, d_model: int, nhead: int, ffn_dim: int, dropout: float = 0.0):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, ffn_dim, dropout)

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        q = k = src + pos
        src = self.norm(src + self.drop(self.attn(q, k, src, need_weights=False)[0]))
        return self.ffn(src)


class DecoderLayer(nn.Module):
    """Query self-attention, then cross-attention to the memory, then the FFN.

    ``tgt [B, N, d]`` queries with ``query_pos [B, N, d]``; ``memory [B, hw, d]`` with
    ``pos [B or 1, hw, d]``.
    """

    def __init__(self, d_model: int, nhead: int, ffn_dim: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ffn = FFN(d_model, ffn_dim, dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, memory: Tensor, pos: Tensor,
                self_attn_mask: Tensor | None = None) -> Tensor:
        q = k = tgt + query_pos
        out = self.self_attn(q, k, tgt, attn_mask=self_attn_mask, need_weights=False)[0]
        tgt = self.norm1(tgt + self.drop1(out))
        out = self.cross_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.drop2(out))
        return self.ffn(tgt)
