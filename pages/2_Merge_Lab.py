"""Merge Lab: pick models and a merge method, drag its sliders, see per-task accuracy at once."""

import time

import streamlit as st

import ui
from ui import cache, suite_panels
from ui.timing import timed_fragment
from ui.errors import shown_errors
from ui.figure_panel import show_figure
from ui.merge_align import align_choice, show_alignment_gain
from ui.tables import comparison_table
from ui.widgets import hyperparameter_form, method_description
from core.merge import METHODS
from core.merge_eval import applicable_methods, effective_coefficients, save_merged
from core.recipes import build_figure

SETTINGS = {
    "task_vectors": "Task vectors: base + fine-tuned models",
    "independent": "Independently trained models",
}

settings = ui.frame("Merge Lab", icon=":material/merge:")
suite = suite_panels.model_set(settings.workspace, "merge.model_set")
if suite is not None:  # a real pretrained suite: its own panel (each task with its own head)
    suite_panels.merge_lab(settings, suite)
    st.stop()
zoo = cache.zoo(settings.workspace)
records = zoo.list()
if not records:
    st.info(
        "The zoo is empty. Build the default zoo on the **Home** page (one click): it holds a base "
        "MLP, one fine-tune per digit domain (task vectors) and independently trained models."
    )
    st.page_link("app.py", label="Go to Home", icon=":material/home:")
    st.stop()

by_id = {r.id: r for r in records}

# ------------------------------------------------------------------ selection
setting = st.radio(
    "Setting", list(SETTINGS), format_func=SETTINGS.get, horizontal=True, key="merge.setting"
)
align = "none"
if setting == "task_vectors":
    bases = [r.id for r in records if r.role == "base"] or [r.id for r in records]
    c1, c2 = st.columns([1, 3])
    base_id = c1.selectbox("Base model θ₀", bases, key="merge.base")
    tuned = [r.id for r in records if r.base_id == base_id or r.parent_id == base_id]
    tuned = [i for i in tuned if by_id[i].role != "merged"] or [i for i in by_id if i != base_id]
    model_ids = c2.multiselect(
        "Fine-tuned models (one task vector each)", tuned, default=tuned[:4], key="merge.models"
    )
else:
    base_id = None
    pool = [
        r.id for r in records if r.role in ("independent", "custom", "imported", "merged")
    ] or list(by_id)
    first_arch = by_id[pool[0]].arch
    default = [i for i in pool if by_id[i].arch == first_arch][:2]
    model_ids = st.multiselect(
        "Models to merge (same architecture)", pool, default=default, key="merge.independent_models"
    )
align = align_choice([by_id[i] for i in model_ids], base_id=base_id)

if not model_ids:
    st.info("Pick at least one model to merge.")
    st.stop()

methods = applicable_methods(base_id is not None, len(model_ids))
c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
preferred = "task_arithmetic" if "task_arithmetic" in methods else "average"
method = c1.selectbox(
    "Merge method",
    methods,
    index=methods.index(preferred) if preferred in methods else 0,
    format_func=lambda m: METHODS[m].title,
    key="merge.method",
)
n_eval = c2.select_slider(
    "Eval. samples / task",
    [100, 250, 500, 1000],
    value=250,
    key="merge.n_eval",
    help="fixed, seeded subset of each test set for live updates",
)
merge_seed = c3.number_input(
    "Merge seed",
    min_value=0,
    max_value=2**31 - 1,
    value=0,
    step=1,
    key="merge.seed",
    help="seeds the random methods (DARE)",
)
entry = METHODS[method]
st.caption(
    f"**{entry.title}** — {method_description(entry)}"
    + (f" · [paper]({entry.paper})" if entry.paper else "")
)

# The lab args of every recipe on this page: the selection and its seeded evaluation subset.
lab_args = {
    "models": list(model_ids),
    "base": base_id,
    "n_per_task": int(n_eval),
    "random_state": settings.seed,
    "device": str(settings.torch_device),
} | ({"align": align} if align != "none" else {})
key, lab = None, None
with shown_errors("Loading the models"):
    key = cache.merge_lab_key(settings.workspace, lab_args)
    lab = cache.merge_lab(key)
if key is None or lab is None:
    st.stop()
recompute_bn = c4.checkbox(
    "Recompute BN",
    value=False,
    key="merge.recompute_bn",
    disabled=not lab.has_batchnorm,
    help="re-estimate BatchNorm statistics on training data after merging",
)


# The sliders and everything that follows them rerun alone (a fragment): a slider move does not
# rerun the selection above (zoo listing, lab lookup), so the numbers change within a frame or two.
@timed_fragment("merge.live")
def live_lab() -> None:
    """Hyperparameter sliders, the live result, and the panels that depend on the sliders."""

    hyper = hyperparameter_form(entry, "merge", len(model_ids), labels=list(model_ids))
    recipe_args = lab_args | {
        "method": method,
        "hyperparameters": hyper,
        "seed": int(merge_seed),
        "recompute_bn": bool(recompute_bn),
    }

    # ------------------------------------------------------------------ data-dependent inputs
    if not lab.has_data_arguments(method):
        st.info(f"{entry.title} needs inputs computed from data (training subsets of each task).")
        if st.button(
            f"Compute inputs for {entry.title}", key="merge.compute_inputs", type="primary"
        ):
            bar = st.progress(0.0, text="Computing…")
            with shown_errors("Computing the inputs"):
                cache.merge_data_inputs(
                    key, method, lambda d, n, m: bar.progress(min(d / max(n, 1), 1.0), text=m)
                )
                bar.progress(1.0, text="ready")
                st.rerun()
        st.stop()

    # ------------------------------------------------------------------ result
    # Data-dependent methods (AdaMerging trains its coefficients, minutes on a CPU) run when asked,
    # in a background worker, with elapsed time and Cancel; the others update live with the sliders.
    ev, cached = None, False
    if "data_dependent" in entry.tags:
        run_req = (key, method, str(hyper), int(merge_seed), bool(recompute_bn))
        r1, r2 = st.columns([1, 5], vertical_alignment="center")
        if r1.button(f"Run {entry.title}", key="merge.run", type="primary"):
            st.session_state["merge.run_req"] = run_req
        if st.session_state.get("merge.run_req") != run_req:
            r2.caption(
                f"{entry.title} is slow and data-dependent: it runs when you press **Run**, not on "
                "every slider move."
            )
            st.stop()
        with shown_errors("Merging"):
            job = cache.merge_eval_job(key, recipe_args)
            cached = job.done()
            if not job.done():
                if r2.button("Cancel", key="merge.cancel", icon=":material/cancel:"):
                    st.session_state.pop("merge.run_req", None)
                    st.rerun()
                bar = st.progress(0.0, text=f"Running {entry.title}…")
                t0 = time.monotonic()
                while not job.done():
                    waited = time.monotonic() - t0
                    bar.progress(
                        waited / (waited + 30.0),
                        text=f"Running {entry.title}… {waited:.0f} s (Cancel stops waiting)",
                    )
                    time.sleep(0.25)
                bar.empty()
            ev = job.result()
    else:
        with shown_errors("Merging"):
            ev, cached = cache.merge_eval_cached(key, recipe_args)
    if ev is None:
        st.stop()

    base_avg = ev.base_average
    ref_label = "vs fine-tuned" if base_id is not None else "vs best input model"
    m1, m2, m3 = st.columns(3)
    m1.metric(
        "Average accuracy",
        f"{ev.average:.3f}",
        delta=None if base_avg is None else f"{ev.average - base_avg:+.3f} vs base",
    )
    m2.metric(
        "Normalised accuracy",
        f"{ev.average_normalized:.3f}",
        help="merged / fine-tuned, per task, averaged"
        if base_id is not None
        else "merged / best input model, per task, averaged",
    )
    m3.metric(
        "Merge + evaluation",
        "cached" if cached else f"{ev.seconds * 1000:.0f} ms",
        help=f"computed earlier in {ev.seconds * 1000:.0f} ms" if cached else None,
    )
    cols = st.columns(len(ev.tasks))
    for col, task_name, acc, ref in zip(cols, ev.tasks, ev.accuracy, ev.reference, strict=True):
        col.metric(f"acc · {task_name}", f"{acc:.3f}", delta=f"{acc - ref:+.3f} {ref_label}")
    show_alignment_gain(key, recipe_args, ev)

    chart = st.segmented_control("Chart", ["bars", "radar"], default="bars", key="merge.chart")
    radar = chart == "radar" and len(ev.tasks) >= 3
    live_args = recipe_args | {"chart": "radar" if radar else "bars"}
    show_figure(
        build_figure("merge_accuracy", ev, live_args),
        key="merge.live",
        stem=f"merge_lab_{method}",
        recipe=("merge_accuracy", live_args),
    )

    # ------------------------------------------------------------------ panels
    tab_land, tab_sweep, tab_cmp, tab_full, tab_save = st.tabs(
        ["Coefficient landscape", "Sweeps", "Method comparison", "Exact evaluation", "Save to zoo"]
    )

    with tab_land:
        if base_id is None or len(model_ids) < 2:
            st.caption(
                "The landscape needs the task-vector setting and at least two fine-tuned models."
            )
        else:
            c1, c2, c3, c4 = st.columns(4)
            a = c1.selectbox("τ for λ1", list(model_ids), index=0, key="merge.land_a")
            b = c2.selectbox("τ for λ2", list(model_ids), index=1, key="merge.land_b")
            lo, hi = c3.slider("λ range", -1.0, 2.0, (0.0, 1.0), 0.05, key="merge.land_range")
            res = c4.slider("Grid points per axis", 3, 21, 9, key="merge.land_res")
            req = (a, b, lo, hi, res)
            if st.button("Compute landscape", key="merge.land_go"):
                st.session_state["merge.land_req"] = req
            if st.session_state.get("merge.land_req") == req:
                with shown_errors("The landscape"):
                    if a == b:
                        raise ValueError("pick two different models for λ1 and λ2")
                    bar = st.progress(0.0, text="Evaluating the grid…")
                    land_args = lab_args | {
                        "pair": [a, b],
                        "low": lo,
                        "high": hi,
                        "n_points": res,
                        "method": method,  # the sliders' point (a figure arg)
                        "hyperparameters": hyper,
                    }
                    land = cache.merge_recipe(
                        key,
                        "merge_landscape",
                        land_args,
                        lambda d, n, m: bar.progress(d / n, text=m),
                    )
                    bar.empty()
                    metric = st.selectbox(
                        "Colour by",
                        ["average", "normalized", *land["landscape"].tasks],
                        key="merge.land_metric",
                    )
                    best = land["landscape"].best()
                    marked = effective_coefficients(method, hyper, len(model_ids)) is not None
                    st.caption(
                        f"Best grid point: λ1 = {best[0]:.2f}, λ2 = {best[1]:.2f}, average accuracy {best[2]:.3f}"
                        + ("" if marked else " · the ✕ marks the sliders for task arithmetic")
                    )
                    land_args |= {"metric": metric}
                    show_figure(
                        build_figure("merge_landscape", land, land_args),
                        key="merge.land",
                        stem="merge_lab_landscape",
                        recipe=("merge_landscape", land_args),
                    )

    with tab_sweep:
        numeric = [p.name for p in entry.params if p.kind in ("float", "int") and p.low is not None]
        if not numeric:
            st.caption(f"{entry.title} has no numeric hyperparameter to sweep.")
        else:
            c1, c2 = st.columns(2)
            param = c1.selectbox("Hyperparameter", numeric, key="merge.sweep_param")
            n_points = c2.slider("Points", 3, 25, 11, key="merge.sweep_n")
            req = (method, param, n_points)
            if st.button("Run sweep", key="merge.sweep_go"):
                st.session_state["merge.sweep_req"] = req
            if st.session_state.get("merge.sweep_req") == req:
                with shown_errors("The sweep"):
                    bar = st.progress(0.0, text="Sweeping…")
                    sweep_args = recipe_args | {"param": param, "n_points": n_points}
                    result = cache.merge_recipe(
                        key, "merge_sweep", sweep_args, lambda d, n, m: bar.progress(d / n, text=m)
                    )
                    bar.empty()
                    show_figure(
                        build_figure("merge_sweep", result, sweep_args),
                        key="merge.sweep",
                        stem=f"merge_lab_sweep_{method}_{param}",
                        recipe=("merge_sweep", sweep_args),
                    )

    with tab_cmp:
        st.caption(
            "Every method on the same models and samples, default hyperparameters (the current sliders for "
            "the selected method); bootstrap 95% CI (stratified by task) and McNemar p-value against task "
            "arithmetic."
        )
        c1, c2 = st.columns([3, 1])
        chosen = c1.multiselect(
            "Methods",
            methods,
            default=methods,
            format_func=lambda m: METHODS[m].title,
            key="merge.cmp_methods",
        )
        full_cmp = c2.checkbox("Full test sets", value=True, key="merge.cmp_full")
        req = (tuple(chosen), full_cmp, method, str(hyper))
        if st.button("Compare methods", key="merge.cmp_go", disabled=not chosen):
            st.session_state["merge.cmp_req"] = req
        if chosen and st.session_state.get("merge.cmp_req") == req:
            with shown_errors("The comparison"):
                bar = st.progress(0.0, text="Comparing…")
                cmp_args = lab_args | {
                    "methods": list(chosen),
                    "hyperparameters": {method: hyper},
                    "full": full_cmp,
                    "seed": settings.seed,
                }
                cmp = cache.merge_recipe(
                    key, "merge_comparison", cmp_args, lambda d, n, m: bar.progress(d / n, text=m)
                )
                bar.empty()
                st.dataframe(
                    comparison_table(cmp), hide_index=True, width="stretch", key="merge.cmp_table"
                )
                for chart_name, fig_key, stem in (
                    ("methods", "merge.cmp", "merge_lab_comparison"),
                    ("tasks", "merge.cmp_tasks", "merge_lab_comparison_tasks"),
                ):
                    chart_args = cmp_args | {"chart": chart_name}
                    show_figure(
                        build_figure("merge_comparison", cmp, chart_args),
                        key=fig_key,
                        stem=stem,
                        recipe=("merge_comparison", chart_args),
                    )

    with tab_full:
        st.caption(
            "The live numbers use a seeded subset of each test set; this evaluates on the full test sets."
        )
        if st.button("Evaluate on the full test sets", key="merge.full_go"):
            st.session_state["merge.full_req"] = (key, method, str(hyper))
        if st.session_state.get("merge.full_req") == (key, method, str(hyper)):
            with shown_errors("The full evaluation"):
                full_args = recipe_args | {"full": True}
                full = cache.merge_eval(key, full_args)
                ci = full.average_ci(random_state=settings.seed)
                st.metric(
                    "Average accuracy (full test sets)",
                    f"{full.average:.4f}",
                    help=f"95% bootstrap CI [{ci.low:.4f}, {ci.high:.4f}], n = {ci.n}",
                )
                st.caption(
                    f"95% bootstrap CI [{ci.low:.4f}, {ci.high:.4f}] · normalised {full.average_normalized:.4f}"
                )
                show_figure(
                    build_figure("merge_accuracy", full, full_args),
                    key="merge.full",
                    stem=f"merge_lab_{method}_full",
                    recipe=("merge_accuracy", full_args),
                )

    with tab_save:
        name = st.text_input("Name in the zoo", value=f"merged-{method}", key="merge.save_name")
        if st.button("Save merged model to zoo", key="merge.save", type="primary"):
            with shown_errors("Saving"):
                rec = save_merged(
                    zoo,
                    lab,
                    method,
                    hyper,
                    name=name or None,
                    seed=int(merge_seed),
                    recompute_bn=bool(recompute_bn),
                )
                st.success(
                    f"Stored **{rec.id}** · full-test average accuracy {rec.metrics['test_accuracy']:.3f}"
                )


live_lab()


# ------------------------------------------------------------------ interference diagnostics
@timed_fragment("merge.interference")
def interference_section(key: cache.MergeLabKey, lab_args: dict, merge_seed: int) -> None:
    """Where the task vectors agree or fight, and which entries TIES / DARE keep."""
    st.subheader("Interference")
    if lab_args["base"] is None or len(lab_args["models"]) < 2:
        st.caption(
            "The diagnostics need the task-vector setting and at least two fine-tuned models."
        )
        return
    c1, c2, c3 = st.columns(3)
    density = c1.slider("TIES density", 0.05, 1.0, 0.2, 0.05, key="merge.intf_density")
    drop = c2.slider("DARE drop rate", 0.0, 0.95, 0.5, 0.05, key="merge.intf_drop")
    trim = c3.selectbox("TIES trim", ["global", "tensor"], key="merge.intf_trim")
    req = (key, density, drop, trim, merge_seed)
    if st.button("Compute interference diagnostics", key="merge.intf_go"):
        st.session_state["merge.intf_req"] = req
    if st.session_state.get("merge.intf_req") != req:
        st.caption(
            "Cosine similarity of the task vectors, sign-conflict rate and ‖τ‖ per layer, and the "
            "fraction of each model's entries TIES / DARE keep with its share of the elected sign."
        )
        return
    with shown_errors("The interference diagnostics"):
        args = lab_args | {
            "density": float(density),
            "drop": float(drop),
            "trim": trim,
            "seed": merge_seed,
        }
        report = cache.merge_recipe(key, "merge_interference", args)
        c1, c2 = st.columns([2, 1])
        chart = c1.segmented_control(
            "Show",
            ["cosine", "layers", "keep"],
            default="cosine",
            format_func={
                "cosine": "task-vector cosine",
                "layers": "conflicts and ‖τ‖ per layer",
                "keep": "what the merge keeps",
            }.get,
            key="merge.intf_chart",
        )
        chart = chart or "cosine"
        method = c2.selectbox(
            "Merge",
            ["ties", "dare", "dare_ties"],
            key="merge.intf_method",
            disabled=chart != "keep",
        )
        args |= {"chart": chart, "method": method}
        show_figure(
            build_figure("merge_interference", report, args),
            key="merge.intf",
            stem=f"merge_lab_interference_{chart}",
            recipe=("merge_interference", args),
        )


interference_section(key, lab_args, int(merge_seed))
