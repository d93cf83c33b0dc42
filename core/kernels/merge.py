"""Fused CPU kernels (numba) for TIES, DARE-TIES, DARE, MagMax and the magnitude threshold.

The torch kernels in :mod:`core.merge._blocks` make about ten elementwise passes over each
cache-sized chunk per model (delta, abs, mask, three multiply-adds, sign, DARE draws, ...): on a
2-core CPU that is compute-bound at roughly a tenth of memory bandwidth. Here each entry is
read once, every per-model quantity stays in registers, and the loop is vectorised by LLVM:
TIES over 3 x 25M float32 entries took 0.07 s against 2.7 s for the torch kernel on the same
machine (``tests/test_merge_fused.py`` checks the two agree).

Layout (:mod:`core.kernels._merge_nb`): one parallel region per tensor; each block of
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

Used when numba is importable, every tensor is a contiguous CPU tensor of one dtype (float32,
float64, bfloat16 or float16) and ``MIXMERGE_FUSED`` is not ``0``; otherwise the torch kernels
run. Half precision is read in its own 16 bits, decoded to float32 in registers, accumulated in
float32 (the precision of the torch kernels' compute dtype) and rounded to nearest even once
on the way out. The models travel as one ``numba.typed.List``, so numba compiles each kernel
once per dtype — for any number of models — and caches it on disk (``cache=True``; set
``NUMBA_CACHE_DIR`` where the package folder is read-only); ``scripts/setup.sh`` warms the
cache with :func:`warm`.
Parallel calls run behind one lock, since Streamlit runs sessions in threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import LOCK, enabled

# Entries per chunk: the six running sums (6 x 256 KiB at float32) stay in L2.
FUSED_CHUNK = 1 << 16


# Storage dtypes the kernels read as they are: half precision as its bits (numba has no
# 16-bit floats), decoded to float32 in registers.
_STORAGE = {
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.bfloat16: np.uint16,
    torch.float16: np.int16,
}
_HALF = (torch.bfloat16, torch.float16)


def usable(tensors: Sequence[Tensor], base: Tensor | None) -> bool:
    """True when the fused kernels can take these inputs as they are (no copies): contiguous
    CPU tensors of one dtype, float32, float64, bfloat16 or float16."""
    ref = tensors[0]
    if ref.device.type != "cpu" or ref.dtype not in _STORAGE:
        return False
    ok = all(t.device.type == "cpu" and t.dtype == ref.dtype and t.is_contiguous() for t in tensors)
    if base is not None:  # a base may be stored in another dtype of the same compute dtype
        ok = ok and base.device.type == "cpu" and base.is_contiguous() and base.dtype in _STORAGE
        ok = ok and compute_np(base.dtype) == compute_np(ref.dtype)
    return ok and enabled()


def _np(t: Tensor) -> np.ndarray:
    """The flat storage of ``t`` as numpy (half precision as its 16-bit patterns)."""
    flat = t.detach().reshape(-1)
    if t.dtype in _HALF:
        return flat.view(torch.int16).numpy().view(_STORAGE[t.dtype])
    return flat.numpy()


def compute_np(dtype: torch.dtype) -> Any:
    """The numpy compute dtype of a storage dtype: float32 for half precision."""
    return np.float32 if dtype in _HALF else _STORAGE[dtype]


def _proto(t: Tensor) -> np.ndarray:
    return np.empty(0, compute_np(t.dtype))


def _out(ref: Tensor, out_dtype: torch.dtype | None) -> Tensor:
    """The flat output tensor in ``out_dtype`` (None: the compute dtype), any storage dtype of
    the inputs' compute dtype."""
    dtype = out_dtype or (torch.float32 if ref.dtype in _HALF else ref.dtype)
    if dtype not in _STORAGE or compute_np(dtype) != compute_np(ref.dtype):
        raise ValueError(
            f"out_dtype must be a dtype computed in {np.dtype(compute_np(ref.dtype))} like the "
            f"inputs ({ref.dtype}), got {dtype}"
        )
    return torch.empty(ref.numel(), dtype=dtype)


def _decoded(x: np.ndarray, proto: np.ndarray) -> np.ndarray:
    """``x`` (storage dtype) in the compute dtype (a new array for half precision)."""
    if x.dtype == proto.dtype:
        return x
    out = np.empty(x.shape[0], proto.dtype)
    _kernels().decode_into(x, out)
    return out


def draw_seeds(n: int, generator: torch.Generator | None) -> np.ndarray:
    """``n`` 63-bit SplitMix64 seeds from ``generator`` (the global generator when None)."""
    seeds = torch.randint(0, 2**63 - 1, (n,), generator=generator, dtype=torch.int64)
    return seeds.numpy().astype(np.uint64)


@cache
def _kernels() -> Any:
    from . import _merge_nb

    return _merge_nb


def _arrays(xs: Sequence[Tensor]) -> Any:
    """The tensors as one ``numba.typed.List`` of flat numpy views: the number of models is
    not part of the kernels' signatures (a tuple compiles once per length, up to 100)."""
    from numba.typed import List

    return List([_np(t) for t in xs])


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
    deltas: bool = False,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """The fused form of :func:`core.merge._blocks.ties_kernel` (same arguments; ``drop_m``
    and ``factor`` are the quantised drop level and the rescale, ``drop_m`` 0 for no DARE)."""
    k = _kernels()
    ref = tensors[0]
    out = _out(ref, out_dtype)  # (P,)
    xs = _arrays(tensors)
    b = _np(base) if base is not None else xs[0]
    proto = _proto(ref)
    dt = proto.dtype
    seeds = draw_seeds(len(tensors), generator) if drop_m > 0 else np.zeros(len(tensors), np.uint64)
    with LOCK:
        k.ties_all(
            xs,
            b,
            base is not None and not deltas,
            base is not None,
            np.asarray(thresholds, dt),
            np.asarray(weights, dt),
            any(w != 1.0 for w in weights),
            seeds,
            drop_m,
            factor,
            float(scale),
            disjoint == "mean",
            _np(out),
            FUSED_CHUNK,
            proto,
        )
    return out.view(ref.shape)


def dare(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    weights: Sequence[float],
    *,
    drop_m: int,
    factor: float,
    generator: torch.Generator | None,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """θ₀ + Σᵢ wᵢ · factor · keepᵢ · τᵢ (the fused :func:`core.merge._blocks.dare_kernel`)."""
    seeds = draw_seeds(len(tensors), generator) if drop_m > 0 else np.zeros(len(tensors), np.uint64)
    w = [x * factor for x in weights]
    c = 0.0 if base is None else 1.0
    return _sum(tensors, base, base is not None, c, w, seeds, drop_m, out_dtype)


def weighted_sum(
    tensors: Sequence[Tensor],
    weights: Sequence[float],
    base: Tensor | None,
    base_weight: float,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """``base_weight · base + Σ wᵢ · tensorsᵢ`` (the fused :func:`core.merge._blocks.weighted_sum`)."""
    c = 0.0 if base is None else float(base_weight)
    seeds = np.zeros(len(tensors), np.uint64)
    return _sum(tensors, base, False, c, list(weights), seeds, 0, out_dtype)


def _sum(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    sub_base: bool,
    c: float,
    w: Sequence[float],
    seeds: np.ndarray,
    drop_m: int,
    out_dtype: torch.dtype | None,
) -> Tensor:
    k = _kernels()
    ref = tensors[0]
    out = _out(ref, out_dtype)  # (P,)
    xs = _arrays(tensors)
    b = _np(base) if base is not None else xs[0]
    wa = np.asarray(w, dtype=np.float64)
    with LOCK:
        k.dare_all(xs, b, sub_base, c, wa, seeds, drop_m, _np(out), FUSED_CHUNK, _proto(ref))
    return out.view(ref.shape)


def magmax(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    scale: float,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """MagMax in one pass: ``θ₀ + λ · τ_{t*}``, ``t*`` the task of largest ``|τ|`` per entry
    (the later on ties), the fused :func:`core.merge.magmax.magmax_tensor`."""
    k = _kernels()
    ref = tensors[0]
    out = _out(ref, out_dtype)  # (P,)
    xs = _arrays(tensors)
    b = _np(base) if base is not None else xs[0]
    with LOCK:
        k.magmax_all(xs, b, base is not None, float(scale), _np(out), FUSED_CHUNK, _proto(ref))
    return out.view(ref.shape)


def _bracket(
    xs: Any,
    b: np.ndarray,
    has_base: bool,
    los: Sequence[float],
    his: Sequence[float],
    expect: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, list[np.ndarray]]]:
    """The :func:`bracket_many` pass: counts above, counts inside, the padded (M, L) hits, and
    for the rows where a block overflowed, the row rebuilt in order as pieces."""
    k = _kernels()
    n, m = xs[0].shape[0], len(xs)
    block = FUSED_CHUNK
    nb = (n + block - 1) // block
    cap = min(block, int(2.0 * expect * block) + 256)
    proto = np.empty(0, np.float32 if xs[0].dtype.itemsize == 2 else xs[0].dtype)
    dt = proto.dtype
    above = np.zeros((m, nb), np.int64)
    inside = np.zeros((m, nb), np.int64)
    out = np.empty((m, nb * (cap + 1)), dtype=dt)
    with LOCK:
        k.bracket_all(
            xs,
            b,
            has_base,
            np.asarray(los, np.float64),
            np.asarray(his, np.float64),
            block,
            cap,
            above,
            inside,
            out,
        )
    rebuilt: dict[int, list[np.ndarray]] = {}
    for j in np.flatnonzero((inside > cap).any(axis=1)).tolist():
        pieces = []  # rare: a block with more hits than room; keep the entries in order
        for blk, count in enumerate(inside[j].tolist()):
            if count <= cap:
                pieces.append(out[j, blk * (cap + 1) : blk * (cap + 1) + count])
                continue
            s = slice(blk * block, min(n, (blk + 1) * block))
            x = _decoded(xs[j][s], proto)
            a = np.abs(x - _decoded(b[s], proto)) if has_base else np.abs(x)
            pieces.append(a[(a >= dt.type(los[j])) & (a <= dt.type(his[j]))])
        rebuilt[j] = pieces
    return above.sum(axis=1), inside.sum(axis=1), out, rebuilt


def bracket_many(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    los: Sequence[float],
    his: Sequence[float],
    expect: float = 0.05,
) -> tuple[list[int], list[np.ndarray]]:
    """Per model ``j``: the count of |τⱼ| > ``his[j]``, and the |τⱼ| in [``los[j]``, ``his[j]``].

    One pass over the base and every model (the base is read once, not once per model). The
    entries of model ``j`` come back as one array that may hold padding (-1, below every real
    |τ|), so an order statistic counted from the top is unaffected. ``expect`` is the expected
    fraction of entries inside a bracket: each block of ``FUSED_CHUNK`` entries keeps room for
    twice that plus 256; a block with more hits is collected again with numpy.
    """
    xs = _arrays(tensors)
    b = _np(base) if base is not None else xs[0]
    above, _, out, rebuilt = _bracket(xs, b, base is not None, los, his, expect)
    hits = [np.concatenate(rebuilt[j]) if j in rebuilt else out[j] for j in range(len(xs))]
    return [int(x) for x in above], hits


def bracket(t: Tensor, base: Tensor | None, lo: float, hi: float) -> tuple[int, Tensor]:
    """Count of |t − base| > hi, and the entries with lo <= |t − base| <= hi (as a tensor)."""
    above, hits = bracket_many([t], base, [lo], [hi])
    return above[0], torch.from_numpy(np.ascontiguousarray(hits[0][hits[0] >= 0]))


def _sub(xs: Any, idx: Sequence[int]) -> Any:
    """The typed list of ``xs[j]`` for ``j`` in ``idx``."""
    from numba.typed import List

    return xs if len(idx) == len(xs) else List([xs[j] for j in idx])


# Tensors up to this many entries are thresholded from the full |τ| (no sample, no bracket).
DIRECT_MAX = 1 << 16
SAMPLE = 1 << 16


def thresholds(
    tensors: Sequence[Tensor], base: Tensor | None, ks: Sequence[int | None]
) -> list[float | None]:
    """Per model ``j``, the ``ks[j]``-th largest |τⱼ| of its tensor (0.0 where ``ks[j]`` is
    None, i.e. density 1; None where the sample's bracket missed, for the caller's exact
    fallback).

    The per-tensor TIES trim of all models at once: one strided sample of every |τⱼ|, its
    order statistics bracket each answer (margin 4√r + 8 sample ranks, as
    :func:`core.merge._blocks.magnitude_threshold`), one :func:`bracket_many` pass counts the
    entries above and keeps those inside, and ``np.partition`` picks the exact value.
    """
    k = _kernels()
    xs = _arrays(tensors)
    b = _np(base) if base is not None else xs[0]
    n = xs[0].shape[0]
    res: list[float | None] = [0.0 if kj is None or n == 0 else None for kj in ks]
    todo = [j for j, r in enumerate(res) if r is None]
    if not todo:
        return res
    kk = [0 if kj is None else kj for kj in ks]
    proto = _proto(tensors[0])
    if n <= DIRECT_MAX:
        bd = _decoded(b, proto)
        for j in todo:
            x = _decoded(xs[j], proto)
            a = np.abs(x - bd) if base is not None else np.abs(x)
            res[j] = float(np.partition(a, n - kk[j])[n - kk[j]])
        return res
    stride = max(1, n // SAMPLE)
    m = len(range(0, n, stride))
    sample = np.empty((len(todo), m), dtype=proto.dtype)
    sub = _sub(xs, todo)
    with LOCK:
        k.sample_abs(sub, b, base is not None, stride, sample)
    ranks = []  # per model: the sample ranks (from the top) that bracket the answer
    for j in todo:
        r = kk[j] * m / n  # expected rank of the answer in the sample
        margin = 4.0 * math.sqrt(max(r, 1.0)) + 8.0
        ranks.append((math.ceil(r + margin), math.floor(r - margin)))  # (lo, hi)
    los, his, width = [], [], 0
    for row, (lo_i, hi_i) in zip(sample, ranks, strict=True):
        # numpy's SIMD introselect (5x numba's np.partition) takes one position at a time
        lo_p, hi_p = (min(max(m - 1 - i, 0), m - 1) for i in (lo_i, hi_i))  # ascending
        part = np.partition(row, lo_p)
        top = np.partition(part[lo_p:], hi_p - lo_p)
        los.append(0.0 if lo_i >= m else float(part[lo_p]))
        his.append(math.inf if hi_i < 0 else float(top[hi_p - lo_p]))
        width = max(width, min(lo_i, m) - max(hi_i, 0))
    above, inside, out, rebuilt = _bracket(sub, b, base is not None, los, his, width / m)
    for t, j in enumerate(todo):
        need = kk[j] - int(above[t])
        if 1 <= need <= int(inside[t]):
            row = np.concatenate(rebuilt[t]) if t in rebuilt else out[t]
            row = row[row >= 0]  # without the -1 pads: long runs of one value slow introselect
            res[j] = float(np.partition(row, row.size - need)[row.size - need])
    return res


def warm() -> None:
    """Compile (or load from numba's disk cache) the kernels for every storage dtype: one
    compilation per dtype serves any number of models."""
    if not enabled():
        return
    for dt in _STORAGE:
        base = torch.zeros(8, dtype=dt)
        x = [torch.full((8,), float(i) - 1.5, dtype=dt) for i in range(3)]
        for out_dtype in {dt, torch.float32 if dt in _HALF else dt}:
            kw: dict[str, Any] = dict(
                weights=[1.0] * 3, drop_m=1 << 14, factor=2.0, out_dtype=out_dtype
            )
            ties(x, base, [0.5] * 3, scale=1.0, disjoint="mean", generator=None, **kw)
            dare(x, base, generator=None, **kw)
            magmax(x, base, 0.5, out_dtype)
        big = [torch.arange(DIRECT_MAX + 8).to(dt) * (i + 1) for i in range(3)]
        thresholds(big, torch.zeros_like(big[0]), [DIRECT_MAX // 2] * 3)
