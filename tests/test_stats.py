"""core.stats against hand-worked examples and independent computations (scipy, brute force)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from core.stats import (
    as_correctness,
    bootstrap_ci,
    mcnemar,
    paired_bootstrap_ci,
    paired_ttest_5x2cv,
)


def _pair(n11: int, n10: int, n01: int, n00: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness vectors with the given cell counts (a right/b right, a right/b wrong, ...)."""
    a = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00, dtype=bool)
    b = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00, dtype=bool)
    return a, b


# ---------------------------------------------------------------- McNemar
def test_mcnemar_exact_hand_worked() -> None:
    # n01 = 2, n10 = 8: P(X <= 2 | Bin(10, 1/2)) = (1 + 10 + 45) / 1024, doubled
    a, b = _pair(50, 8, 2, 40)
    r = mcnemar(a, b)
    assert (r.n01, r.n10, r.method) == (2, 8, "exact")
    assert r.statistic == 2
    assert r.p_value == pytest.approx(112 / 1024, abs=1e-15)


@pytest.mark.parametrize("n01,n10", [(0, 5), (3, 3), (1, 12), (7, 17), (24, 0)])
def test_mcnemar_exact_matches_scipy_binomtest(n01: int, n10: int) -> None:
    a, b = _pair(10, n10, n01, 5)
    r = mcnemar(a, b, exact=True)
    ref = sps.binomtest(n01, n01 + n10, 0.5, alternative="two-sided").pvalue
    assert r.p_value == pytest.approx(ref, rel=1e-12)


def test_mcnemar_chi2_hand_worked_and_scipy() -> None:
    # n01 = 10, n10 = 30: (|10 - 30| - 1)^2 / 40 = 361 / 40
    a, b = _pair(100, 30, 10, 20)
    r = mcnemar(a, b)
    assert r.method == "chi2"
    assert r.statistic == pytest.approx(361 / 40)
    assert r.p_value == pytest.approx(sps.chi2.sf(361 / 40, df=1), rel=1e-12)


def test_mcnemar_symmetric_and_degenerate() -> None:
    a, b = _pair(20, 30, 12, 3)
    assert mcnemar(a, b).p_value == pytest.approx(mcnemar(b, a).p_value)
    same = np.array([1, 0, 1, 1], dtype=bool)
    r = mcnemar(same, same)
    assert (r.p_value, r.n01, r.n10) == (1.0, 0, 0)


def test_mcnemar_accepts_tensors_and_rejects_bad_input() -> None:
    a, b = _pair(5, 3, 1, 2)
    r = mcnemar(torch.from_numpy(a), torch.from_numpy(b))
    assert (r.n01, r.n10) == (1, 3)
    with pytest.raises(ValueError, match="same length"):
        mcnemar(a, b[:-1])
    with pytest.raises(ValueError, match="0/1"):
        mcnemar(np.array([0, 2, 1]), np.array([0, 1, 1]))
    with pytest.raises(TypeError, match="correctness"):
        mcnemar("abc", b)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-D"):
        as_correctness("a", np.zeros((2, 2), dtype=bool))


def test_inputs_not_mutated() -> None:
    a, b = _pair(5, 3, 1, 2)
    a0, b0 = a.copy(), b.copy()
    mcnemar(a, b)
    paired_bootstrap_ci(a, b, n_boot=100)
    bootstrap_ci(a, n_boot=100)
    assert (a == a0).all() and (b == b0).all()


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_degenerate_is_a_point() -> None:
    ci = bootstrap_ci(np.ones(50, dtype=bool))
    assert (ci.estimate, ci.low, ci.high) == (1.0, 1.0, 1.0)


def test_bootstrap_matches_index_resampling() -> None:
    """The binomial shortcut has the same distribution as resampling indices."""
    rng = np.random.default_rng(3)
    c = rng.random(400) < 0.8
    ci = bootstrap_ci(c, n_boot=20_000, random_state=1)
    idx = rng.integers(0, c.size, size=(20_000, c.size))
    ref = np.quantile(c[idx].mean(axis=1), [0.025, 0.975])
    assert ci.estimate == pytest.approx(c.mean())
    assert ci.low == pytest.approx(ref[0], abs=0.006)
    assert ci.high == pytest.approx(ref[1], abs=0.006)
    # normal approximation as a third opinion: half-width ~ 1.96 sqrt(p(1-p)/n)
    half = 1.96 * math.sqrt(c.mean() * (1 - c.mean()) / c.size)
    assert (ci.high - ci.low) / 2 == pytest.approx(half, rel=0.08)


def test_bootstrap_seeded_and_level() -> None:
    c = np.arange(300) % 3 != 0
    assert bootstrap_ci(c, random_state=5) == bootstrap_ci(c, random_state=5)
    wide, narrow = bootstrap_ci(c, level=0.99), bootstrap_ci(c, level=0.5)
    assert wide.low < narrow.low <= narrow.estimate <= narrow.high < wide.high
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(c, level=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(c, n_boot=1)
    with pytest.raises(TypeError, match="random_state"):
        bootstrap_ci(c, random_state=0.5)  # type: ignore[arg-type]


def test_stratified_bootstrap_matches_resampling_within_groups() -> None:
    rng = np.random.default_rng(5)
    groups = np.repeat([0, 1, 2], [300, 100, 50])
    c = rng.random(groups.size) < np.array([0.9, 0.6, 0.3])[groups]
    ci = bootstrap_ci(c, groups=groups, n_boot=20_000, random_state=0)
    per_task = [c[groups == k].mean() for k in range(3)]
    assert ci.estimate == pytest.approx(np.mean(per_task))  # task average, not pooled
    reps = np.zeros(20_000)
    for k in range(3):
        ck = c[groups == k]
        reps += ck[rng.integers(0, ck.size, size=(20_000, ck.size))].mean(1) / 3
    ref = np.quantile(reps, [0.025, 0.975])
    assert ci.low == pytest.approx(ref[0], abs=0.006)
    assert ci.high == pytest.approx(ref[1], abs=0.006)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_ci(c, groups=groups[:-1])


def test_paired_bootstrap_matches_index_resampling() -> None:
    a, b = _pair(300, 40, 20, 40)
    perm = np.random.default_rng(0).permutation(a.size)
    a, b = a[perm], b[perm]
    ci = paired_bootstrap_ci(a, b, n_boot=20_000, random_state=2)
    assert ci.estimate == pytest.approx((40 - 20) / 400)
    idx = np.random.default_rng(9).integers(0, a.size, size=(20_000, a.size))
    ref = np.quantile(a[idx].mean(1) - b[idx].mean(1), [0.025, 0.975])
    assert ci.low == pytest.approx(ref[0], abs=0.004)
    assert ci.high == pytest.approx(ref[1], abs=0.004)
    # pairing matters: the paired interval is narrower than two independent ones combined
    ia, ib = bootstrap_ci(a), bootstrap_ci(b)
    indep = math.hypot(ia.high - ia.low, ib.high - ib.low)
    assert ci.high - ci.low < indep


# ---------------------------------------------------------------- 5x2cv
def test_5x2cv_hand_worked() -> None:
    diffs = [(0.10, 0.06), (0.02, 0.04), (0.05, 0.05), (0.00, 0.02), (0.03, 0.07)]
    flat = iter(itertools.chain.from_iterable(diffs))
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def evaluate(tr: np.ndarray, te: np.ndarray) -> tuple[float, float]:
        seen.append((tr, te))
        return 0.5 + next(flat), 0.5

    r = paired_ttest_5x2cv(evaluate, 20, random_state=0)
    s2 = [(x - (x + y) / 2) ** 2 + (y - (x + y) / 2) ** 2 for x, y in diffs]
    t = 0.10 / math.sqrt(sum(s2) / 5)
    assert r.statistic == pytest.approx(t)
    assert r.p_value == pytest.approx(2 * sps.t.sf(abs(t), df=5))
    np.testing.assert_allclose(r.differences, np.array(diffs), atol=1e-12)
    # each replication: two disjoint halves covering all samples, swapped for fold 2
    for (tr1, te1), (tr2, te2) in zip(seen[::2], seen[1::2], strict=True):
        assert sorted(np.concatenate([tr1, te1]).tolist()) == list(range(20))
        assert (tr1 == te2).all() and (te1 == tr2).all()


def test_5x2cv_stratified_and_degenerate() -> None:
    labels = np.array([0] * 10 + [1] * 6)

    def evaluate(tr: np.ndarray, te: np.ndarray) -> tuple[float, float]:
        assert (labels[tr] == 0).sum() == 5 and (labels[tr] == 1).sum() == 3
        return 0.8, 0.8

    r = paired_ttest_5x2cv(evaluate, 16, labels=labels, random_state=4)
    assert (r.statistic, r.p_value) == (0.0, 1.0)
    with pytest.raises(TypeError, match="evaluate"):
        paired_ttest_5x2cv(lambda tr, te: 0.5, 16)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="labels"):
        paired_ttest_5x2cv(evaluate, 16, labels=labels[:-1])


def test_5x2cv_detects_a_real_difference() -> None:
    """Two nearest-centroid variants on separable data: a real, consistent gap is significant."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (100, 2)), rng.normal(2.5, 1, (100, 2))])
    y = np.array([0] * 100 + [1] * 100)

    def evaluate(tr: np.ndarray, te: np.ndarray) -> tuple[float, float]:
        cents = np.stack([x[tr][y[tr] == k].mean(0) for k in (0, 1)])
        pred = np.argmin(((x[te, None, :] - cents[None]) ** 2).sum(-1), axis=1)
        good = float((pred == y[te]).mean())
        bad = float((np.zeros_like(y[te]) == y[te]).mean())  # always predicts class 0
        return good, bad

    r = paired_ttest_5x2cv(evaluate, 200, labels=y, random_state=1)
    assert r.mean_difference > 0.3 and r.p_value < 0.01
