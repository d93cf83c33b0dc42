"""A small Vision Transformer for 8–32 px inputs (Dosovitskiy et al., ICLR 2021,
arXiv 2010.11929): patch embedding, a learned CLS token and position embeddings, pre-norm
blocks (multi-head self-attention + GELU MLP), the CLS output as the penultimate feature.

Each block keeps the CLS→patch attention of its last forward (averaged over heads) in
``last_cls_attention`` (N, n_patches), which TransMix and MixPro read to relabel mixed
samples by attention mass. The patch size must divide the image side (4 for 28 px, 4 or 8
for 32 px, 2 or 4 for 8 px).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .classifier import Classifier


class Block(nn.Module):
    """Pre-norm transformer block with an explicit attention so its map can be read."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width must be divisible by heads, got {dim} and {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )
        self.last_cls_attention: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (N, H, T, d_h) each
        att = torch.softmax(q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5, dim=-1)
        self.last_cls_attention = att[:, :, 0, 1:].mean(1).detach()  # (N, T - 1) CLS→patch
        y = (att @ v).transpose(1, 2).reshape(n, t, d)
        x = x + self.proj(y)
        return x + self.mlp(self.norm2(x))


class ViTTrunk(nn.Module):
    def __init__(self, width: int, depth: int, heads: int, patch: int, channels: int, side: int):
        super().__init__()
        if side % patch:
            raise ValueError(f"patch_size must divide image_size, got {patch} and {side}")
        self.patch = patch
        self.grid = side // patch
        self.embed = nn.Conv2d(channels, width, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, self.grid**2 + 1, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        tok = self.embed(x).flatten(2).transpose(1, 2)  # (N, P, D)
        tok = torch.cat([self.cls.expand(len(x), -1, -1), tok], 1) + self.pos
        for blk in self.blocks:
            tok = blk(tok)
        return self.norm(tok[:, 0])

    def cls_attention(self) -> Tensor:
        """(N, grid, grid) CLS→patch attention of the last block in the last forward."""
        blk = self.blocks[-1]
        assert isinstance(blk, Block)
        att = blk.last_cls_attention
        if att is None:
            raise RuntimeError("cls_attention needs a forward pass first")
        return att.reshape(-1, self.grid, self.grid)


def build_vit(
    *,
    width: int = 64,
    depth: int = 3,
    heads: int = 4,
    patch_size: int = 4,
    n_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    n_heads: int = 1,
) -> Classifier:
    """ViT with ``width``-dim tokens, ``depth`` blocks of ``heads`` heads, square patches."""
    trunk = ViTTrunk(width, depth, heads, patch_size, in_channels, image_size)
    return Classifier(trunk, width, n_classes, n_heads)
