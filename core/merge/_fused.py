"""Fused CPU kernels (numba) for TIES, DARE-TIES, DARE and the magnitude threshold.

The torch kernels in :mod:`core.merge._blocks` make about ten elementwise passes over each
cache-sized chunk per model (delta, abs, mask, three multiply-adds, sign, DARE draws, ...): on a
2-core CPU that is compute-bound at roughly a tenth of memory bandwidth. Here each entry is
read once, every per-model quantity stays in registers, and the loop is vectorised by LLVM:
TIES over 3 x 25M float32 entries took 0.07 s against 2.7 s for the torch kernel on the same
machine (``tests/test_merge_fused.py`` checks the two agree).

Layout (:mod:`core.merge._fused_kernels`): one parallel region per tensor; each block of
``FUSED_CHUNK`` entries folds the models in turn into six running sums (Σ τ, Σ |τ|, Σ sign τ,
Σ kept and the weighted Σ τ, Σ |τ|), then elects the sign and writes the output — the same
algebra as :func:`core.merge._blocks.ties_kernel` in the same order of operations, so the two
agree to the last bit except where torch fuses a multiply-add (one rounding less).

DARE draws: entry ``i`` of model ``j`` is kept when the top 15 bits of the ``i``-th output of a
SplitMix64 generator seeded with ``seedⱼ`` are >= ``round(p · 2¹⁵)`` (the same quantised drop
rate and exact rescale as the torch kernels). ``seedⱼ`` is one 63-bit integer drawn from the
caller's ``torch.Generator`` per model and call, so a merge stays reproducible from its seed and
the draws do not depend on the chunking or the number of threads. They are not the torch
kernels' draws: a CPU and a GPU run of DARE with the same seed drop different entries (as two
torch devices do anyway).

Used when numba is importable, every tensor is a contiguous CPU float32/float64 tensor of one
dtype, and ``MIXMERGE_FUSED`` is not ``0``; otherwise the torch kernels run. numba compiles
each kernel once per dtype and caches it on disk (``cache=True``; set ``NUMBA_CACHE_DIR`` where
the package folder is read-only); ``scripts/setup.sh`` warms the cache with :func:`warm`.
Parallel calls run behind one lock, since Streamlit runs sessions in threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._numba import LOCK, enabled

# Entries per chunk: the six running sums (6 x 256 KiB at float32) stay in L2.
FUSED_CHUNK = 1 << 16


def usable(tensors: Sequence[Tensor], base: Tensor | None) -> bool:
    """True when the fused kernels can take these inputs as they are (no copies)."""
    ref = tensors[0]
    if ref.device.type != "cpu" or ref.dtype not in (torch.float32, torch.float64):
        return False
    everything = [*tensors, *([base] if base is not None else [])]
    ok = all(
        t.device.type == "cpu" and t.dtype == ref.dtype and t.is_contiguous() for t in everything
    )
    return ok and enabled()


def _np(t: Tensor) -> np.ndarray:
    return t.detach().reshape(-1).numpy()


def draw_seeds(n: int, generator: torch.Generator | None) -> np.ndarray:
    """``n`` 63-bit SplitMix64 seeds from ``generator`` (the global generator when None)."""
    seeds = torch.randint(0, 2**63 - 1, (n,), generator=generator, dtype=torch.int64)
    return seeds.numpy().astype(np.uint64)


@cache
def _kernels() -> Any:
    from . import _fused_kernels

    return _fused_kernels


def _arrays(xs: Sequence[Tensor]) -> tuple[np.ndarray, ...]:
    """The tensors as a tuple of flat numpy views (numba compiles once per tuple length)."""
    return tuple(_np(t) for t in xs)


def ties(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    thresholds: Sequence[float],
    *,
    scale: float,
    weights: Sequence[float],
    disjoint: str,
    drop_m: int,
    factor: float,
    generator: torch.Generator | None,
) -> Tensor:
    """The fused form of :func:`core.merge._blocks.ties_kernel` (same arguments; ``drop_m``
    and ``factor`` are the quantised drop level and the rescale, ``drop_m`` 0 for no DARE)."""
    k = _kernels()
    ref = tensors[0]
    out = torch.empty(ref.numel(), dtype=ref.dtype)  # (P,)
    xs = _arrays(tensors)
    b = _np(base) if base is not None else xs[0]
    dt = xs[0].dtype
    seeds = draw_seeds(len(tensors), generator) if drop_m > 0 else np.zeros(len(tensors), np.uint64)
    with LOCK:
        k.ties_all(xs, b, base is not None, np.asarray(thresholds, dt), np.asarray(weights, dt),
                      any(w != 1.0 for w in weights), seeds, drop_m, factor, float(scale),
                      disjoint == "mean", _np(out), FUSED_CHUNK)  # fmt: skip
    return out.view(ref.shape)


def dare(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    weights: Sequence[float],
    *,
    drop_m: int,
    factor: float,
    generator: torch.Generator | None,
) -> Tensor:
    """θ₀ + Σᵢ wᵢ · factor · keepᵢ · τᵢ (the fused :func:`core.merge._blocks.dare_kernel`)."""
    k = _kernels()
    ref = tensors[0]
    n = ref.numel()
    out = base.detach().clone().reshape(-1) if base is not None else torch.zeros(n, dtype=ref.dtype)
    xs = _arrays(tensors)
    b = _np(base) if base is not None else xs[0]
    seeds = draw_seeds(len(tensors), generator) if drop_m > 0 else np.zeros(len(tensors), np.uint64)
    w = np.asarray([x * factor for x in weights], dtype=np.float64)
    with LOCK:
        k.dare_all(xs, b, base is not None, w, seeds, drop_m, _np(out), FUSED_CHUNK)
    return out.view(ref.shape)


def bracket(t: Tensor, base: Tensor | None, lo: float, hi: float) -> tuple[int, Tensor]:
    """Count of |t − base| > hi, and the entries with lo <= |t − base| <= hi (as a tensor)."""
    k = _kernels()
    x = _np(t)
    b = _np(base) if base is not None else x
    block = 1 << 16
    with LOCK:
        above, inside = k.bracket_counts(x, b, base is not None, lo, hi, block)
        # Block b writes from starts[b] and may write one entry past its own (it stores every
        # |τ| and advances only on a hit), so each block gets one spare slot: +b.
        starts = np.zeros(inside.shape[0], np.int64)
        np.cumsum(inside[:-1] + 1, out=starts[1:])
        out = np.empty(int(inside.sum()) + inside.shape[0], dtype=x.dtype)
        k.bracket_collect(x, b, base is not None, lo, hi, block, starts, out)
    parts = [out[s : s + c] for s, c in zip(starts, inside, strict=True)]
    keep = np.concatenate(parts) if parts else np.empty(0, dtype=x.dtype)  # empty tensor: []
    return int(above.sum()), torch.from_numpy(keep)


def warm(max_models: int = 8) -> None:
    """Compile (or load from numba's disk cache) the kernels for 1..``max_models`` float32 models
    and 1..3 float64 ones; other counts compile on first use (about 1.5 s each, once)."""
    if not enabled():
        return
    for dt, top in ((torch.float32, max_models), (torch.float64, min(3, max_models))):
        base = torch.zeros(8, dtype=dt)
        for n in range(1, top + 1):
            x = [torch.full((8,), float(i) - 1.5, dtype=dt) for i in range(n)]
            ties(x, base, [0.5] * n, scale=1.0, weights=[1.0] * n, disjoint="mean",
                 drop_m=1 << 14, factor=2.0, generator=torch.Generator())  # fmt: skip
            dare(x, base, [1.0] * n, drop_m=1 << 14, factor=2.0, generator=torch.Generator())
        bracket(base, base, 0.5, 1.5)
        bracket(base, None, 0.5, 1.5)
