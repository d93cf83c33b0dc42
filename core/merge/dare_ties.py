"""DARE followed by TIES (the DARE paper's "DARE + TIES-Merging").

Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a
Free Lunch", ICML 2024, arXiv:2311.03099 (TIES: arXiv:2306.01708).

As in the reference code (MergeLM): drop-and-rescale every τᵢ (rate p, factor 1/(1−p)), then
the full TIES — trim to the top ``density`` magnitudes, elect signs, disjoint merge, scale.
``density=1`` skips the trim, which is what mergekit's and PEFT's ``dare_ties`` do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_range
from ..params import StateDict
from ._base import METHODS, TENSOR_METHODS, check_tensors, check_weights
from ._blocks import dare_kernel, magnitude_threshold, ties_kernel
from .dare import DROP
from .ties import DENSITY, DISJOINT, TIES_SCALE, TRIM, WEIGHTS, check_ties_args, ties


@METHODS.register(
    "dare_ties",
    title="DARE + TIES",
    paper="https://arxiv.org/abs/2311.03099",
    params=(DROP, DENSITY, TIES_SCALE, TRIM, DISJOINT, WEIGHTS),
    tags=("needs_base", "per_tensor"),
)
def dare_ties(
    models: Sequence[StateDict],
    *,
    base: StateDict | None = None,
    generator: torch.Generator | None = None,
    drop: float = 0.5,
    density: float = 0.2,
    scale: float = 1.0,
    trim: str = "global",
    disjoint: str = "mean",
    weights: Sequence[float] | None = None,
) -> StateDict:
    """DARE every task vector (seeded), then TIES over the dropped vectors."""
    check_range("drop", drop, 0.0, 1.0, high_inclusive=False)
    check_ties_args(density, scale, trim, disjoint)
    if density >= 1.0:
        out: StateDict = {}
        for k, v in models[0].items():
            if v.is_floating_point():
                out[k] = dare_ties_tensor(
                    [m[k] for m in models],
                    None if base is None else base[k],
                    generator=generator,
                    drop=drop,
                    density=1.0,
                    scale=scale,
                    disjoint=disjoint,
                    weights=weights,
                )
        return out
    dropped = [_dare_task_vector(m, base, drop, generator) for m in models]
    merged_tv = ties(
        dropped,
        base=None,
        density=density,
        scale=scale,
        trim=trim,
        disjoint=disjoint,
        weights=weights,
    )
    return {k: tv if base is None else base[k] + tv for k, tv in merged_tv.items()}


def dare_ties_tensor(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    *,
    generator: torch.Generator | None = None,
    drop: float = 0.5,
    density: float = 0.2,
    scale: float = 1.0,
    trim: str = "tensor",
    disjoint: str = "mean",
    weights: Sequence[float] | None = None,
) -> Tensor:
    """DARE + TIES of one tensor (per-tensor trim; density 1 skips the trim).

    Args:
        tensors: N fine-tuned tensors (task vectors when ``base`` is None).
        base: θ₀ or None (zero).
        generator: seeds the drops.
        drop: p in [0, 1).
        density: fraction of the dropped |τ| kept, in (0, 1].
        scale: λ.
        trim: must be "tensor" here (a global trim needs the whole model: use :func:`dare_ties`).
        disjoint: "mean" or "sum".
        weights: N finite weights applied after the election.
    """
    tensors = check_tensors(tensors, base)
    drop = check_range("drop", drop, 0.0, 1.0, high_inclusive=False)
    if density < 1.0 and trim != "tensor":
        raise ValueError(f"dare_ties_tensor trims per tensor: trim must be 'tensor', got {trim!r}")
    check_ties_args(density, scale, "tensor", disjoint)
    w = check_weights(weights, len(tensors))
    n = len(tensors)
    if density >= 1.0:
        out = ties_kernel(
            tensors,
            base,
            [0.0] * n,
            scale=scale,
            weights=w,
            disjoint=disjoint,
            drop=drop,
            generator=generator,
        )
        return out.to(tensors[0].dtype)
    dropped = [dare_kernel([t], base, [1.0], drop=drop, generator=generator) for t in tensors]
    thr = [magnitude_threshold([d], None, density) for d in dropped]
    out = ties_kernel(dropped, None, thr, scale=scale, weights=w, disjoint=disjoint)
    return (out if base is None else base + out).to(tensors[0].dtype)


def _dare_task_vector(
    model: StateDict, base: StateDict | None, drop: float, generator: torch.Generator | None
) -> StateDict:
    """DARE(θ − θ₀) for every floating tensor of one model (the task vector alone: the
    kernel would add θ₀ back, and TIES must trim and elect on τ, not on θ₀ + τ)."""
    return {
        k: dare_kernel(
            [v if base is None else v - base[k]], None, [1.0], drop=drop, generator=generator
        )
        for k, v in model.items()
        if v.is_floating_point()
    }


TENSOR_METHODS["dare_ties"] = dare_ties_tensor
