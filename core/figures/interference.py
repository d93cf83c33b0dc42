"""Figures of the interference diagnostics (:mod:`core.merge.diagnostics`).

Pure functions of an :class:`core.merge.diagnostics.InterferenceReport`: a cosine heatmap of
the task vectors, a per-layer profile (sign-conflict rate and ‖τ‖), and what TIES / DARE /
DARE-TIES keep (fraction kept per model and layer, each model's share of the elected sign).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .layout import narrow_variant, short_names
from .theme import DIVERGING, PALETTE, SEQUENTIAL, apply_paper

KEEP_METHODS = {"ties": "TIES", "dare": "DARE", "dare_ties": "DARE-TIES"}


def _need(obj: Any, attrs: Sequence[str]) -> None:
    missing = [a for a in attrs if not hasattr(obj, a)]
    if missing:
        raise TypeError(
            f"report must be an InterferenceReport (missing {missing}), got {type(obj).__name__}"
        )


def cosine_figure(report: Any, *, title: str = "Cosine similarity of task vectors") -> go.Figure:
    """(N, N) heatmap of cos(τᵢ, τⱼ), diverging around 0, values written in the cells."""
    _need(report, ("names", "cosine"))
    names, prefix = short_names(list(report.names))
    cos = np.asarray(report.cosine, dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=cos,
            x=names,
            y=names,
            zmin=-1.0,
            zmax=1.0,
            zmid=0.0,
            colorscale=DIVERGING,
            text=[[f"{v:.2f}" for v in row] for row in cos],
            texttemplate="%{text}",
            colorbar=dict(title="cos", thickness=10),
            hovertemplate="%{y} · %{x}: %{z:.4f}<extra></extra>",
        )
    )
    fig.update_layout(title=title, yaxis=dict(autorange="reversed", scaleanchor="x"))
    if prefix:
        fig.update_xaxes(title_text=f"{prefix}…")
    return apply_paper(fig)


def layer_profile_figure(report: Any, *, title: str = "Interference per layer") -> go.Figure:
    """Two panels over the layers: the sign-conflict rate (untrimmed and after the TIES trim)
    and ‖τᵢ‖ of every model."""
    _need(report, ("names", "layers", "norms", "conflict", "conflict_trimmed", "density"))
    layers = list(report.layers)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.16)
    for y, name, dash in (
        (report.conflict, "all entries", "solid"),
        (report.conflict_trimmed, f"after TIES trim (density {report.density:g})", "dot"),
    ):
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=[None if np.isnan(v) else float(v) for v in np.asarray(y, dtype=float)],
                name=f"sign conflicts · {name}",
                mode="lines+markers",
                line=dict(color="#333333", dash=dash),
            ),
            row=1,
            col=1,
        )
    norms = np.asarray(report.norms, dtype=float)
    names, prefix = short_names(list(report.names))
    for i, name in enumerate(names):
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=norms[i],
                name=f"‖τ‖ · {name}",
                mode="lines+markers",
                line=dict(color=PALETTE[i % len(PALETTE)]),
            ),
            row=2,
            col=1,
        )
    fig.update_yaxes(title_text="conflict rate", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="‖τ‖₂", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title_text="layer", row=2, col=1)
    if prefix:
        title = f"{title} ({prefix}…)"
    fig.update_layout(title=title, legend=dict(orientation="h", y=-0.25))
    # single column: short legend names and layer labels, panels further apart
    short_layers, layer_prefix = short_names(layers)
    narrow_variant(
        fig,
        layout=dict(
            yaxis=dict(domain=[0.6, 1.0], title_text="conflicts"),
            yaxis2=dict(domain=[0.0, 0.4]),
            xaxis2=dict(
                tickvals=layers,
                ticktext=short_layers,
                title_text=f"layer ({layer_prefix}…)" if layer_prefix else "layer",
            ),
        ),
        traces={0: dict(name="all entries"), 1: dict(name="after TIES trim")}
        | {2 + i: dict(name=name) for i, name in enumerate(names)},
    )
    return apply_paper(fig)


def keep_figure(report: Any, method: str = "ties", *, title: str | None = None) -> go.Figure:
    """What ``method`` ("ties", "dare" or "dare_ties") keeps: a heatmap of the fraction of each
    model's entries kept per layer, and beside it each model's share of the kept entries
    (for TIES and DARE-TIES: its share of the elected sign, by count and by |τ| mass)."""
    _need(report, ("names", "layers", "ties", "dare", "dare_ties"))
    if method not in KEEP_METHODS:
        raise ValueError(f"method must be one of {list(KEEP_METHODS)}, got {method!r}")
    keep = getattr(report, method)
    names = list(report.names)
    frac = np.asarray(keep.fraction, dtype=float)
    fig = make_subplots(
        rows=1, cols=2, column_widths=[0.72, 0.28], shared_yaxes=True, horizontal_spacing=0.04
    )
    fig.add_trace(
        go.Heatmap(
            z=frac,
            x=list(report.layers),
            y=names,
            zmin=0.0,
            zmax=1.0,
            colorscale=SEQUENTIAL,
            colorbar=dict(title="kept", thickness=10, x=0.66),
            hovertemplate="%{y} · %{x}: %{z:.3f} kept<extra></extra>",
        ),
        row=1,
        col=1,
    )
    elected = method != "dare"
    share_name = "share of elected sign" if elected else "share of kept entries"
    fig.add_trace(
        go.Bar(
            x=np.asarray(keep.sign_share, dtype=float),
            y=names,
            orientation="h",
            name=f"{share_name} (count)",
            marker_color=PALETTE[0],
        ),
        row=1,
        col=2,
    )
    fig.add_trace(
        go.Bar(
            x=np.asarray(keep.mass_share, dtype=float),
            y=names,
            orientation="h",
            name=f"{share_name} (|τ| mass)",
            marker_color=PALETTE[1],
        ),
        row=1,
        col=2,
    )
    settings = {
        "ties": f"density {report.density:g}, {report.trim} trim",
        "dare": f"drop {report.drop:g}, seed {report.seed}",
        "dare_ties": f"drop {report.drop:g}, density {report.density:g}, seed {report.seed}",
    }[method]
    fig.update_xaxes(title_text="layer", row=1, col=1)
    fig.update_xaxes(title_text="share", range=[0, 1], row=1, col=2)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_layout(
        title=title or f"What {KEEP_METHODS[method]} keeps · {settings}",
        barmode="group",
        legend=dict(orientation="h", y=-0.3),
    )
    # single column: short model and layer names, the colourbar right of both panels
    short, prefix = short_names(names)
    short_layers, layer_prefix = short_names(list(report.layers))
    step = -(-len(short_layers) // 6)  # at most six layer labels fit under the heatmap
    narrow_variant(
        fig,
        layout=dict(
            xaxis=dict(
                domain=[0.0, 0.58],
                tickvals=list(report.layers)[::step],
                ticktext=short_layers[::step],
                title_text=f"layer ({layer_prefix}…)" if layer_prefix else "layer",
            ),
            xaxis2=dict(domain=[0.64, 1.0], tickvals=[0, 0.5, 1], ticktext=["0", ".5", "1"]),
            yaxis=dict(tickvals=names, ticktext=short, title_text=f"{prefix}…" if prefix else None),
        ),
        traces={
            0: dict(colorbar=dict(x=1.02, xanchor="left", len=0.8)),
            1: dict(name="count"),
            2: dict(name="|τ| mass"),
        },
    )
    return apply_paper(fig)


def interference_figure(report: Any, chart: str = "cosine", method: str = "ties") -> go.Figure:
    """One of the three figures by name: ``chart`` "cosine", "layers" or "keep"."""
    if chart == "cosine":
        return cosine_figure(report)
    if chart == "layers":
        return layer_profile_figure(report)
    if chart == "keep":
        return keep_figure(report, method)
    raise ValueError(f"chart must be one of ['cosine', 'layers', 'keep'], got {chart!r}")
