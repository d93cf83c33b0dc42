"""Choosing the number of clusters: Gaussian-mixture BIC/AIC, PPP, stability across seeds, and
agreement with known labels.

PPP — Probabilistic Partitive Partitioning (Sultan 2020, arXiv 2003.04372): k-means
(combinatorial) partitions the data, a Gaussian mixture (probabilistic) validates each partition,
and the chosen k is the one whose partition is both repeatable across seeds and confirmed by the
mixture. The paper's full method section was not available to us; the steps below follow its
abstract and are documented in docs/DECISIONS.md.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix
from sklearn.mixture import GaussianMixture

from .._checks import check_choice, check_int, check_range
from .kmeans import KMeans, as_tensor

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def _numpy(x: Any) -> np.ndarray:
    return as_tensor(x).double().cpu().numpy()


def reduce_dim(x: Any, n_components: int | None) -> np.ndarray:
    """PCA (torch, exact) to ``n_components`` dimensions; None or ≥ D keeps the data as is.

    BIC of full-covariance mixtures in many dimensions penalises every component by
    D(D+1)/2 parameters and under-counts clusters (landscape.md 2.13), so selection reduces first.
    """
    data = as_tensor(x).double()
    if n_components is None or n_components >= data.shape[1]:
        return data.cpu().numpy()
    check_int("n_components", n_components, 1)
    xc = data - data.mean(0)
    _, evecs = torch.linalg.eigh(xc.T @ xc)
    return (xc @ evecs[:, -n_components:].flip(1)).cpu().numpy()  # (N, n_components)


@dataclass(frozen=True)
class GMMSelection:
    """BIC/AIC of Gaussian mixtures over k.

    Attributes:
        k: the chosen number of components (lowest ``criterion``).
        ks: the k tried; bic, aic: one value per k (lower is better).
        criterion: "bic" or "aic"; labels: (N,) MAP components of the chosen mixture.
    """

    k: int
    ks: list[int]
    bic: list[float]
    aic: list[float]
    criterion: str
    labels: np.ndarray


def select_gmm(
    x: Any,
    *,
    k_max: int = 10,
    k_min: int = 1,
    covariance_type: str = "full",
    criterion: str = "bic",
    n_init: int = 2,
    n_components: int | None = 16,
    random_state: int = 0,
) -> GMMSelection:
    """Fit scikit-learn ``GaussianMixture`` for k = k_min..k_max and pick the lowest BIC/AIC.

    Args:
        x: (N, D) points.
        k_max, k_min: range of k.
        covariance_type: "full", "tied", "diag" or "spherical".
        criterion: "bic" (−2 ln L + p ln N) or "aic" (−2 ln L + 2p).
        n_init: EM restarts per k.
        n_components: PCA dimensions first (None keeps all).
        random_state: seed of the mixtures.
    """
    check_int("k_min", k_min, 1)
    check_int("k_max", k_max, k_min)
    check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    check_choice("criterion", criterion, ("bic", "aic"))
    check_int("n_init", n_init, 1)
    check_int("random_state", random_state, 0)
    z = reduce_dim(x, n_components)
    if len(z) <= k_max:
        raise ValueError(f"x must have more than k_max={k_max} rows, got {len(z)}")
    ks, bic, aic, fits = list(range(k_min, k_max + 1)), [], [], []
    for k in ks:
        gm = GaussianMixture(
            k, covariance_type=covariance_type, n_init=n_init, random_state=random_state
        ).fit(z)
        bic.append(float(gm.bic(z)))
        aic.append(float(gm.aic(z)))
        fits.append(gm)
    scores = bic if criterion == "bic" else aic
    best = int(np.argmin(scores))
    return GMMSelection(ks[best], ks, bic, aic, criterion, fits[best].predict(z).astype(np.int64))


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0, 1, ... in order of first appearance (equal partitions → equal arrays)."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))  # rank of each cluster's first appearance
    lookup = dict(zip(np.unique(labels).tolist(), order.tolist(), strict=True))
    return np.array([lookup[v] for v in labels.tolist()], dtype=np.int64)


def stability(
    x: Any, k: int, *, n_seeds: int = 5, random_state: int = 0, device: str = "cpu"
) -> float:
    """Mean pairwise adjusted Rand index of k-means partitions from ``n_seeds`` seeds (1 = the
    same partition whatever the initialisation)."""
    check_int("k", k, 1)
    check_int("n_seeds", n_seeds, 2)
    parts = _partitions(as_tensor(x), k, n_seeds, random_state, device)
    return _mean_pairwise_ari([p.labels_ for p in parts])


def _partitions(
    x: torch.Tensor, k: int, n_seeds: int, random_state: int, device: str
) -> list[KMeans]:
    return [
        KMeans(k, n_init=1, random_state=random_state + s, device=device).fit(x)
        for s in range(n_seeds)
    ]


def _mean_pairwise_ari(labelings: list[np.ndarray]) -> float:
    pairs = list(itertools.combinations(labelings, 2))
    return float(np.mean([adjusted_rand_score(a, b) for a, b in pairs])) if pairs else 1.0


def agreement(labels_true: Any, labels_pred: Any) -> dict[str, float]:
    """Agreement of a clustering with known labels: NMI, ARI and purity (the fraction of points
    whose cluster's majority label is their own)."""
    t, p = np.asarray(labels_true).ravel(), np.asarray(labels_pred).ravel()
    if len(t) != len(p) or len(t) == 0:
        raise ValueError(
            f"labels_true and labels_pred must have the same non-zero length, "
            f"got {len(t)} and {len(p)}"
        )
    cm = contingency_matrix(t, p)  # (classes, clusters)
    return {
        "nmi": float(normalized_mutual_info_score(t, p)),
        "ari": float(adjusted_rand_score(t, p)),
        "purity": float(cm.max(0).sum() / cm.sum()),
    }


@dataclass(frozen=True)
class PPPResult:
    """Outcome of :func:`ppp`.

    Attributes:
        k: chosen number of clusters.
        labels: (N,) cluster of each point, numbered by first appearance.
        ks: the k tried.
        scores: name -> one value per k: ``stability`` (mean pairwise ARI of k-means over
            seeds), ``agreement`` (ARI of k-means vs the GMM's MAP labels), ``confidence`` (mean
            max posterior of the GMM), ``score`` (their product, clipped at 0), ``bic``, ``aic``,
            ``inertia``.
        centres: (k, d) centres of the chosen partition (in the reduced space).
        posterior: (N,) max posterior of each point under the validating mixture.
    """

    k: int
    labels: np.ndarray
    ks: list[int]
    scores: dict[str, list[float]]
    centres: np.ndarray
    posterior: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def ppp(
    x: Any,
    *,
    k_max: int = 10,
    random_state: int = 0,
    n_seeds: int = 5,
    threshold: float = 0.9,
    covariance_type: str = "full",
    n_components: int | None = 16,
    device: str = "cpu",
) -> PPPResult:
    """Probabilistic Partitive Partitioning: choose k and cluster.

    For k = 2..k_max: k-means from ``n_seeds`` seeds (stability = mean pairwise ARI); the
    lowest-inertia partition initialises a Gaussian mixture (``means_init``) that validates it
    (agreement = ARI of k-means vs mixture MAP labels, confidence = mean max posterior). A k is
    *validated* when stability x agreement x confidence ≥ ``threshold``; among validated k the
    mixture's BIC picks one (no validated k: the highest score). Labels are numbered by first
    appearance, so equal partitions give equal arrays whatever the seeds.

    Args:
        x: (N, D) points.
        k_max: largest k tried (k = 1 is never chosen: there is nothing to validate).
        random_state: base seed (k-means seeds are random_state + i).
        n_seeds: k-means runs per k (≥ 2).
        threshold: validation threshold on the combined score, in (0, 1].
        covariance_type: of the validating mixture.
        n_components: PCA dimensions first (None keeps all).
        device: where k-means runs.
    """
    check_int("k_max", k_max, 2)
    check_int("random_state", random_state, 0)
    check_int("n_seeds", n_seeds, 2)
    check_range("threshold", threshold, 0.0, 1.0, low_inclusive=False)
    check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    z = reduce_dim(x, n_components)  # (N, d) float64
    if len(z) <= k_max:
        raise ValueError(f"x must have more than k_max={k_max} rows, got {len(z)}")
    zt = torch.from_numpy(z)
    ks = list(range(2, k_max + 1))
    scores: dict[str, list[float]] = {
        k: [] for k in ("stability", "agreement", "confidence", "score", "bic", "aic", "inertia")
    }
    chosen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for k in ks:
        parts = _partitions(zt, k, n_seeds, random_state, device)
        best = min(parts, key=lambda p: p.inertia_)
        gm = GaussianMixture(
            k,
            covariance_type=covariance_type,
            means_init=best.cluster_centers_,
            random_state=random_state,
            reg_covar=1e-6,
        ).fit(z)
        post = gm.predict_proba(z).max(1)  # (N,)
        stab = _mean_pairwise_ari([p.labels_ for p in parts])
        agree = float(adjusted_rand_score(best.labels_, gm.predict(z)))
        conf = float(post.mean())
        for name, v in (
            ("stability", stab),
            ("agreement", agree),
            ("confidence", conf),
            ("score", max(stab, 0.0) * max(agree, 0.0) * conf),
            ("bic", gm.bic(z)),
            ("aic", gm.aic(z)),
            ("inertia", best.inertia_),
        ):
            scores[name].append(float(v))
        chosen.append((best.labels_, best.cluster_centers_, post))
    valid = [i for i, s in enumerate(scores["score"]) if s >= threshold]
    i = min(valid, key=lambda j: scores["bic"][j]) if valid else int(np.argmax(scores["score"]))
    labels, centres, post = chosen[i]
    params = {
        "k_max": k_max,
        "random_state": random_state,
        "n_seeds": n_seeds,
        "threshold": threshold,
        "covariance_type": covariance_type,
        "n_components": n_components,
    }
    return PPPResult(ks[i], canonical_labels(labels), ks, scores, centres, post, params)


class PPP:
    """PPP as a scikit-learn-style estimator (see :func:`ppp` for the arguments).

    Attributes (after ``fit``): n_clusters_, labels_, scores_, ks_, result_.
    """

    def __init__(
        self,
        *,
        k_max: int = 10,
        random_state: int = 0,
        n_seeds: int = 5,
        threshold: float = 0.9,
        covariance_type: str = "full",
        n_components: int | None = 16,
        device: str = "cpu",
    ) -> None:
        self.k_max = k_max
        self.random_state = random_state
        self.n_seeds = n_seeds
        self.threshold = threshold
        self.covariance_type = covariance_type
        self.n_components = n_components
        self.device = device

    def fit(self, x: Any, y: Any = None) -> PPP:
        res = ppp(
            x,
            k_max=self.k_max,
            random_state=self.random_state,
            n_seeds=self.n_seeds,
            threshold=self.threshold,
            covariance_type=self.covariance_type,
            n_components=self.n_components,
            device=self.device,
        )
        self.result_ = res
        self.n_clusters_, self.labels_, self.scores_, self.ks_ = (
            res.k,
            res.labels,
            res.scores,
            res.ks,
        )
        return self

    def fit_predict(self, x: Any, y: Any = None) -> np.ndarray:
        return self.fit(x).labels_
