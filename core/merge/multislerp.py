"""Multi-SLERP: barycentric spherical interpolation of N models (mergekit's ``multislerp``).

Goddard, "Multi-SLERP" (https://goddard.blog/posts/multislerp-wow-what-a-cool-idea), the
method of mergekit's ``merge_methods/multislerp.py``, computed as mergekit computes it (no
paper: the registry links the mergekit paper, Goddard et al., arXiv:2403.13257).

Per tensor (flattened), with xᵢ the models (their task vectors when a ``base`` is given) and
weights wᵢ (normalised to sum 1 unless ``normalize=False``):

1. project onto the unit sphere, uᵢ = xᵢ / (‖xᵢ‖ + ε), and take the normalised weighted mean
   m = M / ‖M‖ with M = Σ wᵢuᵢ;
2. project each uᵢ onto the tangent space at m, vᵢ = uᵢ − ⟨uᵢ, m⟩ m, and average: v = Σ wᵢvᵢ;
3. map back, cos‖v‖ m + sin‖v‖ v/‖v‖ (with ‖v‖ + ε), and scale by the weighted mean norm
   Σ wᵢ‖xᵢ‖ (then add the base back).

Step 2 uses the orthogonal projection, not the logarithmic map, and M is parallel to m, so
v = M − ⟨M, m⟩ m = 0 up to rounding: the result is the normalised weighted mean of the unit
vectors times the weighted mean norm (a normalised lerp; for two equal-norm models at equal
weights it is SLERP's midpoint, otherwise not SLERP — :mod:`core.merge.karcher` is the
geodesic barycentre). All of it runs on the N × N Gram matrix of the inputs
(:mod:`core.merge._sphere`): one pass to build it, one weighted sum to write the result. When
M vanishes, two models fall back to the linear blend w₀x₀ + w₁x₁ (as mergekit) and more raise
ValueError.
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
from ._blocks import weighted_sum
from ._sphere import gram, quad

MS_WEIGHTS = Hyper("weights", "floats", None, 0.0, 2.0, 0.05, help="weight per model")
MS_NORMALIZE = Hyper("normalize", "bool", True, help="scale the weights to sum 1")
EPS = 1e-8


@METHODS.register(
    "multislerp",
    mergekit=("multislerp",),
    title="Multi-SLERP (spherical barycentre)",
    paper="https://arxiv.org/abs/2403.13257",  # mergekit (no paper of its own)
    params=(MS_WEIGHTS, MS_NORMALIZE),
    tags=("per_tensor",),
)
def multislerp(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    weights: Sequence[float] | None = None,
    normalize: bool = True,
) -> StateDict:
    """Spherical weighted mean of the models (of their task vectors when ``base`` is given)."""
    return apply_per_tensor(multislerp_tensor, models, base, weights=weights, normalize=normalize)


def multislerp_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    weights: Sequence[float] | None = None,
    normalize: bool = True,
) -> Tensor:
    """Multi-SLERP of N tensors.

    Args:
        tensors: N tensors of one shape (one tensor is returned as it is).
        base: θ₀ (interpolate the task vectors and add θ₀ back) or None.
        generator: unused.
        weights: N finite weights (default equal); with ``normalize`` their sum must not be 0.
        normalize: divide the weights by their sum.
    """
    tensors = check_tensors(tensors, base)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {type(normalize).__name__} {normalize!r}")
    w = check_weights(weights, len(tensors))
    ref = tensors[0]
    if len(tensors) == 1 or ref.numel() == 0:
        return ref.clone()
    if normalize:
        total = sum(w)
        if abs(total) < 1e-12:
            raise ValueError(f"weights must not sum to 0 when normalize=True, got {w}")
        w = [x / total for x in w]
    g = gram(tensors, base).cpu()  # (N, N) float64
    coef = multislerp_coefficients(g, torch.tensor(w, dtype=torch.float64))
    dtype = compute_dtype(ref)
    b = None if base is None else base.to(dtype)
    xs = [t.to(dtype) for t in tensors]
    c = coef.tolist()
    out = weighted_sum(xs, c, b, 1.0 - sum(c)) if b is not None else weighted_sum(xs, c)
    return out.to(ref.dtype)


def multislerp_coefficients(g: Tensor, w: Tensor) -> Tensor:
    """Coefficients cᵢ with result Σ cᵢ xᵢ, from the Gram matrix ``g`` (N, N) of the xᵢ and
    the (already normalised) weights ``w`` (N,), both float64."""
    norms = g.diagonal().clamp(min=0).sqrt()  # (N,) ‖xᵢ‖
    inv = 1.0 / (norms + EPS)  # (N,) xᵢ -> uᵢ
    gu = g * inv[:, None] * inv[None, :]  # (N, N) Gram of the unit vectors
    mean_norm = math.sqrt(quad(gu, w))
    if mean_norm < EPS:
        if len(w) == 2:  # mergekit's fallback: the linear blend of the inputs
            return w.clone()
        raise ValueError(
            "the weighted mean of the unit vectors is zero (antipodal inputs whose weights "
            "cancel); change the weights"
        )
    m = w / mean_norm  # (N,) m in the unit basis
    dots = gu @ m  # (N,) ⟨uᵢ, m⟩
    v = w - float(w @ dots) * m  # (N,) Σ wᵢ (uᵢ − ⟨uᵢ, m⟩ m)
    vn = math.sqrt(quad(gu, v)) + EPS
    unit = m * math.cos(vn) + v * (math.sin(vn) / vn)  # (N,) the point on the sphere
    scale = float(w @ norms)
    return unit * scale * inv  # back to the xᵢ basis


METHODS.attach("multislerp", tensor=multislerp_tensor)
