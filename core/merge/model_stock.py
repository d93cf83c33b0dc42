"""Model Stock: interpolate between the base and the average of fine-tunes by their angle.

Jang et al., "Model Stock: All we need is just a few fine-tuned models", ECCV 2024,
arXiv:2403.19522.

Per tensor, with cos θ the mean pairwise cosine between the task vectors τᵢ = θᵢ − θ₀ and N
fine-tunes: t = N cos θ / (1 + (N − 1) cos θ); θ = t · mean(θᵢ) + (1 − t) · θ₀. cos θ is
clamped to [0, 1] (so t is too: negative correlation falls back to the base); one fine-tune,
or zero task vectors, count as cos θ = 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..params import StateDict
from ._base import METHODS, apply_per_tensor, check_tensors, compute_dtype


@METHODS.register(
    "model_stock",
    mergekit=("model_stock",),
    title="Model Stock",
    paper="https://arxiv.org/abs/2403.19522",
    params=(),
    tags=("needs_base", "per_tensor"),
)
def model_stock(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
) -> StateDict:
    """Per tensor: t · mean(θᵢ) + (1 − t) · θ₀ with t from the angle between task vectors."""
    return apply_per_tensor(model_stock_tensor, models, base)


def model_stock_tensor(
    tensors: Sequence[Tensor], base: Tensor | None, *, generator: torch.Generator | None = None
) -> Tensor:
    """Model Stock of one tensor (``base`` None counts as zero)."""
    tensors = check_tensors(tensors, base)
    dtype = compute_dtype(tensors[0])
    b = None if base is None else base.to(dtype).reshape(-1)
    taus = torch.stack(
        [x.to(dtype).reshape(-1) - (0 if b is None else b) for x in tensors]
    )  # (N, P)
    t = interpolation_ratio(taus)
    mean_tau = taus.mean(dim=0)  # (P,)
    out = t * mean_tau if b is None else b + t * mean_tau  # (P,)
    return out.reshape(tensors[0].shape).to(tensors[0].dtype)


def interpolation_ratio(taus: Tensor) -> float:
    """t = N c / (1 + (N − 1) c) with c the mean pairwise cosine of the rows of ``taus``
    (N, P), clamped to [0, 1]."""
    n = taus.shape[0]
    norms = taus.norm(dim=1)  # (N,)
    if n < 2 or bool((norms < 1e-12).any()):
        return 1.0
    unit = taus / norms[:, None]  # (N, P)
    gram = unit @ unit.T  # (N, N) cosines
    cos = float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))
    cos = min(1.0, max(0.0, cos))
    return n * cos / (1.0 + (n - 1) * cos) if cos > 0 else 0.0


METHODS.attach("model_stock", tensor=model_stock_tensor)
