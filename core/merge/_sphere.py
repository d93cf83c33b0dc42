"""Shared block of the spherical merges of N models (Multi-SLERP, Karcher mean).

Both iterate on unit vectors that stay in the span of the inputs, so every inner product
they need is an entry of the inputs' Gram matrix G = X Xᵀ (N × N). :func:`gram` computes G in
one chunked pass (float64 accumulation, like :mod:`core.merge.slerp`), the spherical algebra
then runs on N coefficients, and the result is one weighted sum of the inputs: two passes
over the data however many iterations the method takes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._base import chunks

GRAM_CHUNK = 1 << 16


def gram(tensors: Sequence[Tensor], base: Tensor | None = None) -> Tensor:
    """G[i, j] = ⟨xᵢ − b, xⱼ − b⟩ over the flattened tensors, in float64 (N, N), on the
    inputs' device (a None ``base`` counts as zero)."""
    ref = tensors[0]
    n, size = len(tensors), ref.numel()
    flats = [t.reshape(-1) for t in tensors]
    flat_b = None if base is None else base.reshape(-1)
    g = torch.zeros(n, n, dtype=torch.float64, device=ref.device)
    step = GRAM_CHUNK if ref.device.type == "cpu" else max(GRAM_CHUNK, size // 8 + 1)
    buf = torch.empty(n, min(step, size), dtype=torch.float64, device=ref.device)
    for s in chunks(size, step):
        x = buf[:, : s.stop - s.start]  # (N, C)
        for i, f in enumerate(flats):
            x[i].copy_(f[s])
            if flat_b is not None:
                x[i].sub_(flat_b[s])
        g.addmm_(x, x.T)
    return g


def quad(g: Tensor, a: Tensor, b: Tensor | None = None) -> float:
    """aᵀ G b (b = a by default) as a float, clamped at 0 when a = b."""
    if b is None:
        return max(0.0, float(a @ g @ a))
    return float(a @ g @ b)
