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


# Below this eigenvalue ratio of the Gram the polar factor comes from an SVD instead: the Gram
# route's relative error is about eps / ratio, so 1e-8 keeps it near 1e-8 in float64 and 1e-2
# near 1e-5 in float32.
POLAR_GRAM_RCOND = {torch.float64: 1e-8, torch.float32: 1e-2}


def polar(a: Tensor) -> Tensor:
    """The orthonormal factor U Vᵀ of a = U S Vᵀ (the nearest matrix with orthonormal rows or
    columns), as FusionBench computes it from an SVD.

    For a stack at least 4x taller than wide (or wider than tall) this is a (aᵀa)^(-1/2) (or
    (a aᵀ)^(-1/2) a) from an eigendecomposition of the small Gram, a fraction of an SVD's cost.
    Nearly square stacks, and Grams too ill conditioned (eigenvalue ratio below
    :data:`POLAR_GRAM_RCOND`), go through the SVD (in float64 when float32 LAPACK fails).
    """
    if a.numel() == 0:
        return a.clone()
    wide = a.shape[0] < a.shape[1]
    m = a.T if wide else a  # (tall, small)
    if 4 * m.shape[1] > m.shape[0]:
        # stacked blocks of independent subspaces: the Gram of a nearly square stack is too ill
        # conditioned for the eigenvalue route (λ_min/λ_max ≈ ((1 − √c)/(1 + √c))², c its
        # aspect ratio), so go to the SVD directly
        return _polar_svd(a)
    gram = m.T @ m  # (small, small)
    lam, q = torch.linalg.eigh(gram)
    rcond = POLAR_GRAM_RCOND.get(a.dtype, 1e-2)
    if float(lam[0]) > rcond * float(lam[-1]) > 0:
        out = m @ ((q * lam.rsqrt()) @ q.T)  # m (mᵀm)^(-1/2)
        return out.T if wide else out
    return _polar_svd(a)


def _polar_svd(a: Tensor) -> Tensor:
    try:
        u, _, vh = torch.linalg.svd(a, full_matrices=False)
    except torch.linalg.LinAlgError:  # LAPACK's gesdd can fail on float32; retry in float64
        u, _, vh = torch.linalg.svd(a.double(), full_matrices=False)
    return (u @ vh).to(a.dtype)


def finish(merged: Tensor, base: Tensor | None, scale: float, like: Tensor) -> Tensor:
    """θ₀ + λ τ_m (or λ τ_m for a None base) in the dtype of ``like``."""
    out = merged * scale if base is None else torch.add(base.to(merged.dtype), merged, alpha=scale)
    return out.to(like.dtype)
