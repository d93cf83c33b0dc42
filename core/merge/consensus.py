"""Consensus merging: drop the weights that fewer than k tasks' TALL masks select.

Wang et al., "Localizing Task Information for Improved Model Merging and Compression",
ICML 2024, arXiv:2405.07813 (section "Consensus Merging").

Variant: the paper's Consensus TA / Consensus TIES (authors' code nik-dim/tall_masks,
``construct_consensus_mask``). With the TALL masks mₜ of the multi-task vector τ_MTL (see
:mod:`core.merge.tall_masks`), the consensus mask keeps the entries selected by at least k
tasks, m_c = [Σₜ mₜ ≥ k], and θ = θ₀ + λ (m_c ⊙ τ_MTL). k = 2 (the reference's default)
removes "catastrophic" (k ≥ 1) and "selfish" (k ≥ 2) weights; k = 0 keeps everything, so
consensus with ``merged="sum"`` is task arithmetic and with ``merged="ties"`` is TIES with the
same density, disjoint merge and λ (both tested); k > T gives θ₀.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._checks import check_int, check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS
from .tall_masks import (
    MASK_LAMBDA,
    MERGED,
    MTL_DENSITY,
    MTL_DISJOINT,
    multi_task_vector,
    task_masks,
)
from .task_arithmetic import SCALE

MIN_TASKS = Hyper("k", "int", 2, 0, 16, 1, help="keep entries that at least k tasks' masks select")


@METHODS.register(
    "consensus",
    title="Consensus merging (TA / TIES)",
    paper="https://arxiv.org/abs/2405.07813",
    params=(MIN_TASKS, SCALE, MASK_LAMBDA, MERGED, MTL_DENSITY, MTL_DISJOINT),
    tags=("needs_base",),
)
def consensus(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    k: int = 2,
    scale: float = 0.3,
    mask_lambda: float = 0.6,
    merged: str = "sum",
    density: float = 0.2,
    disjoint: str = "sum",
) -> StateDict:
    """θ₀ + λ ([Σₜ mₜ ≥ k] ⊙ τ_MTL)."""
    assert base is not None  # merge() checks needs_base
    k = check_int("k", k, 0)
    scale = check_range("scale", scale)
    mask_lambda = check_range("mask_lambda", mask_lambda, 0.0)
    mtl = multi_task_vector(models, base, merged=merged, density=density, disjoint=disjoint)
    counts = consensus_counts(task_masks(models, base, mtl, mask_lambda))
    out: StateDict = {}
    for key, tau in mtl.items():
        kept = tau * (counts[key] >= k)
        out[key] = torch.add(base[key].to(tau.dtype), kept, alpha=scale)
    return out


def consensus_counts(masks: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """Per key, how many tasks' masks select each entry (int32 tensors)."""
    out: dict[str, torch.Tensor] = {}
    for mask in masks:
        for key, m in mask.items():
            out[key] = out[key] + m if key in out else m.to(torch.int32)
    return out
