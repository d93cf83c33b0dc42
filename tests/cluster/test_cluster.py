"""core.cluster: torch k-means against scikit-learn, PPP and BIC recover the number of blobs,
stability and agreement scores on hand-checked cases, the estimator contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import make_blobs
from sklearn.utils.estimator_checks import parametrize_with_checks

from core.cluster import PPP, KMeans, agreement, canonical_labels, ppp, select_gmm, stability


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_blobs(500, n_features=6, centers=4, cluster_std=0.5, random_state=3)
    return x, y


def test_torch_kmeans_matches_sklearn_inertia() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(loc=c, size=(300, 10)) for c in (0.0, 2.0, 4.0)]).astype(
        np.float32
    )
    x += rng.normal(size=x.shape).astype(np.float32)  # overlapping: a real optimisation problem
    ours = KMeans(6, n_init=4, random_state=0, device="cpu").fit(x)
    ref = SkKMeans(6, n_init=4, random_state=0).fit(x)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=0.01)
    # inertia is what it claims to be
    d = ((x[:, None, :] - ours.cluster_centers_[None]) ** 2).sum(-1)
    assert ours.inertia_ == pytest.approx(d.min(1).sum(), rel=1e-4)
    assert np.array_equal(ours.labels_, d.argmin(1)) and np.array_equal(
        ours.predict(x), ours.labels_
    )


def test_kmeans_recovers_blobs_and_is_seeded(blobs) -> None:
    x, y = blobs
    a = KMeans(4, random_state=1).fit(torch.from_numpy(x))
    assert agreement(y, a.labels_)["ari"] == pytest.approx(1.0)
    b = KMeans(4, random_state=1).fit(x)
    assert np.array_equal(a.labels_, b.labels_)
    assert KMeans(4).get_params()["n_clusters"] == 4 and not hasattr(KMeans(4), "labels_")


@pytest.mark.parametrize(
    ("kw", "err"),
    [
        ({"n_clusters": 0}, ValueError),
        ({"n_init": 0}, ValueError),
        ({"n_clusters": 2.5}, TypeError),
        ({"tol": -1.0}, ValueError),
    ],
)
def test_kmeans_validates_in_fit(kw: dict, err: type) -> None:
    est = KMeans(**kw)  # __init__ only stores
    with pytest.raises(err):
        est.fit(np.zeros((10, 2)))


def test_kmeans_refuses_bad_data() -> None:
    with pytest.raises(ValueError, match="NaN"):
        KMeans(2).fit(np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0]]))
    with pytest.raises(ValueError, match="at least n_clusters"):
        KMeans(5).fit(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="2D array"):
        KMeans(2).fit(np.zeros(5))


def test_ppp_recovers_number_of_blobs_whatever_the_seed(blobs) -> None:
    x, y = blobs
    first = ppp(x, k_max=7, random_state=0)
    assert first.k == 4 and agreement(y, first.labels)["ari"] == pytest.approx(1.0)
    assert first.ks == list(range(2, 8)) and len(first.scores["score"]) == 6
    assert first.scores["score"][first.ks.index(4)] > 0.99
    other = ppp(x, k_max=7, random_state=11)
    assert other.k == 4 and np.array_equal(
        other.labels, first.labels
    )  # same partition, same numbers
    est = PPP(k_max=7).fit(x)
    assert est.n_clusters_ == 4 and np.array_equal(est.labels_, first.labels)


def test_bic_selection_recovers_number_of_blobs(blobs) -> None:
    x, y = blobs
    sel = select_gmm(x, k_max=7)
    assert sel.k == 4 and sel.ks == list(range(1, 8)) and np.argmin(sel.bic) == 3
    assert agreement(y, sel.labels)["ari"] == pytest.approx(1.0)
    assert select_gmm(x, k_max=7, criterion="aic", covariance_type="diag").k >= 4


def test_stability_and_agreement_hand_checked(blobs) -> None:
    x, _ = blobs
    assert stability(x, 4, n_seeds=3) == pytest.approx(1.0)
    a = agreement([0, 0, 1, 1], [1, 1, 0, 0])
    assert a == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0), "purity": pytest.approx(1.0)}
    # one cluster holding everything: purity = majority share, ARI = 0
    b = agreement([0, 0, 0, 1], [5, 5, 5, 5])
    assert b["purity"] == pytest.approx(0.75) and b["ari"] == pytest.approx(0.0)
    assert canonical_labels(np.array([7, 7, 2, 9, 2])).tolist() == [0, 0, 1, 2, 1]
    with pytest.raises(ValueError, match="same non-zero length"):
        agreement([0, 1], [0])


def test_kmeans_fast_paths_equal_the_straightforward_computation() -> None:
    from core.cluster.kmeans import _mean_variance, _nearest, _sq_dist

    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 7, generator=g, dtype=torch.float64) + 5.0
    c = torch.randn(6, 7, generator=g, dtype=torch.float64) + 5.0
    ref = ((x[:, None, :] - c[None, :, :]) ** 2).sum(2)  # (N, K) by definition
    torch.testing.assert_close(_sq_dist(x, c, (x * x).sum(1)), ref)
    assert torch.equal(_nearest(x, c), ref.argmin(1))
    assert _mean_variance(x) == pytest.approx(float(x.var(0, unbiased=False).mean()), rel=1e-12)


@parametrize_with_checks([KMeans(n_clusters=3, device="cpu")])
def test_kmeans_meets_the_scikit_learn_estimator_contract(estimator, check) -> None:
    """scikit-learn's own estimator checks: clone, get/set_params, input validation (sparse,
    complex, object, 1-D, empty, NaN), n_features_in_, NotFittedError, fit idempotence."""
    check(estimator)
