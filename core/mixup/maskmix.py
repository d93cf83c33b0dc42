"""MaskMix: a random subset of grid cells comes from the row's own image.

Zhao et al., "MixPro: Data Augmentation with MaskMix and Progressive Attention Labeling for
Vision Transformer", ICLR 2023, arXiv:2304.12043. The image is cut into ``grid`` x ``grid`` cells;
round(λ · cells) random cells keep the own image, the rest come from the partner; each row gets its
own cell subset. λ is the exact share of own pixels (count / cells when the grid divides the side).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_int
from .._registry import Hyper
from ._base import (
    MIXERS,
    MixResult,
    check_image_shape,
    check_images,
    check_targets,
    mask_mix,
    mix_targets,
    sample_lam,
    sample_partner,
)


@dataclass(frozen=True)
class MaskMixParams:
    """Sampled MaskMix parameters.

    Attributes:
        cells: (N, grid, grid) bool, True = the cell keeps the own image.
        partner: (N,) int64 partner index.
    """

    cells: Tensor
    partner: Tensor


def sample_maskmix(
    n: int,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = False,
    grid: int = 4,
    generator: torch.Generator,
) -> MaskMixParams:
    """Draw partners and a random cell subset per row (one λ per batch unless ``per_sample``)."""
    check_int("n", n, 1)
    check_int("grid", grid, 1, 64)
    partner = sample_partner(n, generator)
    lams = sample_lam(n, alpha=alpha, lam=lam, per_sample=per_sample, generator=generator)
    cells = grid * grid
    count = torch.round(lams.double() * cells).long()  # (N,) own cells
    order = torch.rand(n, cells, generator=generator).argsort(dim=1)  # (N, cells) random ranks
    keep = order < count.view(n, 1)  # (N, cells) exactly `count` True per row
    return MaskMixParams(cells=keep.view(n, grid, grid), partner=partner)


def cell_mask(cells: Tensor, h: int, w: int) -> Tensor:
    """(N, 1, H, W) float mask from (N, g, g) cells; pixel row r lies in cell (r g) // H."""
    g = cells.shape[-1]
    rows = (torch.arange(h) * g) // h  # (H,) cell row of each pixel row
    cols = (torch.arange(w) * g) // w  # (W,)
    return cells[:, rows][:, :, cols].float().unsqueeze(1)


def apply_maskmix(x: Tensor, y: Tensor, params: MaskMixParams) -> MixResult:
    """Own pixels in the kept cells, the partner's elsewhere; λ = the exact own-pixel share."""
    check_images("x", x)
    n, _, h, w = x.shape
    check_targets("y", y, n)
    if not isinstance(params, MaskMixParams):
        raise TypeError(f"params must be MaskMixParams, got {type(params).__name__}")
    if params.cells.ndim != 3 or params.cells.shape[0] != n:
        raise ValueError(f"params.cells must be (N={n}, g, g), got {tuple(params.cells.shape)}")
    mask = cell_mask(params.cells, h, w).to(x.device)  # (N, 1, H, W)
    partner = params.partner.to(x.device)
    lam = mask.mean(dim=(1, 2, 3)).float().cpu()
    return MixResult(
        x=mask_mix(x, mask, partner),
        y=mix_targets(y, partner, lam.to(y.device)),
        lam=lam,
        partner=params.partner,
        mask=mask,
        lam_x=lam,
    )


@MIXERS.register(
    "maskmix",
    title="MaskMix",
    paper="https://arxiv.org/abs/2304.12043",
    params=(
        Hyper("alpha", "float", 1.0, 0.05, 4.0, 0.05, help="Beta(α, α) for λ"),
        Hyper("grid", "int", 4, 2, 16, 1, help="cells per side"),
    ),
    tags=("pixel", "mask"),
)
def maskmix(
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = False,
    grid: int = 4,
    generator: torch.Generator,
) -> MixResult:
    """Patch-grid mask: a random round(λ · cells) cells keep the own image."""
    check_image_shape("x", check_images("x", x).shape)
    params = sample_maskmix(
        len(x), alpha=alpha, lam=lam, per_sample=per_sample, grid=grid, generator=generator
    )
    return apply_maskmix(x, y, params)
