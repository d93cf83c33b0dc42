"""The figure of a CMA-ES merge search (core.search): every evaluation and the best so far."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from .theme import PALETTE, apply_paper


def search_figure(result: Mapping[str, Any], *, title: str | None = None) -> go.Figure:
    """Validation score of every evaluation (markers) and the best so far (a step line)
    against the evaluation count; the best point's test score, when measured, as a star at
    the end.

    Args:
        result: :func:`core.search.load_search`'s record: ``summary`` (its ``objective`` and
            optional ``test``) and ``evals`` (a DataFrame with ``objective``,
            ``mean_val_accuracy`` and ``best_so_far`` per evaluation, in order).
        title: the figure title (default: the search's name and evaluation count).
    """
    if not isinstance(result, Mapping) or "evals" not in result:
        raise TypeError(f"result must be load_search's record (summary, evals), got {result!r}")
    evals, summary = result["evals"], result.get("summary") or {}
    if len(evals) == 0:
        raise ValueError("result has no evaluations: run the search first")
    accuracy = summary.get("objective", "accuracy") == "accuracy"
    n = list(range(1, len(evals) + 1))
    # accuracy is maximised (the objective is its negative); a loss is minimised as it is
    each = list(evals["mean_val_accuracy"]) if accuracy else list(evals["objective"])
    best = [-v if accuracy else v for v in evals["best_so_far"]]
    label = "mean validation accuracy" if accuracy else "mean validation loss"
    fig = go.Figure()
    for y, name, style in (
        (each, "evaluation", {"mode": "markers", "marker": dict(color=PALETTE[5], size=5)}),
        (best, "best so far", {"mode": "lines", "line": dict(color=PALETTE[0], shape="hv")}),
    ):
        fig.add_trace(go.Scatter(x=n, y=y, name=name, **style))
    test = summary.get("test")
    if test is not None:
        value = test["mean_accuracy"] if accuracy else _mean(test["loss"])
        fig.add_trace(
            go.Scatter(
                x=[n[-1]],
                y=[value],
                mode="markers",
                name="best point on test",
                marker=dict(color=PALETTE[3], size=10, symbol="star"),
            )
        )
    fig.update_xaxes(title_text="evaluation")
    fig.update_yaxes(title_text=label)
    name = summary.get("search", "search")
    fig.update_layout(title=title or f"CMA-ES search {name}: {len(evals)} evaluations")
    return apply_paper(fig)


def _mean(values: Mapping[str, float]) -> float:
    return sum(values.values()) / len(values)


__all__ = ["search_figure"]
