"""Figures of the mixing-paper studies (:mod:`core.mixup.papers`), one per paper's headline
figure. Inputs are the studies' stored records; no computation beyond shaping data."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .layout import narrow_variant
from .theme import PALETTE, apply_paper, rgba

_METHOD_NAMES = {"erm": "ERM", "mixup": "Mixup", "mixup_early": "Early-stopped mixup"}
_SHORT_NAMES = {"mixup_early": "early-stopped"}  # for single-column legends
_TICK_NAMES = {"mixup_early": "early"}  # and for single-column tick labels


def _need(record: Mapping[str, Any], study: str) -> None:
    if not isinstance(record, Mapping) or record.get("study") != study:
        got = record.get("study") if isinstance(record, Mapping) else type(record).__name__
        raise ValueError(f"record must be a {study!r} study record, got {got!r}")


def _ci_bar(fig: go.Figure, names: list[str], cis: list[Mapping[str, float]], **pos: Any) -> None:
    est = [c["estimate"] for c in cis]
    fig.add_trace(
        go.Bar(
            x=names,
            y=est,
            marker_color=[PALETTE[i % len(PALETTE)] for i in range(len(names))],
            error_y=dict(
                type="data",
                symmetric=False,
                array=[c["high"] - e for c, e in zip(cis, est, strict=True)],
                arrayminus=[e - c["low"] for c, e in zip(cis, est, strict=True)],
            ),
            showlegend=False,
        ),
        **pos,
    )


def _grid_layout(
    rows: int,
    cols: int,
    titles: tuple[str, ...],
    axes: Mapping[str, Mapping[str, Any]] | None = None,
    order: Mapping[int, int] | None = None,
    **grid_args: Any,
) -> dict[str, Any]:
    """Axis domains, anchors and subplot titles of a ``rows`` × ``cols`` grid, for moving the
    panels of a one-row figure into a grid (axes are numbered row by row in both), plus the
    ``axes`` updates (axis name -> properties); ``order`` maps the grid's subplot numbers to
    the figure's where they differ; ``grid_args`` go to ``make_subplots``."""
    grid = make_subplots(rows=rows, cols=cols, subplot_titles=titles, **grid_args)
    out: dict[str, Any] = {"annotations": [a.to_plotly_json() for a in grid.layout.annotations]}
    renumber = dict(order or {})

    def name(key: str) -> str:  # "xaxis3" / "y3" of the grid -> the figure's own axis
        m = re.fullmatch(r"([xy](?:axis)?)(\d*)", key)
        if m is None:
            return key
        n = renumber.get(int(m[2] or 1), int(m[2] or 1))
        return m[1] + (str(n) if n > 1 else "")

    for key in grid.layout:
        if key.startswith(("xaxis", "yaxis")):
            ax = grid.layout[key]
            out[name(key)] = dict(domain=list(ax.domain), anchor=name(ax.anchor))
    for key, upd in (axes or {}).items():
        out[key] = {**out.get(key, {}), **upd}
    return out


def feature_learning_figure(record: Mapping[str, Any]) -> go.Figure:
    """Zou et al. 2023: common and rare feature learning over GD steps (mean over seeds, one
    line per method) and test accuracy on rare-feature points with its bootstrap CI."""
    _need(record, "feature_learning")
    fig = make_subplots(
        rows=1,
        cols=4,
        subplot_titles=(
            "common feature learning",
            "rare feature learning",
            "noise memorisation",
            "accuracy on rare-feature test points",
        ),
    )
    methods = record["methods"]
    for i, m in enumerate(methods):
        runs = record["runs"][m]
        steps = runs[0]["history"]["step"]
        for col, key in enumerate(("common", "rare", "noise"), start=1):
            y = np.mean([r["history"][key] for r in runs], axis=0)
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=y,
                    name=_METHOD_NAMES.get(m, m),
                    legendgroup=m,
                    showlegend=col == 1,
                    mode="lines",
                    line=dict(color=PALETTE[i % len(PALETTE)]),
                ),
                row=1,
                col=col,
            )
    _ci_bar(
        fig,
        [_METHOD_NAMES.get(m, m) for m in methods],
        [record["summary"][m]["rare"] for m in methods],
        row=1,
        col=4,
    )
    fig.add_hline(y=record["chance"], line=dict(dash="dot", color="grey"), row=1, col=4)
    if "mixup_early" in methods:
        for col in (1, 2, 3):
            fig.add_vline(
                x=record["config"]["mix_until"], line=dict(dash="dot", color="grey"), row=1, col=col
            )
    for col in (1, 2, 3):
        fig.update_xaxes(title_text="GD step", row=1, col=col)
    fig.update_yaxes(title_text="max_r ⟨w_k,r, v_k⟩", row=1, col=1)
    fig.update_yaxes(range=[0, 1], row=1, col=4)
    cfg = record["config"]
    fig.update_layout(
        title=f"Feature-noise data: ρ={cfg['rho']:g}, n={cfg['n_train']}, d={cfg['dim']}, "
        f"seeds {record['seeds']}"
    )
    # single column: the four panels as a 2 × 2 grid, short titles and names
    names = [_SHORT_NAMES.get(m, _METHOD_NAMES.get(m, m)) for m in methods]
    narrow_variant(
        fig,
        layout=_grid_layout(
            2,
            2,
            ("common features", "rare features", "noise memorisation", "rare-feature accuracy"),
            axes=dict(
                xaxis=dict(title_text=None),
                xaxis2=dict(title_text=None),
                yaxis=dict(title_text="max ⟨w, v⟩"),
                xaxis4=dict(
                    tickvals=[_METHOD_NAMES.get(m, m) for m in methods],
                    ticktext=[_TICK_NAMES.get(m, n) for m, n in zip(methods, names, strict=True)],
                ),
            ),
            vertical_spacing=0.36,
            horizontal_spacing=0.14,
        ),
        traces={3 * i: dict(name=n) for i, n in enumerate(names)},
    )
    return apply_paper(fig, size="double")


def neural_collapse_figure(record: Mapping[str, Any]) -> go.Figure:
    """Fisher et al. 2024, Fig. 1's view: mixed training features of three classes on the plane
    of their centred classifier rows (same-class mixes as circles, different-class mixes
    coloured by λ, classifier rows as black segments), per method; right: the logit margin
    z_a − z_b of different-class mixes against logit(λ), with the soft-target optimum y = x."""
    _need(record, "neural_collapse")
    methods = [m for m in record["methods"] if m in record["figure"]]
    titles = [f"{_METHOD_NAMES.get(m, m)}: features of mixes" for m in methods]
    fig = make_subplots(
        rows=1, cols=len(methods) + 1, subplot_titles=(*titles, "margin vs logit(λ)")
    )
    for col, m in enumerate(methods, start=1):
        f = record["figure"][m]
        same = np.asarray(f["same"], dtype=bool)
        x, y, lam = np.asarray(f["x"]), np.asarray(f["y"]), np.asarray(f["lam"])
        fig.add_trace(
            go.Scatter(
                x=x[~same],
                y=y[~same],
                mode="markers",
                name="different-class mix",
                legendgroup="diff",
                showlegend=col == 1,
                marker=dict(
                    size=4,
                    color=lam[~same],
                    colorscale="Viridis",
                    cmin=0,
                    cmax=1,
                    showscale=col == 1,
                    colorbar=dict(title="λ", len=0.6),
                ),
            ),
            row=1,
            col=col,
        )
        fig.add_trace(
            go.Scatter(
                x=x[same],
                y=y[same],
                mode="markers",
                name="same-class mix",
                legendgroup="same",
                showlegend=col == 1,
                marker=dict(size=5, color=PALETTE[3], symbol="circle-open"),
            ),
            row=1,
            col=col,
        )
        for c, tip in zip(f["classes"], f["classifier"], strict=True):
            fig.add_trace(
                go.Scatter(
                    x=[0, tip[0]],
                    y=[0, tip[1]],
                    mode="lines+text",
                    text=["", f"w_{c}"],
                    textposition="top center",
                    line=dict(color="black", width=2),
                    showlegend=False,
                ),
                row=1,
                col=col,
            )
        fig.update_yaxes(scaleanchor=f"x{col if col > 1 else ''}", row=1, col=col)
    last = len(methods) + 1
    lo = 0.0
    for i, m in enumerate(methods):
        f = record["figure"][m]
        lam = np.clip(np.asarray(f["margin_lam"]), 0.02, 0.98)
        t = np.log(lam / (1 - lam))
        lo = min(lo, float(t.min()))
        fig.add_trace(
            go.Scatter(
                x=t,
                y=f["margin"],
                mode="markers",
                marker=dict(size=3, color=PALETTE[i % len(PALETTE)], opacity=0.5),
                name=f"{_METHOD_NAMES.get(m, m)} (slope "
                f"{record['summary'][m]['channel_slope']['estimate']:.2f})",
            ),
            row=1,
            col=last,
        )
    fig.add_trace(
        go.Scatter(
            x=[lo, -lo],
            y=[lo, -lo],
            mode="lines",
            line=dict(dash="dot", color="grey"),
            name="soft-CE optimum",
        ),
        row=1,
        col=last,
    )
    fig.update_xaxes(title_text="logit(λ)", row=1, col=last)
    fig.update_yaxes(title_text="z_a − z_b", row=1, col=last)
    cfg = record["config"]
    fig.update_layout(
        title=f"{cfg['task']} · {cfg['arch']} · {cfg['epochs']} epochs · seeds {record['seeds']}"
    )
    # single column: feature panels in one row, the margin panel below them; short legend
    # names, classifier labels below their tips (off the panel titles)
    n = len(methods)
    traces: dict[int, dict[str, Any]] = {}
    for i, tr in enumerate(fig.data):
        if tr.name == "different-class mix":
            traces[i] = dict(
                name="diff. class",
                marker_colorbar=dict(x=1.02, lenmode="pixels", len=44, thickness=6, y=0.84, ypad=0),
            )
        elif tr.name == "same-class mix":
            traces[i] = dict(name="same class")
        elif tr.name == "soft-CE optimum":
            traces[i] = dict(showlegend=False)
        elif tr.mode == "lines+text":  # beside the tip, towards the outside
            side = "middle right" if tr.x[-1] >= 0 else "middle left"
            traces[i] = dict(textposition=["middle center", side])
    for j, m in enumerate(methods):
        slope = record["summary"][m]["channel_slope"]["estimate"]
        traces[len(fig.data) - 1 - n + j] = dict(name=f"{_METHOD_NAMES.get(m, m)} {slope:.2f}")
    axes = {}
    for col, m in enumerate(methods, start=1):  # head room for the classifier labels
        f = record["figure"][m]
        ys = np.concatenate([np.asarray(f["y"], dtype=float), [t[1] for t in f["classifier"]], [0]])
        lo, hi = float(ys.min()), float(ys.max())
        pad = 0.3 * (hi - lo or 1.0)
        axes[f"yaxis{col if col > 1 else ''}"] = dict(range=[lo - pad, hi + pad])
    narrow_variant(
        fig,
        layout=_grid_layout(
            2,
            n,
            (*[_METHOD_NAMES.get(m, m) for m in methods], "margin (slope) vs y = x"),
            axes=axes,
            specs=[[{}] * n, [{"colspan": n}, *[None] * (n - 1)]],
            vertical_spacing=0.4,
            horizontal_spacing=0.1,
        ),
        traces=traces,
    )
    return apply_paper(fig, size="double")


def supremix_figure(record: Mapping[str, Any]) -> go.Figure:
    """SupReMix vs plain contrastive regression (RNC): test MAE with bootstrap CIs (left) and
    the ridge probe's predicted against true rotation angle on the first seed (right)."""
    _need(record, "supremix")
    methods = record["methods"]
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("test MAE (degrees, 95% CI)", "predicted vs true angle")
    )
    _ci_bar(fig, methods, [record["summary"][m]["mae"] for m in methods], row=1, col=1)
    truth = record["figure"]["truth"]
    for i, m in enumerate(methods):
        fig.add_trace(
            go.Scatter(
                x=truth,
                y=record["figure"]["pred"][m],
                mode="markers",
                name=m,
                marker=dict(size=3, color=PALETTE[i % len(PALETTE)], opacity=0.5),
            ),
            row=1,
            col=2,
        )
    a = record["config"]["max_angle"]
    fig.add_trace(
        go.Scatter(
            x=[-a, a], y=[-a, a], mode="lines", line=dict(dash="dot", color="grey"), name="y = x"
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="true angle (°)", row=1, col=2)
    fig.update_yaxes(title_text="predicted (°)", row=1, col=2)
    cfg = record["config"]
    fig.update_layout(
        title=f"Rotation regression on {cfg['task']} (n={cfg['n_train']}, {cfg['epochs']} "
        f"epochs, seeds {record['seeds']})"
    )
    return apply_paper(fig, size="double")


def mochi_figure(record: Mapping[str, Any]) -> go.Figure:
    """MoCHi vs MoCo: linear-probe accuracy with bootstrap CIs, proxy-task accuracy per epoch
    (harder negatives make the proxy task harder), and the histogram of each held-out query's
    most similar negative (the paper's hardness view), first seed."""
    _need(record, "mochi")
    methods = record["methods"]
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            "linear-probe test accuracy (95% CI)",
            "proxy-task accuracy in training",
            "max query–negative similarity",
        ),
    )
    _ci_bar(fig, methods, [record["summary"][m]["probe"] for m in methods], row=1, col=1)
    for i, m in enumerate(methods):
        color = PALETTE[i % len(PALETTE)]
        log = record["logs"][m][0]
        fig.add_trace(
            go.Scatter(
                x=[e["epoch"] for e in log],
                y=[e["proxy_acc"] for e in log],
                mode="lines+markers",
                name=m,
                legendgroup=m,
                line=dict(color=color),
            ),
            row=1,
            col=2,
        )
        fig.add_trace(
            go.Histogram(
                x=record["stats"][m][0]["max_neg"],
                name=m,
                legendgroup=m,
                showlegend=False,
                opacity=0.6,
                marker_color=color,
                nbinsx=40,
            ),
            row=1,
            col=3,
        )
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    fig.update_xaxes(title_text="cosine similarity", row=1, col=3)
    cfg = record["config"]
    fig.update_layout(
        title=f"MoCHi(N={cfg['n_hard']}, s={cfg['s1']}, s'={cfg['s2']}) vs MoCo on "
        f"{cfg['task']} · seeds {record['seeds']}"
    )
    return apply_paper(fig, size="double")


def adamixup_figure(record: Mapping[str, Any]) -> go.Figure:
    """AdaMixUp vs ERM and mixup: test accuracy with bootstrap CIs; the learned policy region
    [α₁, α₁ + α₂] and the intrusion discriminator's mean "real" score on mixes per epoch;
    the λ used in the last epoch (AdaMixUp vs Beta mixup), first seed."""
    _need(record, "adamixup")
    methods = record["methods"]
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("test accuracy (95% CI)", "learned policy region", "λ in the last epoch"),
    )
    _ci_bar(fig, methods, [record["summary"][m]["accuracy"] for m in methods], row=1, col=1)
    if "adamixup" in methods:
        log = record["logs"]["adamixup"][0]
        ep = log["epoch"]
        fig.add_trace(
            go.Scatter(x=ep, y=log["lam_high"], mode="lines", line=dict(width=0), showlegend=False),
            row=1,
            col=2,
        )
        fig.add_trace(
            go.Scatter(
                x=ep,
                y=log["lam_low"],
                mode="lines",
                line=dict(width=0),
                fill="tonexty",
                fillcolor="rgba(0,114,178,0.25)",
                name="policy region",
            ),
            row=1,
            col=2,
        )
        fig.add_trace(
            go.Scatter(
                x=ep,
                y=log["intrusion_mixed"],
                mode="lines+markers",
                line=dict(color=PALETTE[3]),
                name="φ(mix) (real score)",
            ),
            row=1,
            col=2,
        )
    for i, m in enumerate(methods):
        lams = record["logs"][m][0].get("lams_last_epoch") or []
        if lams:
            fig.add_trace(
                go.Histogram(
                    x=lams,
                    name=f"λ {m}",
                    opacity=0.6,
                    nbinsx=30,
                    marker_color=PALETTE[i % len(PALETTE)],
                ),
                row=1,
                col=3,
            )
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_xaxes(title_text="λ", range=[0, 1], row=1, col=3)
    cfg = record["config"]
    fig.update_layout(
        title=f"AdaMixUp on {cfg['task']} (n={cfg['n_train']}, {cfg['arch']}, "
        f"{cfg['epochs']} epochs, seeds {record['seeds']})"
    )
    return apply_paper(fig, size="double")


def adautomix_figure(record: Mapping[str, Any]) -> go.Figure:
    """AdAutoMix vs fixed mixers: test accuracy with bootstrap CIs, the generator's masks in
    the last epoch (first seed, with their target λ), and |mean(m) − λ| per epoch."""
    _need(record, "adautomix")
    methods = record["methods"]
    log = record["logs"]["adautomix"][0] if "adautomix" in methods else {}
    masks = log.get("masks") or []
    k = max(len(masks), 1)
    specs = [[{"colspan": 2}, None, *[{}] * k, {"colspan": 2}, None]]
    mask_titles = [f"λ={v:.2f}" for v in log.get("mask_lam", [])] or [""]
    fig = make_subplots(
        rows=1,
        cols=k + 4,
        specs=specs,
        subplot_titles=(
            "test accuracy (95% CI)",
            *mask_titles,
            "|mean(m) − λ|",
        ),
    )
    _ci_bar(fig, methods, [record["summary"][m]["accuracy"] for m in methods], row=1, col=1)
    for i, m in enumerate(masks):
        fig.add_trace(
            go.Heatmap(z=m, zmin=0, zmax=1, colorscale="Viridis", showscale=i == 0),
            row=1,
            col=3 + i,
        )
        fig.update_xaxes(visible=False, row=1, col=3 + i)
        fig.update_yaxes(visible=False, autorange="reversed", row=1, col=3 + i)
    if log:
        fig.add_trace(
            go.Scatter(x=log["epoch"], y=log["lam_gap"], mode="lines+markers", showlegend=False),
            row=1,
            col=k + 3,
        )
    cfg = record["config"]
    fig.update_layout(
        title=f"AdAutoMix on {cfg['task']} (n={cfg['n_train']}, β={cfg['beta']}, "
        f"{cfg['epochs']} epochs, seeds {record['seeds']})"
    )
    # single column: accuracy and |mean(m) − λ| side by side, the masks in a row below them
    cols = max(k, 2)
    left = cols // 2
    narrow_variant(
        fig,
        layout=_grid_layout(
            2,
            cols,
            (
                "accuracy (95% CI)",
                "|mean(m) − λ|",
                *[f"λ={v:.2f}".replace("0.", ".") for v in log.get("mask_lam", [])],
            ),
            order={1: 1, 2: k + 2} | {3 + i: 2 + i for i in range(k)},
            specs=[
                [{"colspan": left}, *[None] * (left - 1), {"colspan": cols - left}]
                + [None] * (cols - left - 1),
                [{}] * k + [None] * (cols - k),
            ],
            vertical_spacing=0.42,
            horizontal_spacing=0.04,
        ),
        traces={
            i: dict(colorbar=dict(x=1.02, lenmode="fraction", len=0.35, y=0.2))
            for i, tr in enumerate(fig.data)
            if tr.type == "heatmap" and tr.showscale
        },
    )
    return apply_paper(fig, size="double")


def attention_labels_figure(record: Mapping[str, Any]) -> go.Figure:
    """TransMix / MixPro vs area labels on a ViT: test accuracy with bootstrap CIs, the mean
    |λ − λ_area| the attention labels apply per epoch, and the CLS→patch attention map of the
    TransMix model on a test digit (first seed)."""
    _need(record, "attention_labels")
    methods = record["methods"]
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("test accuracy (95% CI)", "|λ − λ_area| per epoch", "CLS attention"),
    )
    _ci_bar(fig, methods, [record["summary"][m]["accuracy"] for m in methods], row=1, col=1)
    for i, m in enumerate(methods):
        log = record["logs"][m][0]
        if any(log["label_shift"]):
            fig.add_trace(
                go.Scatter(
                    x=log["epoch"],
                    y=log["label_shift"],
                    mode="lines+markers",
                    name=m,
                    line=dict(color=PALETTE[i % len(PALETTE)]),
                ),
                row=1,
                col=2,
            )
    att = record.get("attention", {})
    pick = next((m for m in ("transmix", "mixpro") if m in att), next(iter(att), None))
    if pick is not None:
        fig.add_trace(
            go.Heatmap(z=att[pick][0], colorscale="Viridis", showscale=False, name=pick),
            row=1,
            col=3,
        )
        fig.update_yaxes(autorange="reversed", row=1, col=3)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    cfg = record["config"]
    fig.update_layout(
        title=f"ViT (width {cfg['width']}, depth {cfg['depth']}, patch {cfg['patch_size']}) on "
        f"{cfg['task']} (n={cfg['n_train']}), seeds {record['seeds']}"
    )
    return apply_paper(fig, size="double")


_DASHES = ("solid", "dash", "dot", "dashdot")


def dualmix_figure(record: Mapping[str, Any]) -> go.Figure:
    """DualMix vs ER on the online class-incremental stream: accuracy on the classes seen so
    far over the stream (mean over seeds, band min–max, task boundaries dotted), the final
    accuracy on all classes with bootstrap CIs, and each task's final accuracy (mean over
    seeds: where the forgetting falls)."""
    _need(record, "dualmix")
    methods = record["methods"]
    fig = make_subplots(
        rows=1,
        cols=3,
        column_widths=[0.5, 0.2, 0.3],
        subplot_titles=("accuracy on seen classes", "final acc (95% CI)", "final acc per task"),
    )
    for i, m in enumerate(methods):
        logs = record["logs"][m]
        acc = np.array([lg["acc_seen"] for lg in logs])  # (seeds, evaluations)
        seen = logs[0]["seen"]
        color = PALETTE[i % len(PALETTE)]
        for band, fill in ((acc.max(0), None), (acc.min(0), "tonexty")):  # min–max band
            if len(logs) > 1:
                fig.add_trace(
                    go.Scatter(
                        x=seen,
                        y=band,
                        mode="lines",
                        line=dict(width=0),
                        fill=fill,
                        fillcolor=rgba(color, 0.18),
                        showlegend=False,
                    ),
                    row=1,
                    col=1,
                )
        fig.add_trace(
            go.Scatter(
                x=seen,
                y=acc.mean(0),
                mode="lines",
                name=m,
                legendgroup=m,
                line=dict(color=color, dash=_DASHES[i % len(_DASHES)]),
            ),
            row=1,
            col=1,
        )
        per_task = np.array([lg["acc_matrix"][-1] for lg in logs]).mean(0)
        fig.add_trace(
            go.Bar(
                x=[f"T{j + 1}" for j in range(len(per_task))],
                y=per_task,
                name=m,
                legendgroup=m,
                marker_color=color,
                showlegend=False,
            ),
            row=1,
            col=3,
        )
    _ci_bar(fig, methods, [record["summary"][m]["accuracy"] for m in methods], row=1, col=2)
    for end in record["logs"][methods[0]][0]["task_end"][:-1]:  # after the traces: plotly
        # skips shapes on subplots that are still empty
        fig.add_vline(x=end, line=dict(dash="dot", color="grey", width=1), row=1, col=1)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="stream examples seen", row=1, col=1)
    for col in (1, 2, 3):
        fig.update_yaxes(range=[0, 1], row=1, col=col)
    cfg = record["config"]
    fig.update_layout(
        title=f"Online class-incremental {cfg['task']} ({cfg['n_tasks']} tasks, buffer "
        f"{cfg['buffer_size']}, seeds {record['seeds']})"
    )
    # single column: the curve across the top, the two bar panels side by side below it
    narrow_variant(
        fig,
        layout=_grid_layout(
            2,
            2,
            ("accuracy on seen classes", "final acc", "per task"),
            specs=[[{"colspan": 2}, None], [{}, {}]],
            vertical_spacing=0.42,
            horizontal_spacing=0.14,
        ),
    )
    return apply_paper(fig, size="double")


FIGURES = {
    "dualmix": dualmix_figure,
    "attention_labels": attention_labels_figure,
    "adautomix": adautomix_figure,
    "adamixup": adamixup_figure,
    "mochi": mochi_figure,
    "supremix": supremix_figure,
    "feature_learning": feature_learning_figure,
    "neural_collapse": neural_collapse_figure,
}
