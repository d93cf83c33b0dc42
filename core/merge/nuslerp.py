"""NuSLERP: SLERP of two models (or of their task vectors) with weights, whole-tensor or per
row/column (mergekit's ``nuslerp``).

Shoemake, "Animating rotation with quaternion curves", SIGGRAPH 1985, as used for merging in
Goddard et al., "Arcee's MergeKit: A Toolkit for Merging Large Language Models",
arXiv:2403.13257 (``merge_methods/nuslerp.py``).

t = w₁ / (w₀ + w₁) (0.5 when the weights sum to ~0). With a ``base`` the two task vectors
τ₀, τ₁ are interpolated and θ₀ added back; without one the models themselves. Vectors are
the flattened tensors (``flatten=True``), else slices along the last axis (``row_wise=False``:
W[i, :], one per output unit of a Linear weight) or along the first axis (``row_wise=True``:
W[:, j]), exactly as mergekit's ``nuslerp_flatten`` / ``nuslerp_row_wise`` choose them. For
each pair: Ω = arccos⟨v̂₀, v̂₁⟩ and sin((1−t)Ω)/sin Ω · v₀ + sin(tΩ)/sin Ω · v₁; exactly
colinear pairs (1 − cos² Ω <= 1e-16) are interpolated linearly. Unlike ``slerp`` (which falls
back to lerp from |cos Ω| > 0.9995) this is mergekit's nuslerp rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._registry import Hyper
from ..params import StateDict
from ._base import (
    METHODS,
    apply_per_tensor,
    check_tensors,
    check_weights,
    compute_dtype,
)

NU_WEIGHTS = Hyper(
    "weights", "floats", None, 0.0, 2.0, 0.05, help="weight per model: t = w₁ / (w₀ + w₁)"
)
FLATTEN = Hyper("flatten", "bool", True, help="interpolate whole tensors (off: per slice)")
ROW_WISE = Hyper(
    "row_wise", "bool", False, help="without flatten: slices along the first axis (off: last)"
)
EPS = 1e-8


@METHODS.register(
    "nuslerp",
    mergekit=("nuslerp",),
    title="NuSLERP (weighted, row-wise, task-vector SLERP)",
    paper="https://arxiv.org/abs/2403.13257",
    params=(NU_WEIGHTS, FLATTEN, ROW_WISE),
    tags=("per_tensor", "two_models"),
)
def nuslerp(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    weights: Sequence[float] | None = None,
    flatten: bool = True,
    row_wise: bool = False,
) -> StateDict:
    """SLERP of ``models[0]`` and ``models[1]`` (of their task vectors when ``base`` is given)."""
    return apply_per_tensor(
        nuslerp_tensor, models, base, weights=weights, flatten=flatten, row_wise=row_wise
    )


def nuslerp_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    weights: Sequence[float] | None = None,
    flatten: bool = True,
    row_wise: bool = False,
) -> Tensor:
    """NuSLERP of two tensors.

    Args:
        tensors: exactly two tensors of one shape.
        base: θ₀ (interpolate the task vectors) or None (the tensors themselves).
        generator: unused.
        weights: two finite weights (default equal: t = 0.5).
        flatten: one vector per tensor; False interpolates rows or columns.
        row_wise: with ``flatten=False``, slices along the first axis instead of the last.
    """
    tensors = check_tensors(tensors, base)
    if len(tensors) != 2:
        raise ValueError(f"nuslerp merges exactly 2 tensors, got {len(tensors)}")
    for name, v in (("flatten", flatten), ("row_wise", row_wise)):
        if not isinstance(v, bool):
            raise TypeError(f"{name} must be a bool, got {type(v).__name__} {v!r}")
    w = check_weights(weights, 2)
    t = 0.5 if abs(sum(w)) < 1e-6 else w[1] / sum(w)
    ref = tensors[0]
    if ref.numel() == 0:
        return ref.clone()
    dtype = compute_dtype(ref)
    b = None if base is None else base.to(dtype)
    v0, v1 = (x.to(dtype) if b is None else x.to(dtype) - b for x in tensors)
    if flatten or ref.ndim <= 1:
        out = _slerp_rows(t, v0.reshape(1, -1), v1.reshape(1, -1)).reshape(ref.shape)
    elif row_wise:  # vectors along the first axis (mergekit: dim=0)
        a0, a1 = v0.transpose(0, -1), v1.transpose(0, -1)  # first axis last
        out = _slerp_rows(t, a0.reshape(-1, ref.shape[0]), a1.reshape(-1, ref.shape[0]))
        out = out.reshape(a0.shape).transpose(0, -1)
    else:  # vectors along the last axis (mergekit: dim=-1)
        out = _slerp_rows(t, v0.reshape(-1, ref.shape[-1]), v1.reshape(-1, ref.shape[-1]))
        out = out.reshape(ref.shape)
    if b is not None:
        out = out.add_(b)
    return out.to(ref.dtype)


def _slerp_rows(t: float, v0: Tensor, v1: Tensor) -> Tensor:
    """SLERP of each row pair of ``v0``, ``v1`` (R, D); colinear rows interpolate linearly."""
    n0 = torch.linalg.vector_norm(v0, dim=1, keepdim=True).clamp_(min=1e-7)  # (R, 1)
    n1 = torch.linalg.vector_norm(v1, dim=1, keepdim=True).clamp_(min=1e-7)  # (R, 1)
    cos = (v0 * v1).sum(dim=1, keepdim=True).div_(n0).div_(n1).clamp_(-1.0, 1.0)  # (R, 1)
    colinear = (1 - cos.square()) <= EPS**2  # (R, 1)
    theta = torch.acos(torch.where(colinear, 0.0, cos))  # (R, 1)
    s = torch.sin(theta)
    c0 = torch.where(colinear, 1.0 - t, torch.sin((1 - t) * theta) / s)  # (R, 1)
    c1 = torch.where(colinear, t, torch.sin(t * theta) / s)  # (R, 1)
    if v0.shape[0] == 1:  # one pair: plain scalars, one fused pass
        a, b = float(c0), float(c1)
        if math.isfinite(a) and math.isfinite(b):
            return torch.add(v0.mul(a), v1, alpha=b)
    return v0 * c0 + v1 * c1


METHODS.attach("nuslerp", tensor=nuslerp_tensor)
