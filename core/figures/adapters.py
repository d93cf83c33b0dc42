"""Figures of low-rank adapter studies (Merging Papers page): Orthogonal Adaptation.

Pure builders ``<thing>_figure(result) -> go.Figure`` and ``<thing>_data(result) -> DataFrame``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .layout import narrow_variant
from .theme import PALETTE, apply_paper


def orthogonal_adaptation_data(study: Any) -> pd.DataFrame:
    """One row per variant and task: pretrained, alone, summed accuracy and kept = summed /
    alone, plus the variant's basis overlap."""
    rows = []
    for v in study.variants:
        kept = study.kept(v)
        for t in study.tasks:
            rows.append(
                {
                    "variant": v,
                    "task": t,
                    "pretrained": study.pretrained[t],
                    "alone": study.alone[v][t],
                    "summed": study.summed[v][t],
                    "kept": kept[t],
                    "overlap": study.overlap[v],
                }
            )
    return pd.DataFrame(rows)


def orthogonal_adaptation_figure(study: Any, *, title: str | None = None) -> go.Figure:
    """Left: mean test accuracy of each variant's adapters alone and summed, with the
    pretrained backbone as a dotted line. Right: per task, the share of its own adapter's
    accuracy the summed adapters keep."""
    from ..papers.orthogonal_adaptation import VARIANT_LABELS

    if not study.variants or not study.tasks or not study.summed:
        raise ValueError("study has no results: run the study first")
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["mean accuracy (dotted: pretrained)", "kept summed"],
        horizontal_spacing=0.16,
        column_widths=[0.4, 0.6],
    )
    labels = [VARIANT_LABELS.get(v, v) for v in study.variants]
    for j, (key, name) in enumerate((("alone", "adapter alone"), ("summed", "adapters summed"))):
        values = [
            100 * float(np.mean(list(getattr(study, key)[v].values()))) for v in study.variants
        ]
        fig.add_trace(
            go.Bar(
                x=labels,
                y=values,
                name=name,
                marker=dict(
                    color=PALETTE[0] if j else "rgba(0,0,0,0)",
                    line=dict(color=PALETTE[0], width=1.5),
                ),
                legendgroup=key,
            ),
            row=1,
            col=1,
        )
    pre = 100 * float(np.mean(list(study.pretrained.values())))
    fig.add_hline(y=pre, line=dict(color="#777777", dash="dot", width=1), row=1, col=1)
    for k, v in enumerate(study.variants):
        kept = study.kept(v)
        fig.add_trace(
            go.Bar(
                x=list(study.tasks),
                y=[kept[t] for t in study.tasks],
                name=labels[k],
                marker=dict(color=PALETTE[(k + 1) % len(PALETTE)]),
                hovertemplate="%{x}: %{y:.2f}<extra>" + labels[k] + "</extra>",
            ),
            row=1,
            col=2,
        )
    fig.add_hline(y=1.0, line=dict(color="#777777", dash="dot", width=1), row=1, col=2)
    fig.update_yaxes(title_text="accuracy (%)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="summed ÷ alone", rangemode="tozero", row=1, col=2)
    fig.update_xaxes(tickangle=-45, row=1, col=2)
    fig.update_xaxes(tickangle=-45, row=1, col=1)
    fig.update_layout(
        barmode="group",
        title=title
        or f"Orthogonal adaptation: summing {len(study.tasks)} rank-{study.rank} adapters "
        f"({study.suite} suite)",
        legend=dict(orientation="h", y=-0.35),
    )
    # single column: the two panels stacked, short variant names on the ticks and in the legend
    short = [_SHORT_LABELS.get(v, v) for v in study.variants]
    grid = make_subplots(
        rows=2, cols=1, subplot_titles=["mean accuracy", "kept summed"], vertical_spacing=0.42
    )
    narrow_variant(
        fig,
        layout=dict(
            annotations=[a.to_plotly_json() for a in grid.layout.annotations]
            + [a.to_plotly_json() for a in fig.layout.annotations[2:]],
            xaxis=dict(domain=[0.0, 1.0], tickvals=labels, ticktext=short, tickangle=0),
            xaxis2=dict(domain=[0.0, 1.0], anchor="y2"),
            yaxis=dict(domain=list(grid.layout.yaxis.domain), title_text="acc. (%)"),
            yaxis2=dict(domain=list(grid.layout.yaxis2.domain), title_text="kept"),
        ),
        traces={0: dict(name="alone"), 1: dict(name="summed")}
        | {2 + k: dict(name=n) for k, n in enumerate(short)},
    )
    return apply_paper(fig, size="double")


_SHORT_LABELS = {"orthogonal": "orthogonal", "lora": "LoRA", "random_fixed": "random"}


__all__ = ["orthogonal_adaptation_data", "orthogonal_adaptation_figure"]
