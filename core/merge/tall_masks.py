"""TALL masks: per-task masks that localise each task's information in a merged vector.

Wang et al., "Localizing Task Information for Improved Model Merging and Compression",
ICML 2024, arXiv:2405.07813.

Variant: the paper's TALL masks (authors' code nik-dim/tall_masks, FusionBench's
``tall_mask.utils.generate_task_masks``). With the multi-task vector τ_MTL (``merged="sum"``:
Σᵢ τᵢ, task arithmetic at λ = 1 as in the reference; ``merged="ties"``: the TIES vector at
``density`` with ``disjoint`` merge, the reference's "TIES + TALL"), task t's mask is

    mₜ = |τₜ| > λ_m · |τ_MTL − τₜ|        (strict, as in the reference code)

and task t's model is θₜ = θ₀ + mₜ ⊙ τ_MTL. λ_m (``mask_lambda``) defaults to 0.6, FusionBench's
value (the reference picks it per task on validation data from 0.2 … 0.6). The result is one
model per task: :func:`tall_masks_merge` returns the :class:`~core.merge.per_task.TaskMerge`,
and the registered ``tall_masks`` returns the shared model θ₀ + τ_MTL.

FusionBench's state-dict algorithm (``TallMaskTaskArithmeticAlgorithm``) passes τₜ where its
mask function expects θₜ, so it compares |θ₀ − τₜ|, not |τₜ|; its flat ``utils`` version and
the authors' code compare |θ₀ − θₜ| = |τₜ|, which is what is implemented here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._checks import check_choice, check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, compute_dtype
from .per_task import PER_TASK_METHODS, TaskMerge, build_task_merge
from .ties import check_ties_args, ties_tensor, ties_thresholds

MASK_LAMBDA = Hyper(
    "mask_lambda", "float", 0.6, 0.0, 2.0, 0.05, help="λ_m: a task keeps |τₜ| > λ_m |τ_MTL − τₜ|"
)
MERGED = Hyper(
    "merged",
    "choice",
    "sum",
    choices=("sum", "ties"),
    help="multi-task vector: Σ τ (task arithmetic) or the TIES vector",
)
MTL_DENSITY = Hyper("density", "float", 0.2, 0.01, 1.0, 0.01, help="TIES trim (merged='ties')")
MTL_DISJOINT = Hyper(
    "disjoint",
    "choice",
    "sum",
    choices=("mean", "sum"),
    help="TIES disjoint merge (merged='ties'; the reference uses the sum)",
)


@METHODS.register(
    "tall_masks",
    title="TALL masks (per-task masks)",
    paper="https://arxiv.org/abs/2405.07813",
    params=(MASK_LAMBDA, MERGED, MTL_DENSITY, MTL_DISJOINT),
    tags=("needs_base", "per_task"),
)
def tall_masks(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    mask_lambda: float = 0.6,
    merged: str = "sum",
    density: float = 0.2,
    disjoint: str = "sum",
) -> StateDict:
    """The shared model θ₀ + τ_MTL; the per-task models come from :func:`tall_masks_merge`."""
    assert base is not None  # merge() checks needs_base
    return tall_masks_merge(
        models,
        base=base,
        mask_lambda=mask_lambda,
        merged=merged,
        density=density,
        disjoint=disjoint,
    ).shared_model()


def tall_masks_merge(
    models: Sequence[StateDict],
    *,
    base: StateDict,
    generator: torch.Generator | None = None,
    mask_lambda: float = 0.6,
    merged: str = "sum",
    density: float = 0.2,
    disjoint: str = "sum",
) -> TaskMerge:
    """TALL masks of fine-tuned ``models`` around ``base``.

    Returns:
        A :class:`TaskMerge` with ``shared`` = τ_MTL, ``masks[t]`` = mₜ and every scale 1.
    """
    mask_lambda = check_range("mask_lambda", mask_lambda, 0.0)
    mtl = multi_task_vector(models, base, merged=merged, density=density, disjoint=disjoint)
    masks = task_masks(models, base, mtl, mask_lambda)
    info = {"mask_lambda": mask_lambda, "merged": merged}
    return build_task_merge("tall_masks", base, mtl, masks, [1.0] * len(models), info)


def multi_task_vector(
    models: Sequence[StateDict],
    base: StateDict,
    *,
    merged: str = "sum",
    density: float = 0.2,
    disjoint: str = "sum",
) -> StateDict:
    """τ_MTL: Σᵢ τᵢ (``merged="sum"``) or the TIES vector (global trim at ``density``,
    elected signs, ``disjoint`` mean or sum, λ = 1) for every floating key."""
    check_choice("merged", merged, ("sum", "ties"))
    check_ties_args(density, 1.0, "global", disjoint)
    keys = [k for k, v in base.items() if v.is_floating_point()]
    out: StateDict = {}
    if merged == "sum":
        for k in keys:
            dtype = compute_dtype(base[k])
            out[k] = sum(m[k].to(dtype) for m in models) - len(models) * base[k].to(dtype)
        return out
    thr = ties_thresholds(models, base, density=density)
    for k in keys:
        dtype = compute_dtype(base[k])
        taus = [m[k].to(dtype) - base[k].to(dtype) for m in models]
        out[k] = ties_tensor(taus, None, density=density, disjoint=disjoint, threshold=thr)
    return out


def task_masks(
    models: Sequence[StateDict], base: StateDict, mtl: StateDict, mask_lambda: float
) -> list[StateDict]:
    """mₜ = |τₜ| > λ_m |τ_MTL − τₜ| per task and floating key (bool tensors)."""
    out: list[StateDict] = []
    for m in models:
        mask: StateDict = {}
        for k, v in mtl.items():
            tau = m[k].to(v.dtype) - base[k].to(v.dtype)
            mask[k] = tau.abs() > (v - tau).abs() * mask_lambda
        out.append(mask)
    return out


PER_TASK_METHODS["tall_masks"] = tall_masks_merge
