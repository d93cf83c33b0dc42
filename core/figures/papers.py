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
            "from core.data.subset import stratified_subset\n"
            "from core.figures.papers import singular_alignment_figure\n\n"
            'id_a, id_b = ARGS["models"]\n'
            "model = zoo.load_model(id_a)\n"
            'ds = get_task(ARGS["task"])\n'
            'x = ds.x_train[stratified_subset(ds.y_train, 1000, key="match")]\n'
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


# ------------------------------------------------------------------ Sparse Model Soups


def sparse_soup_data(result: Any) -> pd.DataFrame:
    """One row per phase and model: cycle, target and measured sparsity, accuracy, role."""
    rows = [
        {
            "cycle": 0,
            "role": "dense",
            "model": 0,
            "sparsity": 0.0,
            "accuracy": result.dense_accuracy,
        }
    ]
    for c in result.cycles:
        rows.append(
            {
                "cycle": c.cycle,
                "role": "pruned, before retraining",
                "model": 0,
                "sparsity": c.target_sparsity,
                "accuracy": c.pruned_accuracy,
            }
        )
        for i, (acc, sp) in enumerate(
            zip(c.ingredient_accuracy, c.ingredient_sparsity, strict=True)
        ):
            rows.append(
                {
                    "cycle": c.cycle,
                    "role": "ingredient",
                    "model": i,
                    "sparsity": sp,
                    "accuracy": acc,
                }
            )
        rows.append(
            {
                "cycle": c.cycle,
                "role": "soup",
                "model": 0,
                "sparsity": c.soup_sparsity,
                "accuracy": c.soup_accuracy,
            }
        )
    return pd.DataFrame(rows)


def sparse_soup_figure(result: Any, *, title: str | None = None) -> go.Figure:
    """Test accuracy vs sparsity per prune-retrain phase: soup vs best and every ingredient."""
    if not result.cycles:
        raise ValueError("result has no prune-retrain cycles")
    x = [100 * c.target_sparsity for c in result.cycles]
    fig = go.Figure()
    fig.add_hline(
        y=100 * result.dense_accuracy,
        line=dict(color="#777777", dash="dot"),
        annotation_text="dense",
        annotation_position="bottom right",
    )
    xs, ys = [], []
    for c in result.cycles:
        xs += [100 * c.target_sparsity] * len(c.ingredient_accuracy)
        ys += [100 * a for a in c.ingredient_accuracy]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            marker=dict(color=PALETTE[5], size=6, symbol="circle-open"),
            name="ingredients",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[100 * c.best_ingredient for c in result.cycles],
            mode="lines+markers",
            line=dict(color=PALETTE[1], dash="dash"),
            name="best ingredient",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[100 * c.soup_accuracy for c in result.cycles],
            mode="lines+markers",
            line=dict(color=PALETTE[0]),
            marker=dict(size=8),
            name="soup (uniform)",
        )
    )
    fig.update_layout(
        title=title or f"Sparse Model Soups on {result.task or 'the task'}",
        xaxis_title="sparsity (%)",
        yaxis_title="test accuracy (%)",
        legend=dict(orientation="h", y=-0.3),
    )
    return apply_paper(fig, size="column_tall")


@register(
    "sparse_model_soup",
    description="Sparse Model Soups: accuracy vs sparsity per prune-retrain cycle",
    requires=("model", "task"),
)
def _sparse_soup_cells(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``model`` (dense zoo id), ``task``, ``cycles``, ``prune_fraction``,
    ``n_ingredients``, ``epochs``, ``lr``, ``seed``."""
    if not isinstance(args.get("model"), str) or not args["model"]:
        raise ValueError(f"recipe args['model'] must be a zoo id, got {args.get('model')!r}")
    return [
        markdown(
            "Prune the dense model by global magnitude, retrain several copies under the same mask "
            "with different seeds, average them, repeat (Zimmer et al., ICLR 2024)."
        ),
        code(
            "from core.data import get_task\n"
            "from core.figures.papers import sparse_soup_figure\n"
            "from core.papers.sparse_soups import SoupConfig, sparse_model_soup\n"
            "from core.train import TrainConfig\n\n"
            'model = zoo.load_model(ARGS["model"])\n'
            "config = SoupConfig(\n"
            '    cycles=ARGS.get("cycles", 3), prune_fraction=ARGS.get("prune_fraction", 0.5),\n'
            '    n_ingredients=ARGS.get("n_ingredients", 3),\n'
            '    retrain=TrainConfig(epochs=ARGS.get("epochs", 2), lr=ARGS.get("lr", 1e-3)),\n'
            ")\n"
            "result = sparse_model_soup(\n"
            '    model, zoo.state_dict(ARGS["model"]), get_task(ARGS["task"]), config,\n'
            '    seed=ARGS.get("seed", 0),\n'
            ")\n"
            "fig = sparse_soup_figure(result)"
        ),
    ]


# ------------------------------------------------------------------ UnMix-TNS-style BN recompute


def bn_stream_data(study: Any) -> pd.DataFrame:
    """The study's rows: stream, classes_per_batch, method, accuracy."""
    return pd.DataFrame(study.rows)


def bn_stream_figure(study: Any, *, title: str | None = None) -> go.Figure:
    """Test accuracy of a merged model after BN re-estimation, per calibration stream, for the
    cumulative (batch statistics) and unmixed (pooled) estimates; stored statistics dotted."""
    rows = study.rows
    if not rows:
        raise ValueError("study has no rows")
    fig = go.Figure()
    stored = [r for r in rows if r["method"] == "stored"]
    if stored:
        fig.add_hline(
            y=100 * stored[0]["accuracy"],
            line=dict(color="#777777", dash="dot"),
            annotation_text="stored (averaged) statistics",
            annotation_position="bottom left",
        )
    for j, method in enumerate(("cumulative", "unmixed")):
        sel = [r for r in rows if r["method"] == method]
        fig.add_trace(
            go.Bar(
                x=[r["stream"] for r in sel],
                y=[100 * r["accuracy"] for r in sel],
                name={"cumulative": "batch statistics (cumulative)", "unmixed": "unmixed"}[method],
                marker_color=PALETTE[j],
            )
        )
    fig.update_layout(
        title=title or f"BatchNorm re-estimation after merging, {study.task or 'task'}",
        xaxis_title="calibration stream",
        yaxis_title="test accuracy (%)",
        barmode="group",
        legend=dict(orientation="h", y=-0.3),
    )
    return apply_paper(fig, size="column_tall")


@register(
    "bn_stream_study",
    description="BN re-estimation after merging from shuffled vs label-sorted streams",
    requires=("models", "task"),
)
def _bn_stream_cells(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``models`` ([A, B]), ``task``, ``align`` ("naive" / "weight matching"),
    ``classes_per_batch`` (list), ``n_examples``, ``batch_size``, ``seed``."""
    _ids(args, "models", 2)
    return [
        markdown(
            "Merge A and B (midpoint), then re-estimate BatchNorm statistics from a shuffled and "
            "from label-sorted calibration streams, with batch statistics and unmixed (pooled) "
            "statistics (after UnMix-TNS, Tomar et al., ICLR 2024)."
        ),
        code(
            "import torch\n\n"
            "from core.data import get_task\n"
            "from core.figures.papers import bn_stream_figure\n"
            "from core.papers.unmix_bn import bn_stream_study, merged_pair\n\n"
            'id_a, id_b = ARGS["models"]\n'
            "model = zoo.load_model(id_a)\n"
            "merged = merged_pair(\n"
            '    model, zoo.state_dict(id_a), zoo.state_dict(id_b), align=ARGS.get("align", "weight matching"),\n'
            '    generator=torch.Generator().manual_seed(ARGS.get("seed", 0)),\n'
            ")\n"
            "study = bn_stream_study(\n"
            '    model, merged, get_task(ARGS["task"]),\n'
            '    classes_per_batch=tuple(ARGS.get("classes_per_batch", [1, 2])),\n'
            '    n_examples=ARGS.get("n_examples", 2000), batch_size=ARGS.get("batch_size", 128),\n'
            '    seed=ARGS.get("seed", 0),\n'
            ")\n"
            "fig = bn_stream_figure(study)"
        ),
    ]


# ------------------------------------------------------------------ ZipIt! and PLeaS


def different_init_data(study: Any) -> pd.DataFrame:
    """The study's rows: method, family, ratio, size, accuracy, low, high."""
    return pd.DataFrame(study.rows)


def different_init_figure(study: Any, *, title: str | None = None) -> go.Figure:
    """Test accuracy (95% CI) vs merged-model size for merging two different-init models:
    PLeaS with and without least squares as lines over the ratio of separate units; endpoints,
    ensemble, permutation-only merges and ZipIt! as points."""
    rows = study.rows
    if not rows:
        raise ValueError("study has no rows")
    fig = go.Figure()
    for j, method in enumerate(("PLeaS", "partial permutation (no LS)")):
        sel = sorted((r for r in rows if r["method"] == method), key=lambda r: r["size"])
        fig.add_trace(
            go.Scatter(
                x=[r["size"] for r in sel],
                y=[100 * r["accuracy"] for r in sel],
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[100 * (r["high"] - r["accuracy"]) for r in sel],
                    arrayminus=[100 * (r["accuracy"] - r["low"]) for r in sel],
                ),
                mode="lines+markers",
                line=dict(color=PALETTE[j], dash="solid" if j == 0 else "dash"),
                name=method,
            )
        )
    symbols = {"endpoint": "circle-open", "permutation": "square", "ZipIt!": "diamond"}
    points = [r for r in rows if r["family"] != "PLeaS"]
    for k, r in enumerate(points):
        fig.add_trace(
            go.Scatter(
                x=[r["size"]],
                y=[100 * r["accuracy"]],
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[100 * (r["high"] - r["accuracy"])],
                    arrayminus=[100 * (r["accuracy"] - r["low"])],
                ),
                mode="markers",
                marker=dict(
                    symbol=symbols.get(r["family"], "circle"),
                    size=9,
                    color=PALETTE[(k + 2) % len(PALETTE)],
                ),
                name=r["method"],
            )
        )
    fig.update_layout(
        title=title or f"Merging different-init models, {study.task or 'task'}",
        xaxis_title="parameters relative to one model",
        yaxis_title="test accuracy (%)",
        legend=dict(orientation="h", y=-0.3),
    )
    return apply_paper(fig, size="double")


@register(
    "different_init_study",
    description="ZipIt! and PLeaS vs permutation-only merging of different-init models, by size",
    requires=("models", "task"),
)
def _different_init_cells(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``models`` ([A, B], MLPs of one shape), ``task``, ``ratios``, ``n_examples``,
    ``seed``."""
    _ids(args, "models", 2)
    return [
        markdown(
            "Merge two MLPs trained from different initialisations with naive averaging, weight "
            "and activation matching, ZipIt! (Stoica et al., ICLR 2024) and PLeaS (Nasery et al., "
            "CVPR 2025); test accuracy against the merged model's size."
        ),
        code(
            "from core.data import get_task\n"
            "from core.figures.papers import different_init_figure\n"
            "from core.papers.different_init import different_init_study\n\n"
            'id_a, id_b = ARGS["models"]\n'
            "study = different_init_study(\n"
            "    zoo.load_model(id_a), zoo.state_dict(id_a), zoo.state_dict(id_b),\n"
            '    get_task(ARGS["task"]), ratios=tuple(ARGS.get("ratios", [0.0, 0.25, 0.5, 1.0])),\n'
            '    n_examples=ARGS.get("n_examples", 2000), seed=ARGS.get("seed", 0),\n'
            ")\n"
            "fig = different_init_figure(study)"
        ),
    ]


# ------------------------------------------------------------------ MC-SMoE (Li et al.)


def mc_smoe_data(study: Any) -> pd.DataFrame:
    """The study's rows: method, n_groups, compressed, stored, memory_kb, accuracy, low, high."""
    return pd.DataFrame(study.rows)


def mc_smoe_figure(study: Any, *, title: str | None = None) -> go.Figure:
    """Test accuracy (95% CI) against stored memory as experts are merged: one line per merging
    method over the group counts, MC-SMoE (merged then compressed) bold, the full SMoE a star."""
    fig = go.Figure()
    rows = study.rows
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "full SMoE"))
    for k, method in enumerate(methods):
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["memory_kb"])
        bold = method.startswith("MC-SMoE") or method.startswith("M-SMoE")
        fig.add_trace(
            go.Scatter(
                x=[r["memory_kb"] for r in pts],
                y=[100 * r["accuracy"] for r in pts],
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[100 * (r["high"] - r["accuracy"]) for r in pts],
                    arrayminus=[100 * (r["accuracy"] - r["low"]) for r in pts],
                    thickness=1,
                ),
                text=[f"{r['n_groups']} experts" for r in pts],
                hovertemplate="%{text}<br>%{x:.0f} KB, %{y:.1f}%<extra></extra>",
                mode="lines+markers",
                line=dict(
                    color=PALETTE[k % len(PALETTE)],
                    width=2.5 if bold else 1.2,
                    dash=None if bold else "dot",
                ),
                name=method,
            )
        )
    for r in (r for r in rows if r["method"] == "full SMoE"):
        fig.add_trace(
            go.Scatter(
                x=[r["memory_kb"]],
                y=[100 * r["accuracy"]],
                mode="markers",
                marker=dict(symbol="star", size=13, color="black"),
                name=f"full SMoE ({r['n_groups']} experts)",
            )
        )
    fig.update_layout(
        title=title or f"Merging then compressing experts, {study.task or 'task'}",
        xaxis_title="stored parameters (KB, float32)",
        yaxis_title="test accuracy (%)",
        legend=dict(orientation="h", y=-0.3),
    )
    return apply_paper(fig, size="double")


# Its notebook recipe is the core.recipes kind "mc_smoe_study" (core/recipes/moe.py).


__all__ = [
    "mc_smoe_data",
    "mc_smoe_figure",
    "bn_stream_data",
    "different_init_data",
    "different_init_figure",
    "bn_stream_figure",
    "singular_alignment_data",
    "singular_alignment_table",
    "singular_alignment_figure",
    "singular_overlap_figure",
    "sparse_soup_data",
    "sparse_soup_figure",
]
