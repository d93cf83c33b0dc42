"""Figures of the merging benchmark (``core.benchmark``): average test accuracy per method with
its bootstrap CI, beside the field's CLIP ViT-B/32 reference. Pure functions of the results
record; the notebook template ``benchmark_results`` recomputes them from the workspace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from ..notebook_export import Cell, code, markdown, register
from .theme import PALETTE, apply_paper

GREY = "#999999"


def benchmark_figure(
    results: Mapping[str, Any], *, title: str | None = None, reference: bool = True
) -> go.Figure:
    """Horizontal bars: test average accuracy (%) per method, sorted, with 95 % bootstrap CI
    error bars; ``pretrained`` and ``individual`` in grey; the CLIP ViT-B/32 averages of the
    same methods as open markers (``reference``).

    Args:
        results: a record from ``python -m core benchmark`` (see core.benchmark.report).
    """
    from ..benchmark.report import CLIP_VIT_B32, check_results

    res = check_results(results)
    rows = sorted(res["rows"], key=lambda r: r["test_avg"])
    names = [r["method"] for r in rows]
    acc = [100 * r["test_avg"] for r in rows]
    colors = [GREY if m in ("pretrained", "individual") else PALETTE[0] for m in names]
    fig = go.Figure(
        go.Bar(
            y=names,
            x=acc,
            orientation="h",
            marker_color=colors,
            name=f"{res['suite']} suite (ours)",
            error_x=dict(
                type="data",
                symmetric=False,
                array=[100 * r["test_avg_ci"][1] - a for r, a in zip(rows, acc, strict=True)],
                arrayminus=[a - 100 * r["test_avg_ci"][0] for r, a in zip(rows, acc, strict=True)],
                color="#333333",
                thickness=1,
            ),
            hovertemplate="%{y}: %{x:.1f}%<extra></extra>",
        )
    )
    if reference:
        ref = [(m, CLIP_VIT_B32[m]) for m in names if m in CLIP_VIT_B32]
        if ref:
            fig.add_trace(
                go.Scatter(
                    y=[m for m, _ in ref],
                    x=[v for _, v in ref],
                    mode="markers",
                    marker=dict(symbol="diamond-open", size=8, color=PALETTE[3]),
                    name="CLIP ViT-B/32, 8 tasks",
                    hovertemplate="%{y}: %{x:.1f}% (CLIP ViT-B/32)<extra></extra>",
                )
            )
    fig.update_layout(
        title=title
        or f"Merging benchmark, {res['suite']} suite ({len(res['rows'][0]['per_task'])} tasks)",
        xaxis_title="average test accuracy (%)",
        legend=dict(orientation="h", y=-0.25),
        bargap=0.25,
    )
    return apply_paper(fig, size="double_tall")


@register(
    "benchmark_results",
    description="Merging benchmark: average accuracy per method with bootstrap CIs",
    requires=("suite",),
)
def _benchmark_results(args: Mapping[str, Any]) -> list[Cell]:
    """args: ``suite`` ("vision" / "text"), ``quick`` (read the --quick results)."""
    suite = args["suite"]
    if suite not in ("vision", "text"):
        raise ValueError(f"recipe args['suite'] must be 'vision' or 'text', got {suite!r}")
    key = f"{suite}{'-quick' if args.get('quick') else ''}"
    return [
        markdown(
            "The results stored by `python -m core benchmark` in this workspace. To recompute "
            f"them, run `python -m core benchmark {suite}{' --quick' if args.get('quick') else ''} "
            "--out results.json` (it needs the suite zoo: `python -m core zoo build --suite "
            f"{suite}`)."
        ),
        code(
            "import pandas as pd\n\n"
            "from core.benchmark.report import results_table, stored_results\n"
            "from core.figures.benchmark import benchmark_figure\n\n"
            f"res = stored_results(zoo)[{key!r}]\n"
            "fig = benchmark_figure(res)\n"
            "results_table(res)"
        ),
    ]


__all__ = ["benchmark_figure"]
