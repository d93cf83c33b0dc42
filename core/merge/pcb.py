"""PCB-Merging: parameter competition balancing.

Du et al., "Parameter Competition Balancing for Model Merging", NeurIPS 2024,
arXiv:2410.02396.

On the flattened task vectors (one row per task, over the whole model):
1. clip |τ| per row at the 0.01% / 99.99% quantiles;
2. intra-balancing exp(N · minmax_row(|τ|)²), N the number of tasks;
3. inter-balancing tanh(τᵢ ⊙ Σⱼ τⱼ);
4. β = intra ⊙ inter; keep the top ``density`` of β per row: clamp below the (1 − density)
   quantile, then min-max to [0, 1] (so the rest become 0);
5. τ_m = Σᵢ β̂ᵢ τᵢ / Σᵢ β̂ᵢ (τ clipped), θ = θ₀ + λ τ_m.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_range
from .._registry import Hyper
from ..params import StateDict, flatten, unflatten
from ._base import METHODS

PCB_DENSITY = Hyper("density", "float", 0.1, 0.01, 1.0, 0.01, help="fraction of β kept per task")
PCB_SCALE = Hyper("scale", "float", 1.0, 0.0, 3.0, 0.05, help="λ: scale of the merged vector")
CLIP = 1e-4  # quantile clipped at each end of |τ|


@METHODS.register(
    "pcb",
    title="PCB-Merging",
    paper="https://arxiv.org/abs/2410.02396",
    params=(PCB_DENSITY, PCB_SCALE),
    tags=("needs_base", "scale_linear"),
)
def pcb(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    density: float = 0.1,
    scale: float = 1.0,
) -> StateDict:
    """PCB merge of fine-tuned models around ``base``."""
    density = check_range("density", density, 0.0, 1.0, low_inclusive=False)
    scale = check_range("scale", scale)
    assert base is not None  # merge() checks needs_base
    keys = [k for k, v in base.items() if v.is_floating_point()]
    b = flatten(base, keys).double()  # (P,)
    taus = torch.stack([flatten(m, keys).double() - b for m in models])  # (N, P)
    merged = b + scale * pcb_task_vector(taus, density)  # (P,)
    out = unflatten(merged, base, keys)
    return {k: out[k] for k in keys}


def pcb_task_vector(taus: Tensor, density: float) -> Tensor:
    """The PCB-merged task vector τ_m of (N, P) flattened task vectors."""
    n = taus.shape[0]
    if taus.shape[1] == 0:  # no parameters (empty tensors): nothing to merge
        return taus.sum(dim=0)  # (0,)
    mag = _clamp_rows(taus.abs(), CLIP, 1.0 - CLIP)  # (N, P)
    clipped = taus.sign() * mag  # (N, P)
    intra = torch.exp(n * _minmax_rows(mag) ** 2)  # (N, P)
    inter = torch.tanh(taus * taus.sum(dim=0))  # (N, P)
    beta = intra * inter  # (N, P)
    if density < 1.0:
        beta = _clamp_rows(beta, 1.0 - density, None)  # (N, P) below the quantile -> equal
    scores = _minmax_rows(beta)  # (N, P) in [0, 1], dropped entries 0
    return (scores * clipped).sum(dim=0) / scores.sum(dim=0).clamp(min=1e-12)  # (P,)


def _quantile_rows(x: Tensor, q: float) -> Tensor:
    """Per-row q-quantile (nearest rank) via kthvalue: (N, P) -> (N, 1)."""
    p = x.shape[1]
    k = min(p, max(1, round(q * (p - 1)) + 1))
    return x.kthvalue(k, dim=1, keepdim=True).values  # (N, 1)


def _clamp_rows(x: Tensor, low_q: float, high_q: float | None) -> Tensor:
    lo = _quantile_rows(x, low_q)  # (N, 1)
    hi = None if high_q is None else _quantile_rows(x, high_q)  # (N, 1)
    return torch.maximum(x, lo) if hi is None else torch.minimum(torch.maximum(x, lo), hi)


def _minmax_rows(x: Tensor) -> Tensor:
    lo = x.min(dim=1, keepdim=True).values  # (N, 1)
    hi = x.max(dim=1, keepdim=True).values  # (N, 1)
    return (x - lo) / (hi - lo).clamp(min=1e-12)  # (N, P)
