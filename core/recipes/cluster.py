"""Clustering page recipes: PPP on model features or raw pixels (one computation, three figures)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.figures.cluster import ppp_contingency_figure, ppp_k_figure, ppp_scatter_figure

from . import register_recipe
from ._args import choice, need_int, need_str, optional


def check_ppp_args(args: Mapping[str, Any]) -> None:
    """The args of :func:`ppp_clustering`, checked without computing."""
    if choice(args, "source", ("features", "pixels"), None) == "features":
        need_str(args, "model")
    need_str(args, "task")
    need_int(args, "n", 1)
    optional(args, k_max=2, n_seeds=1, seed=0)


def ppp_clustering(
    zoo: Any,
    *,
    source: str,
    task: str,
    n: int,
    model: str | None = None,
    seed: int = 0,
    k_max: int = 12,
    n_seeds: int = 4,
    device: str = "cpu",
) -> dict[str, Any]:
    """PPP (Sultan 2020) with BIC/AIC beside it on ``n`` seeded training rows of ``task``:
    features of zoo ``model`` (``source="features"``) or raw pixels (``source="pixels"``),
    k-means from ``n_seeds`` seeds per k up to ``k_max``, and a PCA plane of the clustered data.

    Returns numpy arrays and numbers: ``k``, ``ks``, ``scores``, ``labels`` (N,), ``truth`` (N,),
    ``posterior`` (N,), ``coords`` (N, 2), ``agreement``, ``stability``, ``dim``,
    ``class_names``.
    """
    from core.cluster import agreement, ppp
    from core.data import get_task
    from core.geometry import extract_features, project, sample_rows

    args = dict(source=source, task=task, n=n, model=model, seed=seed, k_max=k_max)
    check_ppp_args(args | {"n_seeds": n_seeds})
    ds = get_task(task)
    xs, ys = sample_rows(ds.x_train, ds.y_train, n, random_state=seed)
    if source == "features":
        data = extract_features(zoo.load_model(model, device=device), xs, device=device)
    else:
        data = xs.flatten(1)  # raw pixels, (N, C*H*W)
    res = ppp(data, k_max=k_max, random_state=seed, n_seeds=n_seeds, device=device)
    return {
        "k": res.k,
        "ks": res.ks,
        "scores": res.scores,
        "labels": res.labels,
        "truth": ys.numpy(),
        "posterior": res.posterior,
        "coords": project(data.float(), "pca").coords,
        "agreement": agreement(ys.numpy(), res.labels),
        "stability": res.scores["stability"][res.ks.index(res.k)],
        "dim": int(data.shape[1]),
        "class_names": list(ds.class_names),
    }


_PPP = dict(compute=ppp_clustering, check=check_ppp_args, model_args=("model",))
register_recipe(
    "cluster_k_selection",
    figure=ppp_k_figure,
    description="Choosing the number of clusters with PPP, BIC and AIC",
    **_PPP,  # type: ignore[arg-type]
)
register_recipe(
    "cluster_contingency",
    figure=ppp_contingency_figure,
    description="Clusters found by PPP against the true labels",
    **_PPP,  # type: ignore[arg-type]
)
register_recipe(
    "cluster_scatter",
    figure=ppp_scatter_figure,
    description="Clusters found by PPP in the PCA plane of the clustered data",
    **_PPP,  # type: ignore[arg-type]
)
