"""Figures of the Merge Lab: per-task accuracy, coefficient landscape, sweeps, method comparison.

Pure functions of the result records in :mod:`core.merge_eval`; no computation beyond shaping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .text import REFERENCE, p_value_text
from .theme import PALETTE, apply_paper

GREY = "#999999"


def _need(obj: Any, attrs: Sequence[str], what: str) -> None:
    missing = [a for a in attrs if not hasattr(obj, a)]
    if missing:
        raise TypeError(f"result must be a {what} (missing {missing}), got {type(obj).__name__}")


def task_accuracy_figure(result: Any, *, title: str = "Per-task accuracy") -> go.Figure:
    """Grouped bars per task: base, merged and fine-tuned accuracy, plus the averages.

    Args:
        result: a :class:`core.merge_eval.MergeEval`.
    """
    _need(result, ("tasks", "accuracy", "reference", "base", "average"), "MergeEval")
    tasks = [*result.tasks, "average"]
    merged = [*result.accuracy, result.average]
    ref = [*result.reference, float(np.mean(result.reference))]
    fig = go.Figure()
    if result.base is not None:
        base = [*result.base, float(np.mean(result.base))]
        fig.add_trace(go.Bar(x=tasks, y=base, name="base (θ₀)", marker_color=GREY))
    fig.add_trace(
        go.Bar(
            x=tasks,
            y=merged,
            name="merged",
            marker_color=PALETTE[0],
            text=[f"{v:.3f}" for v in merged],
            textposition="outside",
        )
    )
    fig.add_trace(go.Bar(x=tasks, y=ref, name="fine-tuned", marker_color=PALETTE[1]))
    split = "full test sets" if result.full else _subset_note(result)
    fig.update_layout(
        barmode="group",
        title=f"{title} · {split}",
        yaxis=dict(title="accuracy", range=[0, 1.08]),
        legend=dict(orientation="h", y=-0.2),
    )
    return apply_paper(fig)


def _subset_note(result: Any) -> str:
    """'evaluation subset, 250 / task' (the Merge Lab's slider says per task too)."""
    counts = np.bincount(np.asarray(result.groups), minlength=len(result.tasks))
    if len(set(counts.tolist())) == 1:
        return f"evaluation subset, {int(counts[0])} / task"
    return "evaluation subset, " + ", ".join(
        f"{t} {int(n)}" for t, n in zip(result.tasks, counts, strict=True)
    )


def task_radar_figure(result: Any, *, title: str = "Per-task accuracy") -> go.Figure:
    """Radar of per-task accuracy (merged, fine-tuned, base); needs at least 3 tasks."""
    _need(result, ("tasks", "accuracy", "reference", "base"), "MergeEval")
    if len(result.tasks) < 3:
        raise ValueError(f"a radar needs at least 3 tasks, got {len(result.tasks)}")
    theta = [*result.tasks, result.tasks[0]]
    fig = go.Figure()
    series = [("fine-tuned", result.reference, PALETTE[1]), ("merged", result.accuracy, PALETTE[0])]
    if result.base is not None:
        series.insert(0, ("base (θ₀)", result.base, GREY))
    for name, vals, color in series:
        r = [*vals, vals[0]]
        fig.add_trace(
            go.Scatterpolar(
                r=r,
                theta=theta,
                name=name,
                line=dict(color=color),
                fill="toself" if name == "merged" else None,
                opacity=0.8,
            )
        )
    fig.update_layout(
        title=title, polar=dict(radialaxis=dict(range=[0, 1], angle=90, tickangle=0, dtick=0.25))
    )
    return apply_paper(fig)


def landscape_figure(
    result: Any,
    *,
    point: tuple[float, float] | None = None,
    metric: str = "average",
    title: str | None = None,
) -> go.Figure:
    """Heatmap of accuracy over the λ1 × λ2 grid, with the current slider point marked.

    Args:
        result: a :class:`core.merge_eval.LandscapeResult`.
        point: (λ1, λ2) of the current sliders, drawn as a marker.
        metric: "average", "normalized" or a task name.
    """
    _need(
        result,
        ("lam1", "lam2", "accuracy", "average", "normalized", "tasks", "models"),
        "LandscapeResult",
    )
    if metric == "average":
        z, label = result.average, "average accuracy"
    elif metric == "normalized":
        z, label = result.normalized, "normalised accuracy"
    elif metric in result.tasks:
        z, label = result.accuracy[list(result.tasks).index(metric)], f"accuracy on {metric}"
    else:
        raise ValueError(
            f"metric must be 'average', 'normalized' or one of {list(result.tasks)}, got {metric!r}"
        )
    m1, m2 = result.models
    # rows of z follow λ1 (y axis), columns λ2 (x axis)
    fig = go.Figure(
        go.Heatmap(
            x=result.lam2,
            y=result.lam1,
            z=z,
            colorscale="Viridis",
            colorbar=dict(title=dict(text=label, side="right")),
            hovertemplate="λ2=%{x:.2f}<br>λ1=%{y:.2f}<br>%{z:.3f}<extra></extra>",
        )
    )
    i, j = np.unravel_index(int(np.argmax(z)), z.shape)
    fig.add_trace(
        go.Scatter(
            x=[result.lam2[j]],
            y=[result.lam1[i]],
            mode="markers",
            name="best",
            marker=dict(symbol="star", size=13, color="white", line=dict(color="black", width=1)),
        )
    )
    if point is not None:
        fig.add_trace(
            go.Scatter(
                x=[point[1]],
                y=[point[0]],
                mode="markers",
                name="current",
                marker=dict(symbol="x", size=12, color=PALETTE[3], line=dict(width=2)),
            )
        )
    fig.update_layout(
        title=title or f"{label}: θ₀ + λ1·τ({m1}) + λ2·τ({m2})",
        xaxis=dict(title=f"λ2 ({m2})"),
        yaxis=dict(title=f"λ1 ({m1})"),
        legend=dict(orientation="h", y=-0.25),
    )
    return apply_paper(fig)


def sweep_figure(
    result: Any, *, current: float | None = None, title: str | None = None
) -> go.Figure:
    """Per-task and average accuracy as one hyperparameter varies (dashed: fine-tuned level).

    Args:
        result: a :class:`core.merge_eval.SweepResult`.
        current: the slider's current value, drawn as a vertical line.
    """
    _need(
        result,
        ("method", "param", "values", "accuracy", "average", "normalized", "tasks", "reference"),
        "SweepResult",
    )
    fig = go.Figure()
    for k, task in enumerate(result.tasks):
        color = PALETTE[(k + 1) % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=result.values,
                y=result.accuracy[k],
                name=task,
                mode="lines+markers",
                line=dict(color=color, width=1.2),
                marker=dict(size=4),
            )
        )
    fig.add_trace(
        go.Scatter(
            x=result.values,
            y=result.average,
            name="average",
            mode="lines+markers",
            line=dict(color="black", width=2.2),
        )
    )
    fig.add_hline(
        y=float(np.mean(result.reference)),
        line=dict(color=GREY, dash="dash", width=1),
        annotation_text="fine-tuned (avg)",
        annotation_position="bottom right",
    )
    if current is not None:
        fig.add_vline(x=current, line=dict(color=PALETTE[3], dash="dot", width=1))
    fig.update_layout(
        title=title or f"{result.method}: sweep of {result.param}",
        xaxis=dict(title=result.param),
        yaxis=dict(title="accuracy"),
    )
    return apply_paper(fig)


def comparison_figure(result: Any, *, title: str | None = None) -> go.Figure:
    """Average accuracy per method with bootstrap CI error bars; McNemar p-values as labels.

    Args:
        result: a :class:`core.merge_eval.ComparisonResult`.
    """
    _need(result, ("rows", "tasks", "reference_method", "level", "reference"), "ComparisonResult")
    rows = [r for r in result.rows if r.error is None]
    if not rows:
        raise ValueError("result has no method that ran; nothing to plot")
    rows = sorted(rows, key=lambda r: r.average)
    names = [r.method for r in rows]
    avg = np.array([r.average for r in rows])
    labels = [
        REFERENCE
        if r.method == result.reference_method
        else ""
        if r.p_value is None
        else f"p = {p_value_text(float(r.p_value))}"
        for r in rows
    ]
    colors = [PALETTE[1] if r.method == result.reference_method else PALETTE[0] for r in rows]
    fig = go.Figure(
        go.Bar(
            y=names,
            x=avg,
            orientation="h",
            marker_color=colors,
            text=labels,
            textposition="inside",
            insidetextanchor="start",
            error_x=dict(
                type="data",
                symmetric=False,
                array=[r.ci_high - r.average for r in rows],
                arrayminus=[r.average - r.ci_low for r in rows],
                color="#333333",
                thickness=1,
            ),
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
            name="merged",
        )
    )
    fig.add_vline(
        x=float(np.mean(result.reference)),
        line=dict(color=GREY, dash="dash"),
        annotation_text="fine-tuned",
        annotation_position="top left",
        annotation_yanchor="top",  # inside the plot, clear of the title
    )
    if result.base is not None:
        fig.add_vline(
            x=float(np.mean(result.base)),
            line=dict(color=GREY, dash="dot"),
            annotation_text="base",
            annotation_position="bottom right",
            annotation_yanchor="bottom",  # inside the plot, clear of the tick labels
        )
    pct = round(result.level * 100)
    fig.update_layout(
        title=title
        or f"Average accuracy with {pct}% bootstrap CI · McNemar vs {result.reference_method}",
        xaxis=dict(title="average accuracy over tasks", range=[0, 1.02]),
        height=max(260, 32 * len(rows) + 120),
        showlegend=False,
    )
    return apply_paper(fig)


def comparison_task_figure(result: Any) -> go.Figure:
    """Per-task accuracy of every method (one subplot column per task)."""
    _need(result, ("rows", "tasks"), "ComparisonResult")
    rows = [r for r in result.rows if r.error is None]
    if not rows:
        raise ValueError("result has no method that ran; nothing to plot")
    fig = make_subplots(
        rows=1, cols=len(result.tasks), shared_yaxes=True, subplot_titles=result.tasks
    )
    for k in range(len(result.tasks)):
        fig.add_trace(
            go.Bar(
                y=[r.method for r in rows],
                x=[r.per_task[k] for r in rows],
                orientation="h",
                marker_color=PALETTE[(k + 1) % len(PALETTE)],
                showlegend=False,
            ),
            row=1,
            col=k + 1,
        )
    fig.update_xaxes(range=[0, 1])
    fig.update_layout(title="Per-task accuracy by method", height=max(260, 28 * len(rows) + 120))
    return apply_paper(fig)


# ---------------------------------------------------------------- figures of Merge Lab recipes
def _parts(result: Any, keys: Sequence[str], what: str) -> None:
    if not isinstance(result, Mapping) or not set(keys) <= set(result):
        got = sorted(result) if isinstance(result, Mapping) else type(result).__name__
        raise TypeError(f"result must be a {what} result with keys {list(keys)}, got {got}")


def merge_accuracy_figure(
    result: Any, *, chart: str = "bars", title: str = "Per-task accuracy"
) -> go.Figure:
    """:func:`task_accuracy_figure` (``chart="bars"``) or :func:`task_radar_figure`
    (``"radar"``) of a ``core.recipes.merge.merged_accuracy`` result."""
    if chart not in ("bars", "radar"):
        raise ValueError(f"chart must be 'bars' or 'radar', got {chart!r}")
    draw = task_radar_figure if chart == "radar" else task_accuracy_figure
    return draw(result, title=title)


def merge_landscape_figure(
    result: Mapping[str, Any],
    *,
    metric: str = "average",
    method: str = "",
    hyperparameters: Mapping[str, Any] | None = None,
) -> go.Figure:
    """:func:`landscape_figure` of a ``core.recipes.merge.coefficient_landscape`` result, with
    the point (λ1, λ2) of the sliders marked when ``method`` is task arithmetic."""
    from core.merge_eval import effective_coefficients

    _parts(result, ("landscape", "pair", "n_models"), "coefficient_landscape")
    coeffs = effective_coefficients(method, dict(hyperparameters or {}), result["n_models"])
    i, j = result["pair"]
    point = None if coeffs is None else (coeffs[i], coeffs[j])
    return landscape_figure(result["landscape"], point=point, metric=metric)


def merge_sweep_figure(result: Mapping[str, Any]) -> go.Figure:
    """:func:`sweep_figure` of a ``core.recipes.merge.hyperparameter_sweep`` result (the
    current slider value marked)."""
    _parts(result, ("sweep", "current"), "hyperparameter_sweep")
    return sweep_figure(result["sweep"], current=result["current"])


def merge_comparison_figure(result: Any, *, chart: str = "methods") -> go.Figure:
    """:func:`comparison_figure` (``chart="methods"``: averages with CIs) or
    :func:`comparison_task_figure` (``"tasks"``) of a ``method_comparison`` result."""
    if chart not in ("methods", "tasks"):
        raise ValueError(f"chart must be 'methods' or 'tasks', got {chart!r}")
    return comparison_task_figure(result) if chart == "tasks" else comparison_figure(result)
