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
def ties_acc(
    x,
    base,
    has_base,
    thr,
    w,
    weighted,
    seed,
    drop_m,
    factor,
    offset,
    tot,
    mag,
    sgn,
    cnt,
    wtot,
    wmag,
):
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
def ties_fin(tot, num, den, sgn, cnt, base, has_base, scale, mean, out):
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
def ties_all(
    xs, base, sub_base, add_base, thr, w, weighted, seeds, drop_m, factor, scale, mean, out, block
):
    # One parallel region per tensor (a region per chunk stalls at every barrier when the
    # cores are shared); each block folds the models in turn into its own running sums.
    n = out.shape[0]
    for b in prange((n + block - 1) // block):
        lo = b * block
        hi = min(n, lo + block)
        st = np.zeros((6, hi - lo), dtype=out.dtype)  # (6, B) running sums
        bb = base[lo:hi]
        for j in range(len(xs)):
            ties_acc(
                xs[j][lo:hi],
                bb,
                sub_base,
                thr[j],
                w[j],
                weighted,
                seeds[j],
                drop_m,
                factor,
                lo,
                st[0],
                st[1],
                st[2],
                st[3],
                st[4],
                st[5],
            )
        if weighted:
            ties_fin(st[0], st[4], st[5], st[2], st[3], bb, add_base, scale, mean, out[lo:hi])
        else:
            ties_fin(st[0], st[0], st[1], st[2], st[3], bb, add_base, scale, mean, out[lo:hi])


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
def sample_abs(xs, base, has_base, stride, out):
    # out[j, r] = |xs[j][r·stride] − base[r·stride]|: the strided |τ| sample of every model
    # (the first touch of the tensors: cache misses, so both cores take a share).
    m = out.shape[1]
    step = 1024
    for c in prange((m + step - 1) // step):
        for r in range(c * step, min(m, (c + 1) * step)):
            i = r * stride
            bi = base[i] if has_base else base.dtype.type(0.0)
            for j in range(len(xs)):
                out[j, r] = abs(xs[j][i] - bi)


@njit(parallel=True, cache=True)
def bracket_all(xs, base, has_base, los, his, block, cap, above, inside, out):
    # One pass over base and every model: per model j and block b, the count of |τ| > his[j]
    # (above[j, b]) and of los[j] <= |τ| <= his[j] (inside[j, b]); the first `cap` of the latter
    # go to out[j, b·(cap+1) :], the rest of the block's region is set to -1 (|τ| >= 0, so the
    # padding sorts below every real entry). Every |τ| is stored and the slot advances only on
    # a hit; slot cap is the spill slot, so a block with more than `cap` hits writes nothing
    # outside its region (the caller collects such blocks again).
    n = xs[0].shape[0]
    for b in prange((n + block - 1) // block):
        lo = b * block
        hi = min(n, lo + block)
        for j in range(len(xs)):
            x = xs[j]
            lo_ = x.dtype.type(los[j])
            hi_ = x.dtype.type(his[j])
            row = out[j]
            start = b * (cap + 1)
            end = start + cap
            k = start
            ca = 0
            for i in range(lo, hi):
                a = abs(x[i] - base[i]) if has_base else abs(x[i])
                ca += a > hi_
                row[min(k, end)] = a
                k += (a <= hi_) & (a >= lo_)
            above[j, b] = ca
            inside[j, b] = k - start
            for r in range(min(k, end + 1), end + 1):
                row[r] = -1.0
