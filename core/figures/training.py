"""Figures of training runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .theme import PALETTE, apply_paper


def history_figure(
    histories: Mapping[str, Mapping[str, Any]], *, title: str = "Training"
) -> go.Figure:
    """Loss and test accuracy per epoch for one or more runs.

    Args:
        histories: run name -> ``History.to_dict()`` (keys ``epoch``, ``train_loss``,
            ``test_accuracy``...).
    """
    if not histories:
        raise ValueError("histories must hold at least one run, got none")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "test accuracy"))
    for i, (name, h) in enumerate(histories.items()):
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=h["epoch"],
                y=h["train_loss"],
                name=name,
                mode="lines+markers",
                line=dict(color=color),
                legendgroup=name,
            ),
            row=1,
            col=1,
        )
        if h.get("test_accuracy"):
            fig.add_trace(
                go.Scatter(
                    x=h["epoch"],
                    y=h["test_accuracy"],
                    name=name,
                    mode="lines+markers",
                    line=dict(color=color),
                    legendgroup=name,
                    showlegend=False,
                ),
                row=1,
                col=2,
            )
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title=title)
    return apply_paper(fig)
