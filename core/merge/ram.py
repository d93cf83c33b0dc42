"""RAM: Reinforced Agent Merging — keep unique updates, average shared ones (and RAM+).

Yuan et al., "Behavior Knowledge Merge in Reinforced Agentic Models", 2026, arXiv:2601.13572;
mergekit implements it as ``ram`` and ``ramplus_tl`` (``merge_methods/ram.py``).

An entry of τᵢ is active when |τᵢ| > ``epsilon``. Per entry, with c the number of models whose
entry is active: c = 0 keeps θ₀; c = 1 (unique) takes that model's τ, rescaled by λᵢ; c > 1
(shared) takes the mean of the active τs. θ = θ₀ + τ_m.

``rescale`` chooses λᵢ:

* ``"none"`` — λᵢ = 1: RAM.
* ``"global"`` — RAM+ as in the paper: λᵢ = 1 + r · clip(ρᵢ, 0, α) with ρᵢ the ratio of model
  i's shared to unique active entries counted over the whole model
  (:func:`ram_overlap_ratios`; pass them as ``rho=`` to :func:`ram_tensor` when streaming).
* ``"tensor"`` — RAM+ with ρᵢ counted per tensor: mergekit's ``ramplus_tl``.

As in mergekit, the unique count in ρ is clamped below at ``epsilon`` (a model with shared but
no unique entries gets ρ = shared/ε, i.e. the full α).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_choice, check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, check_tensors, compute_dtype

RAM_EPSILON = Hyper(
    "epsilon",
    "float",
    1e-5,
    0.0,
    0.01,
    1e-5,
    help="|τ| above which an entry counts as changed",
)
RAM_RESCALE = Hyper(
    "rescale",
    "choice",
    "none",
    choices=("none", "global", "tensor"),
    help="RAM (none) or RAM+ with the overlap ratio over the model (paper) or per tensor "
    "(mergekit ramplus_tl)",
)
RAM_R = Hyper("r", "float", 0.1, 0.0, 2.0, 0.01, help="RAM+ rescaling strength r")
RAM_ALPHA = Hyper("alpha", "float", 0.2, 0.0, 2.0, 0.01, help="RAM+ bound α on the ratio ρ")
RESCALES = ("none", "global", "tensor")


@METHODS.register(
    "ram",
    mergekit=("ram", "ramplus_tl"),
    title="RAM / RAM+ (Reinforced Agent Merging)",
    paper="https://arxiv.org/abs/2601.13572",
    params=(RAM_EPSILON, RAM_RESCALE, RAM_R, RAM_ALPHA),
    tags=("needs_base", "per_tensor"),
)
def ram(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    epsilon: float = 1e-5,
    rescale: str = "none",
    r: float = 0.1,
    alpha: float = 0.2,
) -> StateDict:
    """θ₀ + (unique updates, rescaled for RAM+) + (mean of shared updates), per tensor."""
    check_choice("rescale", rescale, RESCALES)
    rho = ram_overlap_ratios(models, base, epsilon=epsilon) if rescale == "global" else None
    out: StateDict = {}
    for k, v in models[0].items():
        if v.is_floating_point():
            out[k] = ram_tensor(
                [m[k] for m in models],
                None if base is None else base[k],
                epsilon=epsilon,
                rescale=rescale,
                r=r,
                alpha=alpha,
                rho=rho,
            )
    return out


def ram_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    epsilon: float = 1e-5,
    rescale: str = "none",
    r: float = 0.1,
    alpha: float = 0.2,
    rho: Sequence[float] | None = None,
) -> Tensor:
    """RAM merge of one tensor.

    Args:
        tensors: N fine-tuned tensors (task vectors when ``base`` is None).
        base: θ₀ or None (zero).
        generator: unused.
        epsilon: activity threshold on |τ|, >= 0.
        rescale: "none" (RAM), "global" (needs ``rho``) or "tensor" (ρ from this tensor).
        r: RAM+ strength, >= 0.
        alpha: RAM+ bound on ρ, >= 0.
        rho: per model, the whole-model overlap ratio from :func:`ram_overlap_ratios`.
    """
    tensors = check_tensors(tensors, base)
    epsilon, r, alpha = _check(epsilon, rescale, r, alpha)
    lam = None
    if rescale == "global":
        if rho is None or len(rho) != len(tensors):
            got = None if rho is None else len(rho)
            raise ValueError(
                f"rescale='global' needs rho= with one ratio per model ({len(tensors)}, "
                f"from ram_overlap_ratios over the whole model), got {got}"
            )
        lam = [_lambda(float(x), r, alpha) for x in rho]
    ref = tensors[0]
    dtype = compute_dtype(ref)
    b = None if base is None else base.to(dtype)
    count = torch.zeros(ref.shape, dtype=dtype, device=ref.device)  # active models per entry
    total = torch.zeros_like(count)  # Σ active τ
    unique = None if rescale == "none" else torch.zeros_like(count)  # Σ λᵢ active τ
    for i, t in enumerate(tensors):
        tau = _tau(t, b, dtype)
        active = tau.abs() > epsilon
        tau.mul_(active)
        total += tau
        count += active
        if lam is not None and unique is not None:
            unique.add_(tau, alpha=lam[i])
    if rescale == "tensor" and unique is not None:  # λᵢ from this tensor's counts: 2nd pass
        for t in tensors:
            tau = _tau(t, b, dtype)
            active = tau.abs() > epsilon
            lam_i = _lambda(_ratio(*_counts(active, count), epsilon), r, alpha)
            unique.add_(tau.mul_(active), alpha=lam_i)
    merged = total.div_(count.clamp(min=1.0))
    if unique is not None:
        merged = torch.where(count == 1, unique, merged)
    if b is not None:
        merged.add_(b)
    return merged.to(ref.dtype)


def ram_overlap_ratios(
    models: Sequence[StateDict], base: StateDict | None, *, epsilon: float = 1e-5
) -> list[float]:
    """Per model, ρᵢ = (its active entries shared with another model) / (its unique active
    entries), counted over every floating-point tensor (the unique count clamped below at
    ``epsilon``)."""
    epsilon = check_range("epsilon", epsilon, 0.0)
    shared = [0.0] * len(models)
    uniq = [0.0] * len(models)
    for k, v in models[0].items():
        if not v.is_floating_point():
            continue
        s, u = ram_overlap_counts(
            [m[k] for m in models], None if base is None else base[k], epsilon=epsilon
        )
        shared = [a + b for a, b in zip(shared, s, strict=True)]
        uniq = [a + b for a, b in zip(uniq, u, strict=True)]
    return ram_ratios(shared, uniq, epsilon=epsilon)


def ram_overlap_counts(
    tensors: Sequence[Tensor], base: Tensor | None, *, epsilon: float = 1e-5
) -> tuple[list[float], list[float]]:
    """Per model, the (shared, unique) active entries of one tensor: summed over the tensors
    of a model and passed to :func:`ram_ratios` they give :func:`ram_overlap_ratios` (a
    streaming merge counts tensor by tensor)."""
    epsilon = check_range("epsilon", epsilon, 0.0)
    tensors = check_tensors(tensors, base)
    dtype = compute_dtype(tensors[0])
    b = None if base is None else base.to(dtype)
    count = torch.zeros(tensors[0].shape, dtype=dtype, device=tensors[0].device)
    for t in tensors:
        count += _tau(t, b, dtype).abs_() > epsilon
    shared, uniq = [], []
    for t in tensors:
        s, u = _counts(_tau(t, b, dtype).abs_() > epsilon, count)
        shared.append(s)
        uniq.append(u)
    return shared, uniq


def ram_ratios(
    shared: Sequence[float], unique: Sequence[float], *, epsilon: float = 1e-5
) -> list[float]:
    """ρᵢ from whole-model (shared, unique) counts (unique clamped below at ``epsilon``)."""
    epsilon = check_range("epsilon", epsilon, 0.0)
    if len(shared) != len(unique):
        raise ValueError(
            f"shared and unique must have one count per model each, got {len(shared)} "
            f"and {len(unique)}"
        )
    return [_ratio(s, u, epsilon) for s, u in zip(shared, unique, strict=True)]


def _counts(active: Tensor, count: Tensor) -> tuple[float, float]:
    """(shared, unique) active entries of one model given the per-entry activity count."""
    unique = float((active & (count == 1)).sum())
    return float(active.sum()) - unique, unique


def _ratio(shared: float, unique: float, epsilon: float) -> float:
    return shared / max(unique, epsilon) if shared > 0 else 0.0


def _lambda(rho: float, r: float, alpha: float) -> float:
    return 1.0 + r * min(max(rho, 0.0), alpha)


def _tau(t: Tensor, b: Tensor | None, dtype: torch.dtype) -> Tensor:
    return t.to(dtype, copy=True) if b is None else t.to(dtype) - b


def _check(epsilon: float, rescale: str, r: float, alpha: float) -> tuple[float, float, float]:
    epsilon = check_range("epsilon", epsilon, 0.0)
    check_choice("rescale", rescale, RESCALES)
    return epsilon, check_range("r", r, 0.0), check_range("alpha", alpha, 0.0)


METHODS.attach("ram", tensor=ram_tensor)
