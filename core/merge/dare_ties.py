"""DARE followed by TIES (the DARE paper's "DARE + TIES-Merging").

Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a
Free Lunch", ICML 2024, arXiv:2311.03099 (TIES: arXiv:2306.01708).

As in the reference code (MergeLM): drop-and-rescale every τᵢ = θᵢ − θ₀ (rate p, factor
1/(1−p)), then the full TIES on the dropped task vectors — trim to the top ``density``
magnitudes, elect signs, disjoint merge, scale — and add θ₀ once:
θ = θ₀ + λ · TIES(DARE(τ₁), …, DARE(τ_N)). ``drop=0`` is TIES exactly. ``density=1`` skips the
trim, which is what mergekit's and PEFT's ``dare_ties`` do (their ``density`` is our 1 − p).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._checks import check_range
from ..params import StateDict
from ._base import METHODS, check_tensors, check_weights, compute_dtype
from ._blocks import dare_kernel, tensor_thresholds, ties_kernel
from .dare import DROP
from .ties import DENSITY, DISJOINT, TIES_SCALE, TRIM, WEIGHTS, check_ties_args, ties_thresholds


@METHODS.register(
    "dare_ties",
    mergekit=("dare_ties",),
    title="DARE + TIES",
    paper="https://arxiv.org/abs/2311.03099",
    params=(DROP, DENSITY, TIES_SCALE, TRIM, DISJOINT, WEIGHTS),
    tags=("needs_base", "per_tensor", "scale_linear"),
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
    """θ₀ + λ · TIES(DARE(τ₁), …, DARE(τ_N)): drop every task vector (seeded: model order,
    then key order), trim the dropped vectors, elect, disjoint merge.

    ``drop=0`` gives :func:`core.merge.ties.ties` with the same arguments exactly. Below
    density 1 the dropped task vectors are held in memory (N x the model in the compute dtype:
    the trim needs them all); density 1 runs one fused pass per tensor instead.
    """
    check_range("drop", drop, 0.0, 1.0, high_inclusive=False)
    check_ties_args(density, scale, trim, disjoint)
    keys = [k for k, v in models[0].items() if v.is_floating_point()]
    bases = {k: None if base is None else base[k] for k in keys}
    if density >= 1.0:
        return {
            k: dare_ties_tensor(
                [m[k] for m in models],
                bases[k],
                generator=generator,
                drop=drop,
                density=1.0,
                scale=scale,
                disjoint=disjoint,
                weights=weights,
            )
            for k in keys
        }
    w = check_weights(weights, len(models))
    dropped = [{k: dare_delta(m[k], bases[k], drop, generator) for k in keys} for m in models]
    thresholds = ties_thresholds(dropped, None, density=density) if trim == "global" else None
    out: StateDict = {}
    for k in keys:
        taus = [d[k] for d in dropped]  # N x (...) DARE(τᵢ) of this key
        thr = thresholds or tensor_thresholds(taus, None, [density] * len(taus))
        dt = models[0][k].dtype
        kw: dict[str, Any] = {
            "scale": scale,
            "weights": w,
            "disjoint": disjoint,
            "deltas": True,
            "out_dtype": dt,
        }
        out[k] = ties_kernel(taus, bases[k], thr, **kw)
    return out


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
    if density >= 1.0:  # no trim: the drops happen inside the one fused TIES pass
        out = ties_kernel(
            tensors,
            base,
            [0.0] * n,
            scale=scale,
            weights=w,
            disjoint=disjoint,
            drop=drop,
            generator=generator,
            out_dtype=tensors[0].dtype,
        )
        return out
    taus = [dare_delta(t, base, drop, generator) for t in tensors]  # N x (...) DARE(τᵢ)
    thr = tensor_thresholds(taus, None, [density] * n)
    kw: dict[str, Any] = {"scale": scale, "weights": w, "disjoint": disjoint, "deltas": True}
    return ties_kernel(taus, base, thr, out_dtype=tensors[0].dtype, **kw)


def dare_delta(
    t: Tensor, base: Tensor | None, drop: float, generator: torch.Generator | None
) -> Tensor:
    """DARE(t − θ₀): the dropped and rescaled task vector in the compute dtype (a new tensor;
    ``drop`` quantising to 0 gives τ exactly)."""
    dtype = compute_dtype(t)
    tau = t.to(dtype, copy=True) if base is None else t.to(dtype) - base.to(dtype)
    return dare_kernel([tau], None, [1.0], drop=drop, generator=generator)


METHODS.attach("dare_ties", tensor=dare_ties_tensor)
