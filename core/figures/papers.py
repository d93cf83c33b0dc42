"""Figures of the merging papers (Merging Papers page, singular-vector panel of Interpolation).

Pure builders ``<thing>_figure(result) -> go.Figure`` and ``<thing>_data(result) -> DataFrame``,
plus the notebook recipes that recompute each figure through the public ``core`` API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..notebook_export import Cell, code, markdown, register
from .theme import PALETTE, SEQUENTIAL, apply_paper

# ------------------------------------------------------------------ Ito et al.: singular vectors


def singular_alignment_data(results: Mapping[str, Any]) -> pd.DataFrame:
    """Long table: matcher, layer, index (1 = largest singular value), sigma_a, before, after."""
    rows = []
    for matcher, res in results.items():
        for layer in res.layers:
            top = float(layer.sigma_a[0]) or 1.0
            for i in range(len(layer.diag_before)):
                rows.append(
                    {
                        "matcher": matcher,
                        "layer": layer.key,
                        "index": i + 1,
                        "sigma_a": float(layer.sigma_a[i]),
                        "sigma_a_relative": float(layer.sigma_a[i]) / top,
                        "sigma_b": float(layer.sigma_b[i]),
                        "sigma_b_permuted": float(layer.sigma_b_permuted[i]),
                        "alignment_before": float(layer.diag_before[i]),
                        "alignment_after": float(layer.diag_after[i]),
                    }
                )
    return pd.DataFrame(rows)


def singular_alignment_table(results: Mapping[str, Any], *, k: int = 5) -> pd.DataFrame:
    """One row per matcher and layer: mean alignment of the top-k pairs before/after, of all
    pairs after, and the L2 distance ratio."""
    rows = []
    for matcher, res in results.items():
        for layer in res.layers:
            before, after = layer.top_alignment(k)
            rows.append(
                {
                    "matcher": matcher,
                    "layer": layer.key,
                    f"top-{k} alignment before": before,
                    f"top-{k} alignment after": after,
                    "all pairs after": layer.top_alignment(len(layer.diag_after))[1],
                    "distance ratio": res.distance_ratio,
                }
            )
    return pd.DataFrame(rows)


def singular_alignment_figure(
    results: Mapping[str, Any], *, max_index: int = 32, title: str | None = None
) -> go.Figure:
    """Alignment ``(u_i^A . u_i^B)(v_i^A . v_i^B)`` of the i-th singular pair, per layer, before
    and after each matcher's permutation, with A's relative singular values as a guide.

    Args:
        results: matcher name -> :class:`core.align.SingularAlignment`.
        max_index: singular pairs shown per layer.
    """
    if not results:
        raise ValueError("results must hold at least one SingularAlignment, got none")
    first = next(iter(results.values()))
    keys = [layer.key for layer in first.layers]
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=keys, shared_yaxes=True)
    for c in range(1, len(keys) + 1):
        layer0 = first.layers[c - 1]
        n = min(max_index, len(layer0.diag_before))
        idx = list(range(1, n + 1))
        top = float(layer0.sigma_a[0]) or 1.0
        fig.add_trace(
            go.Bar(
                x=idx,
                y=[float(s) / top for s in layer0.sigma_a[:n]],
                marker_color="rgba(0,0,0,0.12)",
                name="σᵢ / σ₁ of A",
                showlegend=c == 1,
                legendgroup="sigma",
            ),
            row=1,
            col=c,
        )
        fig.add_trace(
            go.Scatter(
                x=idx,
                y=layer0.diag_before[:n].tolist(),
                mode="lines+markers",
                line=dict(color="#777777", dash="dash"),
                marker=dict(size=4),
                name="before permuting",
                showlegend=c == 1,
                legendgroup="before",
            ),
            row=1,
            col=c,
        )
        for j, (matcher, res) in enumerate(results.items()):
            layer = res.layers[c - 1]
            fig.add_trace(
                go.Scatter(
                    x=idx,
                    y=layer.diag_after[:n].tolist(),
                    mode="lines+markers",
                    line=dict(color=PALETTE[j % len(PALETTE)]),
                    marker=dict(size=4),
                    name=f"after {matcher}",
                    showlegend=c == 1,
                    legendgroup=matcher,
                ),
                row=1,
                col=c,
            )
        fig.update_xaxes(title_text="singular index i", row=1, col=c)
    fig.update_yaxes(title_text="alignment of pair i", row=1, col=1)
    ratios = ", ".join(f"{m}: ‖Δθ‖ ratio {r.distance_ratio:.2f}" for m, r in results.items())
    fig.update_layout(
        title=title or f"Singular-vector alignment per layer ({ratios})",
        legend=dict(orientation="h", y=-0.3),
        barmode="overlay",
    )
    return apply_paper(fig, size="double")


def singular_overlap_figure(result: Any, *, layer: str | None = None) -> go.Figure:
    """Heat maps of ``|a_ij|`` over the top-k singular pairs of one layer, before and after.

    Args:
        result: one :class:`core.align.SingularAlignment`.
        layer: the state-dict key (default: the first layer).
    """
    layers = {item.key: item for item in result.layers}
    key = layer if layer is not None else result.layers[0].key
    if key not in layers:
        raise ValueError(f"layer must be one of {list(layers)}, got {key!r}")
    item = layers[key]
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["before permuting", f"after {result.matcher}"]
    )
    for c, mat in enumerate((item.overlap_before, item.overlap_after), start=1):
        k = mat.shape[0]
        fig.add_trace(
            go.Heatmap(
                z=mat.tolist(),
                x=list(range(1, k + 1)),
                y=list(range(1, k + 1)),
                zmin=0,
                zmax=1,
                colorscale=SEQUENTIAL,
                showscale=c == 2,
                colorbar=dict(title="|aᵢⱼ|"),
            ),
            row=1,
            col=c,
        )
        fig.update_xaxes(title_text="pair j of B", row=1, col=c)
        fig.update_yaxes(title_text="pair i of A", autorange="reversed", row=1, col=c)
    fig.update_layout(title=f"{key}: overlap of the top singular pairs")
    return apply_paper(fig, size="double")


def _ids(args: Mapping[str, Any], name: str, n: int) -> list[str]:
    ids = args.get(name)
    if (
        not isinstance(ids, list | tuple)
        or len(ids) != n
        or not all(isinstance(i, str) for i in ids)
    ):
        raise ValueError(f"recipe args[{name!r}] must list {n} zoo ids, got {ids!r}")
    return list(ids)


@register(
    "singular_alignment",
    description="Singular-vector alignment per layer before/after matching (Ito et al.)",
    requires=("models", "task"),
)
def _singular_alignment_cells(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``models`` ([A, B]), ``task`` (training inputs for activation matching),
    ``matchers``, ``top_k``, ``seed`` (weight-matching order); ``figure`` "overlap" with
    ``layer`` gives the heat map of that layer for the first matcher instead."""
    _ids(args, "models", 2)
    matchers = args.get("matchers", ["weight matching"])
    if not isinstance(matchers, list | tuple) or not matchers:
        raise ValueError(f"recipe args['matchers'] must be a non-empty list, got {matchers!r}")
    return [
        markdown(
            "Find B's permutation with each matcher and compare, per layer, how well the singular "
            "pairs of A and B line up before and after (Ito et al., arXiv 2402.04051)."
        ),
        code(
            "import torch\n\n"
            "from core.align import compare_singular_alignment\n"
            "from core.data import get_task\n"
            "from core.figures.papers import singular_alignment_figure\n\n"
            'id_a, id_b = ARGS["models"]\n'
            "model = zoo.load_model(id_a)\n"
            'x = get_task(ARGS["task"]).x_train[:1000]\n'
            "results = compare_singular_alignment(\n"
            '    model, zoo.state_dict(id_a), zoo.state_dict(id_b), matchers=ARGS.get("matchers", ["weight matching"]),\n'
            '    x=x, top_k=ARGS.get("top_k", 16),\n'
            '    generator=torch.Generator().manual_seed(ARGS.get("seed", 0)),\n'
            ")\n"
            "fig = singular_alignment_figure(results)"
        ),
        *(
            [
                code(
                    "from core.figures.papers import singular_overlap_figure\n\n"
                    "first = next(iter(results.values()))\n"
                    'fig = singular_overlap_figure(first, layer=ARGS.get("layer"))'
                )
            ]
            if args.get("figure") == "overlap"
            else []
        ),
    ]


__all__ = [
    "singular_alignment_data",
    "singular_alignment_table",
    "singular_alignment_figure",
    "singular_overlap_figure",
]
