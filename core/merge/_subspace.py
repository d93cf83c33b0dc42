"""Shared pieces of the SVD-based merges (TSV-M, Iso-C, Iso-CTS, WUDI).

* :func:`task_deltas` — τᵢ = θᵢ − θ₀ of one tensor in the compute dtype, optionally weighted.
* :func:`polar` — the orthonormal polar factor P Qᵀ of A = P Σ Qᵀ (the closest matrix with
  orthonormal columns, which is how TSV-M and Iso-CTS orthogonalise stacked singular vectors).
* :func:`finish` — θ₀ + λ τ_m cast back to the input dtype.

FusionBench and the papers apply these methods to 2-D weight matrices only; every other tensor
(biases, norms, conv kernels, embeddings of other ranks) is the mean of the task vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._base import compute_dtype


def task_deltas(
    tensors: Sequence[Tensor], base: Tensor | None, weights: Sequence[float] | None = None
) -> Tensor:
    """(N, *shape) stack of wᵢ (θᵢ − θ₀) in the compute dtype (a None base counts as zero)."""
    dtype = compute_dtype(tensors[0])
    out = torch.stack([t.to(dtype) for t in tensors])  # (N, *shape)
    if base is not None:
        out -= base.to(dtype)
    if weights is not None:
        w = torch.tensor(list(weights), dtype=dtype, device=out.device)  # (N,)
        out *= w.view(-1, *[1] * (out.ndim - 1))
    return out


def polar(a: Tensor) -> Tensor:
    """U Vᵀ from the thin SVD a = U S Vᵀ: the orthonormal factor of the polar decomposition."""
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    return u @ vh


def finish(merged: Tensor, base: Tensor | None, scale: float, like: Tensor) -> Tensor:
    """θ₀ + λ τ_m (or λ τ_m for a None base) in the dtype of ``like``."""
    out = merged * scale if base is None else torch.add(base.to(merged.dtype), merged, alpha=scale)
    return out.to(like.dtype)
