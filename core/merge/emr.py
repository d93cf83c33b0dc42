"""EMR-Merging: elect a unified task vector, then a mask and a rescaler per task.

Huang et al., "EMR-Merging: Tuning-Free High-Performance Model Merging", NeurIPS 2024,
arXiv:2405.17461.

Variant: the paper's Elect, Mask & Rescale, as FusionBench's ``emr_merging.utils.emr_merge``:

1. Elect: γ = sign(Σᵢ τᵢ) per entry (an exact 0 counts as −1, as in the reference code), and
   the unified vector τ_uni = γ ⊙ maxᵢ |τᵢ ⊙ [τᵢ γ > 0]| (the largest magnitude that agrees).
2. Mask: Mₜ = [τₜ ⊙ γ > 0] for every task t.
3. Rescale: λₜ = Σ|τₜ| / Σ|Mₜ ⊙ τ_uni|. ``rescale="paper"`` sums over all entries of the model
   (the paper's equation); ``rescale="tensor_mean"`` sums per-tensor means, Σₖ mean|τₜ,ₖ| /
   Σₖ mean|Mₜ,ₖ ⊙ τ_uni,ₖ| (the authors' code and FusionBench). A task whose masked vector is 0
   gets λₜ = 1 (its model is θ₀ either way).

The result is one model per task, θₜ = θ₀ + λₜ (Mₜ ⊙ τ_uni): :func:`emr_merge` returns the
:class:`~core.merge.per_task.TaskMerge`; the registered ``emr`` returns the shared model
θ₀ + τ_uni so that ``merge()`` keeps its one-state-dict contract. Every floating tensor takes
part (FusionBench's state-dict version does the same).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._checks import check_choice
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, compute_dtype
from .per_task import PER_TASK_METHODS, TaskMerge, build_task_merge

RESCALE = Hyper(
    "rescale",
    "choice",
    "paper",
    choices=("paper", "tensor_mean"),
    help="λₜ from sums over the model (paper) or sums of per-tensor means (authors' code)",
)


@METHODS.register(
    "emr",
    title="EMR-Merging (per-task masks and rescalers)",
    paper="https://arxiv.org/abs/2405.17461",
    params=(RESCALE,),
    tags=("needs_base", "per_task"),
)
def emr(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    rescale: str = "paper",
) -> StateDict:
    """The shared model θ₀ + τ_uni; the per-task models come from :func:`emr_merge`."""
    assert base is not None  # merge() checks needs_base
    return emr_merge(models, base=base, rescale=rescale).shared_model()


def emr_merge(
    models: Sequence[StateDict],
    *,
    base: StateDict,
    generator: torch.Generator | None = None,
    rescale: str = "paper",
) -> TaskMerge:
    """EMR-Merging of fine-tuned ``models`` around ``base``.

    Returns:
        A :class:`TaskMerge` with ``shared`` = τ_uni, ``masks[t]`` = Mₜ and ``scales[t]`` = λₜ.
    """
    check_choice("rescale", rescale, ("paper", "tensor_mean"))
    keys = [k for k, v in base.items() if v.is_floating_point()]
    n = len(models)
    unified: StateDict = {}
    masks: list[StateDict] = [{} for _ in range(n)]
    num = torch.zeros(n, dtype=torch.float64)  # Σ|τₜ| (or Σ of per-tensor means)
    den = torch.zeros(n, dtype=torch.float64)  # Σ|Mₜ ⊙ τ_uni|
    for k in keys:
        dtype = compute_dtype(base[k])
        b = base[k].to(dtype)
        stack = torch.stack([m[k].to(dtype) for m in models]).sub_(b)  # (T, *shape) τₜ
        flag = torch.where(stack.sum(0) > 0, 1.0, -1.0).to(dtype)  # (*shape) γ, 0 -> −1
        agree = (stack * flag) > 0  # (T, *shape) Mₜ
        mag = stack.abs_()  # (T, *shape) |τₜ|, in place: τ itself is not needed again
        size = max(b.numel(), 1) if rescale == "tensor_mean" else 1
        num += mag.flatten(1).sum(1, dtype=torch.float64).cpu() / size
        u = (mag * agree).amax(0) * flag  # (*shape) τ_uni
        unified[k] = u
        den += (u.abs() * agree).flatten(1).sum(1, dtype=torch.float64).cpu() / size
        for t in range(n):
            masks[t][k] = agree[t]
    scales = [float(a / d) if d > 0 else 1.0 for a, d in zip(num, den, strict=True)]
    return build_task_merge("emr", base, unified, masks, scales, {"rescale": rescale})


PER_TASK_METHODS["emr"] = emr_merge
