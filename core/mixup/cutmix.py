"""CutMix: paste a box from the partner image; λ corrected to the box area after clipping.

Yun, Han, Oh, Chun, Choe, Yoo, "CutMix: Regularization Strategy to Train Strong Classifiers
with Localizable Features", ICCV 2019, arXiv:1905.04899. λ ~ Beta(α, α); the box has sides
⌊H √(1-λ)⌋, ⌊W √(1-λ)⌋ around a uniform centre and is clipped to the image; the label weight is
then the exact share of own pixels, 1 - box area / (H W) (clovaai "true lambda").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._registry import Hyper
from ..kernels import LOCK
from ._base import (
    MIXERS,
    LazyMask,
    MixResult,
    box_lam,
    box_mask,
    check_image_shape,
    check_images,
    check_targets,
    fused_ok,
    mix_targets,
    sample_lam,
    sample_partner,
)


@dataclass(frozen=True)
class CutMixParams:
    """Sampled CutMix parameters.

    Attributes:
        boxes: (N, 4) int64 (y0, y1, x0, x1) of the pasted box per row, already clipped; in
            batch mode all rows hold the same box.
        partner: (N,) int64 partner index.
        shared_box: True when one box serves the whole batch (fast slice copy).
    """

    boxes: Tensor
    partner: Tensor
    shared_box: bool


def sample_boxes(
    lam: Tensor, h: int, w: int, *, inside: bool, generator: torch.Generator
) -> Tensor:
    """(M, 4) int64 boxes with side ratio √(1-λ) for each λ in ``lam`` (M,).

    ``inside=False`` (the reference geometry): uniform centre, corners centre ± side // 2,
    clipped. ``inside=True``: the whole box lies inside the image (no clipping), so the area
    follows λ up to rounding.
    """
    m = lam.shape[0]
    ratio = torch.sqrt(1.0 - lam.double())  # (M,)
    cut_h = torch.floor(h * ratio).long()  # (M,)
    cut_w = torch.floor(w * ratio).long()
    if inside:
        u = torch.rand(m, 2, generator=generator, dtype=torch.float64)  # (M, 2)
        y0 = torch.floor(u[:, 0] * (h - cut_h + 1).double()).long()
        x0 = torch.floor(u[:, 1] * (w - cut_w + 1).double()).long()
        return torch.stack([y0, y0 + cut_h, x0, x0 + cut_w], dim=1)
    cy = torch.randint(0, h, (m,), generator=generator)
    cx = torch.randint(0, w, (m,), generator=generator)
    return clipped_boxes(cy, cx, lam, h, w)


def clipped_boxes(cy: Tensor, cx: Tensor, lam: Tensor, h: int, w: int) -> Tensor:
    """(M, 4) int64 boxes of sides ⌊H √(1-λ)⌋, ⌊W √(1-λ)⌋ centred at (cy, cx), clipped."""
    ratio = torch.sqrt(1.0 - lam.double())  # (M,)
    cut_h, cut_w = torch.floor(h * ratio).long(), torch.floor(w * ratio).long()
    y0 = (cy - cut_h // 2).clamp(0, h)
    y1 = (cy + cut_h // 2).clamp(0, h)
    x0 = (cx - cut_w // 2).clamp(0, w)
    x1 = (cx + cut_w // 2).clamp(0, w)
    return torch.stack([y0, y1, x0, x1], dim=1)


def sample_cutmix(
    shape: tuple[int, ...] | torch.Size,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = False,
    inside: bool = False,
    generator: torch.Generator,
) -> CutMixParams:
    """Draw partners and boxes for a batch of ``shape`` (N, C, H, W)."""
    n, _, h, w = check_image_shape("shape", shape)
    partner = sample_partner(n, generator)
    lams = sample_lam(
        n if per_sample else 1, alpha=alpha, lam=lam, per_sample=per_sample, generator=generator
    )
    boxes = sample_boxes(lams, h, w, inside=inside, generator=generator)  # (N or 1, 4)
    return CutMixParams(
        boxes=boxes.expand(n, 4).clone(), partner=partner, shared_box=not per_sample
    )


def apply_cutmix(x: Tensor, y: Tensor, params: CutMixParams) -> MixResult:
    """Paste each row's box from its partner; targets weighted by the exact pixel shares.

    The mask of the result is built only when it is read (galleries, the per-row gate): the
    output is written without it.
    """
    check_images("x", x)
    n, _, h, w = x.shape
    check_targets("y", y, n)
    if not isinstance(params, CutMixParams):
        raise TypeError(f"params must be CutMixParams, got {type(params).__name__}")
    if params.boxes.shape != (n, 4) or params.partner.shape != (n,):
        raise ValueError(
            f"params must hold boxes (N, 4) and partner (N,) for N={n}, "
            f"got {tuple(params.boxes.shape)} and {tuple(params.partner.shape)}"
        )
    if params.shared_box and not bool((params.boxes == params.boxes[:1]).all()):
        raise ValueError(
            f"params.boxes must hold one box in every row when shared_box is True, "
            f"got {params.boxes.unique(dim=0).shape[0]} different boxes"
        )
    partner = params.partner.to(x.device)
    out = _paste_boxes(x, params.boxes, params.partner, shared=params.shared_box)
    boxes, device = params.boxes, x.device
    if params.shared_box:
        mask = LazyMask(lambda: box_mask(boxes[:1], h, w).to(device).expand(n, 1, h, w))
    else:
        mask = LazyMask(lambda: box_mask(boxes, h, w).to(device))  # (N, 1, H, W)
    lam = box_lam(params.boxes, h, w)  # (N,) exact own-pixel share
    return MixResult(
        x=out,
        y=mix_targets(y, partner, lam.to(y.device)),
        lam=lam,
        partner=params.partner,
        mask=mask,
        lam_x=lam,
        info={"boxes": params.boxes},
    )


def _paste_boxes(x: Tensor, boxes: Tensor, partner: Tensor, *, shared: bool) -> Tensor:
    """(N, C, H, W) ``x`` with each row's box (y0, y1, x0, x1) taken from its partner (``boxes``
    and ``partner`` on the CPU).

    On the CPU (contiguous float32/float64, numba present) one numba kernel writes every output
    pixel once, from the row or from its partner inside the box (about 1.1 plain copies).
    Otherwise a copy of the batch, then the boxes copied in place from the partners' rows: no
    gathered partner batch and no mask. One box for the whole batch (``shared``) is one ``index_select``
    into the box view; boxes per row are one small slice copy each.
    """
    if fused_ok(x):
        from ..kernels._mixup_nb import paste_rows

        out = torch.empty_like(x)
        arrays = (x.numpy(), partner.numpy(), boxes.to(torch.int64).numpy(), out.numpy())
        with LOCK:
            paste_rows(*arrays)  # one pass: each output pixel written once
        return out
    out = x.clone()
    if shared:
        y0, y1, x0, x1 = boxes[0].tolist()
        if y1 > y0 and x1 > x0:
            src, dst = x[:, :, y0:y1, x0:x1], out[:, :, y0:y1, x0:x1]
            if dst.device.type == "cpu":
                torch.index_select(src, 0, partner, out=dst)  # writes through the view
            else:
                dst.copy_(src.index_select(0, partner.to(x.device)))
        return out
    for i, (j, (y0, y1, x0, x1)) in enumerate(zip(partner.tolist(), boxes.tolist(), strict=True)):
        if i != j and y1 > y0 and x1 > x0:
            out[i, :, y0:y1, x0:x1] = x[j, :, y0:y1, x0:x1]
    return out


@MIXERS.register(
    "cutmix",
    title="CutMix",
    paper="https://arxiv.org/abs/1905.04899",
    params=(
        Hyper("alpha", "float", 1.0, 0.05, 4.0, 0.05, help="Beta(α, α) for λ"),
        Hyper("inside", "bool", False, help="keep the box inside the image instead of clipping"),
    ),
    tags=("pixel", "mask"),
)
def cutmix(
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = False,
    inside: bool = False,
    generator: torch.Generator,
) -> MixResult:
    """Paste a box from the partner; λ = exact share of own pixels after clipping."""
    check_image_shape("x", check_images("x", x).shape)
    params = sample_cutmix(
        x.shape, alpha=alpha, lam=lam, per_sample=per_sample, inside=inside, generator=generator
    )
    return apply_cutmix(x, y, params)
