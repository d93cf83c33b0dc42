"""Figures of feature geometry: NC metrics over epochs, projection scatters with class means and
classifier directions, the ETF comparison, and mixup-λ colouring."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .theme import PALETTE, apply_paper, category_style

NC_PANELS = (
    ("nc1", "NC1  Tr(Σ_W Σ_B⁺)/C", True),
    ("nc2_equinorm", "NC2 equinorm (CV)", False),
    ("nc2_equiangular", "NC2 equiangularity", False),
    ("etf_distance", "distance to simplex ETF", False),
    ("nc3", "NC3 self-duality", False),
    ("nc4", "NC4 NCC mismatch", False),
)


# Above this many points a scatter uses WebGL (Scattergl); below, SVG, which draws as fast and
# does not make the browser warn about a stalled GPU context.
WEBGL_ABOVE = 5000


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nc_epochs_figure(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    title: str = "Neural collapse during training",
) -> go.Figure:
    """NC metrics per epoch for several runs (e.g. ERM vs mixup), one panel per metric.

    Args:
        runs: run name -> list of per-epoch dicts with ``epoch`` and the keys of
            :func:`core.geometry.neural_collapse` (``History.extra``).
    """
    if not runs or not any(runs.values()):
        raise ValueError("runs must hold at least one run with epochs, got none")
    fig = make_subplots(
        rows=2,
        cols=3,
        subplot_titles=[p[1] for p in NC_PANELS],
        shared_xaxes=True,
        horizontal_spacing=0.08,
        vertical_spacing=0.16,
    )
    for i, (name, rows) in enumerate(runs.items()):
        epochs = [r["epoch"] for r in rows]
        for j, (key, _, _log) in enumerate(NC_PANELS):
            fig.add_trace(
                go.Scatter(
                    x=epochs,
                    y=[r.get(key) for r in rows],
                    name=name,
                    mode="lines+markers",
                    line=dict(color=_colour(i)),
                    legendgroup=name,
                    showlegend=j == 0,
                ),
                row=j // 3 + 1,
                col=j % 3 + 1,
            )
    fig.update_yaxes(nticks=3)
    for j, (_, _, log) in enumerate(NC_PANELS):
        if log:  # powers of ten only (the minor labels 2, 3, 5 collide in a small panel)
            fig.update_yaxes(type="log", dtick=1, row=j // 3 + 1, col=j % 3 + 1)
    fig.update_xaxes(title_text="epoch", row=2)
    fig.update_layout(title=title, height=520)
    return apply_paper(fig)


def projection_figure(
    coords: np.ndarray,
    labels: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    anchors: Mapping[str, np.ndarray] | None = None,
    anchor_classes: Sequence[int] | None = None,
    title: str = "Features",
    axis_names: tuple[str, str] = ("component 1", "component 2"),
) -> go.Figure:
    """Scatter of projected features coloured by class, with class means (stars) and classifier
    directions (arrows from the global mean) when given.

    Args:
        coords: (N, 2) projected points; labels: (N,) classes.
        class_names: names indexed by class label.
        anchors: optional ``class_means`` (C, 2), ``classifier_tips`` (C, 2) and ``global_mean``
            (1, 2), in the projection's coordinates.
        anchor_classes: the class label of each anchor row (default 0..C−1).
    """
    coords, labels = np.asarray(coords), np.asarray(labels)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(labels):
        raise ValueError(
            f"coords must be (N, 2) with N = len(labels), got {coords.shape} and {labels.shape}"
        )
    name = _namer(class_names)
    fig = go.Figure()
    classes = np.unique(labels).tolist()
    n = len(classes)
    scatter = go.Scattergl if len(coords) > WEBGL_ABOVE else go.Scatter
    for i, c in enumerate(classes):
        pts = coords[labels == c]
        colour, symbol = category_style(i, n)
        fig.add_trace(
            scatter(
                x=pts[:, 0],
                y=pts[:, 1],
                mode="markers",
                name=name(c),
                legendgroup=str(c),
                marker=dict(size=4, color=colour, symbol=symbol, opacity=0.55),
            )
        )
    _add_anchors(
        fig,
        anchors or {},
        anchor_classes,
        {c: category_style(i, n)[0] for i, c in enumerate(classes)},
        name,
    )
    fig.update_layout(title=title, xaxis_title=axis_names[0], yaxis_title=axis_names[1], height=480)
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return apply_paper(fig)


def _add_anchors(
    fig: go.Figure,
    anchors: Mapping[str, np.ndarray],
    anchor_classes: Sequence[int] | None,
    colour_of: Mapping[int, str],
    name: Any,
) -> None:
    """Class means (stars) and classifier directions (arrows from the global mean)."""
    means, tips, centre = (
        anchors.get("class_means"),
        anchors.get("classifier_tips"),
        anchors.get("global_mean"),
    )
    n = len(means) if means is not None else len(tips) if tips is not None else 0
    rows = list(anchor_classes) if anchor_classes is not None else list(range(n))
    if means is not None:
        fig.add_trace(
            go.Scatter(
                x=means[:, 0],
                y=means[:, 1],
                mode="markers+text",
                name="class means",
                marker=dict(
                    symbol="star",
                    size=13,
                    color=[colour_of.get(c, "#000000") for c in rows],
                    line=dict(color="black", width=1),
                ),
                text=[name(c) for c in rows],
                textposition="top center",
                textfont=dict(size=9, color="#222222"),
                hovertemplate="mean of %{text}<extra></extra>",
            )
        )
    if tips is not None and centre is not None:
        x0, y0 = float(centre[0, 0]), float(centre[0, 1])
        for k in range(len(rows)):
            fig.add_annotation(
                x=float(tips[k, 0]),
                y=float(tips[k, 1]),
                ax=x0,
                ay=y0,
                xref="x",
                yref="y",
                axref="x",
                ayref="y",
                showarrow=True,
                arrowhead=2,
                arrowwidth=1.5,
                arrowcolor="black",
                text="",
            )
        fig.add_trace(
            go.Scatter(
                x=tips[:, 0],
                y=tips[:, 1],
                mode="markers",
                name="classifier w_c",
                marker=dict(symbol="triangle-up", size=8, color="black"),
                text=[name(c) for c in rows],
                hovertemplate="w of %{text}<extra></extra>",
            )
        )


def _namer(class_names: Sequence[str] | None) -> Any:
    return lambda c: class_names[c] if class_names and 0 <= c < len(class_names) else str(c)


def etf_figure(
    gram: np.ndarray,
    ideal: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "Class-mean geometry vs the simplex ETF",
) -> go.Figure:
    """Heatmaps of the cosine Gram of centred class means, the ideal ETF Gram and their difference."""
    gram, ideal = np.asarray(gram), np.asarray(ideal)
    if gram.shape != ideal.shape or gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(
            f"gram and ideal must be equal square matrices, got {gram.shape} and {ideal.shape}"
        )
    names = list(class_names) if class_names else [str(i) for i in range(len(gram))]
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("observed cos(μ_c, μ_c')", "simplex ETF", "observed − ETF"),
        horizontal_spacing=0.06,
    )
    for col, (m, scale, show) in enumerate(
        ((gram, "RdBu_r", False), (ideal, "RdBu_r", False), (gram - ideal, "RdBu_r", True)), start=1
    ):
        fig.add_trace(
            go.Heatmap(
                z=m,
                x=names,
                y=names,
                colorscale=scale,
                zmid=0,
                zmin=-1,
                zmax=1,
                showscale=show,
                hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(showticklabels=False, col=2)
    fig.update_yaxes(showticklabels=False, col=3)
    if len(names) > 4:  # names on the rows only; columns by index (key: the row labels)
        idx = [str(i) for i in range(len(names))]
        fig.update_xaxes(tickvals=names, ticktext=idx, tickangle=0)
        fig.update_yaxes(tickvals=names, ticktext=[f"{i} {n}" for i, n in enumerate(names)], col=1)
    fig.update_layout(title=title, height=330)
    return apply_paper(fig)


def mixup_lambda_figure(
    coords: np.ndarray,
    lam: np.ndarray,
    same_class: np.ndarray,
    *,
    anchors: Mapping[str, np.ndarray] | None = None,
    class_names: Sequence[str] | None = None,
    anchor_classes: Sequence[int] | None = None,
    title: str = "Features of mixed samples",
) -> go.Figure:
    """Mixed samples coloured by λ (circles: same-class pairs, crosses: different classes), with
    class means and classifier directions (Fisher, Meng & Papyan 2024, Fig. 1)."""
    coords, lam, same = np.asarray(coords), np.asarray(lam), np.asarray(same_class, dtype=bool)
    if coords.ndim != 2 or coords.shape[1] != 2 or not len(coords) == len(lam) == len(same):
        raise ValueError(
            f"coords (N, 2), lam (N,) and same_class (N,) must agree, got {coords.shape}, "
            f"{lam.shape}, {same.shape}"
        )
    fig = go.Figure()
    scatter = go.Scattergl if len(coords) > WEBGL_ABOVE else go.Scatter
    first = True
    for mask, label, symbol in (
        (same, "same-class pairs", "circle"),
        (~same, "different-class pairs", "x"),
    ):
        if mask.any():
            fig.add_trace(
                scatter(
                    x=coords[mask, 0],
                    y=coords[mask, 1],
                    mode="markers",
                    name=label,
                    marker=dict(
                        size=5,
                        symbol=symbol,
                        color=lam[mask],
                        colorscale="Viridis",
                        cmin=0,
                        cmax=1,
                        showscale=first,  # one colour bar for both traces
                        colorbar=dict(title=dict(text="λ", side="right")),
                    ),
                    customdata=lam[mask],
                    hovertemplate="λ = %{customdata:.2f}<extra></extra>",
                )
            )
            first = False
    rows = list(anchor_classes) if anchor_classes is not None else []
    _add_anchors(
        fig,
        anchors or {},
        anchor_classes,
        {c: category_style(i, len(rows))[0] for i, c in enumerate(rows)},
        _namer(class_names),
    )
    fig.update_layout(title=title, xaxis_title="component 1", yaxis_title="component 2", height=480)
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return apply_paper(fig)


# ---------------------------------------------------------------- figures of geometry recipe results
def _anchored(record: Mapping[str, Any], anchors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The class-mean / classifier anchors of a recipe record, as figure keyword arguments."""
    return {
        "anchors": anchors,
        "class_names": record["class_names"],
        "anchor_classes": record["classes"].tolist(),
    }


def projection_result_figure(result: Mapping[str, Any], *, title: str = "Features") -> go.Figure:
    """:func:`projection_figure` of a ``core.recipes.geometry.feature_projection`` result."""
    report, proj = result["report"], result["projection"]
    return projection_figure(
        proj["coords"], report["labels"], **_anchored(report, proj["anchors"]), title=title
    )


def etf_result_figure(
    result: Mapping[str, Any], *, title: str = "Class-mean geometry vs the simplex ETF"
) -> go.Figure:
    """:func:`etf_figure` of a ``core.recipes.geometry.feature_geometry`` result."""
    names = result["class_names"]
    return etf_figure(
        result["gram"],
        result["ideal"],
        class_names=[names[c] for c in result["classes"]],
        title=title,
    )


def mixup_result_figure(
    result: Mapping[str, Any], *, title: str = "Features of mixed samples"
) -> go.Figure:
    """:func:`mixup_lambda_figure` of a ``core.recipes.geometry.mixup_features`` result."""
    return mixup_lambda_figure(
        result["coords"],
        result["lam"],
        result["same_class"],
        **_anchored(result, result["anchors"]),
        title=title,
    )


def nc_run_figure(result: Mapping[str, Any], *, title: str | None = None) -> go.Figure:
    """:func:`nc_epochs_figure` of a ``core.recipes.geometry.nc_run`` result, titled with the
    run's task and architecture unless ``title`` is given (figures stored before the recipe
    registry carry theirs)."""
    if title is None:
        title = f"Neural collapse per epoch · {result['task']} · {result['arch']}"
    return nc_epochs_figure(result["histories"], title=title)
