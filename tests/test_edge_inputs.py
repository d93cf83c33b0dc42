"""Edge inputs that used to give a wrong number silently: McNemar with equal discordant
counts, neural collapse at extreme feature scales, k-means on identical points, invalid soft
targets for mixup."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core._warnings import MixmergeWarning
from core.cluster import KMeans
from core.geometry import neural_collapse
from core.mixup import mix, to_soft_targets
from core.stats import mcnemar


def _pair(n11: int, n10: int, n01: int, n00: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00, dtype=bool)
    b = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00, dtype=bool)
    return a, b


# ---------------------------------------------------------------- McNemar vs statsmodels
@pytest.mark.parametrize(
    ("n01", "n10"), [(4, 4), (0, 1), (1, 0), (3, 4), (12, 12), (13, 12), (30, 10), (0, 40)]
)
@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("correction", [True, False])
def test_mcnemar_matches_statsmodels(n01: int, n10: int, exact: bool, correction: bool) -> None:
    sm = pytest.importorskip("statsmodels.stats.contingency_tables")
    a, b = _pair(20, n10, n01, 7)
    ref = sm.mcnemar([[20, n10], [n01, 7]], exact=exact, correction=correction)
    got = mcnemar(a, b, exact=exact, correction=correction)
    assert got.statistic == pytest.approx(float(ref.statistic), rel=1e-12, abs=1e-15)
    assert got.p_value == pytest.approx(float(ref.pvalue), rel=1e-12, abs=1e-15)


def test_mcnemar_chi2_four_against_four_is_not_one() -> None:
    a, b = _pair(20, 4, 4, 7)
    r = mcnemar(a, b, exact=False)
    assert r.statistic == pytest.approx(1 / 8) and r.p_value == pytest.approx(0.7236736, abs=1e-6)
    with pytest.raises(TypeError, match="correction"):
        mcnemar(a, b, correction="yes")  # type: ignore[arg-type]


# ---------------------------------------------------------------- neural collapse
def _features(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(25)
    f = torch.randn(100, 8, generator=g) + 3 * torch.nn.functional.one_hot(y, 8).float()
    return f.to(dtype), y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e30, 1e-30, 1e-40])
def test_neural_collapse_does_not_depend_on_the_feature_scale(
    dtype: torch.dtype, scale: float
) -> None:
    if dtype == torch.float32 and scale < 1e-38:
        pytest.skip("below float32's normal range")
    f, y = _features(torch.float64)
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = neural_collapse(f, y, classifier=w)
    got = neural_collapse((f * scale).to(dtype), y, classifier=w)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    for k in ("nc1", "nc1_quotient", "nc1_cdnv", "nc2_equinorm", "nc2_equiangular"):
        assert np.isfinite(got[k]), k
        assert got[k] == pytest.approx(ref[k], rel=tol, abs=tol), k
    for k in ("etf_distance", "nc3", "nc4"):
        assert got[k] == pytest.approx(ref[k], rel=tol, abs=tol), k


def test_neural_collapse_scale_keeps_the_bias_terms() -> None:
    f, y = _features(torch.float64)
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b = torch.randn(4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = neural_collapse(f, y, classifier=(w, b))
    s = 2.0**80
    got = neural_collapse(f * s, y, classifier=(w, b * s))
    assert got["nc4"] == ref["nc4"]
    assert got["bias_relation"] == pytest.approx(ref["bias_relation"] * s, rel=1e-9)


# ---------------------------------------------------------------- k-means
def test_kmeans_on_identical_points_warns() -> None:
    x = np.ones((20, 3))
    with pytest.warns(MixmergeWarning, match="distinct"):
        km = KMeans(3, random_state=0).fit(x)
    assert len(np.unique(km.labels_)) == 1
    two = np.vstack([np.zeros((10, 2)), np.ones((10, 2))])
    with pytest.warns(MixmergeWarning, match="2 distinct points"):
        KMeans(3, random_state=0).fit(two)


# ---------------------------------------------------------------- soft targets
@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([[0.5, 0.6], [1.0, 0.0]], "sum to 1"),
        ([[float("nan"), 1.0], [1.0, 0.0]], "finite"),
        ([[1.5, -0.5], [1.0, 0.0]], "non-negative"),
        ([[0.0, 0.0], [1.0, 0.0]], "sum to 1"),
    ],
)
def test_mixup_refuses_invalid_soft_targets(rows: list[list[float]], match: str) -> None:
    y = torch.tensor(rows)
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match=match):
        to_soft_targets(y)
    with pytest.raises(ValueError, match=match):
        mix("mixup", x, y, generator=torch.Generator().manual_seed(0))


def test_mixup_accepts_valid_soft_targets() -> None:
    y = torch.tensor([[0.3, 0.7], [1.0, 0.0]], dtype=torch.float64)
    res = mix("mixup", torch.rand(2, 1, 4, 4), y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.y.sum(1), torch.ones(2, dtype=res.y.dtype))
