"""Shared pieces of every mixer: the result record, the registry, λ and partner sampling.

A mixer file defines ``sample_<name>(...) -> <Name>Params`` (all randomness, from an explicit
``torch.Generator``) and a deterministic ``apply_<name>(x, y, params) -> MixResult``, then
registers a small function that chains the two. ``y`` given to ``apply_*`` is always soft targets
(N, C) whose rows sum to 1; the mixed targets are ``lam * y + (1 - lam) * y[partner]`` with
``lam`` the exact share of each row's own input (the mask mean for mask-based mixers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_range, check_tensor
from .._registry import Registry
from ..kernels import enabled


class LazyMask:
    """A mask built on first use: ``fn()`` runs once, then its tensor is kept.

    Some mixers can write their output without an (N, 1, H, W) mask (CutMix pastes boxes), and
    building one costs about a third of a batch copy; only galleries and the per-row gate read it.
    """

    __slots__ = ("_fn", "_value")

    def __init__(self, fn: Callable[[], Tensor]) -> None:
        self._fn: Callable[[], Tensor] | None = fn
        self._value: Tensor | None = None

    def get(self) -> Tensor:
        if self._fn is not None:
            self._value, self._fn = self._fn(), None
        assert self._value is not None
        return self._value

    def __reduce__(self) -> tuple[Callable[[Tensor], Tensor], tuple[Tensor]]:
        """Pickled (and deep-copied) as the built tensor: the closure itself cannot travel."""
        return _as_is, (self.get(),)


def _as_is(mask: Tensor) -> Tensor:
    return mask


class _MaskField:
    """The ``mask`` field of :class:`MixResult`: holds a tensor, None or a :class:`LazyMask`, and
    reading it always gives a tensor or None (a lazy mask is built on the first read)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_" + name

    def __get__(self, obj: Any, objtype: type | None = None) -> Tensor | None:
        if obj is None:  # class access: the dataclass default
            return None
        value = obj.__dict__.get(self._slot)
        return value.get() if isinstance(value, LazyMask) else value

    def __set__(self, obj: Any, value: Tensor | LazyMask | None) -> None:
        obj.__dict__[self._slot] = value


@dataclass(frozen=True)
class MixResult:
    """A mixed batch.

    Attributes:
        x: (N, ...) mixed inputs. For ``manifold_mixup`` the inputs themselves: the mixing
            happens inside the model on its next forward pass.
        y: (N, C) soft targets; every row sums to 1.
        lam: (N,) weight of each row's own label (y_a); 1 - lam goes to the partner's label.
        partner: (N,) int64 partner index of each row (a permutation of 0..N-1).
        mask: (N, 1, H, W) share of each pixel taken from the row's own image (1 = own,
            0 = partner), for mask-based mixers; None otherwise. May be an expanded view. A
            mixer may pass a :class:`LazyMask`, built on the first read of ``mask``.
        lam_x: (N,) share of the input taken from the row's own image; equals ``lam`` unless a
            separate label λ was asked for.
        mixed: (N,) bool, rows that the probability gate let through.
        info: small extras (box corners, chosen layer...), for figures.
    """

    x: Tensor
    y: Tensor
    lam: Tensor
    partner: Tensor
    mask: _MaskField = _MaskField()
    lam_x: Tensor | None = None
    mixed: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def with_(self, **changes: Any) -> MixResult:
        """A copy with some fields replaced (a mask not yet built stays unbuilt)."""
        if "mask" not in changes:
            changes["mask"] = self.__dict__.get("_mask")
        return replace(self, **changes)


MixerFn = Callable[..., MixResult]
MIXERS: Registry[MixerFn] = Registry("mixer")


def check_images(name: str, x: Tensor) -> Tensor:
    """Check an (N, C, H, W) floating image batch with at least one row."""
    return check_tensor(name, x, ndim=4, floating=True, min_len=1)


def check_image_shape(name: str, shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
    """Check an (N, C, H, W) batch shape with every size >= 1; returns it as ints.

    ``name`` is the caller's argument: ``x`` when the shape is that of the caller's batch.
    """
    dims = tuple(int(s) for s in shape)
    if len(dims) != 4 or min(dims) < 1:
        what = "have shape" if name != "shape" else "be"
        raise ValueError(f"{name} must {what} (N, C, H, W) with every size >= 1, got {dims}")
    return dims


def check_targets(name: str, y: Tensor, n: int | None = None) -> Tensor:
    """Check (N, C) floating soft targets (N = ``n`` when given): finite, non-negative, every
    row summing to 1 (within 1e-4 relative to the row)."""
    check_tensor(name, y, ndim=2, floating=True)
    if n is not None and y.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows (one per input), got shape {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        rows = torch.nonzero(~torch.isfinite(y).all(1)).flatten()[:5].tolist()
        raise ValueError(f"{name} must be finite soft targets, got NaN/Inf in rows {rows}")
    if bool((y < -1e-6).any()):
        rows = torch.nonzero((y < -1e-6).any(1)).flatten()[:5].tolist()
        raise ValueError(
            f"{name} must be non-negative soft targets, got negative entries in rows {rows}"
        )
    sums = y.double().sum(1)  # (N,)
    bad = (sums - 1.0).abs() > 1e-4
    if bool(bad.any()):
        i = int(torch.nonzero(bad).flatten()[0])
        raise ValueError(
            f"{name} rows must sum to 1 (soft targets), got row {i} summing to {float(sums[i]):.6g}"
            f" ({int(bad.sum())} bad rows)"
        )
    return y


def check_generator(generator: Any) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def sample_partner(n: int, generator: torch.Generator) -> Tensor:
    """(n,) int64 random permutation: row i is paired with row ``perm[i]``."""
    return torch.randperm(n, generator=check_generator(generator))


def sample_beta(alpha: float, size: int, generator: torch.Generator) -> Tensor:
    """(size,) float32 draws from Beta(alpha, alpha), seeded from ``generator``.

    torch's Beta sampler takes no generator, so a numpy generator is seeded with one draw from
    ``generator``: the same torch generator state gives the same λ.
    """
    check_range("alpha", alpha, 0.0, None, low_inclusive=False)
    seed = int(torch.randint(0, 2**62, (1,), generator=check_generator(generator)))
    draws = np.random.default_rng(seed).beta(alpha, alpha, size=size)
    return torch.from_numpy(draws).float()


def sample_lam(
    n: int,
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = False,
    generator: torch.Generator,
) -> Tensor:
    """(n,) float32 mixing ratios: ``lam`` if given, else Beta(α, α), one per batch or per row."""
    if lam is not None:
        check_range("lam", lam, 0.0, 1.0)
        return torch.full((n,), float(lam))
    draws = sample_beta(alpha, n if per_sample else 1, generator)
    return draws if per_sample else draws.expand(n).clone()


def mix_targets(y: Tensor, partner: Tensor, lam: Tensor) -> Tensor:
    """(N, C) ``lam * y + (1 - lam) * y[partner]`` (exact at lam = 1 and lam = 0)."""
    w = lam.to(y.dtype).unsqueeze(1)  # (N, 1)
    return torch.lerp(y.index_select(0, partner), y, w)


def mask_mix(x: Tensor, mask: Tensor, partner: Tensor) -> Tensor:
    """Binary-mask mix: own pixel where ``mask`` is 1, the partner's pixel elsewhere.

    Args:
        x: (N, C, H, W) images.
        mask: (N or 1, 1, H, W) in {0, 1}.
        partner: (N,) partner index.
    """
    return torch.where(mask.bool(), x, x[partner])


def box_mask(boxes: Tensor, h: int, w: int) -> Tensor:
    """(N, 1, H, W) float mask, 0 inside each row's box (y0, y1, x0, x1), 1 outside."""
    rows = torch.arange(h).view(1, h, 1)  # (1, H, 1)
    cols = torch.arange(w).view(1, 1, w)  # (1, 1, W)
    y0, y1, x0, x1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))  # (N, 1, 1) each
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)  # (N, H, W)
    return (~inside).float().unsqueeze(1)


def box_lam(boxes: Tensor, h: int, w: int) -> Tensor:
    """(N,) share of the image outside each box: 1 - box area / (H W)."""
    area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])  # (N,)
    return 1.0 - area.float() / float(h * w)


# Rows with at least this many elements are mixed row by row on the CPU (the per-call overhead,
# a few µs, is then small next to the row's memory traffic).
ROW_LOOP_MIN = 1 << 14


def fused_ok(x: Tensor) -> bool:
    """The numba kernels (row-wise mixup, CutMix's paste) take contiguous float32/float64 CPU
    batches with large rows."""
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.ndim >= 2
        and x[0].numel() >= ROW_LOOP_MIN
        and x.is_contiguous()
        and not x.requires_grad
        and enabled()
    )
