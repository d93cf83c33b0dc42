"""NearSwap: take the second model's value where the two models are already close.

Introduced with the merge "QuartetAnemoi-70B-t0.0001" (alchemonaut, Hugging Face model card,
https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001); mergekit's ``nearswap``
(``merge_methods/nearswap.py``). No paper: the registry links the mergekit paper, Goddard et
al., "Arcee's MergeKit: A Toolkit for Merging Large Language Models", arXiv:2403.13257.

Per entry, with a = ``models[0]`` (mergekit's ``base_model``: the model kept where the two
differ) and b = ``models[1]``: w = clamp(t / max(|a − b|, 1e-6), 0, 1) and the result is
a + w (b − a) — b wherever |a − b| <= t, and a fraction t/|a − b| of the way to b elsewhere.
The ``base`` argument (the pre-trained model of the task-vector setting) is not used.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_range
from .._registry import Hyper
from ..params import StateDict
from ._base import METHODS, apply_per_tensor, check_tensors, compute_dtype

NS_T = Hyper(
    "t",
    "float",
    1e-4,
    0.0,
    0.05,
    1e-4,
    help="distance |a − b| up to which the second model's value is taken",
)
MIN_DIFF = 1e-6


@METHODS.register(
    "nearswap",
    mergekit=("nearswap",),
    title="NearSwap (two models)",
    paper="https://arxiv.org/abs/2403.13257",  # mergekit (no paper of its own)
    params=(NS_T,),
    tags=("per_tensor", "two_models"),
)
def nearswap(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    t: float = 1e-4,
) -> StateDict:
    """``models[0]`` pulled to ``models[1]`` where the two are within ``t`` of each other."""
    return apply_per_tensor(nearswap_tensor, models, None, t=t)


def nearswap_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    t: float = 1e-4,
) -> Tensor:
    """NearSwap of two tensors (``base`` is ignored).

    Args:
        tensors: [a, b], two tensors of one shape; a is the model kept where they differ.
        base: unused.
        generator: unused.
        t: the distance scale, >= 0.
    """
    tensors = check_tensors(tensors, None)
    if len(tensors) != 2:
        raise ValueError(f"nearswap merges exactly 2 tensors, got {len(tensors)}")
    t = check_range("t", t, 0.0)
    dtype = compute_dtype(tensors[0])
    a, b = (x.to(dtype) for x in tensors)
    diff = b - a
    w = diff.abs().clamp_(min=MIN_DIFF).reciprocal_().mul_(t).clamp_(max=1.0)  # (·) in [0, 1]
    return diff.mul_(w).add_(a).to(tensors[0].dtype)


METHODS.attach("nearswap", tensor=nearswap_tensor)
