"""MagMax: keep, per entry, the task vector of largest magnitude.

Marczak et al., "MagMax: Leveraging Model Merging for Seamless Continual Learning", ECCV 2024,
arXiv:2407.06322.

τ_max[j] = τ_{t*(j)}[j] with t*(j) = argmaxₜ |τₜ[j]|, then θ = θ₀ + λ τ_max. Ties go to the
later task vector (``>=``, as in the authors' ``merge_max_abs`` and FusionBench's
``magmax._magmax_select``). λ defaults to 0.5, the authors' 8-dataset script and FusionBench's
default. Streamed in cache-sized chunks: no N-sized temporary. On contiguous CPU tensors of
one dtype the fused kernel (:func:`core.kernels.merge.magmax`) makes one pass, reading half
precision in its 16 bits; both paths compute in float32 for half inputs and return the input
dtype, and the chunked torch loop is the definition it is tested equal to.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_range
from .._registry import Hyper
from ..kernels import merge as _fused
from ..params import StateDict
from ._base import METHODS, apply_per_tensor, check_tensors, chunks, compute_dtype
from ._blocks import SUM_CHUNK, chunk_for, delta_into

MAGMAX_SCALE = Hyper("scale", "float", 0.5, 0.0, 2.0, 0.05, help="λ: scale of the max-|τ| vector")


@METHODS.register(
    "magmax",
    title="MagMax",
    paper="https://arxiv.org/abs/2407.06322",
    params=(MAGMAX_SCALE,),
    tags=("needs_base", "per_tensor"),
)
def magmax(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    scale: float = 0.5,
) -> StateDict:
    """θ₀ + λ · (per entry, the τᵢ of largest |τᵢ|)."""
    return apply_per_tensor(magmax_tensor, models, base, scale=scale)


def magmax_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    scale: float = 0.5,
) -> Tensor:
    """MagMax of one tensor.

    Args:
        tensors: N fine-tuned tensors (task vectors when ``base`` is None).
        base: θ₀ or None (zero).
        generator: unused.
        scale: λ (finite).
    """
    tensors = check_tensors(tensors, base)
    scale = check_range("scale", scale)
    ref = tensors[0]
    if _fused.usable(tensors, base):  # one pass, half read in 16 bits; the loop below defines it
        return _fused.magmax(tensors, base, scale, ref.dtype)
    dtype, dev, size = compute_dtype(ref), ref.device, ref.numel()
    out = torch.empty(size, dtype=dtype, device=dev)  # (P,)
    step = chunk_for(dev, SUM_CHUNK)
    buf = torch.empty(4, min(step, size), dtype=dtype, device=dev)  # (4, C) scratch
    keep = torch.empty(min(step, size), dtype=torch.bool, device=dev)  # (C,)
    for s in chunks(size, step):
        n = s.stop - s.start
        best, best_abs, x, a = buf[:, :n].unbind(0)  # (C,) each
        m = keep[:n]
        delta_into(best, tensors[0], base, s)
        torch.abs(best, out=best_abs)
        for t in tensors[1:]:
            if base is None and t.dtype == dtype:
                x = t.reshape(-1)[s]  # (C,) read in place: no copy of a task vector
            else:
                x = delta_into(buf[2, :n], t, base, s)
            torch.abs(x, out=a)
            torch.ge(a, best_abs, out=m)  # later task vector wins ties
            torch.where(m, x, best, out=best)
            torch.maximum(a, best_abs, out=best_abs)
        if base is None:
            torch.mul(best, scale, out=out[s])
        else:
            torch.add(base.reshape(-1)[s], best, alpha=scale, out=out[s])
    return out.view(ref.shape).to(ref.dtype)


METHODS.attach("magmax", tensor=magmax_tensor)
