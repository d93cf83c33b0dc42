"""Plain result records for pages and notebooks: a model's features on a dataset with their NC
metrics, ETF comparison and 2-D projections (numpy arrays and floats only, cheap to cache)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice, check_int
from ..data.subset import stratified_subset
from ..models import Classifier
from .collapse import class_stats, neural_collapse, normalized_gram, simplex_etf_gram
from .features import extract_features
from .mixup_geometry import mixup_geometry
from .projection import LINEAR, project


def sample_rows(x: Tensor, y: Tensor, n: int, *, random_state: int = 0) -> tuple[Tensor, Tensor]:
    """At most ``n`` rows of (x, y): a seeded, stratified sample (kept in their order)."""
    check_int("n", n, 1)
    check_int("random_state", random_state, 0)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if len(x) <= n:
        return x, y
    idx = stratified_subset(y, n, random_state=random_state)
    return x[idx], y[idx]


def feature_report(
    model: Classifier, x: Tensor, y: Tensor, *, device: str | torch.device = "auto", head: int = 0
) -> dict[str, Any]:
    """Features, NC metrics and the ETF comparison of ``model`` on (x, y).

    Returns:
        ``features`` (N, D), ``labels`` (N,), ``classes`` (C,), ``class_means`` (C, D),
        ``global_mean`` (D,), ``classifier`` (C, D) rows of the present classes, ``nc`` (dict),
        ``gram`` (C, C) cosines of the centred class means, ``ideal`` (C, C) ETF Gram.
    """
    feats = extract_features(model, x, device=device)  # (N, D)
    layer = model.classifier_layer(head)
    w = layer.weight.detach().cpu()
    b = layer.bias.detach().cpu() if layer.bias is not None else None
    return report_from_features(feats, y, w, b)


def report_from_features(
    feats: Tensor, y: Tensor, weight: Tensor, bias: Tensor | None = None
) -> dict[str, Any]:
    """:func:`feature_report` of features already extracted: ``feats`` (N, D), ``y`` (N,),
    the classifier ``weight`` (C, D) and ``bias`` (C,) (e.g. a suite task's fixed head)."""
    if not isinstance(feats, Tensor) or feats.ndim != 2:
        raise ValueError(f"feats must be an (N, D) Tensor, got {getattr(feats, 'shape', feats)}")
    if not isinstance(y, Tensor) or y.shape != (len(feats),):
        raise ValueError(f"y must be an ({len(feats)},) Tensor, got {getattr(y, 'shape', y)}")
    if not isinstance(weight, Tensor) or weight.ndim != 2 or weight.shape[1] != feats.shape[1]:
        raise ValueError(
            f"weight must be a (C, {feats.shape[1]}) Tensor, got {getattr(weight, 'shape', weight)}"
        )
    feats, y, w = feats.detach().cpu(), y.detach().cpu(), weight.detach().cpu()
    b = bias.detach().cpu() if bias is not None else None
    nc = neural_collapse(feats, y, (w, b))
    stats = class_stats(feats, y)
    return {
        "features": feats.numpy(),
        "labels": y.numpy(),
        "classes": stats.classes.numpy(),
        "class_means": stats.means.numpy(),
        "global_mean": stats.global_mean.numpy(),
        "classifier": w.double()[stats.classes].numpy(),
        "nc": nc,
        "gram": normalized_gram(stats.centred).numpy(),
        "ideal": simplex_etf_gram(len(stats.classes)).numpy(),
    }


def _tips(means: np.ndarray, centre: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(C, D) μ_G + s·w_c/‖w_c‖ with s the mean norm of the centred class means."""
    s = float(np.linalg.norm(means - centre, axis=1).mean())
    return centre + s * w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)


def projection_report(
    report: dict[str, Any], method: str = "pca", *, random_state: int = 0
) -> dict[str, Any]:
    """2-D projection of a :func:`feature_report` with class means and classifier directions
    (linear methods) or embedded class centroids (UMAP, t-SNE)."""
    check_choice("method", method, ("pca", "class_plane", "umap", "tsne"))
    feats, labels = torch.from_numpy(report["features"]), torch.from_numpy(report["labels"])
    centre = report["global_mean"][None]  # (1, D)
    anchors = {"class_means": torch.from_numpy(report["class_means"]).float()}
    if method in LINEAR:
        anchors["classifier_tips"] = torch.from_numpy(
            _tips(report["class_means"], centre, report["classifier"])
        ).float()
        anchors["global_mean"] = torch.from_numpy(centre).float()
    proj = project(feats, method, labels=labels, anchors=anchors, random_state=random_state)
    return {
        "coords": proj.coords,
        "anchors": proj.anchors,
        "explained": proj.explained,
        "seconds": proj.seconds,
        "method": method,
    }


def mixup_report(
    model: Classifier,
    x: Tensor,
    y: Tensor,
    *,
    mixer: str = "mixup",
    alpha: float = 1.0,
    classes: list[int] | None = None,
    n: int = 600,
    method: str = "class_plane",
    random_state: int = 0,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """Mixed-sample features projected with their class means and classifier directions.

    The projection (linear only: it must map the class means and classifier rows) is fitted on the
    clean features and applied to the mixed ones. Returns ``coords`` (n, 2), ``lam``, ``same_class``,
    ``anchors``, ``classes``.
    """
    check_choice("method", method, LINEAR)
    geo = mixup_geometry(
        model,
        x,
        y,
        generator=torch.Generator().manual_seed(random_state),
        mixer=mixer,
        alpha=alpha,
        classes=classes,
        n=n,
        device=device,
    )
    centre = geo.global_mean[None]
    anchors = {
        "class_means": geo.class_means,
        "classifier_tips": geo.classifier_tips(),
        "global_mean": centre,
    }
    fitted = project(
        geo.clean_features.double(),
        method,
        labels=geo.clean_labels,
        anchors={**anchors, "mixed": geo.features.double()},
    )
    mixed = fitted.anchors.pop("mixed")
    return {
        "coords": mixed,
        "lam": geo.lam.numpy(),
        "same_class": geo.same_class.numpy(),
        "anchors": fitted.anchors,
        "classes": geo.classes.numpy(),
        "mixer": mixer,
    }
