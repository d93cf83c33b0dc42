"""ResizeMix: paste the whole partner image, shrunk, into a box of the own image.

Qin et al., "ResizeMix: Mixing Data with Preserved Object Information and True Labels",
arXiv:2012.11101. The side scale τ ~ U(0.1, 0.8) (official ``resizemix.alpha/beta``); the partner is
resized to (round(τ H), round(τ W)) and pasted at a random position that keeps the box whole (the
official ``getbox_new``; no clipping, so nothing is stretched). λ = 1 - box area / (H W) exactly.
A fixed ``lam`` sets τ = √(1 - λ).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_range
from .._registry import Hyper
from ._base import (
    MIXERS,
    MixResult,
    box_lam,
    box_mask,
    check_image_shape,
    check_images,
    check_targets,
    mix_targets,
    sample_partner,
)


@dataclass(frozen=True)
class ResizeMixParams:
    """Sampled ResizeMix parameters.

    Attributes:
        boxes: (N, 4) int64 (y0, y1, x0, x1) where each row receives its shrunk partner.
        partner: (N,) int64 partner index.
        mode: interpolation mode for the shrinking.
    """

    boxes: Tensor
    partner: Tensor
    mode: str = "nearest"


def sample_resizemix(
    shape: tuple[int, ...] | torch.Size,
    *,
    lam: float | None = None,
    per_sample: bool = False,
    scale: tuple[float, float] = (0.1, 0.8),
    mode: str = "nearest",
    generator: torch.Generator,
) -> ResizeMixParams:
    """Draw partners, the scale τ (per batch or per row) and a paste position per row."""
    n, _, h, w = check_image_shape("shape", shape)
    lo, hi = _check_scale(scale, ("scale[0]", "scale[1]"))
    check_choice("mode", mode, ("nearest", "bilinear", "area"))
    partner = sample_partner(n, generator)
    if lam is not None:
        check_range("lam", lam, 0.0, 1.0)
        tau = torch.full((n,), (1.0 - lam) ** 0.5, dtype=torch.float64)
    else:
        u = torch.rand(n if per_sample else 1, generator=generator, dtype=torch.float64)
        tau = (lo + (hi - lo) * u).expand(n)  # (N,) side scale
    ph = torch.round(tau * h).long().clamp(0, h)  # (N,) box height
    pw = torch.round(tau * w).long().clamp(0, w)
    pos = torch.rand(n, 2, generator=generator, dtype=torch.float64)  # (N, 2)
    y0 = torch.floor(pos[:, 0] * (h - ph + 1).double()).long()
    x0 = torch.floor(pos[:, 1] * (w - pw + 1).double()).long()
    boxes = torch.stack([y0, y0 + ph, x0, x0 + pw], dim=1)  # (N, 4)
    return ResizeMixParams(boxes=boxes, partner=partner, mode=mode)


def _check_scale(scale: tuple[float, float], names: tuple[str, str]) -> tuple[float, float]:
    """Check a (low, high) side-scale range in [0, 1]; ``names`` are the caller's arguments."""
    if not isinstance(scale, tuple | list) or len(scale) != 2:
        raise ValueError(f"scale must be a (low, high) pair, got {scale!r}")
    lo, hi = (check_range(name, s, 0.0, 1.0) for name, s in zip(names, scale, strict=True))
    if lo > hi:
        raise ValueError(
            f"{names[0]} must be <= {names[1]}, got {names[0]}={lo} and {names[1]}={hi}"
        )
    return lo, hi


def apply_resizemix(x: Tensor, y: Tensor, params: ResizeMixParams) -> MixResult:
    """Paste each row's shrunk partner into its box; λ = exact share of own pixels."""
    check_images("x", x)
    n, _, h, w = x.shape
    check_targets("y", y, n)
    if not isinstance(params, ResizeMixParams):
        raise TypeError(f"params must be ResizeMixParams, got {type(params).__name__}")
    if params.boxes.shape != (n, 4):
        raise ValueError(f"params.boxes must be ({n}, 4), got {tuple(params.boxes.shape)}")
    partner = params.partner.to(x.device)
    out = x.clone()
    sizes = (params.boxes[:, 1] - params.boxes[:, 0], params.boxes[:, 3] - params.boxes[:, 2])
    shrunk: dict[tuple[int, int], Tensor] = {}
    for i in range(n):
        y0, y1, x0, x1 = (int(v) for v in params.boxes[i])
        size = (int(sizes[0][i]), int(sizes[1][i]))
        if size[0] == 0 or size[1] == 0:
            continue
        if size not in shrunk:  # one resize of the whole partner batch per distinct size
            shrunk[size] = _resize(x.index_select(0, partner), size, params.mode)  # (N, C, h, w)
        out[i, :, y0:y1, x0:x1] = shrunk[size][i]
    mask = box_mask(params.boxes, h, w).to(x.device)  # (N, 1, H, W)
    lam = box_lam(params.boxes, h, w)
    return MixResult(
        x=out,
        y=mix_targets(y, partner, lam.to(y.device)),
        lam=lam,
        partner=params.partner,
        mask=mask,
        lam_x=lam,
        info={"boxes": params.boxes},
    )


def _resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


@MIXERS.register(
    "resizemix",
    title="ResizeMix",
    paper="https://arxiv.org/abs/2012.11101",
    params=(
        Hyper("scale_low", "float", 0.1, 0.0, 1.0, 0.05, help="smallest side scale τ"),
        Hyper("scale_high", "float", 0.8, 0.0, 1.0, 0.05, help="largest side scale τ"),
        Hyper(
            "mode",
            "choice",
            "nearest",
            choices=("nearest", "bilinear", "area"),
            help="how the partner is shrunk",
        ),
    ),
    tags=("pixel", "mask", "resized"),
)
def resizemix(
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = False,
    scale_low: float = 0.1,
    scale_high: float = 0.8,
    mode: str = "nearest",
    generator: torch.Generator,
) -> MixResult:
    """Shrunk partner pasted into the own image; ``alpha`` is unused (τ is uniform)."""
    check_image_shape("x", check_images("x", x).shape)
    _check_scale((scale_low, scale_high), ("scale_low", "scale_high"))
    params = sample_resizemix(
        x.shape,
        lam=lam,
        per_sample=per_sample,
        scale=(scale_low, scale_high),
        mode=mode,
        generator=generator,
    )
    return apply_resizemix(x, y, params)
