"""Shared building blocks of the task-vector merges, each defined once.

* :func:`weighted_sum` — Σ wᵢ xᵢ (+ c·base), streamed in cache-sized chunks.
* :func:`kth_largest_abs` / :func:`magnitude_threshold` — the top-``density`` magnitude
  threshold of one tensor or of a whole model (global), found without sorting.
* :func:`elect_sign` — the TIES sign per coordinate by total mass.
* :func:`disjoint_merge` — mean or sum over the entries that agree with the elected sign.
* :func:`dare_mask_` — DARE drop-and-rescale of one chunk, seeded by a generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..kernels import merge as _fused
from ._base import CHUNK, chunks, compute_dtype

# Chunk of the bandwidth-bound sums: small enough that the output chunk stays in cache.
SUM_CHUNK = 1 << 18
# Chunk of the TIES kernel. Measured on the 2-core Xeon (4 x 25M, idle): 2^15 0.40 s, 2^16
# 0.25 s, 2^17 0.22 s, 2^18 0.22 s, 2^20 0.27 s; per-op overhead dominates below 2^16 and the ten
# scratch rows (5 MB at 2^17) fall out of cache above 2^18.
TIES_CHUNK = 1 << 17
# On a GPU every chunk costs a kernel launch per operation: the cache-sized CPU chunks made
# TIES 10x slower than PEFT's whole-tensor ops on an H200. 2^22 entries keeps launches few and
# the TIES scratch (10 rows) at 160 MB.
GPU_CHUNK = 1 << 22


def chunk_for(device: torch.device, cpu_chunk: int) -> int:
    """The chunk length of the streamed kernels on ``device``."""
    return cpu_chunk if device.type == "cpu" else max(cpu_chunk, GPU_CHUNK)


def weighted_sum(
    tensors: Sequence[Tensor],
    weights: Sequence[float],
    base: Tensor | None = None,
    base_weight: float = 0.0,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """``base_weight · base + Σ wᵢ · tensorsᵢ`` in the compute dtype, one pass over the inputs.

    Args:
        tensors: N tensors of one shape.
        weights: N coefficients.
        base: optional tensor of the same shape.
        base_weight: coefficient of ``base``.
        out_dtype: the result's dtype: None (the compute dtype) or the inputs' dtype (summed
            in the compute dtype, rounded once).

    Returns:
        A new tensor of the inputs' shape.
    """
    if _fused.usable(tensors, base):
        return _fused.weighted_sum(tensors, weights, base, base_weight, out_dtype)
    ref = tensors[0]
    dtype = compute_dtype(ref)
    out = torch.empty(ref.shape, dtype=dtype, device=ref.device)
    flat_out = out.view(-1)  # (P,)
    flats = [t.reshape(-1) for t in tensors]  # N x (P,)
    flat_base = None if base is None else base.reshape(-1)
    for s in chunks(ref.numel(), chunk_for(ref.device, SUM_CHUNK)):
        acc = flat_out[s]  # (C,) view into the output
        if flat_base is not None and base_weight != 0.0:
            acc.copy_(flat_base[s]).mul_(base_weight)  # in the compute dtype, not the input
        else:
            acc.zero_()
        for x, w in zip(flats, weights, strict=True):
            if w != 0.0:
                acc.add_(x[s], alpha=w)
    return out if out_dtype is None else out.to(out_dtype)


def keep_count(n: int, density: float) -> int:
    """Number of entries kept at ``density``: ⌊density·n⌋, at least 1 (n at density 1)."""
    return n if density >= 1.0 else max(1, math.floor(density * n))


def magnitude_threshold(
    tensors: Sequence[Tensor], bases: Sequence[Tensor | None] | None, density: float
) -> float:
    """Threshold on |τ| that keeps the top ``density`` fraction of all entries taken together.

    τ = tensorsⱼ − basesⱼ (a None base counts as zero). One tensor gives the per-tensor scope;
    all tensors of a model give the global scope of the TIES paper. Entries with
    ``|τ| >= threshold`` are kept (ties may keep a few more); density 1 gives 0. No sort and no
    full-size temporary: a strided sample brackets the answer, one chunked pass counts the
    entries above the bracket and collects those inside, and ``kthvalue`` on those few is exact.
    """
    bases = list(bases) if bases is not None else [None] * len(tensors)
    n = sum(t.numel() for t in tensors)
    if density >= 1.0 or n == 0:
        return 0.0
    k = keep_count(n, density)
    dtype = compute_dtype(tensors[0])
    stride = max(1, n // 65536)
    sample = torch.cat(
        [
            _delta(t.reshape(-1)[::stride], _flat(b, slice(None, None, stride)), dtype).abs()
            for t, b in zip(tensors, bases, strict=True)
        ]
    )  # (m,) about 65536 entries
    lo, hi, _ = sample_bracket(sample, k, n)
    above, inside = 0.0, []
    c = min(chunk_for(tensors[0].device, CHUNK), n)
    buf = torch.empty(2, c, dtype=dtype, device=tensors[0].device)  # (2, C) scratch
    for t, b in zip(tensors, bases, strict=True):
        if _fused.usable([t], b):
            n_above, hits = _fused.bracket(t, b, lo, hi)
            above += n_above
            inside.append(hits)
            continue
        copy = b is not None or t.dtype != dtype
        for s in chunks(t.numel(), c):
            a, f = buf[:, : s.stop - s.start].unbind(0)  # (C,) each
            x = delta_into(a, t, b, s) if copy else t.reshape(-1)[s]  # (C,)
            torch.abs(x, out=a)
            above += float(torch.gt(a, hi, out=f).sum())  # count in float: no bool temporary
            inside.append(a[(a >= lo) & (a <= hi)])  # (M,) the few inside the bracket
    above = round(above)
    found = pick_in_bracket(torch.cat(inside), above, k)  # from the (M,) inside the bracket
    if found is not None:
        return found
    full = torch.cat(
        [_delta(t.reshape(-1), _flat(b), dtype).abs() for t, b in zip(tensors, bases, strict=True)]
    )  # (P,) rare fallback: the bracket missed
    return float(full.kthvalue(n - k + 1).values)


def sample_bracket(sample: Tensor, k: int, n: int) -> tuple[float, float, float]:
    """Bounds ``(lo, hi, width)`` on the k-th largest of n entries from a sample of them.

    ``sample``: (m,) |τ| values drawn with a fixed stride. The answer's expected rank in the
    sample is j = k·m/n; the bounds are the sample entries of rank j ± (4√j + 8) (selection by
    ``kthvalue``, not a full sort), ``hi`` = inf and ``lo`` = 0 where that rank leaves the
    sample; ``width`` is the share of the sample between them (about that share of all n
    entries falls inside). The one bracket of every exact top-k search here: the in-memory
    :func:`magnitude_threshold` and the streaming global trim
    (:func:`core.stream.thresholds.global_thresholds`).
    """
    m = sample.numel()
    j = k * m / n  # expected rank of the answer in the sample
    margin = 4.0 * math.sqrt(max(j, 1.0)) + 8.0
    hi_i, lo_i = math.floor(j - margin), math.ceil(j + margin)
    # the (r+1)-th largest sample entry by selection
    hi = math.inf if hi_i < 0 else float(sample.kthvalue(m - hi_i).values)
    lo = 0.0 if lo_i >= m else float(sample.kthvalue(m - lo_i).values)
    return lo, hi, (min(lo_i, m) - max(hi_i, 0)) / m


def pick_in_bracket(inside: Tensor, above: int, k: int) -> float | None:
    """The k-th largest of all entries, given the ``above`` entries over the bracket and the
    (M,) entries ``inside`` it; None when the bracket missed (the caller widens it)."""
    need = k - above
    if 1 <= need <= inside.numel():
        return float(inside.kthvalue(inside.numel() - need + 1).values)
    return None


def tensor_thresholds(
    tensors: Sequence[Tensor], base: Tensor | None, densities: Sequence[float]
) -> list[float]:
    """Per model ``j``, :func:`magnitude_threshold` of ``tensors[j]`` alone at ``densities[j]``
    (the per-tensor TIES trim), all models in one fused pass where the fused kernels run."""
    if len(densities) != len(tensors):
        raise ValueError(
            f"densities must have one entry per tensor ({len(tensors)}), got {len(densities)}"
        )
    out: list[float | None] = [None] * len(tensors)
    if tensors and tensors[0].device.type != "cpu":
        out = topk_thresholds(tensors, base, densities)
    elif tensors and _fused.usable(tensors, base):
        n = tensors[0].numel()
        out = _fused.thresholds(
            tensors, base, [None if d >= 1.0 else keep_count(n, d) for d in densities]
        )
    return [
        magnitude_threshold([t], [base], d) if r is None else r
        for t, d, r in zip(tensors, densities, out, strict=True)
    ]


def topk_thresholds(
    tensors: Sequence[Tensor], base: Tensor | None, densities: Sequence[float]
) -> list[float | None]:
    """Per model, the ``keep_count``-th largest |τ| of its tensor by one ``torch.topk`` over a
    shared |τ| buffer: the GPU path, where the chunked search would wait on the host once per
    chunk. One host synchronisation for all models; None where density > 0.5 (topk's outputs
    would pass one buffer: the caller's chunked search keeps the memory bound there)."""
    ref = tensors[0]
    n = ref.numel()
    dtype = compute_dtype(ref)
    picked: dict[int, Tensor] = {}
    buf = None
    for j, (t, d) in enumerate(zip(tensors, densities, strict=True)):
        if d > 0.5 or n == 0:  # density 1 is 0.0 below; above 0.5 the caller searches
            continue
        if buf is None:
            buf = torch.empty(n, dtype=dtype, device=ref.device)  # (P,) |τ|, reused
        buf.copy_(t.reshape(-1))
        if base is not None:
            buf.sub_(base.reshape(-1))
        buf.abs_()
        picked[j] = torch.topk(buf, keep_count(n, d), sorted=False).values.min()
    values = torch.stack(list(picked.values())).tolist() if picked else []
    found = dict(zip(picked, values, strict=True))
    return [0.0 if d >= 1.0 or n == 0 else found.get(j) for j, d in enumerate(densities)]


def delta_into(buf: Tensor, t: Tensor, base: Tensor | None, s: slice) -> Tensor:
    """Write τ = t − base on the flat slice ``s`` into ``buf`` (never a view of the input)."""
    buf.copy_(t.reshape(-1)[s])
    if base is not None:
        buf.sub_(base.reshape(-1)[s])
    return buf


def _flat(b: Tensor | None, s: slice = slice(None)) -> Tensor | None:
    return None if b is None else b.reshape(-1)[s]


def _delta(x: Tensor, b: Tensor | None, dtype: torch.dtype) -> Tensor:
    return x.to(dtype) if b is None else x.to(dtype) - b.to(dtype)


def ties_kernel(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    thresholds: Sequence[float],
    *,
    scale: float,
    weights: Sequence[float],
    disjoint: str,
    drop: float = 0.0,
    generator: torch.Generator | None = None,
    deltas: bool = False,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """θ₀ + λ · disjoint_merge(elect(trim(dare(τᵢ)))) of one tensor, streamed in chunks.

    Per chunk, each model's trimmed τᵢ is folded into four running sums (Σ τ, Σ |τ|,
    Σ sign τ, Σ kept): with s the elected sign (the sign of Σ τ, total mass; 0 counts as +),
    the agreeing entries sum to (Σ τ + s Σ |τ|)/2 and number (Σ kept + s Σ sign τ)/2. Nothing
    N-times the tensor's size is allocated: the peak is the inputs, the output and a few
    cache-sized buffers.

    Args:
        tensors: N fine-tuned tensors (task vectors when ``base`` is None).
        base: θ₀ or None (zero).
        thresholds: per model, keep |τᵢ| >= thresholdᵢ (0 keeps every non-zero entry).
        scale: λ.
        weights: per model, applied after the sign election.
        disjoint: "mean" (divide by the number of agreeing entries) or "sum".
        drop: DARE drop rate applied before the trim (0: none).
        generator: seeds the DARE draws.
        deltas: the tensors are task vectors τᵢ already; ``base`` is only added to the result
            (DARE-TIES trims the dropped vectors and passes them here).
        out_dtype: None (the compute dtype) or the inputs' dtype (rounded once at the end).

    Returns:
        The merged tensor, shaped like the inputs.
    """
    if _fused.usable(tensors, base):
        dropping = drop > 0.0 and quantised_drop(drop) > 0
        return _fused.ties(
            tensors,
            base,
            thresholds,
            scale=scale,
            weights=weights,
            disjoint=disjoint,
            drop_m=quantised_drop(drop) if dropping else 0,
            factor=dare_factor(drop) if dropping else 1.0,
            generator=generator,
            deltas=deltas,
            out_dtype=out_dtype,
        )
    ref = tensors[0]
    dtype, dev, size = compute_dtype(ref), ref.device, ref.numel()
    out = torch.empty(size, dtype=dtype, device=dev)  # (P,)
    sub = None if deltas else base  # subtracted from every input
    weighted = any(w != 1.0 for w in weights)
    step = chunk_for(dev, TIES_CHUNK)
    if dev.type != "cpu":  # keep the ten scratch rows under 2/3 of an output buffer
        step = min(step, max(TIES_CHUNK, size // 16))
    bufs = torch.empty(10, min(step, size), dtype=dtype, device=dev)  # (10, C) scratch
    copy = sub is not None or drop > 0.0 or ref.dtype != dtype
    for s in chunks(size, step):
        b = bufs[:, : s.stop - s.start]  # (10, C)
        b[:6].zero_()
        tot, mag, sgn, cnt, wtot, wmag, d, a, m, tmp = b.unbind(0)  # (C,) each
        for t, thr, w in zip(tensors, thresholds, weights, strict=True):
            x = delta_into(d, t, sub, s) if copy else t.reshape(-1)[s]  # (C,) τᵢ chunk
            if drop > 0.0:
                dare_mask_(x, drop, generator, rescale=True)
            torch.abs(x, out=a)
            if thr > 0.0:
                torch.ge(a, thr, out=m)  # (C,) 1.0 where kept
            else:
                torch.ne(x, 0.0, out=m)
            tot.addcmul_(x, m)
            mag.addcmul_(a, m)
            sgn.addcmul_(torch.sign(x, out=tmp), m)
            cnt.add_(m)
            if weighted:
                m.mul_(w)
                wtot.addcmul_(x, m)
                wmag.addcmul_(a, m)
        elected = torch.where(tot >= 0, 1.0, -1.0).to(dtype)  # (C,) elected sign
        num, den = (wtot, wmag) if weighted else (tot, mag)
        merged = torch.addcmul(num, elected, den).mul_(0.5)  # (C,) Σ over agreeing entries
        if disjoint == "mean":
            merged.div_(torch.addcmul(cnt, elected, sgn).mul_(0.5).clamp_(min=1.0))
        if base is None:
            torch.mul(merged, scale, out=out[s])
        else:
            torch.add(base.reshape(-1)[s], merged, alpha=scale, out=out[s])
    out = out.view(ref.shape)
    return out if out_dtype is None else out.to(out_dtype)


# DARE draws: 15 uniform bits per entry, four entries per 63-bit integer draw from the generator
# (one draw per entry as a float was most of DARE's time). The drop rate is quantised to
# multiples of 2⁻¹⁵ and survivors are rescaled by the exact 1/(1 − p_q), so E[DARE(τ)] = τ.
DROP_BITS = 15
_DROP_LEVELS = 1 << DROP_BITS


def quantised_drop(drop: float) -> int:
    """The drop rate p as m / 2¹⁵: m = round(p · 2¹⁵), clamped to [0, 2¹⁵ − 1] (p_q < 1)."""
    return min(round(drop * _DROP_LEVELS), _DROP_LEVELS - 1)


def dare_factor(drop: float) -> float:
    """1/(1 − p_q): the rescale that keeps DARE unbiased at the quantised drop rate."""
    return _DROP_LEVELS / (_DROP_LEVELS - quantised_drop(drop))


def draw_keep(
    keep: Tensor, words: Tensor, drop: float, generator: torch.Generator | None
) -> Tensor:
    """Fill ``keep`` (C,) bool with independent draws that are True with probability 1 − p_q.

    Args:
        keep: (C,) bool output.
        words: (≥ ⌈C/4⌉,) int64 scratch for the random integers.
        drop: p; the entries are dropped with probability p_q = :func:`quantised_drop` / 2¹⁵.
        generator: the source of the draws (⌈C/4⌉ 63-bit integers).

    Returns:
        ``keep``.
    """
    n = keep.numel()
    r = words[: (n + 3) // 4].random_(generator=generator)  # uniform in [0, 2⁶³)
    u = r.view(torch.int16)[:n].bitwise_and_(_DROP_LEVELS - 1)  # (C,) 15 uniform bits each
    return torch.ge(u, quantised_drop(drop), out=keep)


def dare_kernel(
    tensors: Sequence[Tensor],
    base: Tensor | None,
    weights: Sequence[float],
    *,
    drop: float,
    generator: torch.Generator | None,
    rescale: bool = True,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """θ₀ + Σᵢ wᵢ · DARE(τᵢ) of one tensor, streamed in chunks (no N-sized temporaries).

    The drops are drawn chunk by chunk, model by model, from ``generator`` (see
    :func:`draw_keep`: the drop rate is quantised to 2⁻¹⁵ and the rescale is the exact
    1/(1 − p_q)); a drop rate that quantises to 0 draws nothing.

    Returns:
        The merged tensor, shaped like the inputs, in ``out_dtype`` (None: the compute dtype).
    """
    if _fused.usable(tensors, base):
        return _fused.dare(
            tensors,
            base,
            weights,
            drop_m=quantised_drop(drop),
            factor=dare_factor(drop) if rescale else 1.0,
            generator=generator,
            out_dtype=out_dtype,
        )
    ref = tensors[0]
    dtype, dev, size = compute_dtype(ref), ref.device, ref.numel()
    out = torch.empty(size, dtype=dtype, device=dev)  # (P,)
    step = chunk_for(dev, SUM_CHUNK)
    c = min(step, size)
    dbuf = torch.empty(c, dtype=dtype, device=dev)  # (C,) one task-vector chunk
    wbuf = torch.empty((c + 3) // 4, dtype=torch.int64, device=dev)  # (C/4,) random words
    mbuf = torch.empty(c, dtype=torch.bool, device=dev)  # (C,) keep mask
    dropping = quantised_drop(drop) > 0
    factor = dare_factor(drop) if rescale else 1.0
    flat_base = None if base is None else base.reshape(-1)
    for s in chunks(size, step):
        n = s.stop - s.start
        acc = out[s]  # (C,) view into the output
        if flat_base is None:
            acc.zero_()
        else:
            acc.copy_(flat_base[s])
        for t, w in zip(tensors, weights, strict=True):
            if base is None and t.dtype == dtype:
                d = t.reshape(-1)[s]  # (C,) read only
            else:
                d = delta_into(dbuf[:n], t, base, s)  # (C,)
            if dropping:
                keep = draw_keep(mbuf[:n], wbuf, drop, generator)  # (C,)
                acc.addcmul_(d, keep, value=w * factor)
            else:
                acc.add_(d, alpha=w)
    out = out.view(ref.shape)
    return out if out_dtype is None else out.to(out_dtype)


def dare_mask_(
    tau: Tensor, drop: float, generator: torch.Generator | None, rescale: bool
) -> Tensor:
    """Drop each entry of ``tau`` with probability p_q (``drop`` quantised to 2⁻¹⁵, see
    :func:`draw_keep`) and rescale survivors by 1/(1 − p_q), in place on ``tau`` (a chunk the
    caller owns). Returns ``tau``."""
    if quantised_drop(drop) == 0:
        return tau
    n = tau.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=tau.device)  # (C/4,)
    keep = draw_keep(torch.empty(n, dtype=torch.bool, device=tau.device), words, drop, generator)
    tau.mul_(keep.view(tau.shape))
    if rescale:
        tau.mul_(dare_factor(drop))
    return tau
