"""Uniform and weighted model soups.

Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models improves accuracy
without increasing inference time", ICML 2022, arXiv:2203.05482.

θ = Σᵢ wᵢ θᵢ / Σᵢ wᵢ (uniform when no weights are given). The base model is not used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, apply_per_tensor, check_tensors, check_weights
from ._blocks import weighted_sum

WEIGHTS = Hyper(
    "weights", "floats", None, 0.0, 1.0, 0.05, help="weight per model (normalised to sum 1)"
)


@METHODS.register(
    "average",
    mergekit=("linear",),
    title="Model soup (average)",
    paper="https://arxiv.org/abs/2203.05482",
    params=(WEIGHTS,),
    tags=("per_tensor",),
)
def average(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    weights: Sequence[float] | None = None,
) -> StateDict:
    """Uniform or weighted average of the models' parameters."""
    return apply_per_tensor(average_tensor, models, None, weights=weights)


def average_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    weights: Sequence[float] | None = None,
) -> Tensor:
    """Σ wᵢ xᵢ / Σ wᵢ of one tensor (``base`` is ignored).

    Args:
        tensors: N tensors of one shape.
        base: unused (kept for the per-tensor signature).
        generator: unused.
        weights: N non-negative weights with a positive sum; None gives the uniform mean.
    """
    tensors = check_tensors(tensors, None)
    w = normalised_weights(weights, len(tensors))
    return weighted_sum(tensors, w).to(tensors[0].dtype)


def normalised_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Non-negative weights scaled to sum 1 (uniform when None)."""
    w = check_weights(weights, n)
    if any(x < 0 for x in w):
        raise ValueError(f"weights must be non-negative for an average, got {w}")
    total = sum(w)
    if total <= 0:
        raise ValueError(f"weights must have a positive sum, got {w}")
    return [x / total for x in w]


METHODS.attach("average", tensor=average_tensor)
