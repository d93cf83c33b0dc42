"""The mixup family: one file per mixer (``sample_<name>`` + ``apply_<name>``), one registry.

``mix(name, x, y, ...)`` runs a registered mixer on a batch and returns a :class:`MixResult`
with mixed inputs, soft targets, λ per row, partner indices and the mask where there is one.
``mix_fn(name, ...)`` adapts a mixer to :func:`core.train.train`'s ``mix_fn(x, y, generator)``.

Conventions (see ``_base.py``): pairing is a random permutation from the caller's generator;
λ is the exact share of each row's own input (the mask mean for mask-based mixers) and weights
the row's own label; inputs are never modified; the probability gate ``prob`` is applied once,
here, per batch or per row.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_int, check_range, check_tensor
from ._base import MIXERS, MixResult, check_targets, mix_targets, sample_partner
from .cutmix import CutMixParams, apply_cutmix, cutmix, sample_cutmix
from .fmix import FMixParams, apply_fmix, fmix, fmix_masks, sample_fmix
from .manifold_mixup import (
    HiddenMix,
    ManifoldMixupParams,
    apply_manifold_mixup,
    manifold_mixup,
    mix_layers,
    sample_manifold_mixup,
)
from .maskmix import MaskMixParams, apply_maskmix, maskmix, sample_maskmix
from .mixup import MixupParams, apply_mixup, mixup, sample_mixup
from .resizemix import ResizeMixParams, apply_resizemix, resizemix, sample_resizemix
from .saliencymix import (
    SaliencyMixParams,
    apply_saliencymix,
    contrast_saliency,
    input_saliency,
    saliencymix,
    sample_saliencymix,
)

__all__ = [
    "MIXERS",
    "CutMixParams",
    "FMixParams",
    "HiddenMix",
    "ManifoldMixupParams",
    "MaskMixParams",
    "MixResult",
    "MixupParams",
    "ResizeMixParams",
    "SaliencyMixParams",
    "apply_cutmix",
    "apply_fmix",
    "apply_manifold_mixup",
    "apply_maskmix",
    "apply_mixup",
    "apply_resizemix",
    "apply_saliencymix",
    "contrast_saliency",
    "cutmix",
    "fmix",
    "fmix_masks",
    "input_saliency",
    "manifold_mixup",
    "maskmix",
    "mix",
    "mix_fn",
    "mix_layers",
    "mixup",
    "resizemix",
    "saliencymix",
    "sample_cutmix",
    "sample_fmix",
    "sample_manifold_mixup",
    "sample_maskmix",
    "sample_mixup",
    "sample_resizemix",
    "sample_saliencymix",
    "to_soft_targets",
]


def to_soft_targets(
    y: Tensor, n_classes: int | None = None, *, label_smoothing: float = 0.0
) -> Tensor:
    """(N,) class indices or (N, C) soft targets -> (N, C) float32 soft targets.

    Args:
        y: class indices (int) or rows that sum to 1 (float).
        n_classes: C, needed for indices (default: ``y.max() + 1``).
        label_smoothing: s; each row becomes (1 - s) y + s / C (timm's on/off values).
    """
    check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
    if y.ndim == 1 and not y.is_floating_point():
        c = int(y.max()) + 1 if n_classes is None else check_int("n_classes", n_classes, 1)
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= c):
            raise ValueError(
                f"y must hold class indices in [0, {c}), got range [{int(y.min())}, {int(y.max())}]"
            )
        soft = F.one_hot(y.long(), c).float()  # (N, C)
    elif y.ndim == 2 and y.is_floating_point():
        if n_classes is not None and y.shape[1] != n_classes:
            raise ValueError(f"y must have n_classes={n_classes} columns, got {y.shape[1]}")
        soft = check_targets("y", y).float()
    else:
        raise ValueError(
            f"y must be (N,) integer labels or (N, C) float soft targets, "
            f"got shape {tuple(y.shape)} dtype {y.dtype}"
        )
    if label_smoothing:
        soft = soft * (1.0 - label_smoothing) + label_smoothing / soft.shape[1]
    return soft


def mix(
    name: str,
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    generator: torch.Generator,
    n_classes: int | None = None,
    per_sample: bool = False,
    prob: float = 1.0,
    gate: str = "batch",
    lam_y: float | None = None,
    label_smoothing: float = 0.0,
    **hyper: Any,
) -> MixResult:
    """Mix a batch with the registered mixer ``name``.

    Args:
        name: a key of :data:`MIXERS` ("mixup", "cutmix", ...).
        x: (N, C, H, W) float inputs ((N, D) for mixup and manifold_mixup); not modified.
        y: (N,) class indices or (N, C) soft targets.
        alpha: λ ~ Beta(α, α) when ``lam`` is None.
        lam: fixed λ in [0, 1] (mask-based mixers then report the realised pixel share).
        generator: the only source of randomness.
        n_classes: C for integer labels (default ``y.max() + 1``; pass it in training).
        per_sample: one λ (and box / mask) per row instead of one per batch.
        prob: probability of mixing, applied once: per batch (``gate="batch"``) or per row
            (``gate="elem"``; rows left alone keep λ = 1 exactly).
        lam_y: a separate label λ (Zou et al. 2023): targets become
            ``lam_y * y_a + (1 - lam_y) * y_b`` whatever the input mix; ``lam_x`` keeps the
            input share.
        label_smoothing: smoothing of the one-hot targets before mixing.
        **hyper: the mixer's own hyperparameters (``MIXERS[name].params``), e.g. ``model=``.

    Returns:
        The :class:`MixResult`.
    """
    entry = MIXERS[name]
    check_tensor("x", x, ndim=(2, 3, 4), floating=True, min_len=1)
    n = x.shape[0]
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    check_range("prob", prob, 0.0, 1.0)
    check_choice("gate", gate, ("batch", "elem"))
    if lam is None:
        check_range("alpha", alpha, 0.0, None, low_inclusive=False)
    if lam_y is not None:
        check_range("lam_y", lam_y, 0.0, 1.0)
    standard = {"x", "y", "alpha", "lam", "per_sample", "generator"}
    known = set(inspect.signature(entry.fn).parameters) - standard
    unknown = sorted(set(hyper) - known)
    if unknown:
        raise TypeError(
            f"{name} got unexpected hyperparameters {unknown}; expected {sorted(known)}"
        )
    soft = to_soft_targets(y, n_classes, label_smoothing=label_smoothing).to(x.device)
    if len(soft) != n:
        raise ValueError(f"x and y must have the same length, got {n} and {len(soft)}")
    if prob < 1.0 and gate == "batch":
        if float(torch.rand((), generator=generator)) >= prob:
            return _identity(x, soft)
    keep = torch.rand(n, generator=generator) < prob if gate == "elem" and prob < 1.0 else None
    result = entry.fn(
        x, soft, alpha=alpha, lam=lam, per_sample=per_sample, generator=generator, **hyper
    )
    lam_x = result.lam_x if result.lam_x is not None else result.lam
    if keep is not None:
        result = _gate_rows(result, x, soft, keep)
        lam_x = result.lam_x if result.lam_x is not None else result.lam
    if lam_y is not None:
        ly = torch.where(
            result.mixed if result.mixed is not None else torch.ones(n, dtype=torch.bool),
            torch.full((n,), float(lam_y)),
            torch.ones(n),
        )
        result = result.with_(
            y=mix_targets(soft, result.partner.to(soft.device), ly.to(soft.device)), lam=ly
        )
    if result.mixed is None:
        result = result.with_(mixed=torch.ones(n, dtype=torch.bool))
    return result.with_(lam_x=lam_x)


def _identity(x: Tensor, soft: Tensor) -> MixResult:
    """The result of a batch the gate left alone: inputs (copied), own labels, λ = 1."""
    n = x.shape[0]
    return MixResult(
        x=x.clone(),
        y=soft,
        lam=torch.ones(n),
        partner=torch.arange(n),
        lam_x=torch.ones(n),
        mixed=torch.zeros(n, dtype=torch.bool),
    )


def _gate_rows(result: MixResult, x: Tensor, soft: Tensor, keep: Tensor) -> MixResult:
    """Rows outside ``keep`` get back their own input and label with λ = 1 exactly."""
    n = x.shape[0]
    k = keep.to(x.device)
    hidden = result.info.get("hidden")
    if hidden is not None:  # manifold mixup mixes inside the model: restrict it there
        hidden.restrict(k)
        out_x = result.x
    else:
        out_x = torch.where(k.view(n, *([1] * (x.ndim - 1))), result.x, x)
    lam = torch.where(keep, result.lam, torch.ones(n))
    lam_x = torch.where(
        keep, result.lam_x if result.lam_x is not None else result.lam, torch.ones(n)
    )
    y = torch.where(k.view(n, 1), result.y, soft)
    mask = result.mask
    if mask is not None:
        mask = torch.where(k.view(n, 1, 1, 1), mask, torch.ones((), dtype=mask.dtype))
    return result.with_(x=out_x, y=y, lam=lam, lam_x=lam_x, mask=mask, mixed=keep.clone())


def mix_fn(
    name: str, **kw: Any
) -> Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]:
    """A ``mix_fn(x, y, generator) -> (x_mixed, y_soft)`` for :func:`core.train.train`.

    Args:
        name: a registered mixer.
        **kw: keyword arguments of :func:`mix` (``alpha``, ``n_classes``, ``prob``, hyperparameters;
            ``model=`` for manifold_mixup and saliencymix). Pass ``n_classes`` so that targets have
            the model's width even when a batch lacks the last class.
    """
    MIXERS[name]  # validates the name now, not at the first batch
    if "generator" in kw:
        raise TypeError("mix_fn takes no generator: core.train passes its own to every call")

    def fn(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        res = mix(name, x, y, generator=generator, **kw)
        return res.x, res.y

    fn.__name__ = f"mix_fn_{name}"
    return fn


_ = sample_partner  # re-exported for callers that pair batches themselves
