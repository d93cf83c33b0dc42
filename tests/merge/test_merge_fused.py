"""The fused CPU kernels (numba) against the torch kernels and a plain-Python reference."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from core.kernels import merge as F
from core.merge._blocks import (
    dare_factor,
    dare_kernel,
    magnitude_threshold,
    quantised_drop,
    tensor_thresholds,
    ties_kernel,
)

pytestmark = pytest.mark.skipif(not F.enabled(), reason="numba is not importable")

MASK = (1 << 64) - 1


def splitmix(seed: int, i: int) -> int:
    """The i-th output of SplitMix64 seeded with ``seed`` (plain Python, 64-bit wrap-around)."""
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def torch_path(fn, *args, **kw):  # type: ignore[no-untyped-def]
    """Run ``fn`` with the fused kernels switched off (the torch kernels)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MIXMERGE_FUSED", "0")
    try:
        assert not F.usable([torch.zeros(2)], None)
        return fn(*args, **kw)
    finally:
        mp.undo()


@pytest.mark.parametrize("n", [1, 7, F.FUSED_CHUNK + 3, 3 * F.FUSED_CHUNK])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_ties_equals_the_torch_kernel(n: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(n)
    base = torch.randn(n, generator=g, dtype=dtype)
    xs = [base + 0.1 * torch.randn(n, generator=g, dtype=dtype) for _ in range(3)]
    xs[1][: n // 3] = base[: n // 3]  # zeros in a task vector are never kept
    for weights in ([1.0, 1.0, 1.0], [0.5, 2.0, -1.0]):
        for thr in ([0.05, 0.1, 0.0], [0.0, 0.0, 0.0]):
            for disjoint in ("mean", "sum"):
                for b in (base, None):
                    kw = dict(scale=0.7, weights=weights, disjoint=disjoint)
                    assert F.usable(xs, b)
                    got = ties_kernel(xs, b, thr, **kw)
                    ref = torch_path(ties_kernel, xs, b, thr, **kw)
                    # the same algebra in the same order; only torch's fused multiply-adds
                    # may round the last bit differently
                    torch.testing.assert_close(got, ref, rtol=4e-7, atol=1e-7)


def test_fused_dare_draws_are_splitmix64_from_seeds_of_the_generator() -> None:
    n, drop = 1001, 0.37
    g = torch.Generator().manual_seed(3)
    taus = [torch.randn(n, generator=g) for _ in range(3)]
    weights = [1.0, 2.0, -1.0]
    got = dare_kernel(taus, None, weights, drop=drop, generator=torch.Generator().manual_seed(9))
    seeds = F.draw_seeds(3, torch.Generator().manual_seed(9))
    m = quantised_drop(drop)
    expect = torch.zeros(n)
    for t, w, seed in zip(taus, weights, seeds, strict=True):
        keep = torch.tensor([(splitmix(int(seed), i) >> 49) >= m for i in range(n)])
        expect += w * dare_factor(drop) * t * keep
    torch.testing.assert_close(got, expect)
    # the same draws inside TIES (DARE-TIES, no trim): kept entries are τ · 1/(1 − p_q)
    t0 = taus[0]
    one = ties_kernel(
        [t0],
        None,
        [0.0],
        scale=1.0,
        weights=[1.0],
        disjoint="sum",
        drop=drop,
        generator=torch.Generator().manual_seed(9),
    )
    keep0 = torch.tensor([(splitmix(int(seeds[0]), i) >> 49) >= m for i in range(n)])
    torch.testing.assert_close(one, t0 * keep0 * dare_factor(drop))


def test_fused_dare_keeps_the_right_fraction_independently_per_model() -> None:
    n, drop = 400_000, 0.9
    ones = [torch.ones(n), torch.ones(n)]
    masks = [
        dare_kernel([x], None, [1.0], drop=drop, generator=torch.Generator().manual_seed(1)) != 0
        for x in ones
    ]
    both = dare_kernel(
        ones, None, [1.0, 1.0], drop=drop, generator=torch.Generator().manual_seed(1)
    )
    kept = (both != 0).float()
    p_keep = 1 - quantised_drop(drop) / 2**15
    sd = (p_keep * (1 - p_keep) / n) ** 0.5
    for mask in masks:
        assert abs(mask.float().mean().item() - p_keep) < 5 * sd
    # two models with seeds drawn one after another: their masks are independent
    both_kept = (both > dare_factor(drop) * 1.5).float().mean().item()  # kept in both
    assert abs(both_kept - p_keep**2) < 5 * (p_keep**2 / n) ** 0.5 + 1e-4
    assert abs(kept.mean().item() - (1 - (1 - p_keep) ** 2)) < 5 * sd
    # unbiased: E[DARE(τ)] = τ
    assert abs(both.mean().item() - 2.0) < 5 * dare_factor(drop) * sd * 2
    # same generator state, same draws; another seed, other draws
    again = dare_kernel(
        ones, None, [1.0, 1.0], drop=drop, generator=torch.Generator().manual_seed(1)
    )
    other = dare_kernel(
        ones, None, [1.0, 1.0], drop=drop, generator=torch.Generator().manual_seed(2)
    )
    assert torch.equal(both, again) and not torch.equal(both, other)


def test_fused_results_do_not_depend_on_the_thread_count() -> None:
    import numba

    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(3 * F.FUSED_CHUNK + 5, generator=g) for _ in range(3)]
    kw = dict(scale=1.0, weights=[1.0, 1.0, 1.0], disjoint="mean", drop=0.5)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = ties_kernel(xs, None, [0.0] * 3, generator=torch.Generator().manual_seed(4), **kw)
    finally:
        numba.set_num_threads(old)
    many = ties_kernel(xs, None, [0.0] * 3, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(one, many)


@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("n", [1, 5, 70_000, 200_003])
def test_fused_bracket_counts_and_collects_like_torch(n: int, with_base: bool) -> None:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g)
    b = torch.randn(n, generator=g) if with_base else None
    a = (x - b).abs() if b is not None else x.abs()
    above, inside = F.bracket(x, b, 0.3, 0.9)
    assert above == int((a > 0.9).sum())
    assert torch.equal(inside, a[(a >= 0.3) & (a <= 0.9)])


def test_magnitude_threshold_is_the_same_on_both_paths() -> None:
    g = torch.Generator().manual_seed(2)
    ts = [torch.randn(150_001, generator=g), torch.randn(7, 11, generator=g)]
    bases = [torch.randn(150_001, generator=g), None]
    for density in (0.01, 0.2, 0.9):
        got = magnitude_threshold(ts, bases, density)
        assert got == torch_path(magnitude_threshold, ts, bases, density)


def test_bracket_many_reads_every_model_against_its_own_bracket() -> None:
    g = torch.Generator().manual_seed(3)
    n = 3 * F.FUSED_CHUNK + 11
    b = torch.randn(n, generator=g)
    xs = [b + s * torch.randn(n, generator=g) for s in (0.1, 1.0, 3.0)]
    los, his = [0.05, 0.5, 2.0], [0.1, 0.9, 2.2]
    above, hits = F.bracket_many(xs, b, los, his, expect=0.01)  # most blocks overflow at 0.01
    for x, lo, hi, n_above, h in zip(xs, los, his, above, hits, strict=True):
        a = (x - b).abs()
        assert n_above == int((a > hi).sum())
        real = torch.from_numpy(h[h >= 0])
        assert torch.equal(real, a[(a >= lo) & (a <= hi)])  # in order, overflowed blocks too
        assert (h[h < 0] == -1).all()  # the rest is padding


@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize("n", [1, 5, F.DIRECT_MAX, F.DIRECT_MAX + 1, 300_007])
def test_tensor_thresholds_equal_the_torch_search(n: int, with_base: bool) -> None:
    g = torch.Generator().manual_seed(n)
    b = torch.randn(n, generator=g) if with_base else None
    xs = [torch.randn(n, generator=g) * s + (0 if b is None else b) for s in (0.01, 1.0, 5.0)]
    for dens in ([0.2, 0.2, 0.2], [0.001, 0.5, 1.0], [0.99, 1e-6, 0.3]):
        got = tensor_thresholds(xs, b, dens)
        ref = [torch_path(magnitude_threshold, [x], [b], d) for x, d in zip(xs, dens, strict=True)]
        assert got == ref, (dens, got, ref)


def test_tensor_thresholds_with_clustered_magnitudes_and_a_missed_bracket() -> None:
    n = 2 * F.DIRECT_MAX  # stride 2: the sample sees the even entries only
    g = torch.Generator().manual_seed(5)
    sorted_x = torch.linspace(0.0, 1.0, n)  # the bracket's entries sit in one or two blocks
    fooled = torch.randn(n, generator=g) * 1e-3
    fooled[1::2] += 10.0  # the odd entries, unseen by the sample, are the largest
    for x in (sorted_x, fooled):
        for d in (0.05, 0.2, 0.7):
            assert tensor_thresholds([x], None, [d]) == [
                torch_path(magnitude_threshold, [x], None, d)
            ]
    assert F.thresholds([fooled], None, [1000]) == [None]  # the miss the caller falls back on
    with pytest.raises(ValueError, match="densities must have one entry per tensor"):
        tensor_thresholds([fooled], None, [0.1, 0.2])


def test_mixed_dtypes_and_strided_inputs_take_the_torch_path() -> None:
    assert not F.usable([torch.randn(10), torch.randn(10, dtype=torch.float64)], None)
    assert not F.usable([torch.randn(4, 4).t()], None)  # not contiguous
    h = torch.randn(10, dtype=torch.float16)
    assert F.usable([h, h], h) and F.usable([h.float()], h)  # a base of the same compute dtype
    assert not F.usable([h.double()], h)
    assert not F.usable([torch.randint(0, 3, (4,))], None)


def test_fused_kernels_are_safe_from_several_threads() -> None:
    g = torch.Generator().manual_seed(7)
    xs = [torch.randn(2 * F.FUSED_CHUNK + 1, generator=g) for _ in range(3)]
    ref = ties_kernel(xs, None, [0.1] * 3, scale=1.0, weights=[1.0] * 3, disjoint="mean")
    results: list[torch.Tensor] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                results.append(
                    ties_kernel(xs, None, [0.1] * 3, scale=1.0, weights=[1.0] * 3, disjoint="mean")
                )
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 15
    assert all(torch.equal(r, ref) for r in results)


def test_draw_seeds_are_63_bit_and_follow_the_generator() -> None:
    a = F.draw_seeds(4, torch.Generator().manual_seed(0))
    b = F.draw_seeds(4, torch.Generator().manual_seed(0))
    assert a.dtype == np.uint64 and np.array_equal(a, b) and len(set(a.tolist())) == 4
    assert all(int(s) < 2**63 for s in a)


def test_empty_tensors() -> None:
    e = torch.empty(0, 3)
    assert F.bracket(e, None, 0.1, 0.2)[0] == 0 and F.bracket(e, e, 0.1, 0.2)[1].numel() == 0
    out = ties_kernel([e, e], e, [0.1, 0.1], scale=1.0, weights=[1.0, 1.0], disjoint="mean")
    assert out.shape == (0, 3)
    assert dare_kernel([e], None, [1.0], drop=0.5, generator=None).shape == (0, 3)
    assert magnitude_threshold([e, torch.ones(4)], None, 0.5) == 1.0
