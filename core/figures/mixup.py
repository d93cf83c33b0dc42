"""Figures of the mixup studio: galleries, λ grids, methods side by side, reliability diagrams,
accuracy with CIs, per-epoch curves and the early-stopping curve.

Inputs are the plain records of :mod:`core.mixup.gallery` and :func:`core.mixup.training.train_mixers`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .theme import PALETTE, apply_paper

_OWN, _PARTNER = PALETTE[0], PALETTE[1]


def _mask_rgb(mask: np.ndarray) -> np.ndarray:
    """(H, W) share of own pixels -> (H, W, 3) uint8: own in blue, partner in orange."""
    own = np.array([int(_OWN[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    other = np.array([int(_PARTNER[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    m = np.asarray(mask, dtype=float)[..., None]
    return (m * own + (1 - m) * other + 0.5).astype(np.uint8)


def _image_axes(fig: go.Figure) -> None:
    fig.update_xaxes(showticklabels=False, showgrid=False, showline=False, ticks="")
    fig.update_yaxes(showticklabels=False, showgrid=False, showline=False, ticks="")


def gallery_figure(data: Mapping[str, Any], *, max_images: int = 8) -> go.Figure:
    """Mixed images (row 1), their masks (row 2, if any) and label weights as bars (last row).

    Args:
        data: a :func:`core.mixup.gallery.gallery` record.
        max_images: columns shown at most.
    """
    images = np.asarray(data["images"])[:max_images]
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"data['images'] must be (N, H, W, 3), got shape {images.shape}")
    n = len(images)
    names, partner, lam = data["names"], np.asarray(data["partner"]), np.asarray(data["lam"])
    masks = data.get("masks")
    rows = 3 if masks is not None else 2
    heights = [0.4, 0.4, 0.2] if rows == 3 else [0.7, 0.3]
    fig = make_subplots(
        rows=rows,
        cols=n,
        row_heights=heights,
        vertical_spacing=0.04,
        horizontal_spacing=0.01,
        subplot_titles=[f"{names[i]} + {names[int(partner[i])]}" for i in range(n)],
    )
    for i in range(n):
        fig.add_trace(go.Image(z=images[i], name=f"mixed {i}"), row=1, col=i + 1)
        if masks is not None:
            fig.add_trace(
                go.Image(z=_mask_rgb(np.asarray(masks)[i]), name=f"mask {i}"), row=2, col=i + 1
            )
        own, other = names[i], names[int(partner[i])]
        fig.add_trace(
            go.Bar(
                x=[own, other] if own != other else [own],
                marker_color=[_OWN, _PARTNER],
                y=[float(lam[i]), 1 - float(lam[i])] if own != other else [1.0],
                showlegend=False,
                name=f"label weights {i}",
                text=[f"{float(lam[i]):.2f}", f"{1 - float(lam[i]):.2f}"],
                textposition="outside",
            ),
            row=rows,
            col=i + 1,
        )
        fig.update_yaxes(
            range=[0, 1.25], tickvals=[0, 1], row=rows, col=i + 1, showticklabels=i == 0
        )
        # the subplot title names both images; bar colours say which is which
        fig.update_xaxes(showticklabels=False, row=rows, col=i + 1)
    for r in range(1, rows):
        for c in range(1, n + 1):
            fig.update_xaxes(
                showticklabels=False, showgrid=False, showline=False, ticks="", row=r, col=c
            )
            fig.update_yaxes(
                showticklabels=False, showgrid=False, showline=False, ticks="", row=r, col=c
            )
    fig.update_layout(
        title=f"{data.get('title', data.get('method', 'mix'))}: mixed images, "
        + ("masks (blue = own pixels), " if masks is not None else "")
        + "label weights",
        bargap=0.3,
    )
    return apply_paper(fig, size="double")


def lam_grid_figure(data: Mapping[str, Any]) -> go.Figure:
    """One pair mixed at each λ; titles give the requested and the realised (pixel-share) λ."""
    images = np.asarray(data["images"])
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"data['images'] must be (K, H, W, 3), got shape {images.shape}")
    req, real = np.asarray(data["requested"]), np.asarray(data["lam"])
    fig = make_subplots(
        rows=1,
        cols=len(images),
        horizontal_spacing=0.01,
        subplot_titles=[
            f"λ={r:.2f}" + (f" → {a:.2f}" if abs(a - r) > 5e-3 else "")
            for r, a in zip(req, real, strict=True)
        ],
    )
    for i, img in enumerate(images):
        fig.add_trace(go.Image(z=img, name=f"λ={req[i]:.2f}"), row=1, col=i + 1)
    _image_axes(fig)
    fig.update_layout(title=f"{data.get('title', '')}: one pair over λ (→ realised pixel share)")
    return apply_paper(fig, size="double")


def methods_figure(data: Mapping[str, Any]) -> go.Figure:
    """Every pixel mixer on the same pair (row 1) with its mask (row 2, blank for mixup)."""
    images = np.asarray(data["images"])
    k = len(images)
    if k == 0:
        raise ValueError("data['images'] must hold at least one method, got none")
    fig = make_subplots(
        rows=2,
        cols=k,
        horizontal_spacing=0.01,
        vertical_spacing=0.06,
        subplot_titles=[
            f"{t} λ={lam:.2f}" for t, lam in zip(data["titles"], data["lam"], strict=True)
        ],
    )
    for i in range(k):
        fig.add_trace(go.Image(z=images[i], name=data["titles"][i]), row=1, col=i + 1)
        mask = data["masks"][i]
        if mask is None:
            mask = np.full(images[i].shape[:2], float(data["lam"][i]))
        fig.add_trace(
            go.Image(z=_mask_rgb(mask), name=f"{data['titles'][i]} mask"), row=2, col=i + 1
        )
    _image_axes(fig)
    fig.update_layout(title="All methods on the same pair (mask: blue = first image)")
    return apply_paper(fig, size="double")


def reliability_figure(reliabilities: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    """Reliability diagram: accuracy vs confidence per bin for each method, with the diagonal."""
    if not reliabilities:
        raise ValueError("reliabilities must hold at least one method, got none")
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="perfect calibration",
            line=dict(color="#888888", dash="dash", width=1),
        )
    )
    for i, (label, rel) in enumerate(reliabilities.items()):
        conf, acc = rel["confidence"], rel["accuracy"]
        keep = [j for j, c in enumerate(conf) if c is not None and not math.isnan(c)]
        fig.add_trace(
            go.Scatter(
                x=[conf[j] for j in keep],
                y=[acc[j] for j in keep],
                mode="lines+markers",
                name=f"{label} (ECE {rel['ece']:.3f})",
                line=dict(color=PALETTE[i % len(PALETTE)]),
                customdata=[rel["count"][j] for j in keep],
                hovertemplate="confidence %{x:.3f}<br>accuracy %{y:.3f}<br>n=%{customdata}",
            )
        )
    fig.update_xaxes(title_text="confidence", range=[0, 1])
    fig.update_yaxes(title_text="accuracy", range=[0, 1])
    fig.update_layout(title="Reliability diagram")
    return apply_paper(fig, size="square")


def accuracy_figure(run: Mapping[str, Any]) -> go.Figure:
    """Test accuracy per method with its bootstrap CI (left) and ECE (right)."""
    methods = _methods(run)
    labels = list(methods)
    acc = [methods[m]["test_accuracy"] for m in labels]
    lo = [a - methods[m]["ci"]["low"] for a, m in zip(acc, labels, strict=True)]
    hi = [methods[m]["ci"]["high"] - a for a, m in zip(acc, labels, strict=True)]
    level = next(iter(methods.values()))["ci"].get("level", 0.95)
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(f"test accuracy ({level:.0%} bootstrap CI)", "ECE (lower is better)"),
    )
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(labels))]
    fig.add_trace(
        go.Bar(
            x=labels,
            y=acc,
            marker_color=colors,
            name="test accuracy",
            error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo),
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=labels,
            y=[methods[m]["reliability"]["ece"] for m in labels],
            marker_color=colors,
            name="ECE",
        ),
        row=1,
        col=2,
    )
    fig.update_layout(
        title=f"{run.get('task', '')} · {run.get('arch', '')} · seed {run.get('seed', '')}",
        showlegend=False,
    )
    return apply_paper(fig, size="double")


def curves_figure(run: Mapping[str, Any]) -> go.Figure:
    """Training loss, test loss and test accuracy per epoch; dotted line where mixing stopped."""
    methods = _methods(run)
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=("training loss", "test loss", "test accuracy")
    )
    for i, (label, res) in enumerate(methods.items()):
        h, color = res["history"], PALETTE[i % len(PALETTE)]
        for col, key in enumerate(("train_loss", "test_loss", "test_accuracy"), start=1):
            if h.get(key):
                fig.add_trace(
                    go.Scatter(
                        x=h["epoch"],
                        y=h[key],
                        name=label,
                        legendgroup=label,
                        mode="lines+markers",
                        line=dict(color=color),
                        showlegend=col == 1,
                    ),
                    row=1,
                    col=col,
                )
        stop = res.get("mix_until_epoch")
        if stop is not None and res.get("mixer") not in (None, "erm"):
            for col in (1, 2, 3):
                fig.add_vline(
                    x=stop + 0.5, line=dict(color=color, dash="dot", width=1), row=1, col=col
                )
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title="Per-epoch curves (dotted: mixing switched off)")
    return apply_paper(fig, size="double")


def early_stopping_figure(run: Mapping[str, Any]) -> go.Figure:
    """Final test accuracy against the epoch at which mixing was switched off, per mixer.

    ERM counts as switching off at epoch 0 and a mixer without ``mix_until_epoch`` as mixing
    for all epochs (Zou et al. 2023: early-stopped mixup).
    """
    methods = _methods(run)
    epochs = int(
        run.get("config", {}).get("epochs")
        or max(max(r["history"]["epoch"], default=0) for r in methods.values())
    )
    erm = [r["test_accuracy"] for r in methods.values() if r.get("mixer") in (None, "erm")]
    by_mixer: dict[str, list[tuple[int, float, float, float]]] = {}
    for r in methods.values():
        if r.get("mixer") in (None, "erm"):
            continue
        stop = r.get("mix_until_epoch")
        stop = epochs if stop is None else min(int(stop), epochs)
        by_mixer.setdefault(r["mixer"], []).append(
            (stop, r["test_accuracy"], r["ci"]["low"], r["ci"]["high"])
        )
    fig = go.Figure()
    for i, (mixer, pts) in enumerate(sorted(by_mixer.items())):
        pts = sorted(pts + ([(0, erm[0], erm[0], erm[0])] if erm else []))
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="lines+markers",
                name=mixer,
                line=dict(color=PALETTE[(i + 1) % len(PALETTE)]),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[p[3] - p[1] for p in pts],
                    arrayminus=[p[1] - p[2] for p in pts],
                ),
            )
        )
    if erm:
        fig.add_hline(
            y=erm[0],
            line=dict(color=PALETTE[0], dash="dash", width=1),
            annotation_text="ERM",
            annotation_position="bottom right",
        )
    fig.update_xaxes(
        title_text="mixing switched off after epoch (0 = ERM)", range=[-0.3, epochs + 0.3]
    )
    fig.update_yaxes(title_text="final test accuracy")
    fig.update_layout(title="Early-stopped mixup")
    return apply_paper(fig, size="column")


def _methods(run: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    methods = run.get("methods") if isinstance(run, Mapping) else None
    if not methods:
        raise ValueError("run must be a mixup run record with at least one method, got none")
    return methods


def lam_histogram_figure(lams: Sequence[float], *, title: str = "Realised λ") -> go.Figure:
    """Histogram of realised λ (e.g. CutMix after clipping shifts the mean to about 0.7)."""
    fig = go.Figure(
        go.Histogram(
            x=list(lams), xbins=dict(start=0, end=1, size=0.05), marker_color=_OWN, name="λ"
        )
    )
    fig.update_xaxes(title_text="λ (share of own pixels)", range=[0, 1])
    fig.update_yaxes(title_text="count")
    fig.update_layout(title=title)
    return apply_paper(fig, size="column")


def run_reliability_figure(run: Mapping[str, Any]) -> go.Figure:
    """:func:`reliability_figure` of every method of a stored mixup run."""
    return reliability_figure({k: v["reliability"] for k, v in run["methods"].items()})


# ---------------------------------------------------------------- figures of a gallery recipe result
def gallery_result_figure(result: Mapping[str, Any]) -> go.Figure:
    """:func:`gallery_figure` of a ``core.recipes.gallery.mixup_gallery_panels`` result."""
    return gallery_figure(result["gallery"])


def lam_grid_result_figure(result: Mapping[str, Any]) -> go.Figure:
    """:func:`lam_grid_figure` of a ``mixup_gallery_panels`` result (the first pair)."""
    return lam_grid_figure(result["grid"])


def methods_result_figure(result: Mapping[str, Any]) -> go.Figure:
    """:func:`methods_figure` of a ``mixup_gallery_panels`` result (the first pair)."""
    return methods_figure(result["methods"])
