"""Every Streamlit cache in one place, each bounded.

``cache_resource`` only for read-only objects (datasets, loaded models); ``cache_data`` for small
result records. Pages call these instead of core directly when the result is worth keeping.
"""

from __future__ import annotations

import streamlit as st

from core.data import Dataset, available_tasks, get_task
from core.models import Classifier
from core.zoo import Zoo


@st.cache_resource(max_entries=8, show_spinner=False)
def zoo(workspace: str) -> Zoo:
    """The zoo of a workspace (opened once per workspace)."""
    return Zoo(workspace)


@st.cache_resource(max_entries=16, show_spinner="Loading data…")
def task(name: str) -> Dataset:
    """A task's dataset (read-only tensors)."""
    return get_task(name)


@st.cache_data(max_entries=4, show_spinner=False, ttl=300)
def tasks_available() -> list[str]:
    return available_tasks()


@st.cache_resource(max_entries=32, show_spinner="Loading model…")
def model(workspace: str, model_id: str, sha256: str, device: str = "cpu") -> Classifier:
    """A zoo model in eval mode; ``sha256`` keys the cache so a replaced checkpoint reloads.
    Treat it as read-only."""
    return zoo(workspace).load_model(model_id, device=device)


# ## Feature geometry and clustering (pages 6 and 7). Results are numpy records keyed by ids.


@st.cache_data(max_entries=8, show_spinner="Computing features and neural-collapse metrics…")
def geometry_report(workspace: str, model_id: str, sha256: str, task_name: str, split: str, n: int,
                    seed: int, device: str = "cpu") -> dict:  # fmt: skip
    """Features, NC metrics and ETF comparison of a zoo model on ``n`` rows of a task split."""
    from core.geometry import feature_report, sample_rows

    ds = task(task_name)
    x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
    xs, ys = sample_rows(x, y, n, random_state=seed)
    return feature_report(model(workspace, model_id, sha256, device), xs, ys, device=device)


@st.cache_data(max_entries=16, show_spinner="Projecting…")
def geometry_projection(workspace: str, model_id: str, sha256: str, task_name: str, split: str, n: int,
                        seed: int, method: str, device: str = "cpu") -> dict:  # fmt: skip
    """2-D projection (PCA / class plane / UMAP / t-SNE) of :func:`geometry_report`'s features."""
    from core.geometry import projection_report

    rep = geometry_report(workspace, model_id, sha256, task_name, split, n, seed, device)
    return projection_report(rep, method, random_state=seed)


@st.cache_data(max_entries=8, show_spinner="Mixing and computing features…")
def geometry_mixup(workspace: str, model_id: str, sha256: str, task_name: str, n: int, seed: int, mixer: str,
                   alpha: float, classes: tuple[int, ...], device: str = "cpu") -> dict:  # fmt: skip
    """Features of mixed training samples of chosen classes, projected on the class plane."""
    from core.geometry import mixup_report

    ds = task(task_name)
    return mixup_report(model(workspace, model_id, sha256, device), ds.x_train, ds.y_train, mixer=mixer,
                        alpha=alpha, classes=list(classes) or None, n=n, random_state=seed, device=device)  # fmt: skip


@st.cache_resource(max_entries=1, show_spinner=False)
def umap_warm_up() -> bool:
    """Start UMAP's one-off JIT warm-up in a background thread (once per server process)."""
    from core.geometry import warm_up_umap

    warm_up_umap(background=True)
    return True


@st.cache_data(max_entries=8, show_spinner="Clustering…")
def cluster_data(workspace: str, source: str, model_id: str, sha256: str, task_name: str, n: int, seed: int,
                 k_max: int, n_seeds: int, device: str = "cpu") -> dict:  # fmt: skip
    """PPP, BIC/AIC selection and a PCA view of model features (``source="features"``) or raw
    pixels (``source="pixels"``) of ``n`` training rows."""
    from core.cluster import agreement, ppp
    from core.geometry import extract_features, project, sample_rows

    ds = task(task_name)
    xs, ys = sample_rows(ds.x_train, ds.y_train, n, random_state=seed)
    if source == "features":
        data = extract_features(model(workspace, model_id, sha256, device), xs, device=device)
    else:
        data = xs.flatten(1)
    res = ppp(data, k_max=k_max, random_state=seed, n_seeds=n_seeds, device=device)
    coords = project(data.float(), "pca").coords
    return {"k": res.k, "ks": res.ks, "scores": res.scores, "labels": res.labels, "truth": ys.numpy(),
            "posterior": res.posterior, "coords": coords, "agreement": agreement(ys.numpy(), res.labels),
            "stability": res.scores["stability"][res.ks.index(res.k)], "dim": int(data.shape[1])}  # fmt: skip


# ---------------------------------------------------------------- Mixup
@st.cache_data(max_entries=16, show_spinner="Mixing…")
def mixup_gallery(
    source: str, names: tuple[str, ...], task_name: str, n_images: int, method: str,
    alpha: float, lam: float | None, per_sample: bool, seed: int, size: int = 96,
) -> dict:  # fmt: skip
    """Gallery, λ grid for the first pair and all methods side by side (numpy records).

    ``source`` is "photos" (``names`` from core.data.load_photos) or "dataset" (the first
    ``n_images`` test images of ``task_name``).
    """
    from core.data import denormalize, photo_batch
    from core.mixup.gallery import gallery, lam_grid, methods_side_by_side

    if source == "photos":
        images, labels = photo_batch(list(names), size=size)
    else:
        ds = task(task_name)
        images = denormalize(ds.x_test[:n_images])
        labels = [f"{i}:{ds.class_names[int(c)]}" for i, c in enumerate(ds.y_test[:n_images])]
    grid_lams = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)
    return {
        "gallery": gallery(method, images, labels, alpha=alpha, lam=lam, per_sample=per_sample, seed=seed),
        "grid": lam_grid(method, images[:2], grid_lams, seed=seed),
        "methods": methods_side_by_side(images[:2], lam=0.5 if lam is None else lam, seed=seed),
    }
