"""Arcee Fusion: fuse only the changes that stand out (mergekit's ``arcee_fusion``).

Arcee AI, "Meet MergeKit v0.1: Arcee Fusion, expanded model support, multi-GPU acceleration"
(blog post, 2025, :data:`BLOG`); the method of mergekit's ``merge_methods/arcee_fusion.py``.
No paper: the registry links the mergekit paper (Goddard et al., arXiv:2403.13257).

Per tensor, with a = ``models[0]`` (mergekit's ``base_model``) and b = ``models[1]``:

1. importance sⱼ = |bⱼ − aⱼ| · KL(softmax(b) ‖ softmax(a)), the KL divergence taken along the
   last axis (one value per row, ε = 1e-8 added to both distributions);
2. threshold = median + 1.5 · IQR of the importances (quartiles at the sorted positions
   ⌊q (n − 1)⌋, as mergekit);
3. result a + (b − a) · [s >= threshold].

mergekit estimates the quartiles from 10⁶ entries drawn with replacement (unseeded) when a
tensor has more; here they are exact order statistics (selection, no sort), so the result is
deterministic and equals mergekit's wherever mergekit's are exact. The ``base`` argument (the
pre-trained model of the task-vector setting) is not used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..params import StateDict
from ._base import (
    METHODS,
    apply_per_tensor,
    check_tensors,
    chunks,
    compute_dtype,
)
from ._gta import kth_largest

KL_EPS = 1e-8
ROW_BLOCK = 1 << 16  # entries per block of rows in the KL pass (two 256 KB float32 buffers)
BLOG = (
    "https://www.arcee.ai/blog/"
    "meet-mergekit-v0-1-arcee-fusion-expanded-model-support-multi-gpu-acceleration"
)


@METHODS.register(
    "arcee_fusion",
    mergekit=("arcee_fusion",),
    title="Arcee Fusion (two models)",
    paper="https://arxiv.org/abs/2403.13257",  # mergekit (no paper of its own)
    params=(),
    tags=("per_tensor", "two_models"),
)
def arcee_fusion(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
) -> StateDict:
    """``models[0]`` plus the entries of ``models[1] − models[0]`` whose importance is an
    outlier (above median + 1.5 IQR)."""
    return apply_per_tensor(arcee_fusion_tensor, models, None)


def arcee_fusion_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Arcee Fusion of two tensors [a, b] (``base`` is ignored)."""
    tensors = check_tensors(tensors, None)
    if len(tensors) != 2:
        raise ValueError(f"arcee_fusion merges exactly 2 tensors, got {len(tensors)}")
    ref = tensors[0]
    if ref.numel() == 0:
        return ref.clone()
    dtype = compute_dtype(ref)
    a, b = (x.to(dtype).reshape(ref.shape if ref.ndim else (1,)) for x in tensors)
    delta = b - a
    score = importance(a, b, delta)
    cut = fusion_threshold(score)
    out = delta.mul_(score >= cut).add_(a)
    return out.reshape(ref.shape).to(ref.dtype)


def importance(a: Tensor, b: Tensor, delta: Tensor) -> Tensor:
    """|b − a| · KL(softmax(b) ‖ softmax(a)) along the last axis (ε added to both), the KL
    computed in blocks of rows that stay in cache (one pass over a and b instead of six)."""
    d = a.shape[-1]
    a2, b2 = a.reshape(-1, d), b.reshape(-1, d)  # (R, D)
    kl = torch.empty(a2.shape[0], 1, dtype=a.dtype, device=a.device)  # (R, 1)
    step = max(1, ROW_BLOCK // max(d, 1))
    for s in chunks(a2.shape[0], step):
        p = torch.softmax(b2[s], dim=-1).add_(KL_EPS)  # (B, D)
        q = torch.softmax(a2[s], dim=-1).add_(KL_EPS)
        torch.sum(torch.div(p, q, out=q).log_().mul_(p), dim=-1, keepdim=True, out=kl[s])
    return delta.abs().mul_(kl.reshape(*a.shape[:-1], 1))


def fusion_threshold(score: Tensor) -> Tensor:
    """median + 1.5 (q3 − q1) of ``score``, each quartile the sorted entry at ⌊q (n − 1)⌋."""
    flat = score.reshape(-1)
    n = flat.numel()
    i1, i2, i3 = (math.floor(q * (n - 1)) for q in (0.25, 0.5, 0.75))
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        # one copy, partitioned at the median, then each half in place at its quartile
        x = flat.numpy().copy()
        x.partition(i2)
        lo, hi = x[:i2], x[i2 + 1 :]
        if i1 < i2:
            lo.partition(i1)
        if i3 > i2:
            hi.partition(i3 - i2 - 1)
        q1 = x[i1] if i1 < i2 else x[i2]
        q3 = x[i3] if i3 > i2 else x[i2]
        values = torch.tensor([q1, x[i2], q3], dtype=flat.dtype)
    else:
        a = flat.reshape(1, -1)
        values = torch.stack([kth_largest(a, n - i)[0] for i in (i1, i2, i3)])
    q1_t, med, q3_t = values.to(flat.device).unbind(0)
    return med + 1.5 * (q3_t - q1_t)


METHODS.attach("arcee_fusion", tensor=arcee_fusion_tensor)
