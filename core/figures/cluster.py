"""Figures of clustering: k selection (BIC/AIC/PPP scores vs k), clusters vs labels, scatter."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .geometry import WEBGL_ABOVE
from .theme import PALETTE, apply_paper, category_style


def k_selection_figure(
    ks: Sequence[int],
    scores: Mapping[str, Sequence[float]],
    *,
    chosen: int | None = None,
    title: str = "Choosing the number of clusters",
) -> go.Figure:
    """Left: BIC and AIC vs k (lower is better). Right: PPP's stability, agreement, confidence and
    combined score vs k (higher is better). The chosen k is marked in both.

    Args:
        ks: the k tried; scores: name -> one value per k (any of ``bic``, ``aic``,
            ``stability``, ``agreement``, ``confidence``, ``score``).
    """
    ks = list(ks)
    if not ks:
        raise ValueError("ks must not be empty")
    for name, v in scores.items():
        if len(v) != len(ks):
            raise ValueError(f"scores[{name!r}] must have {len(ks)} values, got {len(v)}")
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "information criteria (lower is better)",
            "PPP validation (higher is better)",
        ),
    )
    for i, key in enumerate(("bic", "aic")):
        if key in scores:
            fig.add_trace(
                go.Scatter(
                    x=ks,
                    y=list(scores[key]),
                    name=key.upper(),
                    mode="lines+markers",
                    line=dict(color=PALETTE[i]),
                ),
                row=1,
                col=1,
            )
    for i, key in enumerate(("stability", "agreement", "confidence", "score")):
        if key in scores:
            fig.add_trace(
                go.Scatter(
                    x=ks,
                    y=list(scores[key]),
                    name="PPP score" if key == "score" else key,
                    mode="lines+markers",
                    line=dict(color=PALETTE[i + 2], width=3 if key == "score" else 1.5),
                ),
                row=1,
                col=2,
            )
    if chosen is not None:
        for col in (1, 2):
            fig.add_vline(x=chosen, line=dict(color="black", dash="dot"), row=1, col=col)
        fig.add_annotation(
            x=chosen, y=1.02, xref="x2", yref="paper", text=f"k = {chosen}", showarrow=False
        )
    fig.update_xaxes(title_text="k", dtick=1)
    fig.update_layout(title=title, height=380)
    return apply_paper(fig)


def contingency_figure(
    labels_true: Sequence[int] | np.ndarray,
    labels_pred: Sequence[int] | np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "Clusters vs labels",
) -> go.Figure:
    """Heatmap of counts: rows are true classes, columns clusters (ordered by majority class)."""
    t, p = np.asarray(labels_true).ravel(), np.asarray(labels_pred).ravel()
    if len(t) != len(p) or len(t) == 0:
        raise ValueError(
            f"labels_true and labels_pred must have the same non-zero length, got {len(t)} and {len(p)}"
        )
    rows, cols = np.unique(t), np.unique(p)
    table = np.array(
        [[int(((t == r) & (p == c)).sum()) for c in cols] for r in rows]
    )  # (classes, clusters)
    order = np.lexsort((-table.max(0), table.argmax(0)))  # clusters sorted by their majority class
    table, cols = table[:, order], cols[order]
    names = [
        class_names[r] if class_names and 0 <= r < len(class_names) else str(r)
        for r in rows.tolist()
    ]
    fig = go.Figure(
        go.Heatmap(
            z=table,
            x=[str(c) for c in cols.tolist()],
            y=names,
            colorscale="Blues",
            text=table,
            texttemplate="%{text}",
            hovertemplate="%{y} · %{x}: %{z}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", title_text="label")
    fig.update_xaxes(title_text="cluster", type="category")
    fig.update_layout(title=title, height=max(300, 28 * len(rows) + 120))
    return apply_paper(fig)


def cluster_scatter_figure(
    coords: np.ndarray,
    clusters: np.ndarray,
    *,
    title: str = "Clusters",
    confidence: np.ndarray | None = None,
) -> go.Figure:
    """2-D scatter coloured by cluster (marker opacity from the posterior confidence if given)."""
    coords, clusters = np.asarray(coords), np.asarray(clusters)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(clusters):
        raise ValueError(
            f"coords must be (N, 2) with N = len(clusters), got {coords.shape} and {clusters.shape}"
        )
    fig = go.Figure()
    scatter = go.Scattergl if len(coords) > WEBGL_ABOVE else go.Scatter
    found = np.unique(clusters).tolist()
    for i, c in enumerate(found):
        m = clusters == c
        colour, symbol = category_style(i, len(found))
        op = (
            np.clip(np.asarray(confidence)[m], 0.2, 1.0).tolist() if confidence is not None else 0.6
        )
        fig.add_trace(
            scatter(
                x=coords[m, 0],
                y=coords[m, 1],
                mode="markers",
                name=f"cluster {c}",
                marker=dict(size=4, color=colour, symbol=symbol, opacity=op),
            )
        )
    fig.update_layout(title=title, xaxis_title="component 1", yaxis_title="component 2", height=460)
    return apply_paper(fig)


# ---------------------------------------------------------------- figures of a PPP recipe result
def ppp_k_figure(result: Mapping) -> go.Figure:
    """:func:`k_selection_figure` of a ``core.recipes.cluster.ppp_clustering`` result."""
    return k_selection_figure(result["ks"], result["scores"], chosen=result["k"])


def ppp_contingency_figure(result: Mapping) -> go.Figure:
    """:func:`contingency_figure` of a ``ppp_clustering`` result."""
    return contingency_figure(result["truth"], result["labels"], class_names=result["class_names"])


def ppp_scatter_figure(result: Mapping) -> go.Figure:
    """:func:`cluster_scatter_figure` of a ``ppp_clustering`` result (PCA plane)."""
    return cluster_scatter_figure(
        result["coords"],
        result["labels"],
        confidence=result["posterior"],
        title="Clusters (PCA of the clustered data)",
    )
