"""Plain records for mixup galleries: mixed images, masks and label weights as numpy arrays.

The figures in :mod:`core.figures.mixup` draw these; nothing here imports plotly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int, check_tensor
from . import MIXERS, mix

GALLERY_MIXERS = tuple(n for n in MIXERS.names() if "pixel" in MIXERS[n].tags)


def _uint8(x01: Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H, W, 3) uint8 (grey images repeated over RGB)."""
    x = x01.detach().clamp(0, 1).cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x[:, :3].permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)


def gallery(
    name: str,
    images: Tensor,
    names: Sequence[str],
    *,
    alpha: float = 1.0,
    lam: float | None = None,
    per_sample: bool = True,
    seed: int = 0,
    **hyper: Any,
) -> dict[str, Any]:
    """Mix ``images`` (N, C, H, W) in [0, 1] with mixer ``name``; each image is its own class
    and is paired with another image (the pairing is a random derangement from ``seed``).

    Returns:
        dict with ``images`` (N, H, W, 3) uint8 mixed, ``sources`` (N, H, W, 3) uint8 originals,
        ``masks`` (N, H, W) float or None, ``lam`` (N,), ``partner`` (N,), ``names``, ``method``.
    """
    check_tensor("images", images, ndim=4, floating=True, min_len=2)
    if len(names) != len(images):
        raise ValueError(f"names must have one entry per image ({len(images)}), got {len(names)}")
    if name not in GALLERY_MIXERS:
        raise ValueError(f"name must be one of {list(GALLERY_MIXERS)} (pixel mixers), got {name!r}")
    check_int("seed", seed, 0)
    y = torch.arange(len(images))
    # A random permutation leaves about 37% of the images with themselves as partner (mixing an
    # image with itself shows nothing): seeds ``seed * 1000 + k`` are tried in order until the
    # pairing is a derangement, so the gallery stays deterministic for a given ``seed``.
    for k in range(256):
        g = torch.Generator().manual_seed(seed * 1000 + k)
        res = mix(
            name, images, y, alpha=alpha, lam=lam, generator=g, per_sample=per_sample, **hyper
        )
        if not bool((res.partner == y).any()):
            break
    masks = None if res.mask is None else res.mask.expand(len(images), 1, *images.shape[2:])[:, 0]
    return {
        "method": name,
        "title": MIXERS[name].title,
        "images": _uint8(res.x),
        "sources": _uint8(images),
        "masks": None if masks is None else masks.cpu().numpy(),
        "lam": res.lam.numpy(),
        "partner": res.partner.numpy(),
        "names": list(names),
    }


def lam_grid(
    name: str,
    pair: Tensor,
    lams: Sequence[float],
    *,
    seed: int = 0,
    **hyper: Any,
) -> dict[str, Any]:
    """One pair (2, C, H, W) mixed at each λ in ``lams``: image a with partner b.

    The same seed is used for every λ, so only λ changes (box position, mask noise stay).
    """
    check_tensor("pair", pair, ndim=4, floating=True)
    if pair.shape[0] != 2:
        raise ValueError(f"pair must hold exactly 2 images, got {pair.shape[0]}")
    if not lams:
        raise ValueError("lams must hold at least one value, got none")
    images, realised = [], []
    for lam in lams:
        res = _pair_mix(name, pair, lam, seed, hyper)
        images.append(res[0])
        realised.append(res[1])
    return {
        "method": name,
        "title": MIXERS[name].title,
        "images": np.stack(images),
        "lam": np.asarray(realised),
        "requested": np.asarray(list(lams), dtype=float),
    }


def methods_side_by_side(
    pair: Tensor, *, lam: float = 0.5, seed: int = 0, methods: Sequence[str] = GALLERY_MIXERS
) -> dict[str, Any]:
    """The same pair mixed by every pixel mixer at the same requested λ."""
    out: dict[str, Any] = {"methods": [], "titles": [], "images": [], "masks": [], "lam": []}
    for name in methods:
        img, realised, mask = _pair_mix(name, pair, lam, seed, {}, with_mask=True)
        out["methods"].append(name)
        out["titles"].append(MIXERS[name].title)
        out["images"].append(img)
        out["masks"].append(mask)
        out["lam"].append(realised)
    out["images"] = np.stack(out["images"])
    out["lam"] = np.asarray(out["lam"])
    return out


def _pair_mix(
    name: str, pair: Tensor, lam: float, seed: int, hyper: dict[str, Any], with_mask: bool = False
) -> Any:
    """Image a mixed with image b at λ; returns (uint8 image, realised λ[, (H, W) mask]).

    With two rows the permutation is the swap or the identity; seeds ``seed * 1000 + k`` are
    tried in order until it is the swap, so the result is deterministic for a given ``seed``
    and the same for every λ (a fixed λ draws no randomness).
    """
    if name not in GALLERY_MIXERS:
        raise ValueError(f"name must be one of {list(GALLERY_MIXERS)} (pixel mixers), got {name!r}")
    check_int("seed", seed, 0)
    entry = MIXERS[name]
    for k in range(64):
        g = torch.Generator().manual_seed(seed * 1000 + k)
        res = entry.fn(
            pair, torch.eye(2), lam=float(lam), alpha=1.0, per_sample=False, generator=g, **hyper
        )
        if int(res.partner[0]) == 1:
            break
    img = _uint8(res.x[:1])[0]
    realised = float(res.lam[0])
    if not with_mask:
        return img, realised
    return img, realised, None if res.mask is None else res.mask[0, 0].cpu().numpy()
