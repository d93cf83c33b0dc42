"""Figures of loss landscapes: interpolation paths, barrier tables, planes and curves.

Encoding follows Git Re-Basin's Fig. 2: grey = naive, green = weight matching, blue =
activation matching; train solid, test dashed; the x axis runs from model A to model B. Every
figure states what was evaluated (examples per split, BatchNorm handling).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .theme import PALETTE, SEQUENTIAL, apply_paper

METHOD_COLORS = {
    "naive": "#7F7F7F",
    "weight matching": PALETTE[2],
    "activation matching": PALETTE[0],
    "Bezier curve": PALETTE[3],
    "straight line": "#7F7F7F",
}
SPLIT_DASH = {"train": "solid", "test": "dash"}
METHOD_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "cross")
PLANE_UNIT = "‖θ_B − θ_A‖"  # one coordinate unit of a plane (axes and page captions)
METRIC_TITLES = {"loss": "loss", "accuracy": "accuracy"}
BARRIER_TITLES = {
    "loss_barrier": "loss barrier (Git Re-Basin)",
    "loss_barrier_linear": "loss barrier (Entezari et al.)",
    "accuracy_barrier": "accuracy barrier",
    "midpoint_accuracy": "accuracy at t = 0.5",
    "midpoint_loss": "loss at t = 0.5",
    "argmax_t": "t of max loss",
}


def _color(name: str, i: int) -> str:
    return METHOD_COLORS.get(name, PALETTE[(i + 4) % len(PALETTE)])


def _check_metric(metric: str) -> None:
    if metric not in METRIC_TITLES:
        raise ValueError(f"metric must be one of {sorted(METRIC_TITLES)}, got {metric!r}")


def evaluation_note(result: Any) -> str:
    """'4000 train / 1000 test examples (fixed subset) · BN reset' for captions and titles."""
    parts = [f"{n} {s}" for s, n in result.n_examples.items()]
    exact = result.n_examples == result.n_total
    note = " / ".join(parts) + " examples" + ("" if exact else " (fixed subset)")
    if getattr(result, "recompute_bn", False):
        note += " · BN statistics reset at every point"
    return note


def path_figure(
    paths: Mapping[str, Any],
    *,
    metrics: Sequence[str] = ("loss", "accuracy"),
    splits: Sequence[str] | None = None,
    title: str = "Linear interpolation",
    x_title: str = "t",
    endpoint_labels: tuple[str, str] | None = ("A", "B"),
) -> go.Figure:
    """Loss / accuracy along one or more paths, one panel per metric.

    Args:
        paths: legend name -> ``core.landscape.PathResult`` (names "naive", "weight matching",
            "activation matching", "Bezier curve", "straight line" get their fixed colours).
        metrics: "loss" and/or "accuracy".
        splits: splits to draw (default all of the first path's).
        title: figure title; the evaluation note is appended.
        x_title: x-axis title.
        endpoint_labels: tick labels at t = 0 and t = 1 (None: plain numbers).
    """
    if not paths:
        raise ValueError("paths must hold at least one PathResult, got none")
    for m in metrics:
        _check_metric(m)
    first = next(iter(paths.values()))
    splits = list(splits) if splits is not None else list(first.loss)
    fig = make_subplots(
        rows=1, cols=len(metrics), subplot_titles=[METRIC_TITLES[m] for m in metrics]
    )
    # colour and marker say the path, the dash pattern the split; the legend lists each once
    for i, (name, res) in enumerate(paths.items()):
        symbol = METHOD_SYMBOLS[i % len(METHOD_SYMBOLS)]
        for s in splits:
            if s not in res.loss:
                raise ValueError(f"split {s!r} is not in path {name!r} (has {list(res.loss)})")
            for c, m in enumerate(metrics, start=1):
                y = res.loss[s] if m == "loss" else res.accuracy[s]
                fig.add_trace(
                    go.Scatter(
                        x=res.t,
                        y=y,
                        name=f"{name} · {s}",
                        mode="lines+markers",
                        marker=dict(size=5, symbol=symbol, maxdisplayed=9),
                        legendgroup=name,
                        showlegend=False,
                        line=dict(color=_color(name, i), dash=SPLIT_DASH.get(s, "dot"), width=1.6),
                    ),
                    row=1,
                    col=c,
                )
        fig.add_trace(_key_trace(name, _color(name, i), "solid", symbol), row=1, col=1)
    if len(splits) > 1:
        for s in splits:
            fig.add_trace(_key_trace(s, "#333333", SPLIT_DASH.get(s, "dot"), None), row=1, col=1)
    fig.update_xaxes(title_text=x_title)
    if endpoint_labels is not None:
        fig.update_xaxes(
            tickvals=[0, 0.25, 0.5, 0.75, 1],
            ticktext=[endpoint_labels[0], "0.25", "0.5", "0.75", endpoint_labels[1]],
        )
    fig.update_layout(title=f"{title}<br><sup>{evaluation_note(first)}</sup>")
    return apply_paper(fig)


def _key_trace(name: str, color: str, dash: str, symbol: str | None) -> go.Scatter:
    """A legend-only entry (no data): one per path (colour, marker) and one per split (dash)."""
    return go.Scatter(
        x=[None],
        y=[None],
        name=name,
        legendgroup=name,
        mode="lines+markers" if symbol else "lines",
        line=dict(color=color, dash=dash, width=1.6),
        marker=dict(symbol=symbol or "circle", size=5, color=color),
        hoverinfo="skip",
    )


def path_data(paths: Mapping[str, Any]) -> pd.DataFrame:
    """Long table behind :func:`path_figure`: path, split, t, loss, accuracy."""
    rows = [
        {"path": name, "split": s, "t": t, "loss": lo, "accuracy": ac}
        for name, res in paths.items()
        for s in res.loss
        for t, lo, ac in zip(res.t, res.loss[s], res.accuracy[s], strict=True)
    ]
    return pd.DataFrame(rows)


def barrier_table(reports: Sequence[Any]) -> pd.DataFrame:
    """One row per (path, split) with every barrier definition, columns labelled by source.

    Args:
        reports: ``core.landscape.BarrierReport`` records.
    """
    rows = [r for rep in reports for r in rep.rows()]
    if not rows:
        raise ValueError("reports must hold at least one BarrierReport, got none")
    return pd.DataFrame(rows).rename(columns=BARRIER_TITLES)


def barrier_figure(reports: Sequence[Any], *, column: str = "loss_barrier") -> go.Figure:
    """Grouped bars of one barrier definition per path and split."""
    if column not in BARRIER_TITLES:
        raise ValueError(f"column must be one of {sorted(BARRIER_TITLES)}, got {column!r}")
    if not reports:
        raise ValueError("reports must hold at least one BarrierReport, got none")
    fig = go.Figure()
    splits = list(reports[0].values)
    for j, s in enumerate(splits):
        fig.add_trace(
            go.Bar(
                x=[r.label for r in reports],
                y=[r.values[s][column] for r in reports],
                name=s,
                marker_color=PALETTE[j % len(PALETTE)],
            )
        )
    fig.update_layout(barmode="group", title=BARRIER_TITLES[column], yaxis_title=column)
    return apply_paper(fig)


def plane_figure(
    result: Any,
    *,
    metric: str = "loss",
    split: str = "test",
    zmax: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Filled contours of a metric over a plane, anchor models marked and labelled.

    Args:
        result: a ``core.landscape.PlaneResult``.
        metric: "loss" or "accuracy".
        split: which split to draw.
        zmax: clip the colour scale here (default for loss: the 90th percentile, so the
            basins stay visible).
        title: figure title (default names the metric and split).
    """
    _check_metric(metric)
    grid = result.loss if metric == "loss" else result.accuracy
    if split not in grid:
        raise ValueError(f"split must be one of {list(grid)}, got {split!r}")
    z = grid[split]
    finite = sorted(v for row in z for v in row if not math.isnan(v))
    if not finite:
        raise ValueError("result has no evaluated grid points")
    if zmax is None and metric == "loss":
        zmax = finite[min(len(finite) - 1, int(0.9 * len(finite)))]
    fig = go.Figure(
        go.Contour(
            x=result.x,
            y=result.y,
            z=z,
            zmax=zmax,
            zmin=finite[0] if zmax is not None else None,
            # sequential: low loss dark, high loss bright (no false midpoint); accuracy the same
            # scale with high accuracy bright
            colorscale=SEQUENTIAL,
            ncontours=15,
            contours=dict(coloring="heatmap", showlines=True),
            line=dict(width=0.5, color="rgba(60,60,60,0.4)"),
            colorbar=dict(title=dict(text=f"{split} {metric}", side="right")),
            name=f"{split} {metric}",
        )
    )
    px, py = zip(*result.positions, strict=True)
    fig.add_trace(
        go.Scatter(
            x=px,
            y=py,
            mode="markers+text",
            text=list(result.labels),
            textposition="top center",
            marker=dict(symbol="x", size=9, color="black", line=dict(width=1, color="white")),
            textfont=dict(color="black", size=10),
            name="models",
            showlegend=False,
        )
    )
    state = "" if result.complete else " (coarse preview)"
    title = title or f"{split} {metric} on the plane{state}"
    fig.update_layout(
        title=f"{title}<br><sup>{evaluation_note(result)}</sup>",
        xaxis_title=f"x (units of {PLANE_UNIT})",
        yaxis_title=f"y (units of {PLANE_UNIT})",
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return apply_paper(fig)


def plane_data(result: Any) -> pd.DataFrame:
    """Long table behind :func:`plane_figure`: x, y, split, loss, accuracy."""
    rows = [
        {
            "x": x,
            "y": y,
            "split": s,
            "loss": result.loss[s][j][i],
            "accuracy": result.accuracy[s][j][i],
        }
        for s in result.loss
        for j, y in enumerate(result.y)
        for i, x in enumerate(result.x)
    ]
    return pd.DataFrame(rows)


def curve_figure(result: Any, *, metrics: Sequence[str] = ("loss", "accuracy")) -> go.Figure:
    """A trained Bezier curve against the straight line (``core.landscape.CurveResult``)."""
    return path_figure(
        {"straight line": result.line, "Bezier curve": result.curve},
        metrics=metrics,
        title="Quadratic Bezier curve vs straight line (Garipov et al.)",
    )


def direction_figure(result: Any, *, metrics: Sequence[str] = ("loss", "accuracy")) -> go.Figure:
    """Loss along a filter-normalised random direction (Li et al.), centred on the model."""
    return path_figure(
        {result.label or "random direction": result},
        metrics=metrics,
        title="Random direction (filter-normalised)",
        x_title="step",
        endpoint_labels=None,
    )


# ---------------------------------------------------------------- figures of interpolation recipes
def _paths_result(result: Any) -> Mapping[str, Any]:
    if not isinstance(result, Mapping) or not {"paths", "barriers"} <= set(result):
        got = sorted(result) if isinstance(result, Mapping) else type(result).__name__
        raise TypeError(
            f"result must be an interpolation_paths result (paths, barriers), got {got}"
        )
    return result


def interpolation_paths_figure(
    result: Mapping[str, Any], *, title: str = "Linear interpolation"
) -> go.Figure:
    """:func:`path_figure` of a ``core.recipes.interpolation.interpolation_paths`` result."""
    return path_figure(_paths_result(result)["paths"], title=title)


def interpolation_barriers_figure(
    result: Mapping[str, Any], *, column: str = "loss_barrier", title: str | None = None
) -> go.Figure:
    """:func:`barrier_figure` of an ``interpolation_paths`` result (one barrier definition;
    ``title`` replaces the definition's name as the title)."""
    fig = barrier_figure(_paths_result(result)["barriers"], column=column)
    if title is not None:
        fig.update_layout(title=title)
    return fig
