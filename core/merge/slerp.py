"""Spherical linear interpolation (SLERP) of two models, tensor by tensor.

Shoemake, "Animating rotation with quaternion curves", SIGGRAPH 1985; used for model merging
by mergekit and FusionBench. Paper link: the survey of merging methods that covers it,
Goddard et al., "Arcee's MergeKit: A Toolkit for Merging Large Language Models",
arXiv:2403.13257.

Per tensor, flattened: Ω = arccos⟨v̂₀, v̂₁⟩ from normalised copies; the result is
sin((1−t)Ω)/sin Ω · v₀ + sin(tΩ)/sin Ω · v₁ on the unnormalised tensors. When
|cos Ω| > 0.9995 (nearly colinear) or a norm is below 1e-8 it falls back to lerp. The norms
and the dot product accumulate in float64 over fixed chunks, so the result does not depend on
where a tensor sits in memory (float32 SIMD reductions sum in an alignment-dependent order, and a
streamed tensor mapped from a file is rarely aligned like a freshly allocated one).
"""

from __future__ import annotations

import math
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
    chunks,
    compute_dtype,
)

DOT_THRESHOLD = 0.9995
EPS = 1e-8

T = Hyper("t", "float", 0.5, 0.0, 1.0, 0.01, help="position on the arc: 0 = first, 1 = second")


@METHODS.register(
    "slerp",
    mergekit=("slerp",),
    title="SLERP (two models)",
    paper="https://arxiv.org/abs/2403.13257",
    params=(T,),
    tags=("per_tensor", "two_models"),
)
def slerp(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    t: float = 0.5,
) -> StateDict:
    """SLERP between ``models[0]`` (t = 0) and ``models[1]`` (t = 1), per tensor."""
    return apply_per_tensor(slerp_tensor, models, None, t=t)


def slerp_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    t: float = 0.5,
) -> Tensor:
    """SLERP of two tensors (``base`` is ignored).

    Args:
        tensors: exactly two tensors of one shape.
        base: unused.
        generator: unused.
        t: in [0, 1].
    """
    tensors = check_tensors(tensors, None)
    if len(tensors) != 2:
        raise ValueError(f"slerp merges exactly 2 tensors, got {len(tensors)}")
    t = check_range("t", t, 0.0, 1.0)
    dtype = compute_dtype(tensors[0])
    v0, v1 = (x.to(dtype).reshape(-1) for x in tensors)  # (P,) each
    n0, n1 = math.sqrt(_dot64(v0, v0)), math.sqrt(_dot64(v1, v1))
    if n0 < EPS or n1 < EPS:
        return torch.lerp(v0, v1, t).reshape(tensors[0].shape).to(tensors[0].dtype)
    cos = max(-1.0, min(1.0, _dot64(v0, v1) / (n0 * n1)))
    if abs(cos) > DOT_THRESHOLD:
        out = torch.lerp(v0, v1, t)  # (P,)
    else:
        omega = math.acos(cos)
        s = math.sin(omega)
        out = (math.sin((1 - t) * omega) / s) * v0 + (math.sin(t * omega) / s) * v1  # (P,)
    return out.reshape(tensors[0].shape).to(tensors[0].dtype)


def _dot64(a: Tensor, b: Tensor) -> float:
    """⟨a, b⟩ of two flat tensors, accumulated in float64 chunk by chunk (bounded memory)."""
    return sum(float(torch.dot(a[c].double(), b[c].double())) for c in chunks(a.numel()))


METHODS.attach("slerp", tensor=slerp_tensor)
