"""numba kernels of :mod:`core.merge._fused` (imported on first use: numba costs 0.3 s to
import). Module-level functions, so ``cache=True`` can store them on disk."""

# mypy: ignore-errors
from __future__ import annotations

import numpy as np
from numba import njit, prange

u64 = np.uint64
_GOLDEN = 0x9E3779B97F4A7C15


@njit(inline="always", cache=True)
def splitmix(seed, i):
    z = seed + (u64(i) + u64(1)) * u64(_GOLDEN)
    z = (z ^ (z >> u64(30))) * u64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> u64(27))) * u64(0x94D049BB133111EB)
    return z ^ (z >> u64(31))


@njit(cache=True, error_model="numpy")
def ties_acc(x, base, has_base, thr, w, weighted, seed, drop_m, factor, offset,
             tot, mag, sgn, cnt, wtot, wmag):  # fmt: skip
    zero = x.dtype.type(0.0)
    one = x.dtype.type(1.0)
    fac = x.dtype.type(factor)
    ww = x.dtype.type(w)
    t = x.dtype.type(thr)
    for i in range(x.shape[0]):
        d = x[i] - base[i] if has_base else x[i]
        if drop_m > 0:
            keep = (splitmix(seed, offset + i) >> u64(49)) >= u64(drop_m)
            d = d * fac if keep else zero
        a = abs(d)
        # kept: |τ| >= threshold, and τ != 0 (which is all a zero threshold asks)
        m = one if (a >= t) & (a > zero) else zero
        tot[i] += d * m
        mag[i] += a * m
        sgn[i] += ((one if d > zero else zero) - (one if d < zero else zero)) * m
        cnt[i] += m
        if weighted:
            mw = m * ww
            wtot[i] += d * mw
            wmag[i] += a * mw


@njit(cache=True, error_model="numpy")
def ties_fin(tot, num, den, sgn, cnt, base, has_base, scale, mean, out):  # fmt: skip
    one = tot.dtype.type(1.0)
    half = tot.dtype.type(0.5)
    sc = tot.dtype.type(scale)
    for i in range(tot.shape[0]):
        e = one if tot[i] >= 0 else -one  # the sign of the total mass, 0 counts as +
        merged = (num[i] + e * den[i]) * half
        if mean:
            merged = merged / max((cnt[i] + e * sgn[i]) * half, one)
        out[i] = base[i] + sc * merged if has_base else merged * sc


@njit(parallel=True, cache=True, error_model="numpy")
def ties_all(xs, base, has_base, thr, w, weighted, seeds, drop_m, factor, scale, mean,
             out, block):  # fmt: skip
    # One parallel region per tensor (a region per chunk stalls at every barrier when the
    # cores are shared); each block folds the models in turn into its own running sums.
    n = out.shape[0]
    for b in prange((n + block - 1) // block):
        lo = b * block
        hi = min(n, lo + block)
        st = np.zeros((6, hi - lo), dtype=out.dtype)  # (6, B) running sums
        bb = base[lo:hi]
        for j in range(len(xs)):
            ties_acc(xs[j][lo:hi], bb, has_base, thr[j], w[j], weighted, seeds[j], drop_m,
                     factor, lo, st[0], st[1], st[2], st[3], st[4], st[5])  # fmt: skip
        if weighted:
            ties_fin(st[0], st[4], st[5], st[2], st[3], bb, has_base, scale, mean, out[lo:hi])
        else:
            ties_fin(st[0], st[0], st[1], st[2], st[3], bb, has_base, scale, mean, out[lo:hi])


@njit(parallel=True, cache=True, error_model="numpy")
def dare_all(xs, base, has_base, w, seeds, drop_m, out, block):
    n = out.shape[0]
    zero = out.dtype.type(0.0)
    for b in prange((n + block - 1) // block):
        lo = b * block
        hi = min(n, lo + block)
        for j in range(len(xs)):
            x = xs[j]
            ww = out.dtype.type(w[j])
            if ww == zero:
                continue
            for i in range(lo, hi):
                d = x[i] - base[i] if has_base else x[i]
                if drop_m > 0:
                    keep = (splitmix(seeds[j], i) >> u64(49)) >= u64(drop_m)
                    d = d if keep else zero
                out[i] += d * ww


@njit(parallel=True, cache=True)
def bracket_counts(x, base, has_base, lo, hi, block):
    # Branch-free int32 counts over per-block slices: LLVM vectorises these loops (a
    # branchy loop with float64 bounds ran 4.6x slower).
    n = x.shape[0]
    nb_ = (n + block - 1) // block
    above = np.zeros(nb_, np.int64)
    inside = np.zeros(nb_, np.int64)
    lo_, hi_ = x.dtype.type(lo), x.dtype.type(hi)
    for b in prange(nb_):
        xs = x[b * block : min(n, (b + 1) * block)]
        ca = np.int32(0)
        cl = np.int32(0)
        if has_base:
            bs = base[b * block : min(n, (b + 1) * block)]
            for i in range(xs.shape[0]):
                a = abs(xs[i] - bs[i])
                ca += np.int32(a > hi_)
                cl += np.int32(a >= lo_)
        else:
            for i in range(xs.shape[0]):
                a = abs(xs[i])
                ca += np.int32(a > hi_)
                cl += np.int32(a >= lo_)
        above[b] = ca
        inside[b] = cl - ca
    return above, inside


@njit(parallel=True, cache=True)
def bracket_collect(x, base, has_base, lo, hi, block, starts, out):
    n = x.shape[0]
    lo_, hi_ = x.dtype.type(lo), x.dtype.type(hi)
    for b in prange(starts.shape[0]):
        k = starts[b]
        xs = x[b * block : min(n, (b + 1) * block)]
        bs = base[b * block : min(n, (b + 1) * block)]
        for i in range(xs.shape[0]):
            a = abs(xs[i] - bs[i]) if has_base else abs(xs[i])
            out[k] = a  # written always, kept (k advances) only inside the bracket
            k += (a <= hi_) & (a >= lo_)
