"""Clustering: k-means in torch, Gaussian-mixture selection by BIC/AIC, PPP, stability across
seeds and agreement with labels."""

from .kmeans import KMeans, as_tensor, kmeans_plusplus
from .selection import (
    COVARIANCE_TYPES,
    PPP,
    GMMSelection,
    PPPResult,
    agreement,
    canonical_labels,
    ppp,
    reduce_dim,
    select_gmm,
    stability,
)

__all__ = [
    "COVARIANCE_TYPES",
    "PPP",
    "GMMSelection",
    "KMeans",
    "PPPResult",
    "agreement",
    "as_tensor",
    "canonical_labels",
    "kmeans_plusplus",
    "ppp",
    "reduce_dim",
    "select_gmm",
    "stability",
]
