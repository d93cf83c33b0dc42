"""2-D projections of features: PCA and the class-mean plane (linear, exact, instant, torch),
UMAP (umap-learn) and t-SNE (scikit-learn) on request.

Only linear projections keep the simplex-ETF geometry (equal angles, −1/(C−1) cosines), so they
are the default and the only ones that can place classifier directions. UMAP's numba JIT costs
10–17 s once per process: :func:`warm_up_umap` pays it in a background thread, and every UMAP fit
runs behind one lock because Streamlit runs sessions in threads (numba's ``workqueue`` threading
layer aborts on concurrent use, umap issue #665).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice, check_int, check_tensor
from .collapse import class_stats

METHODS = ("pca", "class_plane", "umap", "tsne")
LINEAR = ("pca", "class_plane")

_UMAP_LOCK = threading.Lock()
_WARM_LOCK = threading.Lock()
_warm_thread: threading.Thread | None = None
WARM_STATE: dict[str, Any] = {"done": False, "seconds": None, "error": None}


@dataclass(frozen=True)
class Projection:
    """A 2-D projection of N points.

    Attributes:
        coords: (N, 2) projected points.
        method: "pca", "class_plane", "umap" or "tsne".
        anchors: name -> (k, 2) projected extra points (class means, classifier tips).
        explained: fraction of the variance the two axes keep (linear methods), else NaN.
        seconds: time taken.
    """

    coords: np.ndarray
    method: str
    anchors: dict[str, np.ndarray] = field(default_factory=dict)
    explained: float = float("nan")
    seconds: float = 0.0


def linear_basis(
    features: Tensor, method: str = "pca", labels: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Centre and (D, 2) orthonormal basis of a linear projection.

    ``pca``: the top-2 principal directions of the features (eigh of the D x D covariance).
    ``class_plane``: the top-2 principal directions of the centred class means — for three
    classes exactly the plane of their simplex (Fisher et al. 2024, Fig. 1).
    """
    check_choice("method", method, LINEAR)
    check_tensor("features", features, ndim=2, floating=True, finite=True, min_len=2)
    x = features.detach().to(torch.float64)
    if method == "pca":
        centre = x.mean(0)
        xc = x - centre
        cov = xc.T @ xc / len(x)  # (D, D)
    else:
        if labels is None:
            raise ValueError("labels are required for method='class_plane', got None")
        stats = class_stats(features, labels)
        if len(stats.classes) < 2:
            raise ValueError(f"class_plane needs at least 2 classes, got {len(stats.classes)}")
        centre = stats.global_mean
        mc = stats.centred  # (C, D)
        cov = mc.T @ mc / len(mc)
    evals, evecs = torch.linalg.eigh(cov)
    basis = evecs[:, -2:].flip(1)  # (D, 2) largest first
    if basis.shape[1] < 2:
        raise ValueError(f"features must have at least 2 columns, got {x.shape[1]}")
    return centre, basis


def project(
    features: Tensor,
    method: str = "pca",
    *,
    labels: Tensor | None = None,
    anchors: Mapping[str, Tensor] | None = None,
    random_state: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    perplexity: float = 30.0,
) -> Projection:
    """Project (N, D) features to 2-D.

    Args:
        features: (N, D) finite features.
        method: "pca" and "class_plane" (linear; ``anchors`` are projected with the same map),
            "umap" or "tsne" (nonlinear; anchors cannot be mapped, so ``anchors["class_means"]``
            is replaced by the embedded centroid of each class when ``labels`` are given and the
            other anchors are dropped).
        labels: (N,) labels (needed for "class_plane" and for centroids).
        anchors: name -> (k, D) extra points, e.g. class means and classifier tips.
        random_state: seed for UMAP / t-SNE.
        n_neighbors, min_dist: UMAP parameters.
        perplexity: t-SNE perplexity (capped at (N − 1) / 3).
    """
    check_choice("method", method, METHODS)
    check_tensor("features", features, ndim=2, floating=True, finite=True, min_len=3)
    check_int("random_state", random_state, 0)
    if labels is not None:
        check_tensor("labels", labels, ndim=1)
        if len(labels) != len(features):
            raise ValueError(f"labels must have {len(features)} entries, got {len(labels)}")
    for name, a in (anchors or {}).items():
        check_tensor(f"anchors[{name!r}]", a, ndim=2, floating=True, finite=True)
        if a.shape[1] != features.shape[1]:
            raise ValueError(
                f"anchors[{name!r}] must have {features.shape[1]} columns, "
                f"got shape {tuple(a.shape)}"
            )
    t0 = time.perf_counter()
    if method in LINEAR:
        centre, basis = linear_basis(features, method, labels)
        x = features.detach().to(torch.float64) - centre
        coords = x @ basis  # (N, 2)
        total = float((x * x).sum())
        explained = float((coords * coords).sum()) / total if total > 0 else float("nan")
        mapped = {
            k: ((a.detach().to(torch.float64) - centre) @ basis).numpy()
            for k, a in (anchors or {}).items()
        }
        return Projection(coords.numpy(), method, mapped, explained, time.perf_counter() - t0)
    x_np = features.detach().to(torch.float32).numpy()
    if method == "umap":
        emb = umap_embed(
            x_np, n_neighbors=n_neighbors, min_dist=min_dist, random_state=random_state
        )
    else:
        emb = tsne_embed(x_np, perplexity=perplexity, random_state=random_state)
    mapped = {}
    if anchors and "class_means" in anchors and labels is not None:
        y = labels.detach().cpu().numpy()
        mapped["class_means"] = np.stack([emb[y == c].mean(0) for c in np.unique(y)])
    return Projection(emb, method, mapped, float("nan"), time.perf_counter() - t0)


def umap_embed(
    x: np.ndarray,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    random_state: int = 0,
    n_epochs: int | None = None,
) -> np.ndarray:
    """UMAP of (N, D) points to (N, 2), behind the module's lock (thread-safe).

    ``random_state`` makes it reproducible (umap then runs single-threaded).
    """
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise ValueError(
            f"x must be a 2-D numpy array, got {type(x).__name__} {getattr(x, 'shape', '')}"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"x must be finite, got {int((~np.isfinite(x)).sum())} NaN/Inf values")
    check_int("n_neighbors", n_neighbors, 2)
    if len(x) <= n_neighbors:
        raise ValueError(f"x must have more than n_neighbors={n_neighbors} rows, got {len(x)}")
    import warnings

    import umap  # slow first import (numba); imported on demand

    with _UMAP_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        model = umap.UMAP(
            n_neighbors=n_neighbors,
            min_dist=min_dist,
            n_components=2,
            random_state=random_state,
            n_epochs=n_epochs,
        )
        return np.asarray(model.fit_transform(x), dtype=np.float32)


def tsne_embed(x: np.ndarray, *, perplexity: float = 30.0, random_state: int = 0) -> np.ndarray:
    """t-SNE (scikit-learn, PCA init) of (N, D) points to (N, 2)."""
    if not isinstance(x, np.ndarray) or x.ndim != 2 or len(x) < 4:
        raise ValueError(
            f"x must be a 2-D numpy array with at least 4 rows, got "
            f"{getattr(x, 'shape', type(x).__name__)}"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"x must be finite, got {int((~np.isfinite(x)).sum())} NaN/Inf values")
    from sklearn.manifold import TSNE

    p = min(float(perplexity), (len(x) - 1) / 3)
    return np.asarray(
        TSNE(n_components=2, perplexity=p, init="pca", random_state=random_state).fit_transform(x),
        dtype=np.float32,
    )


def warm_up_umap(*, background: bool = True, n: int = 300) -> threading.Thread | None:
    """Pay UMAP's JIT once per process with a tiny fit (under the same lock as real fits).

    Idempotent: later calls return the running thread (or None when done). The outcome is in
    ``WARM_STATE`` (``done``, ``seconds``, ``error``).
    """
    global _warm_thread
    check_int("n", n, 20)

    def run() -> None:
        t0 = time.perf_counter()
        try:
            rng = np.random.default_rng(0)
            umap_embed(rng.normal(size=(n, 16)).astype(np.float32), n_epochs=20, random_state=0)
            WARM_STATE["seconds"] = time.perf_counter() - t0
        except Exception as err:  # noqa: BLE001 - reported through WARM_STATE
            WARM_STATE["error"] = f"{type(err).__name__}: {err}"
        finally:
            WARM_STATE["done"] = True

    with _WARM_LOCK:
        if WARM_STATE["done"]:
            return None
        if _warm_thread is not None:
            return _warm_thread
        if not background:
            run()
            return None
        _warm_thread = threading.Thread(target=run, name="umap-warm-up", daemon=True)
        _warm_thread.start()
        return _warm_thread
