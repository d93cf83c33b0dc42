"""Shared blocks of the mergekit-family task-vector merges (DELLA, Breadcrumbs-TIES, SCE, RAM).

* :func:`rows` — the (R, D) row view the row-wise methods rank in: rows are the first axis.
* :func:`kth_largest` — exact k-th largest value per row, by selection (no sort).
* :func:`row_order` — the ascending order of each row.
* :func:`rank_window` — the entries whose magnitude rank lies in a window, ties by index.
* :class:`SignConsensus` — TIES-style sign election and disjoint merge over task vectors fed
  one at a time (no N-times-size stack), electing on weighted or unweighted deltas.
* :func:`l1_rescale_` — mergekit's "rescale": match the L1 norm of the unpruned tensor.

Everything stays on the inputs' device and works in :func:`compute_dtype`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice


def rows(t: Tensor) -> Tensor:
    """(R, D) view: a 0-d or 1-d tensor is one row, otherwise rows are the first axis and the
    other axes are flattened (the row of a Linear weight is one output unit)."""
    if t.ndim <= 1:
        return t.reshape(1, -1)
    return t.reshape(t.shape[0], -1)


def kth_largest(a: Tensor, k: int) -> Tensor:
    """Per row of ``a`` (R, D), the k-th largest value (1 <= k <= D), as an (R,) tensor.

    Selection, not sorting: numpy's SIMD introselect on the CPU (``np.partition``, 10-20x
    faster than ``torch.kthvalue`` on the 2-core machine), ``torch.kthvalue`` elsewhere.
    """
    r, d = a.shape
    if not 1 <= k <= d:
        raise ValueError(f"k must be in [1, {d}], got {k}")
    if _numpy_ok(a):
        part = np.partition(a.numpy(), d - k, axis=1)  # (R, D) a copy, partitioned per row
        return torch.from_numpy(np.ascontiguousarray(part[:, d - k]))
    return torch.kthvalue(a, d - k + 1, dim=1).values


def row_order(a: Tensor) -> Tensor:
    """Per row of ``a`` (R, D), the indices that sort it ascending (int64, (R, D)): numpy's
    SIMD argsort on the CPU (5x ``torch.argsort`` here), ``torch.argsort`` elsewhere."""
    if _numpy_ok(a):
        return torch.from_numpy(np.argsort(a.numpy(), axis=1))
    return torch.argsort(a, dim=1)


def _numpy_ok(a: Tensor) -> bool:
    return (
        a.device.type == "cpu"
        and a.dtype in (torch.float32, torch.float64)
        and (not a.requires_grad)
    )


def rank_window(a: Tensor, start: int, count: int) -> Tensor:
    """Mask of the entries of each row of ``a`` (R, D), magnitudes >= 0, whose rank in
    descending order lies in ``[start, start + count)``; equal values are ranked by index
    (as a stable descending sort would), so each row keeps exactly ``count`` entries.

    Two selections per row and a cumulative count over the tied entries, no sort.
    """
    r, d = a.shape
    end = min(start + count, d)
    keep = _top_ranks(a, end)
    if start > 0:
        keep &= ~_top_ranks(a, start)
    return keep


def _top_ranks(a: Tensor, k: int) -> Tensor:
    """Mask of the k largest entries of each row (ties by index)."""
    if k >= a.shape[1]:
        return torch.ones_like(a, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(a, dtype=torch.bool)
    v = kth_largest(a, k)[:, None]  # (R, 1) the k-th largest of each row
    keep = a >= v  # (R, D)
    extra = keep.sum(dim=1, keepdim=True) - k  # (R, 1) tied entries beyond the k
    if not bool((extra > 0).any()):  # the usual case: the cut value occurs once per row
        return keep
    tied = a == v  # (R, D)
    need = tied.sum(dim=1, keepdim=True) - extra  # (R, 1) tied entries to take, >= 1
    return (a > v) | (tied & (torch.cumsum(tied, dim=1) <= need))


class SignConsensus:
    """TIES-style sign election and disjoint merge over task vectors given one at a time.

    With xᵢ the quantity that votes (wᵢτᵢ for ``elect="weighted"``, mergekit's GTA; τᵢ for
    ``elect="unweighted"``, SCE) and σᵢ = sign(xᵢ), the elected sign is s = sign(Σ xᵢ) (0 counts
    as +) and an entry agrees when σᵢ = s, so [σᵢ = s] = (|σᵢ| + s σᵢ) / 2. The agreeing sum
    Σ wᵢτᵢ[σᵢ = s] and the agreeing weight Σ wᵢ[σᵢ = s] then follow from five running sums
    (Σ x, Σ wτ, Σ wτσ, Σ w|σ|, Σ wσ) without keeping the N task vectors. Entries with τᵢ = 0
    never agree (as mergekit's ``sign == majority`` mask).
    """

    def __init__(self, like: Tensor, *, elect: str = "weighted"):
        check_choice("elect", elect, ("weighted", "unweighted"))
        self.elect = elect
        z = torch.zeros_like(like)
        self.vote = z.clone() if elect == "unweighted" else None  # Σ τ (unweighted vote)
        self.total = z.clone()  # Σ w τ
        self.signed = z.clone()  # Σ w τ σ
        self.count = z.clone()  # Σ w |σ|
        self.sign_sum = z  # Σ w σ
        self.n = 0

    def add(self, tau: Tensor, weight: float) -> None:
        """Fold one task vector (compute dtype, shaped like ``like``) with its weight."""
        wt = tau if weight == 1.0 else tau * weight
        if self.vote is not None:
            self.vote += tau
            sigma = torch.sign(tau)
        else:
            sigma = torch.sign(wt)
        self.total += wt
        self.signed.addcmul_(wt, sigma)
        if weight == 1.0:
            self.count += sigma.abs()
            self.sign_sum += sigma
        else:
            self.count.add_(sigma.abs(), alpha=weight)
            self.sign_sum.add_(sigma, alpha=weight)
        self.n += 1

    def result(self, *, normalize: bool, floor: float | None = None) -> Tensor:
        """The merged task vector: the agreeing sum, divided by the agreeing weight when
        ``normalize`` (a zero divisor counts as 1, as mergekit; ``floor`` clamps it from
        below instead, as mergekit's SCE)."""
        vote = self.total if self.vote is None else self.vote
        s = torch.where(vote >= 0, 1.0, -1.0).to(vote.dtype)  # elected sign
        merged = torch.addcmul(self.total, s, self.signed).mul_(0.5)  # Σ agreeing wτ
        if not normalize:
            return merged
        den = torch.addcmul(self.count, s, self.sign_sum).mul_(0.5)  # Σ agreeing w
        if floor is not None:
            return merged.div_(den.clamp_(min=floor))
        return merged.div_(torch.where(den == 0, 1.0, den))


def l1_rescale_(masked: Tensor, before: Tensor, eps: float = 1e-7) -> Tensor:
    """mergekit's ``rescaled_masked_tensor`` with the L1 norm, in place on ``masked``:
    multiply by ``before`` (‖τ‖₁ of the unmasked tensor) / ‖masked‖₁ unless either norm is
    below ``eps``."""
    after = masked.abs().sum()
    if float(before) < eps or float(after) < eps:
        return masked
    return masked.mul_(before / after)
