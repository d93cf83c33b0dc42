"""The fused kernels on every storage dtype and any number of models.

* Half precision (bfloat16, float16) is read in its own 16 bits, decoded to float32, summed in
  float32 and rounded once to the input dtype: checked against a float64 reference and against
  the torch kernels (the definition), and the bit codecs against torch on all 65,536 patterns.
* The models travel as one typed list: 101+ models merge, and a new number of models compiles
  nothing (the dispatchers' signature counts stay put).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.kernels import merge as F
from core.merge import TENSOR_METHODS
from core.merge._blocks import dare_kernel, tensor_thresholds, ties_kernel, weighted_sum

pytestmark = pytest.mark.skipif(not F.enabled(), reason="numba is not importable")

HALF = [torch.bfloat16, torch.float16]
ALL = [torch.float32, torch.float64, *HALF]


def _torch_path(monkeypatch: pytest.MonkeyPatch, fn, *args, **kw):  # type: ignore[no-untyped-def]
    with monkeypatch.context() as mp:
        mp.setenv("MIXMERGE_FUSED", "0")
        return fn(*args, **kw)


def _inputs(dtype: torch.dtype, n: int, models: int = 3, seed: int = 0):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=g)
    xs = [(base + 0.1 * torch.randn(n, generator=g)).to(dtype) for _ in range(models)]
    return base.to(dtype), xs


def _ulps(got: torch.Tensor, ref: torch.Tensor, operands: float = 8.0) -> float:
    """Largest gap in units of one rounding step of the dtype at the reference value plus a few
    roundings of the compute dtype on operands of size ``operands`` (which is what a fused
    multiply-add, or its absence, can move when a result cancels towards 0)."""
    compute = torch.float64 if got.dtype == torch.float64 else torch.float32
    tiny = torch.finfo(got.dtype).tiny
    step = torch.finfo(got.dtype).eps * ref.double().abs().clamp(min=tiny)
    spacing = step + 4 * torch.finfo(compute).eps * operands
    return float(((got.double() - ref.double()).abs() / spacing).max())


def test_half_bit_codecs_match_torch_on_every_pattern() -> None:
    k = F._kernels()
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    for dt, view in ((torch.bfloat16, np.uint16), (torch.float16, np.int16)):
        out = np.empty(1 << 16, np.float32)
        k.decode_into(bits.view(view), out)
        ref = torch.from_numpy(bits.view(np.int16)).view(dt).float().numpy()
        assert np.array_equal(out, ref, equal_nan=True), dt
    # encoding: round to nearest even like torch's .to(half), overflow and subnormals included
    g = torch.Generator().manual_seed(1)
    f = torch.cat(
        [
            torch.randn(200_000, generator=g) * 10 ** torch.randint(-9, 6, (200_000,), generator=g),
            torch.tensor([0.0, -0.0, 65504.0, 65519.0, 65520.0, 1e6, -1e6, 5.96e-8, 2.98e-8]),
            torch.tensor([float("inf"), -float("inf"), 3.0e38, -3.4e38]),
        ]
    )
    for dt in HALF:
        for x in (f, torch.nextafter(f, torch.tensor(float("inf")))):  # and the next float up
            got = dare_kernel([x], None, [1.0], drop=0.0, generator=None, out_dtype=torch.float32)
            assert torch.equal(got, x)
            one = [x.to(dt)]  # decode then encode is the identity
            back = dare_kernel(one, None, [1.0], drop=0.0, generator=None, out_dtype=dt)
            assert torch.equal(back, one[0])
            sums = weighted_sum([x], [1.0], out_dtype=dt)  # float32 -> half, once
            assert torch.equal(sums, x.to(dt)), dt  # (a sum from +0 turns -0 into +0)


@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("method", ["ties", "dare", "dare_ties", "task_arithmetic"])
def test_every_dtype_equals_the_torch_definition(
    method: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 2 * F.FUSED_CHUNK + 17
    base, xs = _inputs(dtype, n)
    assert F.usable(xs, base)
    hyper = {
        "ties": {"density": 0.3, "trim": "tensor", "scale": 0.9, "weights": [1.0, 2.0, 0.5]},
        "dare": {"drop": 0.0, "scale": 0.7, "weights": [1.0, -0.5, 2.0]},
        "dare_ties": {"drop": 0.0, "density": 1.0, "scale": 1.1},
        "task_arithmetic": {"scale": 0.4, "weights": [1.0, 0.5, 2.0]},
    }[method]
    fn = TENSOR_METHODS[method]
    got = fn(xs, base, **hyper)
    ref = _torch_path(monkeypatch, fn, xs, base, **hyper)
    assert got.dtype == dtype and ref.dtype == dtype
    # the same float32 (float64) algebra; torch's fused multiply-adds may move the last bit
    # of the compute dtype, which can move a half result by one step
    assert _ulps(got, ref) <= 1.0
    assert float((got != ref).float().mean()) < 0.02 if dtype in HALF else True


@pytest.mark.parametrize("dtype", HALF)
def test_half_inputs_accumulate_in_float32(dtype: torch.dtype) -> None:
    """Summing 64 half-precision models: a float32 accumulator stays within one rounding of the
    float64 sum; a half accumulator would drift by many steps."""
    n, m = 4096, 64
    base, xs = _inputs(dtype, n, models=m, seed=3)
    w = [1.0 / m] * m
    got = weighted_sum(xs, w, base, 0.5, out_dtype=dtype)
    exact = 0.5 * base.double() + sum(wi * x.double() for wi, x in zip(w, xs, strict=True))
    assert _ulps(got, exact, operands=0.0) <= 1.0  # one rounding from the exact value
    # TIES without a trim: float32 sums, compared with the float64 definition
    thr = [0.0] * m
    t = ties_kernel(xs, base, thr, scale=1.0, weights=[1.0] * m, disjoint="mean", out_dtype=dtype)
    tau = torch.stack([x.double() - base.double() for x in xs])  # (M, P)
    elected = torch.where(tau.sum(0) >= 0, 1.0, -1.0).double()
    agree = (torch.sign(tau) == elected) & (tau != 0)
    ref = base.double() + (tau * agree).sum(0) / agree.sum(0).clamp(min=1)
    assert _ulps(t, ref, operands=0.0) <= 1.0


@pytest.mark.parametrize("dtype", ALL)
def test_thresholds_of_every_dtype_equal_the_torch_search(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in (1000, F.DIRECT_MAX + 5000):
        base, xs = _inputs(dtype, n, seed=n)
        dens = [0.2, 0.05, 0.7]
        got = tensor_thresholds(xs, base, dens)
        assert got == _torch_path(monkeypatch, tensor_thresholds, xs, base, dens)


def test_over_a_hundred_models_and_no_recompile_for_a_new_count() -> None:
    k = F._kernels()
    g = torch.Generator().manual_seed(0)
    base = torch.randn(300, generator=g)
    many = [base + torch.randn(300, generator=g) for _ in range(137)]
    kw = dict(scale=1.0, weights=[1.0] * 137, disjoint="mean")
    ties_kernel(many[:3], base, [0.0] * 3, **{**kw, "weights": [1.0] * 3})  # compiled for N=3
    dare_kernel(many[:3], base, [1.0] * 3, drop=0.5, generator=g)
    tensor_thresholds(many[:3], base, [0.3] * 3)
    names = ("ties_all", "dare_all", "sample_abs", "bracket_all")
    before = {name: len(getattr(k, name).signatures) for name in names}
    out = ties_kernel(many, base, [0.0] * 137, **kw)
    tau = torch.stack([x - base for x in many])  # (137, P)
    elected = torch.where(tau.sum(0) >= 0, 1.0, -1.0)
    agree = torch.sign(tau) == elected
    ref = base + (tau * agree).sum(0) / agree.sum(0).clamp(min=1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    d = dare_kernel(many[:101], base, [0.01] * 101, drop=0.0, generator=None)
    torch.testing.assert_close(d, base + 0.01 * tau[:101].sum(0), rtol=1e-5, atol=1e-5)
    big = [torch.randn(F.DIRECT_MAX + 100, generator=g) for _ in range(120)]
    thr = tensor_thresholds(big, None, [0.1] * 120)
    assert thr == [float(x.abs().kthvalue(x.numel() - x.numel() // 10 + 1).values) for x in big]
    after = {name: len(getattr(k, name).signatures) for name in names}
    assert after == before  # 101, 120 and 137 models: nothing compiled


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", ALL)
def test_ties_and_dare_kernels_equal_their_readable_definitions(
    dtype: torch.dtype, fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ties_definition`` and ``dare_definition`` (the method in plain torch, in ties.py and
    dare.py) against the fast kernels, on both paths and every dtype."""
    from core.merge.dare import dare_definition, dare_tensor
    from core.merge.ties import ties_definition, ties_tensor

    if not fused:
        monkeypatch.setenv("MIXMERGE_FUSED", "0")
    base, xs = _inputs(dtype, 3001, seed=11)
    xs[1][:500] = base[:500]  # zeros in a task vector are never kept
    for kw in (
        {"density": 0.3, "scale": 0.9, "disjoint": "mean", "weights": [1.0, 2.0, 0.5]},
        {"density": 1.0, "scale": 1.2, "disjoint": "sum"},
    ):
        for b in (base, None):
            got = ties_tensor(xs, b, trim="tensor", **kw)
            assert _ulps(got, ties_definition(xs, b, **kw)) <= 1.0
    keep = torch.ones(3, 3001, dtype=torch.bool)
    kw2 = {"drop": 0.0, "scale": 0.7, "weights": [1.0, -0.5, 2.0]}
    for b in (base, None):
        assert _ulps(dare_tensor(xs, b, **kw2), dare_definition(xs, b, keep, **kw2)) <= 1.0
    if fused:  # the fused draws are SplitMix64 outputs: rebuild the masks and compare
        from tests.merge.test_merge_fused import splitmix

        seeds = F.draw_seeds(3, torch.Generator().manual_seed(5))
        m = 1 << 14  # drop 0.5 quantised
        keep = torch.tensor(
            [[(splitmix(int(s), i) >> 49) >= m for i in range(3001)] for s in seeds]
        )
        got = dare_tensor(xs, base, drop=0.5, scale=0.7, generator=torch.Generator().manual_seed(5))
        assert _ulps(got, dare_definition(xs, base, keep, drop=0.5, scale=0.7)) <= 1.0


@pytest.mark.parametrize("dtype", ALL)
def test_fused_magmax_equals_the_torch_loop(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MagMax's one-pass kernel against its chunked torch loop (the definition) on every dtype:
    float32 compute for half inputs, the input dtype out, ties to the later task vector, and
    a NaN |τ| that sticks as torch.maximum's does."""
    from core.merge.magmax import magmax_tensor

    n = 2 * F.FUSED_CHUNK + 17
    base, xs = _inputs(dtype, n, models=4, seed=7)
    xs[2][:300] = xs[1][:300]  # equal task vectors: the later one wins (same value)
    base[300:600] = 0.0  # |τ| ties between two opposite task vectors, the others zero
    for j in (0, 2):
        xs[j][300:600] = 0.0
    xs[3][300:600] = -xs[1][300:600]
    xs[1][700] = float("nan")
    assert F.usable(xs, base)
    for b in (base, None):
        got = magmax_tensor(xs, b, scale=0.7)
        ref = _torch_path(monkeypatch, magmax_tensor, xs, b, scale=0.7)
        assert got.dtype == dtype and ref.dtype == dtype
        assert torch.isnan(got[700]) == torch.isnan(ref[700])
        keep = ~torch.isnan(ref)
        assert torch.equal(torch.isnan(got), ~keep)
        assert _ulps(got[keep], ref[keep]) <= 1.0
    # the tie at 300..600 went to the last task vector: λ · x₃ there (θ₀ = 0)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    tie = (0.7 * xs[3][300:600].to(compute)).to(dtype)
    assert _ulps(magmax_tensor(xs, base, scale=0.7)[300:600], tie) <= 1.0
