"""SaliencyMix: a CutMix box centred on the most salient point of the partner image.

Uddin, Monira, Shin, Chung, Bae, "SaliencyMix: A Saliency Guided Data Augmentation Strategy for
Better Regularization", ICLR 2021, arXiv:2006.01791. The reference uses OpenCV's static saliency of
one image for the whole batch; here the saliency is the input-gradient magnitude of a (zoo) model,
|∂ CE / ∂x| averaged over channels and smoothed by a 3x3 mean, per row, so each row's box sits on
its own partner's peak. Without a model a model-free local-contrast map |x - blur(x)| is used.
The box is clipped at the border and λ corrected to the exact own-pixel share, as in CutMix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_int, check_tensor
from .._registry import Hyper
from ._base import MIXERS, MixResult, check_images, sample_lam, sample_partner
from .cutmix import CutMixParams, apply_cutmix, clipped_boxes


@dataclass(frozen=True)
class SaliencyMixParams:
    """Sampled SaliencyMix parameters: the CutMix boxes placed on the saliency peaks."""

    boxes: Tensor  # (N, 4) int64 (y0, y1, x0, x1)
    partner: Tensor  # (N,) int64


def input_saliency(model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
    """(N, H, W) saliency: |∂ CE(model(x), y) / ∂x| averaged over channels, 3x3-smoothed.

    The model runs in eval mode (BatchNorm statistics untouched) and its parameters get no
    gradients; its train/eval mode is restored. ``y`` defaults to the model's own predictions.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_images("x", x)
    was_training = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        xi = x.detach().to(dev).requires_grad_(True)
        with torch.enable_grad():
            logits = model(xi)
            target = logits.argmax(1) if y is None else y.to(dev)
            if target.ndim == 2:  # soft targets
                loss = -(target * F.log_softmax(logits, 1)).sum()
            else:
                loss = F.cross_entropy(logits, target, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xi)
    finally:
        model.train(was_training)
    sal = grad.abs().mean(dim=1, keepdim=True)  # (N, 1, H, W)
    return F.avg_pool2d(sal, 3, stride=1, padding=1, count_include_pad=False)[:, 0].to(x.device)


def contrast_saliency(x: Tensor) -> Tensor:
    """(N, H, W) model-free saliency: |x - 5x5 mean of x| averaged over channels."""
    check_images("x", x)
    blur = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    return (x - blur).abs().mean(dim=1)


def sample_saliencymix(
    saliency: Tensor,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = False,
    generator: torch.Generator,
) -> SaliencyMixParams:
    """Draw partners and λ; put each row's box (sides ⌊H √(1-λ)⌋) on its partner's peak.

    Args:
        saliency: (N, H, W) saliency of every image in the batch.
    """
    check_tensor("saliency", saliency, ndim=3, floating=True, min_len=1)
    n, h, w = saliency.shape
    check_int("n", n, 1)
    partner = sample_partner(n, generator)
    lams = sample_lam(n, alpha=alpha, lam=lam, per_sample=per_sample, generator=generator)
    peak = saliency.index_select(0, partner.to(saliency.device)).reshape(n, -1).argmax(1).cpu()
    cy, cx = peak // w, peak % w  # (N,) partner's most salient pixel
    boxes = clipped_boxes(cy, cx, lams, h, w)  # (N, 4)
    return SaliencyMixParams(boxes=boxes, partner=partner)


def apply_saliencymix(x: Tensor, y: Tensor, params: SaliencyMixParams) -> MixResult:
    """Paste each box from the partner (same pixel rule and exact λ as CutMix)."""
    if not isinstance(params, SaliencyMixParams):
        raise TypeError(f"params must be SaliencyMixParams, got {type(params).__name__}")
    res = apply_cutmix(x, y, CutMixParams(params.boxes, params.partner, shared_box=False))
    return res


@MIXERS.register(
    "saliencymix",
    title="SaliencyMix",
    paper="https://arxiv.org/abs/2006.01791",
    params=(Hyper("alpha", "float", 1.0, 0.05, 4.0, 0.05, help="Beta(α, α) for λ"),),
    tags=("pixel", "mask", "saliency"),
)
def saliencymix(
    x: Tensor,
    y: Tensor,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = False,
    model: nn.Module | None = None,
    saliency: Tensor | None = None,
    generator: torch.Generator,
) -> MixResult:
    """CutMix box on the partner's saliency peak (from ``model``'s input gradients if given)."""
    check_images("x", x)
    if saliency is None:
        saliency = input_saliency(model, x, y) if model is not None else contrast_saliency(x)
    elif saliency.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(
            f"saliency must be (N, H, W) = {(x.shape[0], *x.shape[2:])}, "
            f"got {tuple(saliency.shape)}"
        )
    params = sample_saliencymix(
        saliency, alpha=alpha, lam=lam, per_sample=per_sample, generator=generator
    )
    res = apply_saliencymix(x, y, params)
    return res.with_(info={**res.info, "saliency": saliency.detach()})
