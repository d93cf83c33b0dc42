"""Shared building blocks of the task-vector merges, each defined once.

* :func:`weighted_sum` — Σ wᵢ xᵢ (+ c·base), streamed in cache-sized chunks.
* :func:`kth_largest_abs` / :func:`magnitude_threshold` — the top-``density`` magnitude
  threshold of one tensor or of a whole model (global), found without sorting.
* :func:`elect_sign` — the TIES sign per coordinate by total mass.
* :func:`disjoint_merge` — mean or sum over the entries that agree with the elected sign.
* :func:`dare_mask_` — DARE drop-and-rescale of one chunk, seeded by a generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._base import CHUNK, chunks, compute_dtype

# Chunk of the bandwidth-bound sums: small enough that the output chunk stays in cache.
SUM_CHUNK = 1 << 18


def weighted_sum(
    tensors: Sequence[Tensor],
    weights: Sequence[float],
    base: Tensor | None = None,
    base_weight: float = 0.0,
) -> Tensor:
    """``base_weight · base + Σ wᵢ · tensorsᵢ`` in the compute dtype, one pass over the inputs.

    Args:
        tensors: N tensors of one shape.
        weights: N coefficients.
        base: optional tensor of the same shape.
        base_weight: coefficient of ``base``.

    Returns:
        A new tensor of the inputs' shape in :func:`compute_dtype` of the first tensor.
    """
    ref = tensors[0]
    dtype = compute_dtype(ref)
    out = torch.empty(ref.shape, dtype=dtype, device=ref.device)
    flat_out = out.view(-1)  # (P,)
    flats = [t.reshape(-1) for t in tensors]  # N x (P,)
    flat_base = None if base is None else base.reshape(-1)
    for s in chunks(ref.numel(), SUM_CHUNK):
        acc = flat_out[s]  # (C,) view into the output
        if flat_base is not None and base_weight != 0.0:
            torch.mul(flat_base[s], base_weight, out=acc)
        else:
            acc.zero_()
        for x, w in zip(flats, weights, strict=True):
            if w != 0.0:
                acc.add_(x[s], alpha=w)
    return out


def keep_count(n: int, density: float) -> int:
    """Number of entries kept at ``density``: ⌊density·n⌋, at least 1 (n at density 1)."""
    return n if density >= 1.0 else max(1, math.floor(density * n))


def kth_largest_abs(x: Tensor, k: int) -> float:
    """The k-th largest |x| of a tensor (k in [1, numel]), without a full sort.

    A strided sample brackets the answer; the exact value is then the k'-th largest among the
    few entries inside the bracket. Falls back to ``kthvalue`` when the bracket misses.
    """
    a = x.detach().reshape(-1).abs()  # (P,)
    n = a.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if n <= CHUNK:
        return float(a.kthvalue(n - k + 1).values)
    sample = torch.sort(a[:: max(1, n // 65536)], descending=True).values  # (m,)
    m = sample.numel()
    j = k * m / n
    margin = 4.0 * math.sqrt(max(j, 1.0)) + 8.0
    hi_i, lo_i = math.floor(j - margin), math.ceil(j + margin)
    hi = float("inf") if hi_i < 0 else float(sample[hi_i])
    lo = 0.0 if lo_i >= m else float(sample[lo_i])
    above = 0
    inside = []
    for s in chunks(n):
        c = a[s]  # (C,)
        above += int((c > hi).sum())
        inside.append(c[(c <= hi) & (c >= lo)])
    cand = torch.cat(inside)  # (M,) entries in the bracket
    need = k - above
    if need < 1 or need > cand.numel():
        return float(a.kthvalue(n - k + 1).values)
    return float(cand.kthvalue(cand.numel() - need + 1).values)


def magnitude_threshold(tensors: Sequence[Tensor], density: float) -> float:
    """Threshold on |x| keeping the top ``density`` fraction of all entries of ``tensors``
    taken together (one tensor: per-tensor scope; a model's tensors: global scope).
    Entries with ``|x| >= threshold`` are kept; density 1 gives 0 (everything)."""
    n = sum(t.numel() for t in tensors)
    if density >= 1.0 or n == 0:
        return 0.0
    flat = (
        tensors[0].reshape(-1) if len(tensors) == 1 else torch.cat([t.reshape(-1) for t in tensors])
    )
    return kth_largest_abs(flat, keep_count(n, density))


def elect_sign(trimmed: Tensor) -> Tensor:
    """Sign per coordinate by total mass: sign(Σᵢ τᵢ); an exact tie counts as +.

    Args:
        trimmed: (N, C) trimmed task vectors.

    Returns:
        (C,) tensor of ±1 in the input dtype.
    """
    total = trimmed.sum(dim=0)  # (C,)
    return torch.where(total >= 0, 1.0, -1.0).to(trimmed.dtype)  # (C,)


def disjoint_merge(trimmed: Tensor, sign: Tensor, weights: Tensor | None, mode: str) -> Tensor:
    """Merge only the non-zero entries whose sign agrees with the elected sign.

    Args:
        trimmed: (N, C) trimmed task vectors.
        sign: (C,) elected signs (±1).
        weights: (N, 1) per-model weights applied after the election, or None.
        mode: "mean" (divide by the number of agreeing entries) or "sum".

    Returns:
        (C,) merged task vector.
    """
    agree = (trimmed * sign) > 0  # (N, C) non-zero and same sign
    kept = trimmed * agree  # (N, C)
    if weights is not None:
        kept = kept * weights  # (N, C)
    total = kept.sum(dim=0)  # (C,)
    if mode == "sum":
        return total
    count = agree.sum(dim=0).clamp_(min=1)  # (C,)
    return total / count  # (C,)


def dare_mask_(
    tau: Tensor, drop: float, generator: torch.Generator | None, rescale: bool
) -> Tensor:
    """Drop each entry of ``tau`` with probability ``drop`` and rescale survivors by
    1/(1−drop), in place on ``tau`` (a chunk the caller owns). Returns ``tau``."""
    if drop == 0.0:
        return tau
    u = torch.rand(tau.shape, generator=generator, dtype=torch.float32, device=tau.device)  # (..)
    keep = u >= drop  # (..) kept with probability 1 − drop
    tau.mul_(keep)
    if rescale:
        tau.mul_(1.0 / (1.0 - drop))
    return tau
