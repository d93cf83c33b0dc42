"""Task arithmetic.

Ilharco et al., "Editing models with task arithmetic", ICLR 2023, arXiv:2212.04089.

θ = θ₀ + λ Σᵢ wᵢ τᵢ with τᵢ = θᵢ − θ₀. λ (``scale``) is picked on validation data in the
paper; the 8-task ViT literature fixes λ = 0.3, which is the default here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, apply_per_tensor, check_tensors, check_weights
from ._blocks import weighted_sum

SCALE = Hyper("scale", "float", 0.3, -1.0, 2.0, 0.05, help="λ: global scale of the task vectors")
TASK_WEIGHTS = Hyper("weights", "floats", None, -1.0, 2.0, 0.05, help="weight per task vector")


@METHODS.register(
    "task_arithmetic",
    mergekit=("task_arithmetic",),
    title="Task arithmetic",
    paper="https://arxiv.org/abs/2212.04089",
    params=(SCALE, TASK_WEIGHTS),
    tags=("needs_base", "per_tensor", "scale_linear"),
)
def task_arithmetic(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    scale: float = 0.3,
    weights: Sequence[float] | None = None,
) -> StateDict:
    """θ₀ + λ Σᵢ wᵢ (θᵢ − θ₀) for every floating-point tensor."""
    return apply_per_tensor(task_arithmetic_tensor, models, base, scale=scale, weights=weights)


def task_arithmetic_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    scale: float = 0.3,
    weights: Sequence[float] | None = None,
) -> Tensor:
    """θ₀ + λ Σᵢ wᵢ (θᵢ − θ₀) of one tensor, in one pass over the inputs.

    Args:
        tensors: N fine-tuned tensors (task vectors when ``base`` is None).
        base: θ₀, or None for a zero base.
        generator: unused.
        scale: λ, any finite number.
        weights: N finite weights (default all 1).
    """
    tensors = check_tensors(tensors, base)
    scale = check_range("scale", scale)
    w = [scale * x for x in check_weights(weights, len(tensors))]
    # θ₀(1 − λΣw) + λ Σ wᵢ θᵢ, summed in the compute dtype, rounded once to the input dtype
    return weighted_sum(tensors, w, base, 1.0 - sum(w), out_dtype=tensors[0].dtype)


METHODS.attach("task_arithmetic", tensor=task_arithmetic_tensor)
