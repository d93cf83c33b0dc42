"""Figures and notebook recipes of the pages on a suite zoo (real pretrained backbones).

The pages' suite panels (Merge Lab, Interpolation, Feature Geometry, Clustering on the vision
or text suite of ``python -m core zoo build --suite ...``) reuse the area figures
(:mod:`core.figures.merge`, :mod:`core.figures.landscape`, :mod:`core.figures.geometry`,
:mod:`core.figures.cluster`, :mod:`core.figures.benchmark`); this module adds the one figure
they lack (neural collapse before / after fine-tuning) and the notebook templates that
recompute each suite figure from the workspace through :mod:`core.suite_lab` and
:mod:`core.suite_views`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from ..notebook_export import Cell, code, literal, markdown, register
from .theme import PALETTE, apply_paper

NC_LABELS = {
    "nc1": "NC1",
    "nc2_equinorm": "NC2 equinorm",
    "nc2_equiangular": "NC2 angle",
    "etf_distance": "ETF distance",
    "nc3": "NC3",
    "nc4": "NC4",
}


def nc_models_figure(
    across: Mapping[str, Mapping[str, float]], *, title: str = "Neural collapse across fine-tuning"
) -> go.Figure:
    """Grouped bars: each neural-collapse metric (log scale, → 0 at collapse) per model.

    Args:
        across: model -> metric -> value, e.g. :func:`core.suite_views.nc_across_finetuning`.
    """
    if not isinstance(across, Mapping) or not across:
        raise ValueError("across must map at least one model to its NC metrics, got none")
    first = next(iter(across.values()))
    metrics = [m for m in NC_LABELS if m in first]
    if not metrics:
        raise ValueError(f"across holds no NC metric among {list(NC_LABELS)}")
    fig = go.Figure()
    for i, (name, values) in enumerate(across.items()):
        missing = [m for m in metrics if m not in values]
        if missing:
            raise ValueError(f"across[{name!r}] lacks the metrics {missing}")
        fig.add_trace(
            go.Bar(
                x=[NC_LABELS[m] for m in metrics],
                y=[max(float(values[m]), 1e-12) for m in metrics],
                name=name,
                marker_color=PALETTE[i % len(PALETTE)],
                hovertemplate=f"{name} · %{{x}}: %{{y:.3g}}<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        title=title,
        yaxis=dict(title="value (→ 0 at collapse)", type="log"),
        legend=dict(orientation="h", y=-0.2),
    )
    return apply_paper(fig)


# ---------------------------------------------------------------------------- recipes
def _suite(args: Mapping[str, Any]) -> str:
    suite = args.get("suite")
    if suite not in ("vision", "text"):
        raise ValueError(f"recipe args['suite'] must be 'vision' or 'text', got {suite!r}")
    return str(suite)


def _name(args: Mapping[str, Any], key: str) -> str:
    v = args.get(key)
    if not isinstance(v, str) or not v:
        raise ValueError(f"recipe args[{key!r}] must be a non-empty string, got {v!r}")
    return v


def _device() -> Cell:
    return code(
        "import torch\n\n"
        'DEVICE = ARGS.get("device", "cpu")\n'
        'if DEVICE.startswith("cuda") and not torch.cuda.is_available():\n'
        '    DEVICE = "cpu"  # computed on a GPU: numbers may differ in the last digits'
    )


@register(
    "suite_merge_accuracy",
    description="Per-task accuracy of a merged suite backbone, each task with its own head",
    requires=("suite", "method"),
)
def _suite_merge_accuracy(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``suite``, ``method``, ``hyperparameters``, ``split`` ("val"), ``n_per_task``,
    ``seed``, ``recompute_bn``, ``device``, ``chart`` ("bars" or "radar"), ``title``."""
    _suite(args)
    _name(args, "method")
    chart = args.get("chart", "bars")
    if chart not in ("bars", "radar"):
        raise ValueError(f"recipe args['chart'] must be 'bars' or 'radar', got {chart!r}")
    fn = "task_radar_figure" if chart == "radar" else "task_accuracy_figure"
    title = args.get("title", f"Per-task accuracy · {args['suite']} suite")
    return [
        markdown(
            "Merge the suite's fine-tuned backbones with the recipe's method and score the merged "
            "backbone with every task's own fixed head, on the Merge Lab's seeded, stratified "
            "subset of each task's split."
        ),
        _device(),
        code(
            "from core.suite_lab import DEFAULT_N_PER_TASK, SuiteLab\n"
            f"from core.figures.merge import {fn}\n\n"
            'lab = SuiteLab(zoo, ARGS["suite"], split=ARGS.get("split", "val"),\n'
            '               n_per_task=ARGS.get("n_per_task", DEFAULT_N_PER_TASK),\n'
            '               seed=ARGS.get("seed", 0), device=DEVICE)\n'
            'result = lab.run(ARGS["method"], ARGS.get("hyperparameters", {}),\n'
            '                 recompute_bn=ARGS.get("recompute_bn", False))\n'
            f"fig = {fn}(result, title={title!r})"
        ),
    ]


@register(
    "suite_comparison",
    description="Validation-tuned comparison of the merge methods on a suite",
    requires=("suite",),
)
def _suite_comparison(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``suite``, ``methods`` (None: every applicable one), ``quick``, ``device``."""
    _suite(args)
    methods = args.get("methods")
    if methods is not None and (
        not isinstance(methods, list) or not all(isinstance(m, str) for m in methods)
    ):
        raise ValueError(f"recipe args['methods'] must be a list of names, got {methods!r}")
    return [
        markdown(
            "Every method's hyperparameters tuned on validation (the papers' grids), test "
            "accuracy with a bootstrap CI — the benchmark's protocol, as on the Merge Lab's "
            "comparison tab."
        ),
        _device(),
        code(
            "from core.figures.benchmark import benchmark_figure\n"
            "from core.suite_lab import comparison_rows, validation_tuned_comparison\n\n"
            'res = validation_tuned_comparison(zoo, ARGS["suite"], methods=ARGS.get("methods"),\n'
            '                                  quick=ARGS.get("quick", True), device=DEVICE,\n'
            "                                  store=False)\n"
            "fig = benchmark_figure(res)\n"
            "comparison_rows(res)"
        ),
    ]


@register(
    "suite_interpolation",
    description="Loss and accuracy between two suite backbones (BatchNorm reset for Lite0)",
    requires=("suite", "model_a", "model_b"),
)
def _suite_interpolation(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``suite``, ``model_a``, ``model_b`` ("pretrained" or a task), ``task``,
    ``split``, ``n_points``, ``n_examples``, ``recompute_bn``, ``device``, ``title``."""
    _suite(args)
    a, b = _name(args, "model_a"), _name(args, "model_b")
    title = args.get("title", f"{a} → {b}")
    kw = {
        k: args[k] for k in ("task", "split", "n_points", "n_examples", "recompute_bn") if k in args
    }
    return [
        markdown(
            "The straight line θ(α) = (1 − α) θ_A + α θ_B between two suite backbones, scored "
            "with the task's own head; for EfficientNet-Lite0 the BatchNorm statistics are "
            "re-estimated at every point (REPAIR's reset) unless the recipe says otherwise."
        ),
        _device(),
        code(
            "from core.figures.landscape import path_figure\n"
            "from core.suite_views import suite_interpolation\n\n"
            'path = suite_interpolation(zoo, ARGS["suite"], ARGS["model_a"], ARGS["model_b"],\n'
            f"                           device=DEVICE, **{literal(kw)})\n"
            f"fig = path_figure({{path.label: path}}, title={title!r}, "
            f"endpoint_labels=({a!r}, {b!r}))"
        ),
    ]


def _feature_cells(args: Mapping[str, Any]) -> list[Cell]:
    _suite(args)
    _name(args, "model")
    _name(args, "task")
    return [
        _device(),
        code(
            "from core.suite_views import suite_feature_report\n\n"
            'report = suite_feature_report(zoo, ARGS["suite"], ARGS["model"], ARGS["task"],\n'
            '                              split=ARGS.get("split", "test"),\n'
            '                              n_examples=ARGS.get("n_examples", 500),\n'
            '                              seed=ARGS.get("seed", 0), device=DEVICE)'
        ),
    ]


@register(
    "suite_projection",
    description="Projection of a suite model's features with class means and head directions",
    requires=("suite", "model", "task"),
)
def _suite_projection(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``suite``, ``model``, ``task``, ``split``, ``n_examples``, ``seed``, ``method``
    ("pca", "class_plane", "umap", "tsne"), ``device``, ``title``."""
    method = args.get("method", "pca")
    if method not in ("pca", "class_plane", "umap", "tsne"):
        raise ValueError(f"recipe args['method'] must be a projection name, got {method!r}")
    title = args.get("title", f"{args.get('model')} features on {args.get('task')} ({method})")
    return [
        markdown("Penultimate features of a suite model on a seeded, stratified subset."),
        *_feature_cells(args),
        code(
            "from core.figures.geometry import projection_figure\n"
            "from core.geometry import projection_report\n\n"
            f'proj = projection_report(report, {method!r}, random_state=ARGS.get("seed", 0))\n'
            'fig = projection_figure(proj["coords"], report["labels"],\n'
            '                        class_names=report["class_names"], anchors=proj["anchors"],\n'
            '                        anchor_classes=report["classes"].tolist(),\n'
            f"                        title={title!r})"
        ),
    ]


@register(
    "suite_nc_across",
    description="Neural collapse of suite features before and after fine-tuning",
    requires=("suite", "task"),
)
def _suite_nc_across(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``suite``, ``task``, ``models`` (default pretrained and the task's fine-tune),
    ``split``, ``n_examples``, ``device``, ``title``."""
    _suite(args)
    _name(args, "task")
    title = args.get("title", f"Neural collapse across fine-tuning · {args['task']}")
    return [
        markdown(
            "Neural-collapse metrics of the same examples' features under several suite "
            "backbones, with the task's fixed head as classifier."
        ),
        _device(),
        code(
            "from core.figures.suite import nc_models_figure\n"
            "from core.suite_views import nc_across_finetuning\n\n"
            'across = nc_across_finetuning(zoo, ARGS["suite"], ARGS["task"],\n'
            '                              models=ARGS.get("models"),\n'
            '                              split=ARGS.get("split", "test"),\n'
            '                              n_examples=ARGS.get("n_examples", 500), device=DEVICE)\n'
            f"fig = nc_models_figure(across, title={title!r})"
        ),
    ]


@register(
    "suite_cluster",
    description="PPP clustering of a suite model's features",
    requires=("suite", "model", "task"),
)
def _suite_cluster(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``suite``, ``model``, ``task``, ``split``, ``n_examples``, ``k_max``,
    ``n_seeds``, ``seed``, ``device``, ``chart`` ("k", "contingency" or "scatter")."""
    _suite(args)
    _name(args, "model")
    _name(args, "task")
    chart = args.get("chart", "k")
    figs = {
        "k": 'k_selection_figure(res["ks"], res["scores"], chosen=res["k"])',
        "contingency": 'contingency_figure(res["truth"], res["labels"], '
        'class_names=res["class_names"])',
        "scatter": 'cluster_scatter_figure(res["coords"], res["labels"], '
        'confidence=res["posterior"], title="Clusters (PCA of the clustered data)")',
    }
    if chart not in figs:
        raise ValueError(f"recipe args['chart'] must be one of {list(figs)}, got {chart!r}")
    return [
        markdown("PPP (Sultan 2020) on a suite model's features of a task's examples."),
        _device(),
        code(
            "from core.figures.cluster import (\n"
            "    cluster_scatter_figure, contingency_figure, k_selection_figure)\n"
            "from core.suite_views import suite_cluster\n\n"
            'res = suite_cluster(zoo, ARGS["suite"], ARGS["model"], ARGS["task"],\n'
            '                    split=ARGS.get("split", "train"),\n'
            '                    n_examples=ARGS.get("n_examples", 500),\n'
            '                    k_max=ARGS.get("k_max", 10), n_seeds=ARGS.get("n_seeds", 4),\n'
            '                    seed=ARGS.get("seed", 0), device=DEVICE)\n'
            f"fig = {figs[chart]}"
        ),
    ]


__all__ = ["nc_models_figure"]
