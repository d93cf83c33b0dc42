"""TIES-Merging: trim, elect sign, disjoint merge.

Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023,
arXiv:2306.01708.

1. Trim: keep the top-``density`` fraction of |τᵢ| per model — over the whole flattened model
   (``trim="global"``, the paper) or per tensor (``trim="tensor"``, mergekit and PEFT).
2. Elect: the sign per coordinate is sign(Σᵢ trimmed τᵢ) (total mass); an exact 0 counts as +.
3. Disjoint merge: the mean (paper) or the sum (the 8-task ViT literature, FusionBench) of
   the entries that agree with the elected sign. Weights, when given, are applied after the
   election (as in PEFT), so the election follows the paper.
4. θ = θ₀ + λ τ_m.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_choice, check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, check_tensors, check_weights, compute_dtype
from ._blocks import keep_count, magnitude_threshold, tensor_thresholds, ties_kernel

DENSITY = Hyper("density", "float", 0.2, 0.01, 1.0, 0.01, help="fraction of |τ| kept per model")
TIES_SCALE = Hyper("scale", "float", 1.0, 0.0, 3.0, 0.05, help="λ: scale of the merged vector")
TRIM = Hyper(
    "trim",
    "choice",
    "global",
    choices=("global", "tensor"),
    help="top-k over the whole model (paper) or per tensor (mergekit/PEFT)",
)
DISJOINT = Hyper(
    "disjoint",
    "choice",
    "mean",
    choices=("mean", "sum"),
    help="mean of agreeing entries (paper) or their sum (ViT literature)",
)
WEIGHTS = Hyper("weights", "floats", None, 0.0, 2.0, 0.05, help="weight per task vector")


@METHODS.register(
    "ties",
    mergekit=("ties",),
    title="TIES-Merging",
    paper="https://arxiv.org/abs/2306.01708",
    params=(DENSITY, TIES_SCALE, TRIM, DISJOINT, WEIGHTS),
    tags=("needs_base", "per_tensor", "scale_linear"),
)
def ties(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    density: float = 0.2,
    scale: float = 1.0,
    trim: str = "global",
    disjoint: str = "mean",
    weights: Sequence[float] | None = None,
) -> StateDict:
    """TIES merge of fine-tuned models around ``base``."""
    check_choice("trim", trim, ("global", "tensor"))
    thresholds = None
    if trim == "global":
        thresholds = ties_thresholds(models, base, density=density)
    out: StateDict = {}
    for k, v in models[0].items():
        if v.is_floating_point():
            out[k] = ties_tensor(
                [m[k] for m in models],
                None if base is None else base[k],
                density=density,
                scale=scale,
                trim=trim,
                disjoint=disjoint,
                weights=weights,
                threshold=thresholds,
            )
    return out


def ties_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    density: float = 0.2,
    scale: float = 1.0,
    trim: str = "global",
    disjoint: str = "mean",
    weights: Sequence[float] | None = None,
    threshold: Sequence[float] | None = None,
) -> Tensor:
    """TIES merge of one tensor.

    Args:
        tensors: N fine-tuned tensors (task vectors when ``base`` is None).
        base: θ₀ or None (zero).
        generator: unused.
        density: fraction of |τ| kept, in (0, 1].
        scale: λ (finite).
        trim: "tensor" computes the threshold from this tensor; "global" needs ``threshold``
            (per model, from :func:`ties_thresholds` over the whole model).
        disjoint: "mean" or "sum".
        weights: N finite weights applied after the election (default all 1).
        threshold: precomputed |τ| threshold per model; overrides ``density``.
    """
    tensors = check_tensors(tensors, base)
    check_ties_args(density, scale, trim, disjoint)
    w = check_weights(weights, len(tensors))
    thr = resolve_thresholds(tensors, base, density, trim, threshold)
    dt = tensors[0].dtype
    return ties_kernel(tensors, base, thr, scale=scale, weights=w, disjoint=disjoint, out_dtype=dt)


def ties_thresholds(
    models: Sequence[StateDict], base: StateDict | None, *, density: float
) -> list[float]:
    """Global trim: per model, the |τ| threshold keeping the top ``density`` of all its
    floating-point entries (pass as ``threshold=`` to :func:`ties_tensor`)."""
    check_range("density", density, 0.0, 1.0, low_inclusive=False)
    keys = [k for k, v in models[0].items() if v.is_floating_point()]
    bases = None if base is None else [base[k] for k in keys]
    return [magnitude_threshold([m[k] for k in keys], bases, density) for m in models]


def check_ties_args(density: float, scale: float, trim: str, disjoint: str) -> None:
    """Validate the TIES hyperparameters (shared with DARE-TIES)."""
    check_range("density", density, 0.0, 1.0, low_inclusive=False)
    check_range("scale", scale)
    check_choice("trim", trim, ("global", "tensor"))
    check_choice("disjoint", disjoint, ("mean", "sum"))


def resolve_thresholds(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    density: float,
    trim: str,
    threshold: Sequence[float] | None,
) -> list[float]:
    """Per-model thresholds: the given global ones, or per tensor from ``density``."""
    if threshold is not None:
        thr = [float(x) for x in threshold]
        if len(thr) != len(tensors):
            raise ValueError(
                f"threshold must have one entry per model ({len(tensors)}), got {len(thr)}"
            )
        return thr
    if trim == "global" and density < 1.0:
        raise ValueError(
            "trim='global' needs threshold= (per model, from ties_thresholds over the whole "
            "model); got None — pass trim='tensor' for a per-tensor trim"
        )
    return tensor_thresholds(tensors, base, [density] * len(tensors))


def ties_definition(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    density: float = 0.2,
    scale: float = 1.0,
    disjoint: str = "mean",
    weights: Sequence[float] | None = None,
) -> Tensor:
    """TIES of one tensor as the paper writes it (per-tensor trim), in plain torch: the
    definition the fast kernels (:func:`ties_tensor`: chunked torch and fused numba) are tested
    equal to for every dtype. Holds N x the tensor; computes in :func:`compute_dtype`."""
    dtype, n = compute_dtype(tensors[0]), len(tensors)
    zero = torch.zeros((), dtype=dtype)
    theta0 = zero if base is None else base.to(dtype).reshape(-1)  # (P,) or ()
    tau = torch.stack([t.to(dtype).reshape(-1) - theta0 for t in tensors])  # (N, P) task vectors
    k = keep_count(tau.shape[1], density)
    thr = tau.abs().kthvalue(tau.shape[1] - k + 1, dim=1, keepdim=True).values  # (N, 1)
    kept = (tau.abs() >= thr) & (tau != 0)  # (N, P) trim: top-k magnitudes per model
    sign = torch.where((tau * kept).sum(0) >= 0, 1.0, -1.0).to(dtype)  # (P,) elect: total mass
    agree = kept & (torch.sign(tau) == sign)  # (N, P) entries that agree with the election
    w = torch.tensor(weights or [1.0] * n, dtype=dtype).unsqueeze(1)  # (N, 1)
    merged = (w * tau * agree).sum(0)  # (P,) disjoint sum of the agreeing entries
    if disjoint == "mean":
        merged = merged / agree.sum(0).clamp(min=1)  # (P,) disjoint mean
    out = theta0 + scale * merged  # (P,) θ₀ + λ τ_m
    return out.view(tensors[0].shape).to(tensors[0].dtype)


METHODS.attach("ties", tensor=ties_tensor)
