"""DARE: drop and rescale task vectors, then task arithmetic.

Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a
Free Lunch", ICML 2024, arXiv:2311.03099.

Each entry of every τᵢ is dropped with probability p (``drop``) and the survivors are
rescaled by 1/(1−p), so E[DARE(τ)] = τ exactly (the reference rescale; mergekit's L1-norm
matching is only approximately unbiased). Then θ = θ₀ + λ Σᵢ wᵢ DARE(τᵢ).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import (
    METHODS,
    apply_per_tensor,
    check_tensors,
    check_weights,
    compute_dtype,
)
from ._blocks import dare_kernel
from .task_arithmetic import SCALE, TASK_WEIGHTS

DROP = Hyper("drop", "float", 0.5, 0.0, 0.99, 0.01, help="p: probability of dropping an entry")


@METHODS.register(
    "dare",
    mergekit=("dare_linear",),
    title="DARE (drop and rescale) + task arithmetic",
    paper="https://arxiv.org/abs/2311.03099",
    params=(DROP, SCALE, TASK_WEIGHTS),
    tags=("needs_base", "per_tensor", "scale_linear"),
)
def dare(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    drop: float = 0.5,
    scale: float = 0.3,
    weights: Sequence[float] | None = None,
) -> StateDict:
    """θ₀ + λ Σᵢ wᵢ DARE(τᵢ); the generator seeds the drops (key order, then model order)."""
    return apply_per_tensor(
        dare_tensor, models, base, generator=generator, drop=drop, scale=scale, weights=weights
    )


def dare_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    drop: float = 0.5,
    scale: float = 0.3,
    weights: Sequence[float] | None = None,
    rescale: bool = True,
) -> Tensor:
    """DARE + task arithmetic of one tensor.

    Args:
        tensors: N fine-tuned tensors (task vectors when ``base`` is None).
        base: θ₀ or None (zero).
        generator: seeds the Bernoulli drops; the same state gives the same result.
        drop: p in [0, 1).
        scale: λ (finite).
        weights: N finite weights (default all 1).
        rescale: multiply survivors by 1/(1−p) (the reference); False keeps them as they are.
    """
    tensors = check_tensors(tensors, base)
    drop = check_range("drop", drop, 0.0, 1.0, high_inclusive=False)
    scale = check_range("scale", scale)
    w = [scale * x for x in check_weights(weights, len(tensors))]
    dt = tensors[0].dtype
    return dare_kernel(
        tensors, base, w, drop=drop, generator=generator, rescale=rescale, out_dtype=dt
    )


def dare_definition(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    keep: Tensor,
    *,
    drop: float = 0.5,
    scale: float = 0.3,
    weights: Sequence[float] | None = None,
) -> Tensor:
    """DARE + task arithmetic of one tensor as the paper writes it, in plain torch, with the
    keep masks given (``keep``: (N, *shape) bool; the kernels draw theirs from a generator): the
    definition :func:`dare_tensor` is tested equal to for every dtype."""
    dtype, n = compute_dtype(tensors[0]), len(tensors)
    zero = torch.zeros((), dtype=dtype)
    theta0 = zero if base is None else base.to(dtype)  # (*S) or ()
    tau = torch.stack([t.to(dtype) - theta0 for t in tensors])  # (N, *S) task vectors
    dropped = tau * keep / (1.0 - drop)  # (N, *S) drop with prob. p, rescale survivors
    w = torch.tensor(weights or [1.0] * n, dtype=dtype).view(-1, *[1] * (tau.dim() - 1))
    out = theta0 + scale * (w * dropped).sum(0)  # θ₀ + λ Σᵢ wᵢ DARE(τᵢ)
    return out.to(tensors[0].dtype)


METHODS.attach("dare", tensor=dare_tensor)
