"""Whole-model statistics for a streaming merge, each in streaming passes with one key of
every model in memory at a time: the global TIES trim and RAM+'s overlap ratios.

Global TIES trim: the model-wide |τ| threshold per model, exact, in
two streaming passes (the bracket search of :func:`core.merge._blocks.magnitude_threshold`,
with the counting pass spread over every tensor of the model)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..merge._blocks import keep_count, pick_in_bracket, sample_bracket
from .inputs import Buffers, Inputs, check_finite_inputs, load_key, prefetched
from .st_io import ShardReader

SAMPLE = 65536


def global_thresholds(
    inp: Inputs,
    reader: ShardReader,
    densities: Sequence[float],
    dev: torch.device,
    stats: dict[str, int],
) -> list[float]:
    """Per model, the k-th largest |τ| over all its floating-point entries, k = ⌊density·n⌋.

    Exact, and equal to :func:`core.merge._blocks.magnitude_threshold` over the whole model:
    pass 1 takes a strided sample of |τ| (about 65 536 entries) whose order statistics bracket
    the answer with a margin of 4√j + 8 sample ranks; pass 2 counts the entries above the
    bracket and keeps those inside it (about 1-2 % of all entries); ``kthvalue`` on those gives
    the exact value. If the bracket misses (very unlikely), pass 2 is repeated for that model
    with the bracket opened on the missing side, so the answer stays exact.
    """
    keys = [k for k in inp.keys if inp.infos[0][k].dtype.is_floating_point]
    n = sum(inp.infos[0][k].numel for k in keys)
    m_count = len(inp.infos)
    if n == 0:
        return [0.0] * m_count

    ks = [keep_count(n, d) if d < 1.0 else n for d in densities]
    stride = max(1, n // SAMPLE)
    work = inp.cfg.dtype

    def cast(t: Tensor | None) -> Tensor | None:
        if t is None:
            return None
        dt = work or t.dtype
        dt = torch.float32 if dt in (torch.float16, torch.bfloat16) else dt
        return t.to(dev).reshape(-1).to(dt)

    def count_read(tensors: list[Tensor], base: Tensor | None) -> None:
        stats["read"] += sum(x.nbytes for x in tensors) + (0 if base is None else base.nbytes)

    pin = dev.type == "cuda"

    bufs = Buffers(inp, pin)

    def load(k: str, phase: int) -> tuple[list[Tensor], Tensor | None]:
        return load_key(inp, reader, k, True, pin, bufs, phase)

    def load_checked(k: str, phase: int) -> tuple[list[Tensor], Tensor | None]:
        # CPU: pass 1 checks every model and the base for NaN/Inf, which would keep the exact
        # search below from ever closing its bracket (a GPU run checks in pass 2, on device)
        return load_key(inp, reader, k, True, pin, bufs, phase, check=not pin)

    samples: list[list[Tensor]] = [[] for _ in range(m_count)]
    for _key, (tensors, base) in prefetched(keys, load_checked):
        count_read(tensors, base)
        b = cast(None if base is None else base.reshape(-1)[::stride])
        for i, x in enumerate(tensors):
            d = cast(x.reshape(-1)[::stride])
            assert d is not None
            samples[i].append((d if b is None else d - b).abs())
    brackets, width = [], 0.0
    for i in range(m_count):
        lo, hi, w = sample_bracket(torch.cat(samples[i]), ks[i], n)  # from the (m,) sample
        brackets.append((lo, hi))
        width = max(width, w)
    del samples
    result: list[float | None] = [None if ks[i] < n else 0.0 for i in range(m_count)]
    todo = [i for i in range(m_count) if result[i] is None]
    from ..kernels import merge as _fused

    first_pass = True
    while todo:
        above = dict.fromkeys(todo, 0)
        inside: dict[int, list[Tensor]] = {i: [] for i in todo}
        for key, (tensors, base) in prefetched(keys, load):
            count_read(tensors, base)
            b = cast(base)
            xs = [x for i in todo if (x := cast(tensors[i])) is not None]
            if first_pass and pin:
                labels = [inp.labels[i] for i in todo]
                check_finite_inputs(key, xs, b, labels, inp.base_label)
            if _fused.usable(xs, b):  # one fused pass over the base and the models
                los, his = zip(*(brackets[i] for i in todo), strict=True)
                ab, hits = _fused.bracket_many(xs, b, los, his, expect=width)
                for i, n_above, h in zip(todo, ab, hits, strict=True):
                    above[i] += n_above
                    inside[i].append(torch.from_numpy(h[h >= 0]))  # without the -1 pads
                continue
            for i, x in zip(todo, xs, strict=True):
                lo, hi = brackets[i]
                a = (x if b is None else x - b).abs_()
                above[i] += int((a > hi).sum())
                inside[i].append(a[(a <= hi) & (a >= lo)].cpu())
        nxt = []
        for i in todo:
            found = pick_in_bracket(torch.cat(inside[i]), above[i], ks[i])
            if found is not None:
                result[i] = found
            else:  # open the bracket on the side that missed and go again
                need = ks[i] - above[i]
                lo, hi = brackets[i]
                brackets[i] = (lo, math.inf) if need < 1 else (0.0, hi)
                nxt.append(i)
        todo = nxt
        first_pass = False
        width = 0.5  # a reopened bracket holds a large share of the entries
    return [float(r) for r in result if r is not None]


def ram_global_ratios(
    inp: Inputs,
    reader: ShardReader,
    epsilon: float,
    dev: torch.device,
    stats: dict[str, int],
) -> list[float]:
    """RAM+'s whole-model overlap ratio ρᵢ per model (:func:`core.merge.ram.ram_overlap_ratios`),
    counted in one streaming pass: per key the (shared, unique) active entries of every model
    (:func:`core.merge.ram.ram_overlap_counts`), summed over the floating-point keys. The pass
    checks the inputs for NaN/Inf as it reads them (on the device for a GPU)."""
    from ..merge.ram import ram_overlap_counts, ram_ratios

    keys = [k for k in inp.keys if inp.infos[0][k].dtype.is_floating_point]
    pin = dev.type == "cuda"
    bufs = Buffers(inp, pin)
    work = inp.cfg.dtype
    shared = [0.0] * len(inp.infos)
    unique = [0.0] * len(inp.infos)

    def load(k: str, phase: int) -> tuple[list[Tensor], Tensor | None]:
        return load_key(inp, reader, k, True, pin, bufs, phase, check=not pin)

    for key, (tensors, base) in prefetched(keys, load):
        stats["read"] += sum(x.nbytes for x in tensors) + (0 if base is None else base.nbytes)
        xs = [x.to(dev, non_blocking=True) for x in tensors]
        b = None if base is None else base.to(dev, non_blocking=True)
        if pin:
            check_finite_inputs(key, xs, b, inp.labels, inp.base_label)
        if work is not None:
            xs = [x.to(work) for x in xs]
            b = None if b is None else b.to(work)
        s, u = ram_overlap_counts(xs, b, epsilon=epsilon)
        shared = [a + c for a, c in zip(shared, s, strict=True)]
        unique = [a + c for a, c in zip(unique, u, strict=True)]
        del tensors, base, xs, b
    return ram_ratios(shared, unique, epsilon=epsilon)
