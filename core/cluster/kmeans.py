"""k-means in torch (greedy k-means++ init, Lloyd iterations, ``n_init`` restarts), on the GPU
when present. Follows scikit-learn's ``KMeans`` (same init scheme, tolerance and inertia) so
that the two reach the same inertia on the same data; scikit-learn is the reference in tests.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from .._checks import check_int, check_range
from .._warnings import MixmergeWarning
from ..device import resolve_device


def as_tensor(x: Any, name: str = "x") -> Tensor:
    """A finite (N, D) float tensor from a tensor, array or nested list (float64 stays float64).

    Anything that is not a tensor goes through scikit-learn's ``check_array`` (dense, 2-D, at
    least one row and column, finite, real), so the messages are scikit-learn's.
    """
    if not isinstance(x, Tensor):
        from sklearn.utils import check_array

        try:
            arr = check_array(x, dtype=[np.float64, np.float32], input_name=name)
        except TypeError as err:  # e.g. sparse matrices: scikit-learn raises TypeError
            raise TypeError(f"{name}: {err}") from None
        arr = np.ascontiguousarray(arr)
        x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if x.ndim != 2:
        raise ValueError(
            f"{name} must have 2 dimensions (N, D), got shape {tuple(x.shape)}; Reshape your data"
        )
    if x.is_complex():
        raise ValueError(f"{name} must be real, got complex dtype {x.dtype}")
    if not x.is_floating_point():
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"{name} must be finite, got {int((~torch.isfinite(x)).sum())} NaN/Inf values"
        )
    return x


def _sq_dist(x: Tensor, c: Tensor, x_sq: Tensor) -> Tensor:
    """(N, K) squared distances ‖x − c‖², clamped at 0 (one matmul, then in place)."""
    d = torch.addmm((c * c).sum(1)[None, :], x, c.T, alpha=-2.0)  # (N, K) ‖c‖² − 2 x·c
    return d.add_(x_sq[:, None]).clamp_min_(0)


def _mean_variance(x: Tensor) -> float:
    """Mean over features of the (biased) per-feature variance, as scikit-learn scales ``tol``
    (two passes: the mean, then the centred squares; ``var(0)`` is far slower on the CPU)."""
    return float((x - x.mean(0)).pow_(2).mean())


def kmeans_plusplus(x: Tensor, k: int, gen: torch.Generator, x_sq: Tensor) -> Tensor:
    """Greedy k-means++ (Arthur & Vassilvitskii 2007; scikit-learn's variant with
    2 + ⌊ln k⌋ local trials per centre). Returns (k, D) initial centres."""
    n = len(x)
    trials = 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=gen))
    centres = [x[first]]
    closest = _sq_dist(x, x[first : first + 1], x_sq)[:, 0]  # (N,)
    for _ in range(1, k):
        pot = float(closest.sum())
        if pot <= 0:  # all points coincide with chosen centres
            idx = torch.randint(n, (trials,), generator=gen).to(x.device)
        else:
            r = torch.rand(trials, generator=gen, dtype=torch.float64).to(x.device) * pot
            idx = torch.searchsorted(torch.cumsum(closest.double(), 0), r).clamp_max(n - 1)
        cand = _sq_dist(x, x[idx], x_sq)  # (N, trials)
        cand = torch.minimum(cand, closest[:, None])
        best = int(cand.sum(0).argmin())
        closest = cand[:, best]
        centres.append(x[idx[best]])
    return torch.stack(centres)  # (k, D)


def _nearest(x: Tensor, centres: Tensor) -> Tensor:
    """(N,) index of the nearest centre: argmin over ‖c‖² − 2 x·c (‖x‖² is the same for every
    centre of a row, so it is left out: one fused matmul, no further (N, K) temporaries).
    ``min(1)`` rather than ``argmin(1)``: the same first-minimum index, and faster on the CPU
    for a short last dimension."""
    c_sq = (centres * centres).sum(1)  # (K,)
    return torch.addmm(c_sq[None, :], x, centres.T, alpha=-2.0).min(1).indices  # (N,)


def _lloyd(
    x: Tensor, centres: Tensor, x_sq: Tensor, max_iter: int, tol: float
) -> tuple[Tensor, Tensor, float, int]:
    """Lloyd iterations; returns centres (k, D), labels (N,), inertia, iterations."""
    k = len(centres)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        labels = _nearest(x, centres)  # (N,)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)  # (k,)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)  # (k, D)
        new = sums / counts.clamp_min(1)[:, None]
        empty = counts == 0
        if bool(empty.any()):  # relocate empty clusters to the farthest points
            d = _sq_dist(x, centres, x_sq).min(1).values
            far = d.topk(int(empty.sum())).indices
            new[empty] = x[far]
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if shift <= tol:
            break
    nearest = _sq_dist(x, centres, x_sq).min(1)  # (N,) values and indices
    labels = nearest.indices
    inertia = float(nearest.values.double().sum())
    return centres, labels, inertia, n_iter


class KMeans(ClusterMixin, BaseEstimator):
    """k-means clustering in torch, with scikit-learn's estimator contract (checked by
    ``sklearn.utils.estimator_checks.parametrize_with_checks`` in tests/cluster/test_cluster.py).

    Args:
        n_clusters: k ≥ 1.
        n_init: k-means++ restarts; the lowest inertia wins.
        max_iter: Lloyd iterations per restart.
        tol: stop when the squared centre shift falls below ``tol`` x the mean per-feature
            variance of the data (scikit-learn's convention).
        random_state: seed of the init (an explicit ``torch.Generator``).
        device: "auto" (CUDA when present), "cpu" or "cuda".

    Attributes (after ``fit``):
        cluster_centers_: (k, D) numpy array; labels_: (N,) int64; inertia_: sum of squared
        distances to the nearest centre; n_iter_: Lloyd iterations of the best restart.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        n_init: int = 3,
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int = 0,
        device: str = "auto",
    ) -> None:
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device

    def fit(self, x: Any, y: Any = None) -> KMeans:
        """Cluster (N, D) points (tensor or array). Returns self."""
        check_int("n_clusters", self.n_clusters, 1)
        check_int("n_init", self.n_init, 1)
        check_int("max_iter", self.max_iter, 1)
        check_range("tol", self.tol, 0.0)
        check_int("random_state", self.random_state, 0)
        data = as_tensor(x)
        if len(data) < self.n_clusters:
            raise ValueError(
                f"x must have at least n_clusters={self.n_clusters} rows, got {len(data)}"
            )
        dev = resolve_device(self.device)
        data = data.to(dev)
        gen = torch.Generator().manual_seed(self.random_state)
        x_sq = (data * data).sum(1)  # (N,)
        tol = self.tol * _mean_variance(data)
        best: tuple[Tensor, Tensor, float, int] | None = None
        for _ in range(self.n_init):
            init = kmeans_plusplus(data, self.n_clusters, gen, x_sq)
            run = _lloyd(data, init, x_sq, self.max_iter, tol)
            if best is None or run[2] < best[2]:
                best = run
        assert best is not None
        centres, labels, inertia, n_iter = best
        found = int(torch.unique(labels).numel())
        if found < self.n_clusters:
            points = int(torch.unique(data, dim=0).shape[0])
            why = (
                f"x has only {points} distinct points"
                if points < self.n_clusters
                else "some clusters ended empty"
            )
            warnings.warn(
                f"KMeans found {found} distinct clusters, fewer than n_clusters="
                f"{self.n_clusters}: {why}; labels_ uses {found} of them",
                MixmergeWarning,
                stacklevel=2,
            )
        self.cluster_centers_ = centres.cpu().numpy()
        self.labels_ = labels.cpu().numpy().astype(np.int64)
        self.inertia_ = inertia
        self.n_iter_ = n_iter
        self.n_features_in_ = data.shape[1]
        return self

    def predict(self, x: Any) -> np.ndarray:
        """Nearest learned centre of each row of (N, D) ``x``."""
        check_is_fitted(self, "cluster_centers_")
        data = as_tensor(x)
        if data.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {data.shape[1]} features, but KMeans is expecting {self.n_features_in_} "
                "features as input"
            )
        c = torch.from_numpy(self.cluster_centers_).to(data.dtype)
        return _sq_dist(data, c, (data * data).sum(1)).argmin(1).numpy().astype(np.int64)

    def fit_predict(self, x: Any, y: Any = None) -> np.ndarray:
        return self.fit(x).labels_
