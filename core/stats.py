"""Statistics for comparing models: bootstrap confidence intervals, McNemar's test, 5x2cv t-test.

All tests work on **per-sample correctness** (one boolean per test example), which
:func:`core.train.evaluate` returns as ``EvalResult.correct``.

* :func:`bootstrap_ci` — percentile bootstrap CI of an accuracy (Efron & Tibshirani 1993).
* :func:`paired_bootstrap_ci` — CI of the accuracy difference of two models on the same samples.
* :func:`mcnemar` — McNemar's test on the discordant pairs (McNemar 1947): exact binomial for
  fewer than 25 discordant samples, chi-square with Edwards' continuity correction otherwise.
* :func:`paired_ttest_5x2cv` — Dietterich's 5x2cv paired t-test for two *training procedures*
  (Dietterich 1998, Neural Computation 10(7)).

The bootstrap does not materialise resampled index matrices: resampling n Bernoulli outcomes
with replacement gives a success count distributed exactly Binomial(n, k/n) (and, paired, a
Multinomial over the four (a, b) outcome cells), so each replicate costs O(1) instead of O(n)
with the same distribution as index resampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._checks import check_int, check_range

RandomState = int | np.random.Generator

EXACT_BELOW = 25  # discordant pairs below which McNemar uses the exact binomial test


@dataclass(frozen=True)
class BootstrapCI:
    """A bootstrap confidence interval.

    Attributes:
        estimate: the statistic on the original sample (accuracy or accuracy difference).
        low, high: percentile interval bounds.
        level: confidence level, e.g. 0.95.
        n_boot: bootstrap replicates.
        n: samples.
    """

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n: int

    def to_dict(self) -> dict[str, float]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "n_boot": self.n_boot,
            "n": self.n,
        }


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test of two classifiers on the same samples.

    Attributes:
        statistic: chi-square statistic (``method == "chi2"``) or min(n01, n10) (``"exact"``).
        p_value: two-sided p-value.
        n01: samples that ``a`` gets wrong and ``b`` right.
        n10: samples that ``a`` gets right and ``b`` wrong.
        method: "exact" or "chi2".
    """

    statistic: float
    p_value: float
    n01: int
    n10: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "statistic": self.statistic,
            "p_value": self.p_value,
            "n01": self.n01,
            "n10": self.n10,
            "method": self.method,
        }


@dataclass(frozen=True)
class TTestResult:
    """Dietterich's 5x2cv paired t-test.

    Attributes:
        statistic: t with 5 degrees of freedom.
        p_value: two-sided p-value.
        differences: (5, 2) score differences (a - b) per replication and fold.
    """

    statistic: float
    p_value: float
    differences: np.ndarray

    @property
    def mean_difference(self) -> float:
        return float(self.differences.mean())


def as_correctness(name: str, value: Any) -> np.ndarray:
    """Per-sample correctness as a 1-D numpy bool array.

    Accepts a bool tensor/array/sequence or 0/1 integers.

    Raises:
        TypeError: not array-like.
        ValueError: not 1-D, empty, or holding values other than 0/1.
    """
    if isinstance(value, torch.Tensor):
        arr = value.detach().cpu().numpy()
    elif isinstance(value, np.ndarray | Sequence) and not isinstance(value, str | bytes):
        arr = np.asarray(value)
    else:
        raise TypeError(
            f"{name} must be a 1-D bool tensor/array of per-sample correctness, "
            f"got {type(value).__name__}"
        )
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be 1-D and non-empty, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans or 0/1, got dtype {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def _rng(random_state: RandomState) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
        raise TypeError(
            f"random_state must be an int or numpy Generator, got {type(random_state).__name__}"
        )
    check_int("random_state", int(random_state), 0)
    return np.random.default_rng(int(random_state))


def _check_boot(n_boot: int, level: float) -> None:
    check_int("n_boot", n_boot, 10, 10_000_000)
    check_range("level", level, 0.0, 1.0, low_inclusive=False, high_inclusive=False)


def _percentiles(reps: np.ndarray, level: float) -> tuple[float, float]:
    alpha = 1.0 - level
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    correct: Any,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    random_state: RandomState = 0,
    groups: Any = None,
) -> BootstrapCI:
    """Percentile bootstrap confidence interval of an accuracy.

    Args:
        correct: (N,) per-sample correctness (bool or 0/1).
        n_boot: bootstrap replicates.
        level: confidence level in (0, 1).
        random_state: seed or numpy Generator.
        groups: optional (N,) integer group of each sample (e.g. its task). The statistic is
            then the mean of the per-group accuracies (the "average accuracy" over tasks),
            and samples are resampled within each group (stratified bootstrap).

    Returns:
        :class:`BootstrapCI` with the accuracy (or mean per-group accuracy) as ``estimate``.
    """
    c = as_correctness("correct", correct)
    _check_boot(n_boot, level)
    rng = _rng(random_state)
    if groups is None:
        n, k = c.size, int(c.sum())
        reps = rng.binomial(n, k / n, size=n_boot) / n  # (n_boot,) resampled accuracies
        lo, hi = _percentiles(reps, level)
        return BootstrapCI(k / n, lo, hi, float(level), n_boot, n)
    g = _groups(groups, c.size)
    sizes = np.array([int((g == u).sum()) for u in np.unique(g)])  # (G,)
    hits = np.array([int(c[g == u].sum()) for u in np.unique(g)])  # (G,)
    reps = rng.binomial(sizes, hits / sizes, size=(n_boot, sizes.size)) / sizes  # (n_boot, G)
    lo, hi = _percentiles(reps.mean(axis=1), level)
    return BootstrapCI(float((hits / sizes).mean()), lo, hi, float(level), n_boot, c.size)


def _groups(groups: Any, n: int) -> np.ndarray:
    g = groups.detach().cpu().numpy() if isinstance(groups, torch.Tensor) else np.asarray(groups)
    if g.shape != (n,) or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(
            f"groups must be ({n},) integers (one group per sample), got shape {g.shape} "
            f"dtype {g.dtype}"
        )
    return g


def paired_bootstrap_ci(
    a: Any, b: Any, *, n_boot: int = 2000, level: float = 0.95, random_state: RandomState = 0
) -> BootstrapCI:
    """Paired percentile bootstrap CI of ``accuracy(a) - accuracy(b)`` on the same samples.

    Samples are resampled jointly, so the correlation between the two models is kept (the
    interval is much narrower than two independent CIs suggest when the models agree a lot).

    Args:
        a, b: (N,) per-sample correctness of two models on the same N samples.
        n_boot, level, random_state: as in :func:`bootstrap_ci`.
    """
    ca, cb = as_correctness("a", a), as_correctness("b", b)
    if ca.size != cb.size:
        raise ValueError(f"a and b must have the same length, got {ca.size} and {cb.size}")
    _check_boot(n_boot, level)
    rng = _rng(random_state)
    n = ca.size
    n10 = int((ca & ~cb).sum())
    n01 = int((~ca & cb).sum())
    p = np.array([n10, n01, n - n10 - n01], dtype=float) / n
    counts = rng.multinomial(n, p, size=n_boot)  # (n_boot, 3) resampled cell counts
    reps = (counts[:, 0] - counts[:, 1]) / n
    lo, hi = _percentiles(reps, level)
    return BootstrapCI((n10 - n01) / n, lo, hi, float(level), n_boot, n)


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exact via integer arithmetic."""
    total = sum(math.comb(n, i) for i in range(k + 1))
    return total / 2.0**n if n < 1000 else math.exp(math.log(total) - n * math.log(2.0))


def mcnemar(a: Any, b: Any, *, exact: bool | None = None, correction: bool = True) -> McNemarResult:
    """McNemar's test: do two classifiers err on the same samples at the same rate?

    Only discordant samples count: n01 (a wrong, b right) and n10 (a right, b wrong).

    Args:
        a, b: (N,) per-sample correctness of two models on the same N samples.
        exact: True for the exact binomial test (two-sided, p = min(1, 2 P(X <= min(n01,
            n10))) with X ~ Bin(n01 + n10, 1/2)); False for chi-square,
            (|n01 - n10| - c)^2 / (n01 + n10) on 1 degree of freedom; None picks exact below
            25 discordant samples.
        correction: c = 1 (Edwards' continuity correction) if True, else c = 0; ignored by
            the exact test. As in ``statsmodels.stats.contingency_tables.mcnemar`` (tested
            against it), the corrected statistic is not clipped at 0: with n01 = n10 = 4 it is
            1/8 and p = 0.724, not 1.

    Returns:
        :class:`McNemarResult`. With no discordant samples the p-value is 1 (statsmodels'
        chi-square gives NaN there: 0/0).
    """
    ca, cb = as_correctness("a", a), as_correctness("b", b)
    if ca.size != cb.size:
        raise ValueError(f"a and b must have the same length, got {ca.size} and {cb.size}")
    if exact is not None and not isinstance(exact, bool):
        raise TypeError(f"exact must be a bool or None, got {type(exact).__name__}")
    if not isinstance(correction, bool):
        raise TypeError(f"correction must be a bool, got {type(correction).__name__}")
    n01 = int((~ca & cb).sum())
    n10 = int((ca & ~cb).sum())
    m = n01 + n10
    use_exact = m < EXACT_BELOW if exact is None else exact
    if m == 0:
        return McNemarResult(0.0, 1.0, n01, n10, "exact" if use_exact else "chi2")
    if use_exact:
        k = min(n01, n10)
        p = min(1.0, 2.0 * _binom_cdf_half(k, m))
        return McNemarResult(float(k), p, n01, n10, "exact")
    stat = (abs(n01 - n10) - float(correction)) ** 2 / m
    p = math.erfc(math.sqrt(stat / 2.0))  # survival function of chi-square with 1 dof
    return McNemarResult(float(stat), p, n01, n10, "chi2")


def _t_sf_two_sided(t: float, df: int) -> float:
    from scipy.special import stdtr

    return float(2.0 * stdtr(df, -abs(t)))


def paired_ttest_5x2cv(
    evaluate: Callable[[np.ndarray, np.ndarray], tuple[float, float]],
    n: int,
    *,
    labels: Any = None,
    random_state: RandomState = 0,
) -> TTestResult:
    """Dietterich's 5x2cv paired t-test for two training procedures A and B.

    Five times, the N samples are split in two halves (stratified by ``labels`` when given);
    each procedure is trained on one half and scored on the other, then the other way round.
    With p_ij the score difference (A - B) of replication i, fold j, p̄_i their mean and
    s_i² = Σ_j (p_ij - p̄_i)², the statistic is t = p_11 / sqrt(Σ_i s_i² / 5) with 5 degrees
    of freedom.

    Args:
        evaluate: ``evaluate(train_idx, test_idx) -> (score_a, score_b)``: train both
            procedures on ``train_idx`` and score them on ``test_idx`` (e.g. accuracy).
        n: number of samples.
        labels: optional (N,) class labels for stratified halves.
        random_state: seed or numpy Generator for the splits.

    Returns:
        :class:`TTestResult`. If all differences are equal (zero variance) the statistic is
        0 with p-value 1 when p_11 is 0, else ±inf with p-value 0.
    """
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    check_int("n", n, 4)
    lab: np.ndarray | None = None
    if labels is not None:
        lab = (
            labels.detach().cpu().numpy()
            if isinstance(labels, torch.Tensor)
            else np.asarray(labels)
        )
        if lab.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {lab.shape}")
    rng = _rng(random_state)
    diffs = np.zeros((5, 2))
    for i in range(5):
        first, second = _halves(n, lab, rng)
        for j, (tr, te) in enumerate(((first, second), (second, first))):
            out = evaluate(tr, te)
            if not isinstance(out, tuple | list) or len(out) != 2:
                raise TypeError(
                    f"evaluate must return (score_a, score_b), got {type(out).__name__} {out!r}"
                )
            diffs[i, j] = float(out[0]) - float(out[1])
    mean = diffs.mean(axis=1, keepdims=True)  # (5, 1)
    var = ((diffs - mean) ** 2).sum(axis=1)  # (5,) s_i^2
    denom = math.sqrt(var.mean())
    if denom == 0.0:
        if diffs[0, 0] == 0.0:
            return TTestResult(0.0, 1.0, diffs)
        return TTestResult(math.copysign(math.inf, diffs[0, 0]), 0.0, diffs)
    t = float(diffs[0, 0] / denom)
    return TTestResult(t, _t_sf_two_sided(t, 5), diffs)


def _halves(
    n: int, labels: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random split of range(n) into two halves (stratified by labels when given)."""
    if labels is None:
        perm = rng.permutation(n)
        return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])
    first, second = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        first.append(idx[: len(idx) // 2])
        second.append(idx[len(idx) // 2 :])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


__all__ = [
    "BootstrapCI",
    "McNemarResult",
    "TTestResult",
    "as_correctness",
    "bootstrap_ci",
    "mcnemar",
    "paired_bootstrap_ci",
    "paired_ttest_5x2cv",
]
