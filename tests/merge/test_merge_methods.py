"""Reference checks of each merge method against hand-worked examples, closed forms and
independent implementations, plus hypothesis properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from core.merge import (
    TENSOR_METHODS,
    adamerging_coefficients,
    greedy_soup_search,
    merge,
    recompute_batchnorm,
)
from core.merge._blocks import magnitude_threshold, topk_thresholds
from core.merge.model_stock import interpolation_ratio


def _sd(*vals: list[float]) -> dict[str, torch.Tensor]:
    return {f"p{i}": torch.tensor(v) for i, v in enumerate(vals)}


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), seed=st.integers(0, 1000))
def test_task_arithmetic_at_one_over_n_is_uniform_soup(n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    base = {"w": torch.randn(7, 3, generator=g)}
    models = [{"w": base["w"] + torch.randn(7, 3, generator=g)} for _ in range(n)]
    ta = merge("task_arithmetic", models, base=base, scale=1.0 / n)
    soup = merge("average", models)
    torch.testing.assert_close(ta["w"], soup["w"], atol=1e-5, rtol=1e-5)


def test_ties_density_one_no_conflict_is_mean_or_sum() -> None:
    base = _sd([0.0, 0.0, 0.0, 1.0])
    a, b = _sd([1.0, -2.0, 0.0, 2.0]), _sd([3.0, -1.0, 0.0, 4.0])  # same signs everywhere
    mean = merge("ties", [a, b], base=base, density=1.0, trim="tensor")
    torch.testing.assert_close(mean["p0"], torch.tensor([2.0, -1.5, 0.0, 3.0]))
    total = merge("ties", [a, b], base=base, density=1.0, disjoint="sum")
    torch.testing.assert_close(total["p0"], torch.tensor([4.0, -3.0, 0.0, 5.0]))


def test_ties_hand_worked_tensor_and_global_trim() -> None:
    # τ1 = [[4, -1, 0.5], [0.1, 0.2, -0.3]] over two tensors; τ2 = [[-3, 2, 1], [0.4, -0.5, 0.6]]
    base = {"a": torch.zeros(3), "b": torch.zeros(3)}
    m1 = {"a": torch.tensor([4.0, -1.0, 0.5]), "b": torch.tensor([0.1, 0.2, -0.3])}
    m2 = {"a": torch.tensor([-3.0, 2.0, 1.0]), "b": torch.tensor([0.4, -0.5, 0.6])}
    # per tensor, density 2/3 keeps 2 of 3 per tensor per model:
    # a: τ1 -> [4, -1, 0], τ2 -> [-3, 2, 0]; signs: sum [1, 1, 0] -> [+, +, +];
    #    agreeing means: [4, 2, 0];  b: τ1 -> [0, .2, -.3], τ2 -> [0, -.5, .6]; sums [0,-.3,.3]
    #    -> signs [+, -, +]; means [0, -0.5, 0.6]
    t = merge("ties", [m1, m2], base=base, density=2 / 3, trim="tensor")
    torch.testing.assert_close(t["a"], torch.tensor([4.0, 2.0, 0.0]))
    torch.testing.assert_close(t["b"], torch.tensor([0.0, -0.5, 0.6]))
    # global, density 1/3 keeps 2 of 6 per model: τ1 -> a=[4, -1, 0], b=0; τ2 -> a=[-3, 2, 0]
    # (all of b trimmed): a signs [+, +, 0->+], means [4, 2, 0]; b = 0
    g = merge("ties", [m1, m2], base=base, density=1 / 3)
    torch.testing.assert_close(g["a"], torch.tensor([4.0, 2.0, 0.0]))
    torch.testing.assert_close(g["b"], torch.zeros(3))


def test_ties_matches_an_independent_dense_implementation() -> None:
    g = torch.Generator().manual_seed(0)
    taus = [torch.randn(3000, generator=g) * (i + 1) for i in range(4)]
    w = [1.0, 0.5, 2.0, 1.5]
    kept = []
    for t in taus:
        k = int(0.3 * t.numel())
        thr = t.abs().sort(descending=True).values[k - 1]
        kept.append(t * (t.abs() >= thr))
    stack = torch.stack(kept)  # (4, P)
    sign = torch.where(stack.sum(0) >= 0, 1.0, -1.0)
    agree = (stack.sign() == sign) & (stack != 0)
    wt = stack * torch.tensor(w)[:, None]
    expect = (wt * agree).sum(0) / agree.sum(0).clamp(min=1)
    got = TENSOR_METHODS["ties"](taus, None, density=0.3, trim="tensor", weights=w)
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [1000, 3_000_001])
def test_magnitude_threshold_keeps_exactly_floor_density_n(n: int) -> None:
    x = torch.randn(n, generator=torch.Generator().manual_seed(n))
    thr = magnitude_threshold([x], None, 0.2)
    assert int((x.abs() >= thr).sum()) == math.floor(0.2 * n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_topk_thresholds_equal_the_chunked_search(dtype: torch.dtype) -> None:
    """The GPU path's topk thresholds (device-agnostic code, checked here on the CPU)."""
    g = torch.Generator().manual_seed(11)
    base = torch.randn(70_001, generator=g).to(dtype)
    xs = [(base.float() + s * torch.randn(70_001, generator=g)).to(dtype) for s in (0.01, 1.0, 3.0)]
    dens = [0.2, 0.5, 0.9]
    got = topk_thresholds(xs, base, dens)
    ref = [magnitude_threshold([x], [base], d) for x, d in zip(xs, dens, strict=True)]
    assert got[:2] == ref[:2] and got[2] is None  # above 0.5: left to the chunked search
    assert topk_thresholds(xs, None, [1.0, 0.3, 0.01])[1:] == [
        magnitude_threshold([x], None, d) for x, d in zip(xs[1:], (0.3, 0.01), strict=True)
    ]
    assert topk_thresholds(xs, base, [1.0] * 3) == [0.0] * 3


def test_dare_is_unbiased_and_seeded() -> None:
    tau = torch.linspace(-1, 1, 200)
    g = torch.Generator().manual_seed(0)
    dare = TENSOR_METHODS["dare"]
    draws = torch.stack([dare([tau], None, drop=0.7, scale=1.0, generator=g) for _ in range(2000)])
    mean = draws.mean(0)
    # per entry: std of the mean = |τ|·sqrt(p/(1−p))/sqrt(2000) ≈ 0.034|τ|; allow 5 sigma
    assert ((mean - tau).abs() <= 5 * 0.034 * tau.abs() + 1e-6).all()
    kept = (draws != 0).float().mean()
    assert abs(float(kept) - 0.3) < 0.01
    a = dare([tau], None, drop=0.7, generator=torch.Generator().manual_seed(3))
    b = dare([tau], None, drop=0.7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    torch.testing.assert_close(dare([tau], None, drop=0.0, scale=1.0), tau)


def test_breadcrumbs_hand_worked() -> None:
    # one row of 10: |τ| ranks 10..1; gamma 0.1 removes the largest, density 0.3 keeps the next 3
    tau = torch.tensor([10.0, -9.0, 8.0, 7.0, -6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    out = TENSOR_METHODS["breadcrumbs"]([tau], None, density=0.3, gamma=0.1, scale=1.0)
    torch.testing.assert_close(out, torch.tensor([0.0, -9.0, 8.0, 7.0, 0, 0, 0, 0, 0, 0]))
    small = torch.tensor([[3.0, -1.0, 2.0]])  # 3 < 1/γ entries: nothing removed at the top
    out = TENSOR_METHODS["breadcrumbs"]([small], None, density=2 / 3, gamma=0.1, scale=1.0)
    torch.testing.assert_close(out, torch.tensor([[3.0, 0.0, 2.0]]))


def test_model_stock_ratio_and_merge() -> None:
    assert interpolation_ratio(torch.tensor([[1.0, 0.0], [0.0, 1.0]])) == 0.0
    assert interpolation_ratio(torch.tensor([[1.0, 0.0], [2.0, 0.0]])) == pytest.approx(1.0)
    # N = 2, cos 60° = 0.5: t = 2·0.5/(1 + 0.5) = 2/3
    t1, t2 = torch.tensor([1.0, 0.0]), torch.tensor([0.5, math.sqrt(3) / 2])
    base = {"w": torch.tensor([1.0, 1.0])}
    out = merge("model_stock", [{"w": base["w"] + t1}, {"w": base["w"] + t2}], base=base)
    torch.testing.assert_close(out["w"], base["w"] + (2 / 3) * (t1 + t2) / 2)


def test_slerp_properties() -> None:
    s = TENSOR_METHODS["slerp"]
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    torch.testing.assert_close(s([a, b], None, t=0.0), a)
    torch.testing.assert_close(s([a, b], None, t=1.0), b)
    mid = s([a, b], None, t=0.5)  # Ω = 90°: sin45/sin90 weights on each
    torch.testing.assert_close(mid, torch.tensor([math.sqrt(0.5), 2 * math.sqrt(0.5)]))
    c = torch.tensor([1.0, 1e-5])  # nearly colinear -> lerp
    torch.testing.assert_close(s([a, c], None, t=0.3), torch.lerp(a, c, 0.3))
    u, v = torch.tensor([3.0, 4.0]), torch.tensor([-4.0, 3.0])  # equal norms: norm kept
    for t in (0.2, 0.5, 0.9):
        assert float(s([u, v], None, t=t).norm()) == pytest.approx(5.0, rel=1e-5)


def test_slerp_does_not_depend_on_where_the_tensor_sits_in_memory() -> None:
    # float32 SIMD dot products sum in an alignment-dependent order; a streamed tensor mapped
    # from a file sits at any offset, so the stream and the in-memory merge once disagreed.
    s = TENSOR_METHODS["slerp"]
    g = torch.Generator().manual_seed(0)
    a = torch.randn(100_003, generator=g)
    b = 0.8 * a + 0.6 * torch.randn(100_003, generator=g)  # cos Ω ≈ 0.8
    want = s([a, b], None, t=0.3)
    buf = torch.empty(200_010)
    for offset in range(8):
        view = buf[offset : offset + a.numel()]
        view.copy_(a)
        assert torch.equal(s([view, b], None, t=0.3), want), offset


def test_fisher_equal_fishers_is_average_and_dominant_fisher_selects() -> None:
    f = TENSOR_METHODS["fisher"]
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    ones = torch.ones(2)
    torch.testing.assert_close(f([a, b], None, fishers=[ones, ones]), (a + b) / 2)
    out = f([a, b], None, fishers=[torch.zeros(2), ones], floor=1e-12)
    torch.testing.assert_close(out, b)


def test_regmean_single_linear_is_least_squares_of_the_merged_regression() -> None:
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(50, 4, generator=g, dtype=torch.float64) for _ in range(2)]
    ws = [torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(2)]
    models = [{"fc.weight": w, "fc.bias": torch.zeros(3, dtype=torch.float64)} for w in ws]
    grams = [{"fc": x.T @ x / x.shape[0]} for x in xs]
    out = merge("regmean", models, grams=grams, alpha=1.0)
    x_all = torch.cat(xs)  # stacked regression: X W^T ≈ [X1 W1^T; X2 W2^T]
    y_all = torch.cat([x @ w.T for x, w in zip(xs, ws, strict=True)])
    expect = torch.linalg.lstsq(x_all, y_all).solution.T
    torch.testing.assert_close(out["fc.weight"], expect)
    same = merge("regmean", [models[0], models[0]], grams=[grams[0], grams[1]], alpha=0.5)
    torch.testing.assert_close(same["fc.weight"], ws[0])


def test_pcb_density_one_single_model_returns_it_and_drops_entries() -> None:
    base = {"w": torch.zeros(1000)}
    tau = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    one = merge("pcb", [{"w": tau}], base=base, density=1.0)
    clipped = tau.clamp(min=-tau.abs().max(), max=tau.abs().max())
    torch.testing.assert_close(one["w"], clipped, atol=0.05, rtol=0)
    sparse = merge("pcb", [{"w": tau}, {"w": -0.5 * tau}], base=base, density=0.1)
    assert int((sparse["w"] != 0).sum()) <= 2 * 100 + 2


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_adamerging_coefficients_in_range_and_entropy_decreases() -> None:
    torch.manual_seed(0)
    net = _Net()
    base = {k: v.detach().clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    models = [{k: v + torch.randn(v.shape, generator=g) for k, v in base.items()} for _ in range(2)]
    x = torch.randn(64, 4, generator=g)
    res = adamerging_coefficients(net, base, models, x, steps=60, lr=0.05, batch_size=64)
    assert res.coefficients.shape == (2,)
    assert bool(((res.coefficients >= 0) & (res.coefficients <= 1)).all())
    assert res.entropy[-1] < res.entropy[0]
    layer = adamerging_coefficients(net, base, models, [x, x], mode="layer", steps=5, lr=0.05)
    assert layer.coefficients.shape == (2, 2)
    zero = adamerging_coefficients(net, base, models, x, steps=0)
    ta = merge("task_arithmetic", models, base=base, scale=0.3)
    for k in ta:
        torch.testing.assert_close(zero.state_dict[k], ta[k])


def test_greedy_soup_keeps_only_improving_models() -> None:
    target = torch.tensor([1.0, 1.0])
    models = [
        {"w": torch.tensor([1.2, 0.8])},
        {"w": torch.tensor([0.8, 1.2])},
        {"w": torch.tensor([5.0, 5.0])},
    ]

    def evaluate(sd: dict[str, torch.Tensor]) -> float:
        return -float((sd["w"] - target).norm())

    res = greedy_soup_search(models, evaluate)
    assert set(res.kept) == {0, 1}
    torch.testing.assert_close(res.state_dict["w"], target)
    assert res.soup_score >= max(res.scores)


def test_recompute_batchnorm_matches_data_statistics() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(100, 3, generator=torch.Generator().manual_seed(1)) * 2 + 1
    out = recompute_batchnorm(net, sd, x, batch_size=100)
    h = net[0](x).detach()
    torch.testing.assert_close(out["1.running_mean"], h.mean(0))
    torch.testing.assert_close(out["1.running_var"], h.var(0, unbiased=True))
    assert torch.equal(net.state_dict()["1.running_mean"], sd["1.running_mean"])


def test_dare_quantised_draws_match_the_straightforward_computation(monkeypatch) -> None:
    """The torch kernel's draws (the fused CPU kernel's are checked in test_merge_fused.py)."""
    import sys

    monkeypatch.setenv("MIXMERGE_FUSED", "0")

    from core.merge._blocks import dare_factor, draw_keep, quantised_drop

    assert quantised_drop(0.5) == 2**14 and dare_factor(0.5) == 2.0
    assert quantised_drop(0.7) == round(0.7 * 2**15) and quantised_drop(0.999999) == 2**15 - 1
    assert quantised_drop(1e-6) == 0  # quantises to "keep all": nothing is drawn
    n, drop = 1001, 0.37
    words = torch.empty((n + 3) // 4, dtype=torch.int64)
    keep = draw_keep(
        torch.empty(n, dtype=torch.bool), words, drop, torch.Generator().manual_seed(5)
    )
    ref_words = torch.empty((n + 3) // 4, dtype=torch.int64)
    ref_words.random_(generator=torch.Generator().manual_seed(5))
    order = range(4) if sys.byteorder == "little" else range(3, -1, -1)
    u = torch.stack([(ref_words >> (16 * j)) & 0x7FFF for j in order], 1).reshape(-1)[:n]
    assert torch.equal(keep, u >= quantised_drop(drop))
    # the merge: Σ wᵢ τᵢ · keepᵢ / (1 − p_q), the models drawn one after another
    taus = [torch.randn(n, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    g = torch.Generator().manual_seed(9)
    got = TENSOR_METHODS["dare"](
        taus, None, drop=drop, scale=0.5, weights=[1.0, 2.0, -1.0], generator=g
    )
    g = torch.Generator().manual_seed(9)
    expect = torch.zeros(n)
    for t, w in zip(taus, [1.0, 2.0, -1.0], strict=True):
        k = draw_keep(torch.empty(n, dtype=torch.bool), words, drop, g)
        expect += 0.5 * w * dare_factor(drop) * t * k
    torch.testing.assert_close(got, expect)


def test_dare_quantised_drop_rate_is_unbiased() -> None:
    from core.merge._blocks import dare_factor, quantised_drop

    drop = 0.123456789  # not a multiple of 2⁻¹⁵: the rescale must use the quantised rate
    q = quantised_drop(drop) / 2**15
    assert q != drop and dare_factor(drop) == 1 / (1 - q)
    tau = torch.ones(2_000_000)
    out = TENSOR_METHODS["dare"](
        [tau], None, drop=drop, scale=1.0, generator=torch.Generator().manual_seed(0)
    )
    kept = float((out != 0).double().mean())
    sigma = (q * (1 - q) / tau.numel()) ** 0.5
    assert abs(kept - (1 - q)) < 5 * sigma  # each entry kept with probability 1 − p_q
    assert abs(float(out.double().mean()) - 1.0) < 5 * sigma / (1 - q)  # E = τ
