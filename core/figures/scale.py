"""The figure of "What Matters for Model Merging at Scale?" (Yadav et al., 2024): held-in and
held-out performance against the number of merged experts, one line per method."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .theme import PALETTE, SYMBOLS, apply_paper, rgba

METHOD_LABELS = {
    "average": "Averaging",
    "task_arithmetic": "Task Arithmetic",
    "ties": "TIES",
    "dare_ties": "DARE-TIES",
}
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def merging_at_scale_data(study: Any) -> pd.DataFrame:
    """One row per (method, number of experts): mean, min and max over orders of the
    normalised held-in and held-out performance."""
    return pd.DataFrame(study.summary())


_rgba = rgba


def merging_at_scale_figure(study: Any, *, title: str | None = None) -> go.Figure:
    """Normalised held-in (left) and held-out (right) performance vs the number of merged
    experts, one line per method (mean over task orders, band = min-max over orders); the
    dotted line at 1 is the expert (held-in) or the pretrained backbone (held-out)."""
    summary = study.summary()
    if not summary:
        raise ValueError("study has no rows: run the sweep first")
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["held-in (÷ expert)", "held-out (÷ pretrained)"],
        horizontal_spacing=0.14,
    )
    for j, method in enumerate(study.methods):
        colour = PALETTE[j % len(PALETTE)]
        label = METHOD_LABELS.get(method, method)
        rows = [r for r in summary if r["method"] == method]
        for col, key in ((1, "held_in"), (2, "held_out")):
            pts = [r for r in rows if not math.isnan(r[key])]
            if not pts:
                continue
            ks = [r["k"] for r in pts]
            if any(r["orders"] > 1 for r in pts):
                fig.add_trace(
                    go.Scatter(
                        x=ks + ks[::-1],
                        y=[r[key + "_max"] for r in pts] + [r[key + "_min"] for r in pts][::-1],
                        fill="toself",
                        fillcolor=_rgba(colour, 0.15),
                        line=dict(width=0),
                        hoverinfo="skip",
                        showlegend=False,
                        legendgroup=method,
                    ),
                    row=1,
                    col=col,
                )
            fig.add_trace(
                go.Scatter(
                    x=ks,
                    y=[r[key] for r in pts],
                    mode="lines+markers",
                    line=dict(color=colour, dash=_DASHES[j % len(_DASHES)]),
                    marker=dict(symbol=SYMBOLS[j % len(SYMBOLS)], size=7),
                    name=label,
                    legendgroup=method,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
    for col in (1, 2):
        fig.add_hline(y=1.0, line=dict(color="#777777", dash="dot", width=1), row=1, col=col)
        fig.update_xaxes(title_text="merged experts", dtick=1, row=1, col=col)
    fig.update_yaxes(title_text="normalised accuracy", row=1, col=1)
    fig.update_layout(
        title=title
        or f"Merging at scale on the {study.suite} suite (base strength {study.base_strength:.2f})",
        legend=dict(orientation="h", y=-0.3),
    )
    return apply_paper(fig, size="double")


__all__ = ["merging_at_scale_data", "merging_at_scale_figure"]
