"""numba kernels of :mod:`core.kernels.merge` (imported on first use: numba costs 0.3 s to
import). Module-level functions, so ``cache=True`` can store them on disk.

The models come as one ``numba.typed.List`` of flat arrays, so the number of models is not
part of a kernel's signature: one compiled kernel per storage dtype serves any N (a tuple
compiled once per length and stopped at numba's 100-element parallel limit).

Storage dtypes: float32 and float64 are read as they are; half precision is read as its bits
— bfloat16 as uint16, float16 as int16 (numba has no 16-bit floats) — decoded into float32 in
registers, accumulated in float32 and rounded to nearest even on the way out, which is what
``x.float()`` and ``y.to(half)`` do in torch. ``proto`` is an empty array of the compute dtype.
"""

# mypy: ignore-errors
from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

u64 = np.uint64
u32 = np.uint32
_GOLDEN = 0x9E3779B97F4A7C15
_M32 = 0xFFFFFFFF


@intrinsic
def _f32_from_bits(typingctx, x):
    if x != types.uint32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.uint32), codegen


@intrinsic
def _bits_from_f32(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.uint32))

    return types.uint32(types.float32), codegen


_ = cgutils  # imported for numba's extension machinery


@njit(cache=True)
def bf16_decode(h):
    return _f32_from_bits(u32(u32(h) << u32(16)))


@njit(cache=True)
def f16_decode(h):
    # F. Giesen's branchless half -> float ("fast5"): the 15 exponent and mantissa bits moved
    # into place and scaled by 2^112 (one exact multiply rebiases normals and renormalises
    # subnormals); what was inf/NaN gets the top exponent. Only selects, so LLVM vectorises
    # the loops around it (the branchy form cost about 3x the bfloat16 shift).
    h = u32(h) & u32(0xFFFF)
    f = _f32_from_bits(u32((h & u32(0x7FFF)) << u32(13))) * np.float32(5.192296858534828e33)
    o = _bits_from_f32(f)
    o = u32(o | u32(0x7F800000)) if f >= np.float32(65536.0) else o
    return _f32_from_bits(u32(o | ((h & u32(0x8000)) << u32(16))))


@njit(cache=True)
def bf16_encode(f):
    u = _bits_from_f32(np.float32(f))
    if (u & u32(0x7FFFFFFF)) > u32(0x7F800000):
        return np.uint16(0x7FC0)  # NaN, as torch writes it
    return np.uint16(((u + u32(0x7FFF) + ((u >> u32(16)) & u32(1))) & _M32) >> u32(16))


@njit(cache=True)
def f16_encode(f):
    # F. Giesen's float -> half, round to nearest even, overflow to inf, subnormals exact; the
    # three cases are all computed and selected (no branches, so the store loops vectorise)
    u = _bits_from_f32(np.float32(f))
    sign = u & u32(0x80000000)
    u = u32(u ^ sign)
    special = u32(0x7E00) if u > u32(0x7F800000) else u32(0x7C00)
    magic = u32(0x3F000000)
    sub = u32(_bits_from_f32(_f32_from_bits(u) + _f32_from_bits(magic)) - magic)
    odd = (u >> u32(13)) & u32(1)
    norm = u32(((u + u32(0xC8000FFF) + odd) & _M32) >> u32(13))
    o = sub if u < u32(0x38800000) else norm
    o = special if u >= u32(0x47800000) else o
    return np.int16(np.uint16(o | (sign >> u32(16))))


def load(x, i):  # pragma: no cover - replaced by the overload inside numba
    return x[i]


@overload(load)
def _load(x, i):
    if x.dtype == types.uint16:
        return lambda x, i: bf16_decode(x[i])
    if x.dtype == types.int16:
        return lambda x, i: f16_decode(x[i])
    return lambda x, i: x[i]


def store(out, i, v):  # pragma: no cover - replaced by the overload inside numba
    out[i] = v


@overload(store)
def _store(out, i, v):
    if out.dtype == types.uint16:

        def bf(out, i, v):
            out[i] = bf16_encode(v)

        return bf
    if out.dtype == types.int16:

        def hf(out, i, v):
            out[i] = f16_encode(v)

        return hf

    def plain(out, i, v):
        out[i] = v

    return plain


@njit(inline="always", cache=True)
def splitmix(seed, i):
    z = seed + (u64(i) + u64(1)) * u64(_GOLDEN)
    z = (z ^ (z >> u64(30))) * u64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> u64(27))) * u64(0x94D049BB133111EB)
    return z ^ (z >> u64(31))


@njit(cache=True)
def load_block(x, lo, hi, buf):
    for i in range(hi - lo):
        buf[i] = load(x, lo + i)


@njit(cache=True, error_model="numpy")
def drop_block(xb, seed, lo, drop_m, fac):
    # DARE on a decoded block: entry lo + i kept (times fac) when the top 15 bits of SplitMix64
    # output lo + i are >= drop_m, else 0 (a function and a loop of its own: it vectorises)
    zero = xb.dtype.type(0.0)
    for i in range(xb.shape[0]):
        keep = (splitmix(seed, lo + i) >> u64(49)) >= u64(drop_m)
        xb[i] = xb[i] * fac if keep else zero


@njit(cache=True, error_model="numpy")
def ties_acc(x, lo, bb, sub_base, thr, w, weighted, seed, drop_m, factor, st, xb):
    # xb: (B,) scratch. Each step is a loop of its own without branches inside (decode, minus
    # θ₀, DARE draws, fold): LLVM vectorises every one of them, where one loop with the
    # branches inside was left scalar for float16 (its decoder made the body too large)
    n = st.shape[1]
    load_block(x, lo, lo + n, xb)
    zero = st.dtype.type(0.0)
    one = st.dtype.type(1.0)
    fac = st.dtype.type(factor)
    ww = st.dtype.type(w)
    t = st.dtype.type(thr)
    if sub_base:
        for i in range(n):
            xb[i] = xb[i] - bb[i]
    if drop_m > 0:
        drop_block(xb, seed, lo, drop_m, fac)
    tot, mag, sgn, cnt, wtot, wmag = st[0], st[1], st[2], st[3], st[4], st[5]
    for i in range(n):
        d = xb[i]
        a = abs(d)
        # kept: |τ| >= threshold, and τ != 0 (which is all a zero threshold asks)
        m = one if (a >= t) & (a > zero) else zero
        tot[i] += d * m
        mag[i] += a * m
        sgn[i] += ((one if d > zero else zero) - (one if d < zero else zero)) * m
        cnt[i] += m
    if weighted:
        for i in range(n):
            d = xb[i]
            a = abs(d)
            mw = (one if (a >= t) & (a > zero) else zero) * ww
            wtot[i] += d * mw
            wmag[i] += a * mw


@njit(cache=True, error_model="numpy")
def ties_fin(st, weighted, bb, add_base, scale, mean, out, lo):
    one = st.dtype.type(1.0)
    half = st.dtype.type(0.5)
    sc = st.dtype.type(scale)
    tot, sgn, cnt = st[0], st[2], st[3]
    num, den = (st[4], st[5]) if weighted else (st[0], st[1])
    for i in range(st.shape[1]):
        e = one if tot[i] >= 0 else -one  # the sign of the total mass, 0 counts as +
        merged = (num[i] + e * den[i]) * half
        if mean:
            merged = merged / max((cnt[i] + e * sgn[i]) * half, one)
        store(out, lo + i, bb[i] + sc * merged if add_base else merged * sc)


@njit(parallel=True, cache=True, error_model="numpy")
def ties_all(
    xs,
    base,
    sub_base,
    add_base,
    thr,
    w,
    weighted,
    seeds,
    drop_m,
    factor,
    scale,
    mean,
    out,
    block,
    proto,
):
    # One parallel region per tensor (a region per chunk stalls at every barrier when the
    # cores are shared); each block folds the models in turn into its own running sums.
    n = out.shape[0]
    for b in prange((n + block - 1) // block):
        lo = b * block
        hi = min(n, lo + block)
        st = np.zeros((6, hi - lo), dtype=proto.dtype)  # (6, B) running sums
        bb = np.empty(hi - lo, dtype=proto.dtype)  # (B,) θ₀ in the compute dtype
        xb = np.empty(hi - lo, dtype=proto.dtype)  # (B,) one model's block, decoded
        if sub_base or add_base:
            load_block(base, lo, hi, bb)
        for j in range(len(xs)):
            x = xs[j]
            ties_acc(x, lo, bb, sub_base, thr[j], w[j], weighted, seeds[j], drop_m, factor, st, xb)
        ties_fin(st, weighted, bb, add_base, scale, mean, out, lo)


@njit(cache=True, error_model="numpy")
def dare_acc(x, lo, bb, has_base, ww, seed, drop_m, acc, xb):
    # acc += ww · keep · (x − θ₀) on one block: decode, minus θ₀, draws and sum in branch-free
    # loops of their own, so each vectorises
    n = acc.shape[0]
    load_block(x, lo, lo + n, xb)
    if has_base:
        for i in range(n):
            xb[i] = xb[i] - bb[i]
    if drop_m > 0:
        drop_block(xb, seed, lo, drop_m, acc.dtype.type(1.0))
    for i in range(n):
        acc[i] += xb[i] * ww


@njit(parallel=True, cache=True, error_model="numpy")
def dare_all(xs, base, has_base, c, w, seeds, drop_m, out, block, proto):
    # out = c·θ₀ + Σⱼ wⱼ · keepⱼ · (xⱼ − θ₀ if has_base else xⱼ); c is 1 for DARE and
    # 1 − Σw for task arithmetic (with drop_m 0 and the raw models, has_base False)
    n = out.shape[0]
    zero = proto.dtype.type(0.0)
    cc = proto.dtype.type(c)
    for b in prange((n + block - 1) // block):
        lo = b * block
        hi = min(n, lo + block)
        bb = np.empty(hi - lo, dtype=proto.dtype)  # (B,) θ₀
        acc = np.zeros(hi - lo, dtype=proto.dtype)  # (B,) the output block
        xb = np.empty(hi - lo, dtype=proto.dtype)  # (B,) one model's block, decoded
        if c != 0.0:
            load_block(base, lo, hi, bb)
            if c == 1.0:
                acc[:] = bb
            else:
                for i in range(hi - lo):
                    acc[i] = cc * bb[i]
        elif has_base:
            load_block(base, lo, hi, bb)
        for j in range(len(xs)):
            x = xs[j]
            ww = proto.dtype.type(w[j])
            if ww == zero:
                continue
            dare_acc(x, lo, bb, has_base, ww, seeds[j], drop_m, acc, xb)
        for i in range(hi - lo):
            store(out, lo + i, acc[i])


@njit(parallel=True, cache=True)
def sample_abs(xs, base, has_base, stride, out):
    # out[j, r] = |xs[j][r·stride] − base[r·stride]|: the strided |τ| sample of every model
    # (the first touch of the tensors: cache misses, so both cores take a share).
    m = out.shape[1]
    step = 1024
    for c in prange((m + step - 1) // step):
        for r in range(c * step, min(m, (c + 1) * step)):
            i = r * stride
            bi = load(base, i) if has_base else out.dtype.type(0.0)
            for j in range(len(xs)):
                out[j, r] = abs(load(xs[j], i) - bi)


@njit(parallel=True, cache=True)
def bracket_all(xs, base, has_base, los, his, block, cap, above, inside, out):
    # One pass over base and every model: per model j and block b, the count of |τ| > his[j]
    # (above[j, b]) and of los[j] <= |τ| <= his[j] (inside[j, b]); the first `cap` of the latter
    # go to out[j, b·(cap+1) :], the rest of the block's region is set to -1 (|τ| >= 0, so the
    # padding sorts below every real entry). Every |τ| is stored and the slot advances only on
    # a hit; slot cap is the spill slot, so a block with more than `cap` hits writes nothing
    # outside its region (the caller collects such blocks again).
    n = base.shape[0]
    for b in prange((n + block - 1) // block):
        lo = b * block
        hi = min(n, lo + block)
        bb = np.empty(hi - lo, dtype=out.dtype)
        if has_base:
            load_block(base, lo, hi, bb)
        for j in range(len(xs)):
            x = xs[j]
            lo_ = out.dtype.type(los[j])
            hi_ = out.dtype.type(his[j])
            row = out[j]
            start = b * (cap + 1)
            end = start + cap
            k = start
            ca = 0
            for i in range(hi - lo):
                a = abs(load(x, lo + i) - bb[i]) if has_base else abs(load(x, lo + i))
                ca += a > hi_
                row[min(k, end)] = a
                k += (a <= hi_) & (a >= lo_)
            above[j, b] = ca
            inside[j, b] = k - start
            for r in range(min(k, end + 1), end + 1):
                row[r] = -1.0


@njit(cache=True)
def decode_into(x, out):
    # x in its storage dtype -> out in the compute dtype (one serial pass)
    load_block(x, 0, x.shape[0], out)


@njit(parallel=True, cache=True, error_model="numpy")
def magmax_all(xs, base, has_base, scale, out, block, proto):
    # out = θ₀ + λ · τ_{t*} per entry, t* the task of largest |τ| (the later on ties); |τ| of
    # the winner so far in `ba` with torch.maximum's NaN rule (a NaN |τ| sticks and then no
    # later task wins), as the chunked torch loop of core.merge.magmax does
    n = out.shape[0]
    sc = proto.dtype.type(scale)
    for b in prange((n + block - 1) // block):
        lo = b * block
        hi = min(n, lo + block)
        bb = np.empty(hi - lo, dtype=proto.dtype)  # (B,) θ₀
        best = np.empty(hi - lo, dtype=proto.dtype)  # (B,) the winning τ
        ba = np.empty(hi - lo, dtype=proto.dtype)  # (B,) its |τ|
        if has_base:
            load_block(base, lo, hi, bb)
        x0 = xs[0]
        for i in range(hi - lo):
            d = load(x0, lo + i) - bb[i] if has_base else load(x0, lo + i)
            best[i] = d
            ba[i] = abs(d)
        for j in range(1, len(xs)):
            x = xs[j]
            for i in range(hi - lo):
                d = load(x, lo + i) - bb[i] if has_base else load(x, lo + i)
                a = abs(d)
                win = a >= ba[i]
                best[i] = d if win else best[i]
                ba[i] = a if win | (a != a) else ba[i]
        for i in range(hi - lo):
            store(out, lo + i, bb[i] + sc * best[i] if has_base else best[i] * sc)
