"""Losses for mixed samples: soft-target cross-entropy, the two-label mixup loss, label
smoothing, targets with a separate label λ, and the Decoupled Mixup loss.

* Soft-target CE, -Σ_c ŷ_c log softmax(z)_c, equals λ CE(y_a) + (1 - λ) CE(y_b) on a mixed
  target (timm issue #46); both are here and a test checks that they agree.
* Separate λ for inputs and labels (Zou et al., "The Benefits of Mixup for Feature Learning",
  ICML 2023, arXiv:2303.08433): :func:`mixed_targets` builds targets with any λ_y.
* Decoupled Mixup (Liu et al., "Harnessing Hard Mixed Samples with Decoupled Regularizer",
  NeurIPS 2023, arXiv:2203.10761): mixup CE plus η-weighted terms, one per mixed class, each a
  cross-entropy over that class and the classes outside the mix (the competing mixed class is
  removed from the softmax). Unlike OpenMixup, λ is read per row, not from row 0, so per-sample λ
  works; rows that are not mixed (same class, or λ ∈ {0, 1}) get no extra term.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_range, check_tensor


def smooth_targets(target: Tensor, label_smoothing: float) -> Tensor:
    """(N, C) soft targets smoothed towards uniform: (1 - s) y + s / C (rows still sum to 1)."""
    check_tensor("target", target, ndim=2, floating=True)
    check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)
    return target * (1.0 - label_smoothing) + label_smoothing / target.shape[1]


def soft_target_cross_entropy(
    logits: Tensor, target: Tensor, *, label_smoothing: float = 0.0, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy against soft targets.

    Args:
        logits: (N, C) unnormalised scores.
        target: (N, C) rows that sum to 1 (e.g. :attr:`MixResult.y`).
        label_smoothing: smoothing applied to ``target`` first.
        reduction: "mean", "sum" or "none" ((N,) per-row losses).
    """
    _check_logits(logits)
    check_tensor("target", target, ndim=2, floating=True)
    if target.shape != logits.shape:
        raise ValueError(
            f"target must have the logits' shape {tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    if label_smoothing:
        target = smooth_targets(target, label_smoothing)
    per_row = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)  # (N,)
    return _reduce(per_row, reduction)


def mixup_cross_entropy(
    logits: Tensor, y_a: Tensor, y_b: Tensor, lam: Tensor | float, *, reduction: str = "mean"
) -> Tensor:
    """λ CE(logits, y_a) + (1 - λ) CE(logits, y_b) with class indices and λ per row or scalar."""
    _check_logits(logits)
    n = logits.shape[0]
    lam_t = _lam_rows(lam, n, logits)
    _check_labels("y_a", y_a, n)
    _check_labels("y_b", y_b, n)
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    ce_a = F.cross_entropy(logits, y_a, reduction="none")
    ce_b = F.cross_entropy(logits, y_b, reduction="none")
    return _reduce(lam_t * ce_a + (1 - lam_t) * ce_b, reduction)


def mixed_targets(
    y_a: Tensor,
    y_b: Tensor,
    lam_y: Tensor | float,
    n_classes: int,
    *,
    label_smoothing: float = 0.0,
) -> Tensor:
    """(N, C) targets λ_y onehot(y_a) + (1 - λ_y) onehot(y_b), smoothed, for any label λ_y.

    With λ_y different from the input's λ_x this is the "separate λ for features and labels"
    variant of Zou et al. (2023).
    """
    n = y_a.shape[0] if isinstance(y_a, Tensor) else 0
    _check_labels("y_a", y_a, n)
    _check_labels("y_b", y_b, n)
    lam_t = _lam_rows(lam_y, n, None).unsqueeze(1)  # (N, 1)
    a = F.one_hot(y_a, n_classes).float()
    b = F.one_hot(y_b, n_classes).float()
    target = lam_t * a + (1 - lam_t) * b
    return smooth_targets(target, label_smoothing) if label_smoothing else target


def decoupled_mixup_loss(
    logits: Tensor,
    y_a: Tensor,
    y_b: Tensor,
    lam: Tensor | float,
    *,
    eta: float = 0.1,
    mode: str = "both",
    power: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """Decoupled Mixup loss: mixup CE + η (g(λ) DCE_a + g(1 - λ) DCE_b), g(t) = t^power.

    DCE_i = -log[ e^{z_i} / (e^{z_i} + Σ_{c ∉ {a, b}} e^{z_c}) ] for i ∈ {a, b}.

    Args:
        logits: (N, C).
        y_a, y_b: (N,) the two mixed classes of each row.
        lam: λ per row (N,) or one float: the weight of y_a.
        eta: η ≥ 0; 0 gives the plain mixup CE.
        mode: "both" (default, shipped CIFAR config), "more" (only the dominant class) or
            "less" (only the minor class).
        power: exponent of g (OpenMixup ``lam_idx``).
        reduction: "mean", "sum" or "none".
    """
    check_range("eta", eta, 0.0, None)
    check_choice("mode", mode, ("both", "more", "less"))
    check_range("power", power, 0.0, 10.0)
    base = mixup_cross_entropy(logits, y_a, y_b, lam, reduction="none")  # (N,)
    lam_t = _lam_rows(lam, logits.shape[0], logits)
    return _reduce(base + eta * _decoupled_term(logits, y_a, y_b, lam_t, mode, power), reduction)


def decoupled_soft_target_loss(
    logits: Tensor,
    target: Tensor,
    *,
    eta: float = 0.1,
    mode: str = "both",
    power: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """The Decoupled Mixup loss read from soft targets (``core.train``'s ``loss_fn`` form).

    Soft-target CE + η (g(λ) DCE_a + g(1 - λ) DCE_b), where a and b are each row's two
    largest target classes and λ = (t_a − m) / (t_a + t_b − 2m) with m the row's smallest
    entry, so a label-smoothing floor s/C cancels: for t = (1 − s)(λ e_a + (1 − λ) e_b) + s/C
    this is the λ that was mixed. Rows with a single class above the floor get no extra term.
    On unsmoothed two-class targets it equals :func:`decoupled_mixup_loss`.

    Args:
        logits: (N, C).
        target: (N, C) soft targets (e.g. :attr:`MixResult.y`); C ≥ 2.
        eta, mode, power, reduction: as in :func:`decoupled_mixup_loss`.
    """
    check_range("eta", eta, 0.0, None)
    check_choice("mode", mode, ("both", "more", "less"))
    check_range("power", power, 0.0, 10.0)
    base = soft_target_cross_entropy(logits, target, reduction="none")  # (N,) checks shapes
    if target.shape[1] < 2:
        raise ValueError(f"target must have at least 2 classes, got shape {tuple(target.shape)}")
    top = target.topk(2, dim=1)  # values, indices (N, 2): the two mixed classes
    floor = target.min(dim=1).values  # (N,) smoothing floor (0 without smoothing)
    wa, wb = top.values[:, 0] - floor, top.values[:, 1] - floor  # (N,)
    y_a = top.indices[:, 0]
    y_b = torch.where(wb > 0, top.indices[:, 1], y_a)  # one class only: no extra term
    lam_t = (wa / (wa + wb).clamp_min(torch.finfo(wa.dtype).tiny)).clamp(0.0, 1.0).float()
    return _reduce(base + eta * _decoupled_term(logits, y_a, y_b, lam_t, mode, power), reduction)


def decoupled_loss_fn(
    *, eta: float = 0.1, mode: str = "both", power: float = 1.0
) -> Callable[[Tensor, Tensor], Tensor]:
    """``loss_fn(logits, soft_targets)`` for :func:`core.train.train`: the Decoupled Mixup loss
    (:func:`decoupled_soft_target_loss`, mean over the batch), arguments checked now."""
    check_range("eta", eta, 0.0, None)
    check_choice("mode", mode, ("both", "more", "less"))
    check_range("power", power, 0.0, 10.0)

    def loss_fn(logits: Tensor, target: Tensor) -> Tensor:
        return decoupled_soft_target_loss(logits, target, eta=eta, mode=mode, power=power)

    loss_fn.__name__ = f"decoupled_eta{eta:g}"
    return loss_fn


def _decoupled_term(
    logits: Tensor, y_a: Tensor, y_b: Tensor, lam_t: Tensor, mode: str, power: float
) -> Tensor:
    """(N,) g(λ) DCE_a + g(1 - λ) DCE_b per row; 0 on rows that are not mixed."""
    n = logits.shape[0]
    mixed = (y_a != y_b) & (lam_t > 0) & (lam_t < 1)  # (N,) rows with two distinct classes
    others = torch.ones_like(logits, dtype=torch.bool)  # (N, C) classes outside the mix
    others[torch.arange(n), y_a] = False
    others[torch.arange(n), y_b] = False
    masked = logits.masked_fill(~others, float("-inf"))  # (N, C)

    def dce(y: Tensor) -> Tensor:  # (N,) CE of class y against the classes outside the mix
        z_y = logits.gather(1, y.view(n, 1))  # (N, 1)
        return -(z_y[:, 0] - torch.logsumexp(torch.cat([z_y, masked], dim=1), dim=1))

    w_a, w_b = lam_t.pow(power), (1 - lam_t).pow(power)
    if mode == "more":
        w_a, w_b = torch.where(lam_t >= 0.5, w_a, 0.0), torch.where(lam_t < 0.5, w_b, 0.0)
    elif mode == "less":
        w_a, w_b = torch.where(lam_t < 0.5, w_a, 0.0), torch.where(lam_t >= 0.5, w_b, 0.0)
    return torch.where(mixed, w_a * dce(y_a) + w_b * dce(y_b), torch.zeros_like(lam_t))


def _reduce(per_row: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_row.mean()
    if reduction == "sum":
        return per_row.sum()
    return per_row


def _check_logits(logits: Tensor) -> None:
    check_tensor("logits", logits, ndim=2, floating=True, min_len=1)


def _check_labels(name: str, y: Tensor, n: int) -> None:
    check_tensor(name, y, ndim=1)
    if y.is_floating_point():
        raise TypeError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if y.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows, got {y.shape[0]}")


def _lam_rows(lam: Tensor | float, n: int, like: Tensor | None) -> Tensor:
    """λ as an (N,) float tensor on ``like``'s device, checked to lie in [0, 1]."""
    if isinstance(lam, Tensor):
        lam_t = lam.float().reshape(-1)
        if lam_t.numel() == 1:
            lam_t = lam_t.expand(n)
        if lam_t.shape != (n,):
            raise ValueError(f"lam must be a float or have shape ({n},), got {tuple(lam.shape)}")
    else:
        check_range("lam", lam, 0.0, 1.0)
        lam_t = torch.full((n,), float(lam))
    if bool(((lam_t < 0) | (lam_t > 1)).any()):
        raise ValueError(
            f"lam must lie in [0, 1], got range [{float(lam_t.min())}, {float(lam_t.max())}]"
        )
    return lam_t if like is None else lam_t.to(like.device)
