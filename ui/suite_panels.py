"""The pages' panels on a suite model set (``python -m core zoo build --suite vision|text``).

Each page draws :func:`model_set` first; when a suite is picked it hands over to its panel
here (Merge Lab, Interpolation, Feature Geometry, Clustering) and stops. The panels read
widgets, call one function of :mod:`ui.cache_suite` and build one figure; the science is in
:mod:`core.suite_lab` and :mod:`core.suite_views`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from core.figures.benchmark import benchmark_figure
from core.figures.cluster import cluster_scatter_figure, contingency_figure, k_selection_figure
from core.figures.geometry import projection_figure
from core.figures.landscape import path_figure
from core.figures.merge import task_accuracy_figure, task_radar_figure
from core.figures.suite import NC_LABELS, nc_models_figure
from core.merge import METHODS

from . import cache_suite
from .errors import shown_errors
from .figure_panel import show_figure
from .frame import Settings
from .widgets import hyperparameter_form, method_description

ZOO = "zoo"
SUITE_LABELS = {
    "vision": "Vision suite (EfficientNet-Lite0, ImageNet-1k)",
    "text": "Text suite (all-MiniLM-L6-v2)",
}
N_EVAL = [16, 32, 64, 128, 256, 512]


def model_set(workspace: str, key: str) -> str | None:
    """Draw the model-set selector; the chosen suite, or None for the zoo's own models.

    It starts on the zoo's own models when there are any besides the suites', else on the
    first built suite."""
    with shown_errors("Looking for suite zoos"):
        suites = cache_suite.built_suites(workspace)
        if not suites:
            st.caption(
                "Real pretrained model sets appear here once built: "
                "`python -m core zoo build --suite vision` (or `text`)."
            )
            return None
        options = [ZOO, *suites]
        if key not in st.session_state and not cache_suite.other_models(workspace):
            st.session_state[key] = suites[0]  # only suite models: start on the first suite
        choice = st.radio(
            "Model set",
            options,
            format_func=lambda s: "Zoo models" if s == ZOO else SUITE_LABELS.get(s, s),
            horizontal=True,
            key=key,
            help="A suite: a pretrained backbone, one fine-tune per task and each task's fixed "
            "head (the task-vector protocol of Ilharco et al. 2023)",
        )
        return None if choice == ZOO else str(choice)
    return None


def _bar(label: str) -> tuple[Any, Callable[..., None]]:
    """A progress bar and a ``(done, total[, message])`` callback that drives it."""
    bar = st.progress(0.0, text=label)

    def cb(done: int, total: int, message: str = "") -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=message or f"{label} {done}/{total}")

    return bar, cb


# ---------------------------------------------------------------------------- Merge Lab
def merge_lab(settings: Settings, suite: str) -> None:
    """Live merging of the suite's fine-tuned backbones, each task scored with its own head."""
    ws, device = settings.workspace, str(settings.torch_device)
    c1, c2, c3 = st.columns([2, 1, 1])
    n_eval = c2.select_slider(
        "Eval. samples / task",
        N_EVAL,
        value=64,
        key="merge.suite_n_eval",
        help="seeded, stratified subset of each task's validation split (tuning by eye must "
        "not see test)",
    )
    lab = None
    with shown_errors("Loading the suite models"):
        with st.spinner("Loading the suite backbones, heads and evaluation subsets…"):
            lab = cache_suite.lab(ws, suite, int(n_eval), settings.seed, device)
    if lab is None:
        return
    methods = lab.available_methods()
    method = c1.selectbox(
        "Merge method",
        methods,
        index=methods.index("task_arithmetic") if "task_arithmetic" in methods else 0,
        format_func=lambda m: METHODS[m].title,
        key="merge.suite_method",
    )
    recompute_bn = c3.checkbox(
        "Recompute BN",
        value=False,
        key="merge.suite_recompute_bn",
        disabled=not lab.has_batchnorm,
        help="re-estimate Lite0's BatchNorm statistics on training images of every task after "
        "merging (REPAIR's reset)",
    )
    entry = METHODS[method]
    st.caption(
        f"**{entry.title}** — {method_description(entry)}"
        + (f" · [paper]({entry.paper})" if entry.paper else "")
        + f" · {lab.n_models} tasks: {', '.join(lab.tasks)}"
    )
    hyper = hyperparameter_form(entry, "merge.suite", lab.n_models, labels=list(lab.tasks))

    ev = None
    with shown_errors("Merging"):
        bar, cb = _bar("Merging…")
        ev, cached = cache_suite.suite_eval(
            ws, suite, int(n_eval), settings.seed, device, method, hyper, bool(recompute_bn), cb
        )
        bar.progress(
            1.0, text="cached" if cached else f"merged and scored in {ev.seconds * 1000:.0f} ms"
        )
    if ev is None:
        return
    m1, m2, m3 = st.columns(3)
    base_avg = sum(ev.base) / len(ev.base)
    m1.metric(
        "Average accuracy", f"{ev.average:.3f}", delta=f"{ev.average - base_avg:+.3f} vs pretrained"
    )
    m2.metric("Normalised accuracy", f"{ev.average_normalized:.3f}", help="merged / fine-tuned")
    m3.metric("Merge + evaluation", f"{ev.seconds * 1000:.0f} ms" + (" (cached)" if cached else ""))
    cols = st.columns(len(ev.tasks))
    for col, t, acc, ref in zip(cols, ev.tasks, ev.accuracy, ev.reference, strict=True):
        col.metric(f"acc · {t}", f"{acc:.3f}", delta=f"{acc - ref:+.3f} vs fine-tuned")
    meta = {
        "suite": suite,
        "method": method,
        "hyperparameters": hyper,
        "split": ev.split,
        "n_per_task": int(n_eval),
        "seed": settings.seed,
        "recompute_bn": bool(recompute_bn),
        "device": device,
    }
    chart = st.segmented_control(
        "Chart", ["bars", "radar"], default="bars", key="merge.suite_chart"
    )
    radar = chart == "radar" and len(ev.tasks) >= 3
    title = f"Per-task accuracy · {suite} suite · {entry.title}"
    fig = task_radar_figure(ev, title=title) if radar else task_accuracy_figure(ev, title=title)
    show_figure(
        fig,
        key="merge.suite_live",
        stem=f"merge_lab_{suite}_{method}",
        meta=meta,
        recipe={
            "kind": "suite_merge_accuracy",
            "args": meta | {"chart": "radar" if radar else "bars", "title": title},
        },
    )
    _suite_comparison(settings, suite, methods, lab.n_models)


def _suite_comparison(settings: Settings, suite: str, methods: list[str], n_models: int) -> None:
    ws, device = settings.workspace, str(settings.torch_device)
    st.subheader("Method comparison (validation-tuned)")
    st.caption(
        "The benchmark's protocol: each method's hyperparameters tuned on the validation splits "
        "(the papers' grids; quick grids by default), test accuracy with a stratified bootstrap "
        "95% CI and McNemar's test against task arithmetic. The result is stored for the "
        "Benchmark page."
    )
    from core.benchmark.run import applicable_methods

    runnable = [m for m, why in applicable_methods(n_models).items() if why is None]
    c1, c2 = st.columns([3, 1])
    chosen = c1.multiselect(
        "Methods",
        runnable,
        default=[m for m in ("task_arithmetic", "ties", "average") if m in runnable] or methods[:2],
        format_func=lambda m: METHODS[m].title,
        key="merge.suite_cmp_methods",
    )
    quick = c2.checkbox("Quick grids", value=True, key="merge.suite_cmp_quick")
    req = (suite, tuple(chosen), quick)
    if st.button("Compare methods", key="merge.suite_cmp_go", disabled=not chosen):
        st.session_state["merge.suite_cmp_req"] = req
    if not chosen or st.session_state.get("merge.suite_cmp_req") != req:
        return
    with shown_errors("The comparison"):
        from core.suite_lab import comparison_rows

        bar, cb = _bar("Tuning on validation…")
        res = cache_suite.suite_comparison(ws, suite, tuple(chosen), bool(quick), device, cb)
        bar.empty()
        rows = comparison_rows(res)
        table = pd.DataFrame(
            [
                {
                    "method": r["method"],
                    "tuned on validation": ", ".join(
                        f"{k}={v}" for k, v in r["hyperparameters"].items()
                    ),
                    "val avg": r["val_avg"],
                    "test avg": r["test_avg"],
                    "95% CI": f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]",
                    "normalised": r["normalized"],
                    "p vs TA": r["p_vs_task_arithmetic"],
                }
                for r in rows
            ]
        )
        st.dataframe(table, hide_index=True, width="stretch", key="merge.suite_cmp_table")
        show_figure(
            benchmark_figure(res),
            key="merge.suite_cmp",
            stem=f"merge_lab_{suite}_comparison",
            data=table,
            meta={"suite": suite, "methods": list(chosen), "quick": bool(quick)},
            recipe={
                "kind": "suite_comparison",
                "args": {
                    "suite": suite,
                    "methods": list(chosen),
                    "quick": bool(quick),
                    "device": device,
                },
            },
        )
        if res.get("skipped"):
            st.caption("Not run: " + "; ".join(f"{m} ({w})" for m, w in res["skipped"].items()))


# ---------------------------------------------------------------------------- Interpolation
def interpolation(settings: Settings, suite: str) -> None:
    """The line between two suite backbones, BatchNorm recomputed at every point for Lite0."""
    ws, device = settings.workspace, str(settings.torch_device)
    models = cache_suite.suite_models(ws, suite)
    tasks = models[1:]
    c1, c2, c3 = st.columns(3)
    a = c1.selectbox("Model A", models, index=0, key="interp.suite_a")
    partners = [m for m in models if m != a]
    b = c2.selectbox("Model B", partners, index=0, key="interp.suite_b")
    default_task = b if b in tasks else (a if a in tasks else tasks[0])
    if st.session_state.get("interp.suite_task") not in tasks:
        st.session_state["interp.suite_task"] = default_task
    task = c3.selectbox(
        "Task (data and head)", tasks, key="interp.suite_task", help="whose data and head score"
    )
    o1, o2, o3 = st.columns(3)
    n_points = o1.slider("Points on the path", 3, 25, 11, step=2, key="interp.suite_n_points")
    n_examples = o2.select_slider(
        "Examples per split", [16, 32, 64, 128, 256, 512], value=128, key="interp.suite_n"
    )
    bn = o3.toggle(
        "Recompute BatchNorm at every point",
        value=suite == "vision",
        key="interp.suite_bn",
        disabled=suite != "vision",
        help="EfficientNet-Lite0 has BatchNorm: interpolated weights with the endpoints' "
        "statistics are misleading (REPAIR resets them on training images); MiniLM has none",
    )
    args = {
        "suite": suite,
        "model_a": a,
        "model_b": b,
        "task": task,
        "split": "val",
        "n_points": int(n_points),
        "n_examples": int(n_examples),
        "recompute_bn": bool(bn),
        "device": device,
    }
    req = tuple(args.values())
    if st.button("Compute path", type="primary", key="interp.suite_go"):
        st.session_state["interp.suite_req"] = req
    if st.session_state.get("interp.suite_req") != req:
        st.caption("Loss and accuracy of the task's head along θ(α) = (1 − α) θ_A + α θ_B.")
        return
    with shown_errors("Interpolation"):
        bar, cb = _bar("Evaluating the path…")
        path = cache_suite.suite_path(
            ws, suite, a, b, task, "val", int(n_points), int(n_examples), bool(bn), device, cb
        )
        bar.empty()
        title = f"{a} → {b} · {task} ({suite} suite" + (", BN recomputed)" if bn else ")")
        show_figure(
            path_figure({path.label: path}, title=title, endpoint_labels=(a, b)),
            key="interp.suite_path",
            stem=f"interpolation_{suite}_{a}_{b}",
            meta=args,
            recipe={"kind": "suite_interpolation", "args": args | {"title": title}},
        )


# ---------------------------------------------------------------------------- Feature Geometry
def geometry(settings: Settings, suite: str) -> None:
    """Neural collapse and projections of a suite model's features; NC across fine-tuning."""
    ws, device = settings.workspace, str(settings.torch_device)
    models = cache_suite.suite_models(ws, suite)
    tasks = models[1:]
    c1, c2, c3, c4 = st.columns(4)
    model = c1.selectbox(
        "Model",
        models,
        key="geometry.suite_model",
        help="'pretrained': ImageNet Lite0 / MiniLM features; a task: its fine-tune",
    )
    task = c2.selectbox("Task (data and head)", tasks, key="geometry.suite_task")
    split = c3.radio("Split", ["train", "test"], horizontal=True, key="geometry.suite_split")
    n = c4.select_slider("Samples", [32, 100, 250, 500, 1000], value=250, key="geometry.suite_n")
    report = None
    with shown_errors("Computing the features"):
        fp = cache_suite.fingerprint(ws, suite)
        report = cache_suite.suite_report(
            ws, suite, fp, model, task, split, int(n), settings.seed, device
        )
    if report is None:
        return
    base = {
        "suite": suite,
        "model": model,
        "task": task,
        "split": split,
        "n_examples": int(n),
        "seed": settings.seed,
        "device": device,
    }
    nc = report["nc"]
    cols = st.columns(len(NC_LABELS))
    for col, (k, label) in zip(cols, NC_LABELS.items(), strict=True):
        col.metric(label, f"{nc[k]:.3g}" if k in nc else "—")
    tab_proj, tab_nc = st.tabs(["Projection", "NC across fine-tuning"])
    with tab_proj:
        method = st.radio(
            "Projection",
            ["pca", "class_plane"],
            horizontal=True,
            key="geometry.suite_method",
            format_func={"pca": "PCA", "class_plane": "class-mean plane"}.get,
        )
        with shown_errors("Projecting"):
            proj = cache_suite.suite_projection(
                ws, suite, fp, model, task, split, int(n), settings.seed, method, device
            )
            title = f"{model} features on {task} ({method})"
            show_figure(
                projection_figure(
                    proj["coords"],
                    report["labels"],
                    class_names=report["class_names"],
                    anchors=proj["anchors"],
                    anchor_classes=report["classes"].tolist(),
                    title=title,
                ),
                key="geometry.suite_projection",
                stem=f"geometry_{suite}_{model}_{method}",
                meta=base | {"method": method},
                recipe={
                    "kind": "suite_projection",
                    "args": base | {"method": method, "title": title},
                },
            )
    with tab_nc:
        picked = st.multiselect(
            "Models",
            models,
            default=["pretrained", task],
            key="geometry.suite_nc_models",
            help="the same examples' features under each backbone",
        )
        if not picked:
            st.info("Pick at least one model.")
            return
        with shown_errors("Neural collapse across fine-tuning"):
            across = cache_suite.suite_nc(ws, suite, fp, task, tuple(picked), split, int(n), device)
            title = f"Neural collapse across fine-tuning · {task} ({split})"
            args = {
                "suite": suite,
                "task": task,
                "models": list(picked),
                "split": split,
                "n_examples": int(n),
                "device": device,
                "title": title,
            }
            show_figure(
                nc_models_figure(across, title=title),
                key="geometry.suite_nc",
                stem=f"geometry_{suite}_nc_{task}",
                meta=args,
                recipe={"kind": "suite_nc_across", "args": args},
            )


# ---------------------------------------------------------------------------- Clustering
def clustering(settings: Settings, suite: str) -> None:
    """PPP on a suite model's features of a task's training examples."""
    ws, device = settings.workspace, str(settings.torch_device)
    models = cache_suite.suite_models(ws, suite)
    with st.form("cluster.suite_form"):
        c1, c2, c3 = st.columns(3)
        model = c1.selectbox("Model (features)", models, key="cluster.suite_model")
        task = c2.selectbox("Task (examples)", models[1:], key="cluster.suite_task")
        n = c3.select_slider("Samples", [32, 100, 300, 500, 1000], value=300, key="cluster.suite_n")
        c4, c5 = st.columns(2)
        k_max = c4.slider("Largest k", 3, 20, 10, key="cluster.suite_k_max")
        n_seeds = c5.slider("k-means seeds per k", 2, 10, 4, key="cluster.suite_n_seeds")
        run = st.form_submit_button("Run PPP", type="primary")
    if run:
        st.session_state["cluster.suite_shown"] = True
    if not st.session_state.get("cluster.suite_shown"):
        return
    with shown_errors("Clustering"):
        fp = cache_suite.fingerprint(ws, suite)
        res = cache_suite.suite_cluster(
            ws, suite, fp, model, task, int(n), settings.seed, int(k_max), int(n_seeds), device
        )
        m = st.columns(5)
        m[0].metric("Chosen k", res["k"])
        m[1].metric("Stability (ARI across seeds)", f"{res['stability']:.3f}")
        m[2].metric("NMI with labels", f"{res['agreement']['nmi']:.3f}")
        m[3].metric("ARI with labels", f"{res['agreement']['ari']:.3f}")
        m[4].metric("Purity", f"{res['agreement']['purity']:.3f}")
        args = {
            "suite": suite,
            "model": model,
            "task": task,
            "split": "train",
            "n_examples": int(n),
            "k_max": int(k_max),
            "n_seeds": int(n_seeds),
            "seed": settings.seed,
            "device": device,
        }
        stem = f"cluster_{suite}_{model}_{task}"
        show_figure(
            k_selection_figure(res["ks"], res["scores"], chosen=res["k"]),
            key="cluster.suite_k",
            stem=f"{stem}_k",
            meta=args,
            recipe={"kind": "suite_cluster", "args": args | {"chart": "k"}},
        )
        left, right = st.columns(2)
        with left:
            show_figure(
                contingency_figure(res["truth"], res["labels"], class_names=res["class_names"]),
                key="cluster.suite_table",
                stem=f"{stem}_contingency",
                meta=args,
                recipe={"kind": "suite_cluster", "args": args | {"chart": "contingency"}},
            )
        with right:
            show_figure(
                cluster_scatter_figure(
                    res["coords"],
                    res["labels"],
                    confidence=res["posterior"],
                    title="Clusters (PCA of the clustered data)",
                ),
                key="cluster.suite_scatter",
                stem=f"{stem}_scatter",
                meta=args,
                recipe={"kind": "suite_cluster", "args": args | {"chart": "scatter"}},
            )
