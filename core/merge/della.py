"""DELLA: drop and rescale by magnitude-ranked sampling (MagPrune), then merge.

Deep et al., "DELLA-Merging: Reducing Interference in Model Merging through Magnitude-Based
Sampling", 2024, arXiv:2406.11617 (reference code: declare-lab/della, a mergekit fork,
``sparsify.py::rank_magnitude``).

1. MagPrune, per row (the first axis; a 1-d tensor is one row): rank |τᵢ| within the row and
   map the ranks linearly onto keep probabilities pⱼ from ``density − epsilon`` (smallest) to
   ``density + epsilon`` (largest); keep each entry with probability pⱼ.
2. Rescale the survivors (``rescale``): by 1/pⱼ, each by its own probability (``"prob"``, the
   paper and reference code; E[τ̃] = τ entry by entry), or to the L1 norm of the unpruned
   tensor (``"l1"``, mergekit's ``della``/``della_linear``), or not at all (``"none"``).
3. ``della``: elect the sign per entry from the weighted deltas Σ wᵢτ̃ᵢ and take the weighted
   mean (``disjoint="mean"``) or sum (``"sum"``) of the agreeing entries (the reference code is
   mergekit's generalized task arithmetic: election on weighted deltas, divisor Σ wᵢ over the
   agreeing entries). ``della_linear``: Σ wᵢ τ̃ᵢ, no election.
4. θ = θ₀ + λ τ_m.

``epsilon = 0`` is DARE with drop rate 1 − density and the 1/(1 − p) rescale. The draws are
one ``torch.rand`` per model and tensor in key order, then model order (uniforms u, keep where
u < pⱼ), so a seeded generator reproduces the merge. A row of one entry gets p = density.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_choice, check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import (
    METHODS,
    apply_per_tensor,
    check_tensors,
    check_weights,
    compute_dtype,
)
from ._gta import SignConsensus, l1_rescale_, row_order, rows

DELLA_DENSITY = Hyper(
    "density", "float", 0.7, 0.02, 1.0, 0.01, help="mean keep probability (1 − drop rate)"
)
EPSILON = Hyper(
    "epsilon",
    "float",
    0.07,
    0.0,
    0.49,
    0.01,
    help="half-width of the keep-probability window (density ± ε by magnitude rank)",
    sum_limit=("density", 1.0),
)
DELLA_SCALE = Hyper("scale", "float", 1.0, 0.0, 3.0, 0.05, help="λ: scale of the merged vector")
RESCALE = Hyper(
    "rescale",
    "choice",
    "prob",
    choices=("prob", "l1", "none"),
    help="survivors ÷ their keep probability (paper) or L1-norm matching (mergekit)",
)
DELLA_DISJOINT = Hyper(
    "disjoint",
    "choice",
    "mean",
    choices=("mean", "sum"),
    help="weighted mean of the agreeing entries (reference, mergekit) or their sum",
)
DELLA_WEIGHTS = Hyper("weights", "floats", None, 0.0, 2.0, 0.05, help="weight per task vector")
RESCALES = ("prob", "l1", "none")


@METHODS.register(
    "della",
    mergekit=("della",),
    title="DELLA (MagPrune + TIES election)",
    paper="https://arxiv.org/abs/2406.11617",
    params=(DELLA_DENSITY, EPSILON, DELLA_SCALE, RESCALE, DELLA_DISJOINT, DELLA_WEIGHTS),
    tags=("needs_base", "per_tensor"),
)
def della(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    density: float | Sequence[float] = 0.7,
    epsilon: float | Sequence[float] = 0.07,
    scale: float = 1.0,
    rescale: str = "prob",
    disjoint: str = "mean",
    weights: Sequence[float] | None = None,
) -> StateDict:
    """θ₀ + λ · disjoint merge of the MagPruned task vectors (sign elected per entry)."""
    return apply_per_tensor(
        della_tensor,
        models,
        base,
        generator=generator,
        density=density,
        epsilon=epsilon,
        scale=scale,
        rescale=rescale,
        disjoint=disjoint,
        weights=weights,
    )


@METHODS.register(
    "della_linear",
    mergekit=("della_linear",),
    title="DELLA linear (MagPrune + task arithmetic)",
    paper="https://arxiv.org/abs/2406.11617",
    params=(DELLA_DENSITY, EPSILON, DELLA_SCALE, RESCALE, DELLA_WEIGHTS),
    tags=("needs_base", "per_tensor"),
)
def della_linear(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    density: float | Sequence[float] = 0.7,
    epsilon: float | Sequence[float] = 0.07,
    scale: float = 1.0,
    rescale: str = "prob",
    weights: Sequence[float] | None = None,
) -> StateDict:
    """θ₀ + λ Σᵢ wᵢ MagPrune(τᵢ)."""
    return apply_per_tensor(
        della_linear_tensor,
        models,
        base,
        generator=generator,
        density=density,
        epsilon=epsilon,
        scale=scale,
        rescale=rescale,
        weights=weights,
    )


def della_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    density: float | Sequence[float] = 0.7,
    epsilon: float | Sequence[float] = 0.07,
    scale: float = 1.0,
    rescale: str = "prob",
    disjoint: str = "mean",
    weights: Sequence[float] | None = None,
) -> Tensor:
    """DELLA merge of one tensor.

    Args:
        tensors: N fine-tuned tensors (task vectors when ``base`` is None).
        base: θ₀ or None (zero).
        generator: seeds the keep draws.
        density: mean keep probability, in (0, 1]; 1 keeps everything (no draws). One
            value, or one per model (mergekit's per-model ``density``).
        epsilon: half-width of the probability window, with 0 < density − ε and
            density + ε <= 1 (unless density is 1); one value or one per model.
        scale: λ.
        rescale: "prob" (÷ pⱼ), "l1" (match ‖τ‖₁) or "none".
        disjoint: "mean" (÷ Σ agreeing wᵢ) or "sum".
        weights: N finite weights (default all 1).
    """
    check_choice("disjoint", disjoint, ("mean", "sum"))
    tensors, w, dens, eps, scale = _check(tensors, base, density, epsilon, scale, rescale, weights)
    dtype = compute_dtype(tensors[0])
    acc: SignConsensus | None = None
    for t, wi, d, e in zip(tensors, w, dens, eps, strict=True):
        tau = magprune(_delta(t, base, dtype), d, e, rescale, generator)
        if acc is None:
            acc = SignConsensus(tau, elect="weighted")
        acc.add(tau, wi)
    assert acc is not None
    merged = acc.result(normalize=disjoint == "mean")
    return _finish(merged, base, scale, tensors[0])


def della_linear_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    density: float | Sequence[float] = 0.7,
    epsilon: float | Sequence[float] = 0.07,
    scale: float = 1.0,
    rescale: str = "prob",
    weights: Sequence[float] | None = None,
) -> Tensor:
    """DELLA-linear merge of one tensor (arguments as :func:`della_tensor`, no election)."""
    tensors, w, dens, eps, scale = _check(tensors, base, density, epsilon, scale, rescale, weights)
    dtype = compute_dtype(tensors[0])
    merged = torch.zeros(tensors[0].shape, dtype=dtype, device=tensors[0].device)
    for t, wi, d, e in zip(tensors, w, dens, eps, strict=True):
        tau = magprune(_delta(t, base, dtype), d, e, rescale, generator)
        merged.add_(tau, alpha=wi)
    return _finish(merged, base, scale, tensors[0])


def magprune(
    tau: Tensor,
    density: float,
    epsilon: float,
    rescale: str,
    generator: torch.Generator | None,
) -> Tensor:
    """MagPrune one task vector (in place on ``tau``, a tensor the caller owns).

    Per row, the entry of magnitude rank r (1 = smallest of D) is kept with probability
    p = (density − ε) + 2ε (r − 1)/(D − 1), decided by one uniform draw per entry (u < p).
    """
    if density >= 1.0 or tau.numel() == 0:
        return tau
    a = rows(tau)  # (R, D) view
    d = a.shape[1]
    if d > 1:  # the reference's (r − min r) / (max r − min r) for ranks r = 1..D
        p_sorted = torch.arange(d, dtype=tau.dtype, device=tau.device).div_(d - 1)  # (D,)
    else:  # one entry: the middle of the window (the reference divides 0 by 0)
        p_sorted = torch.full((1,), 0.5, dtype=tau.dtype, device=tau.device)
    p_sorted = p_sorted.mul_(2).mul_(epsilon).add_(density - epsilon)  # (D,) ascending
    order = row_order(a.abs())  # (R, D) ascending magnitude
    p = torch.empty_like(a).scatter_(1, order, p_sorted.expand_as(a))  # (R, D) keep prob.
    u = torch.rand(a.shape, dtype=tau.dtype, device=tau.device, generator=generator)
    keep = u < p  # (R, D)
    if rescale == "prob":
        return tau.mul_(keep.view(tau.shape)).div_(p.view(tau.shape))
    if rescale == "l1":
        before = tau.abs().sum()  # ‖τ‖₁ before the drop
        return l1_rescale_(tau.mul_(keep.view(tau.shape)), before)
    return tau.mul_(keep.view(tau.shape))


def _check(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    density: float | Sequence[float],
    epsilon: float | Sequence[float],
    scale: float,
    rescale: str,
    weights: Sequence[float] | None,
) -> tuple[list[Tensor], list[float], list[float], list[float], float]:
    """The checked inputs, with density and epsilon as one value per model."""
    tensors = check_tensors(tensors, base)
    n = len(tensors)
    dens = _per_model("density", density, n)
    eps = _per_model("epsilon", epsilon, n)
    for i, (d, e) in enumerate(zip(dens, eps, strict=True)):
        where = "" if n == 1 else f" (model {i})"
        check_range(f"density{where}", d, 0.0, 1.0, low_inclusive=False)
        check_range(f"epsilon{where}", e, 0.0, 0.5, high_inclusive=False)
        if d < 1.0 and not (d - e > 0.0 and d + e <= 1.0):
            raise ValueError(
                f"epsilon must keep density ± epsilon inside (0, 1]{where}: got density {d} "
                f"and epsilon {e} (probabilities {d - e:g} .. {d + e:g})"
            )
    scale = check_range("scale", scale)
    check_choice("rescale", rescale, RESCALES)
    return tensors, check_weights(weights, n), dens, eps, scale


def _per_model(name: str, value: float | Sequence[float], n: int) -> list[float]:
    """``value`` as one float per model (a scalar is repeated)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [float(value)] * n
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a number or one number per model, got {value!r}")
    if len(value) != n:
        raise ValueError(f"{name} must have one value per model ({n}), got {len(value)}")
    return [float(v) for v in value]


def _delta(t: Tensor, base: Tensor | None, dtype: torch.dtype) -> Tensor:
    """A fresh τ = t − base in ``dtype`` (never a view of the input)."""
    if base is None:
        return t.to(dtype, copy=True)
    return t.to(dtype) - base.to(dtype)


def _finish(merged: Tensor, base: Tensor | None, scale: float, ref: Tensor) -> Tensor:
    if scale != 1.0:
        merged.mul_(scale)
    out = merged if base is None else merged.add_(base.to(merged.dtype))
    return out.to(ref.dtype)


METHODS.attach("della", tensor=della_tensor)
METHODS.attach("della_linear", tensor=della_linear_tensor)
