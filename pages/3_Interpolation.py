"""Interpolation: loss and accuracy along the line between two models, naive vs weight-matched vs
activation-matched (git re-basin), barrier definitions side by side, the plane through three
models, a trained Bezier curve, and the singular-vector alignment of matching (Ito et al.)."""

import streamlit as st

import ui
from core.figures.landscape import (
    PLANE_UNIT,
    BARRIER_TITLES,
    barrier_table,
    path_data,
    plane_data,
    plane_figure,
)
from core.landscape import BARRIER_COLUMNS, METHODS, barrier
from core.recipes import build_figure
from ui import cache, suite_panels
from ui.errors import shown_errors
from ui.figure_panel import show_figure
from ui.widgets import progress_bar

settings = ui.frame("Interpolation", icon=":material/timeline:")
suite = suite_panels.model_set(settings.workspace, "interp.model_set")
if suite is not None:  # a real pretrained suite (backbone, fine-tunes, fixed heads)
    suite_panels.interpolation(settings, suite)
    st.stop()
zoo = cache.zoo(settings.workspace)
records = zoo.list()
if len(records) < 2:
    st.info(
        "Interpolation needs two models of the same architecture: build the default zoo on the Home page."
    )
    st.stop()
by_id = {r.id: r for r in records}
ids = list(by_id)
tasks = cache.tasks_available()
ss = st.session_state
device = str(settings.torch_device)  # "auto" resolved: cached models are keyed by the real device

c1, c2, c3 = st.columns(3)
id_a = c1.selectbox(
    "Model A",
    ids,
    index=ids.index("mlp-mnist-s1") if "mlp-mnist-s1" in ids else 0,
    key="interp.model_a",
)
rec_a = by_id[id_a]
partners = [
    r.id
    for r in records
    if r.id != id_a and r.arch == rec_a.arch and r.arch_kwargs == rec_a.arch_kwargs
]
if not partners:
    st.warning(
        f"No other model in the zoo has {id_a}'s architecture ({rec_a.arch} {rec_a.arch_kwargs})."
    )
    st.stop()
default_b = id_a.replace("-s1", "-s2") if id_a.replace("-s1", "-s2") in partners else partners[0]
if ss.get("interp.model_b") not in partners:
    ss["interp.model_b"] = default_b
id_b = c2.selectbox(
    "Model B (any compatible model, merged ones included)", partners, key="interp.model_b"
)
rec_b = by_id[id_b]
task_name = c3.selectbox(
    "Data", tasks, index=tasks.index(rec_a.task) if rec_a.task in tasks else 0, key="interp.task"
)

o1, o2, o3, o4 = st.columns([2, 1, 1, 1])
methods = o1.multiselect("Paths", list(METHODS), default=list(METHODS), key="interp.methods")
n_points = o2.slider("Points on the path", 5, 51, 25, step=2, key="interp.n_points")
bn_reset = o3.toggle(
    "BN reset at every point",
    key="interp.bn_reset",
    help="Re-estimate BatchNorm statistics from 2,000 training images at every point (REPAIR-style reset). "
    "No effect on models without BatchNorm.",
)
exact = o4.toggle(
    "All examples (exact)",
    key="interp.exact",
    help="Off: a fixed seeded subset (5,000 per split for paths, 500 per split for planes) — reported on every figure.",
)
meta = {
    "models": [id_a, id_b],
    "task": task_name,
    "seed": settings.seed,
    "bn_reset": bn_reset,
    "exact": exact,
}

tab_paths, tab_plane, tab_curve, tab_singular = st.tabs(
    ["Paths and barriers", "Plane through three models", "Bezier curve", "Singular vectors"]
)


with tab_paths:
    request = (id_a, id_b, task_name, tuple(methods), n_points, bn_reset, exact)
    if st.button("Compute paths", type="primary", key="interp.run_paths", disabled=not methods):
        ss["interp.paths_request"] = request
    if ss.get("interp.paths_request") == request:
        with shown_errors("Interpolation"):
            bar, cb = progress_bar("Evaluating paths…")
            args = {
                "models": [id_a, id_b],
                "task": task_name,
                "methods": list(methods),
                "n_points": n_points,
                "recompute_bn": bn_reset,
                "max_examples": None if exact else 5000,
                "seed": settings.seed,
                "device": device,
                "title": f"{id_a} → {id_b} on {task_name}",
            }
            result = cache.recipe_live(settings.workspace, "interpolation_paths", args, progress=cb)
            bar.empty()
            paths, reports = result["paths"], result["barriers"]
            show_figure(
                build_figure("interpolation_paths", result, args),
                key="interp.paths",
                stem=f"interpolation_{id_a}_{id_b}",
                data=path_data(paths),
                recipe=("interpolation_paths", args),
            )
            st.subheader("Barriers")
            st.dataframe(barrier_table(reports), hide_index=True, key="interp.barriers")
            st.caption(
                " · ".join(f"**{BARRIER_TITLES[k]}**: {v}" for k, v in BARRIER_COLUMNS.items())
            )
            column = st.radio(
                "Barrier shown",
                list(BARRIER_TITLES),
                format_func=BARRIER_TITLES.get,
                horizontal=True,
                key="interp.barrier_column",
            )
            bar_args = {k: v for k, v in args.items() if k != "title"} | {"column": column}
            show_figure(
                build_figure("interpolation_barriers", result, bar_args),
                key="interp.barrier_fig",
                stem=f"barriers_{id_a}_{id_b}",
                data=barrier_table(reports),
                recipe=("interpolation_barriers", bar_args),
            )
    else:
        st.caption(
            "Choose the models and press **Compute paths** (about a second per path point on 2 CPU cores "
            "for the default MLP)."
        )

with tab_plane:
    others = [f"wm:{id_b}", f"am:{id_b}"] + [p for p in partners if p != id_b]
    names = {
        f"wm:{id_b}": f"π({id_b}) — weight-matched",
        f"am:{id_b}": f"π({id_b}) — activation-matched",
    }
    p1, p2, p3, p4 = st.columns(4)
    third = p1.selectbox(
        "Third model", others, format_func=lambda v: names.get(v, v), key="interp.third"
    )
    resolution = p2.slider("Grid points per side", 5, 41, 21, step=2, key="interp.resolution")
    metric = p3.radio("Metric", ["loss", "accuracy"], horizontal=True, key="interp.plane_metric")
    split = p4.radio("Split", ["test", "train"], horizontal=True, key="interp.plane_split")
    request = (id_a, id_b, third, task_name, resolution, bn_reset, exact)
    if st.button("Compute plane", type="primary", key="interp.run_plane"):
        ss["interp.plane_request"] = request
    if ss.get("interp.plane_request") == request:
        with shown_errors("The plane"):
            preview = st.empty()
            bar, cb = progress_bar("Evaluating the grid…")
            levels = [0]

            def show_level(res) -> None:
                levels[0] += 1
                preview.plotly_chart(
                    plane_figure(res, metric=metric, split=split),
                    key=f"interp.plane_level{levels[0]}",
                )

            plane_args = {
                "models": [id_a, id_b],
                "third": third,
                "task": task_name,
                "resolution": resolution,
                "recompute_bn": bn_reset,
                "max_examples": None if exact else 500,
                "seed": settings.seed,
                "device": device,
                "metric": metric,
                "split": split,
            }
            res = cache.recipe_live(
                settings.workspace,
                "interpolation_plane",
                plane_args,
                progress=cb,
                on_level=show_level,
            )
            bar.empty()
            preview.empty()
            show_figure(
                build_figure("interpolation_plane", res, plane_args),
                key="interp.plane",
                stem=f"plane_{id_a}_{id_b}_{third.replace(':', '-')}",
                data=plane_data(res),
                recipe=("interpolation_plane", plane_args),
            )
            st.caption(
                f"{resolution}×{resolution} grid in {res.seconds:.1f} s. Coordinates in units of "
                f"{PLANE_UNIT} = {res.scale:.2f}; A at (0, 0), B at (1, 0)."
            )
    else:
        st.caption("A coarse picture appears first and is refined as the grid fills in.")

with tab_curve:
    b1, b2, b3 = st.columns(3)
    aligned = b1.toggle("Weight-match B first", value=False, key="interp.curve_aligned")
    steps = b2.select_slider(
        "Training steps", [100, 200, 400, 800, 1600], value=400, key="interp.curve_steps"
    )
    lr = b3.select_slider(
        "Learning rate (Adam)", [3e-4, 1e-3, 3e-3, 1e-2], value=1e-3, key="interp.curve_lr"
    )
    request = (id_a, id_b, task_name, aligned, steps, lr, n_points, exact)
    if st.button("Train Bezier curve", type="primary", key="interp.run_curve"):
        ss["interp.curve_request"] = request
    if ss.get("interp.curve_request") == request:
        with shown_errors("The Bezier curve"):
            bar, cb = progress_bar("Training the curve…")
            curve_args = {
                "models": [id_a, id_b],
                "task": task_name,
                "aligned": aligned,
                "steps": steps,
                "lr": lr,
                "n_points": n_points,
                "max_examples": None if exact else 5000,
                "seed": settings.seed,
                "device": device,
            }
            curve = cache.recipe_live(
                settings.workspace, "interpolation_bezier", curve_args, progress=cb
            )
            bar.empty()
            show_figure(
                build_figure("interpolation_bezier", curve, curve_args),
                key="interp.curve",
                stem=f"bezier_{id_a}_{id_b}",
                data=path_data({"straight line": curve.line, "Bezier curve": curve.curve}),
                recipe=("interpolation_bezier", curve_args),
            )
            st.dataframe(
                barrier_table([barrier(curve.line), barrier(curve.curve)]),
                hide_index=True,
                key="interp.curve_barriers",
            )
    else:
        st.caption(
            "Trains the bend of φ(t) = (1−t)²θ_A + 2t(1−t)θ + t²θ_B on random t (Garipov et al. 2018)."
        )

with tab_singular:
    st.caption(
        "Ito et al. (ICLR 2025, arXiv 2402.04051): matching changes each layer's singular vectors, "
        "not its singular values, and lines up mainly the pairs with large singular values — "
        "while barely reducing the distance between the models."
    )
    s1, s2 = st.columns([2, 1])
    matchers = s1.multiselect(
        "Matchers",
        ["weight matching", "activation matching"],
        default=["weight matching"],
        key="interp.sv_matchers",
    )
    top_k = s2.slider("Singular pairs in the heat map", 4, 32, 16, key="interp.sv_top_k")
    request = (id_a, id_b, task_name, tuple(matchers), top_k)
    if st.button(
        "Analyse singular vectors", type="primary", key="interp.run_sv", disabled=not matchers
    ):
        ss["interp.sv_request"] = request
    if ss.get("interp.sv_request") == request:
        with shown_errors("The singular-vector analysis"):
            from core.figures.papers import (
                singular_alignment_data,
                singular_alignment_figure,
                singular_alignment_table,
                singular_overlap_figure,
            )
            from ui import cache_papers

            with st.spinner("Matching and decomposing every layer…"):
                sv = cache_papers.singular_alignment(
                    settings.workspace,
                    id_a,
                    rec_a.sha256,
                    id_b,
                    rec_b.sha256,
                    task_name,
                    tuple(matchers),
                    top_k,
                    settings.seed,
                    device,
                )
            sv_recipe = {
                "kind": "singular_alignment",
                "args": {
                    "models": [id_a, id_b],
                    "task": task_name,
                    "matchers": list(matchers),
                    "top_k": top_k,
                    "seed": settings.seed,
                },
            }
            show_figure(
                singular_alignment_figure(sv),
                key="interp.sv",
                stem=f"singular_alignment_{id_a}_{id_b}",
                data=singular_alignment_data(sv),
                meta=meta | {"matchers": list(matchers)},
                recipe=sv_recipe,
            )
            st.dataframe(singular_alignment_table(sv), hide_index=True, key="interp.sv_table")
            first = next(iter(sv.values()))
            layer_key = st.selectbox(
                "Layer for the heat map", [la.key for la in first.layers], key="interp.sv_layer"
            )
            show_figure(
                singular_overlap_figure(first, layer=layer_key),
                key="interp.sv_overlap",
                stem=f"singular_overlap_{id_a}_{id_b}",
                meta=meta | {"layer": layer_key},
                recipe={
                    "kind": "singular_alignment",
                    "args": sv_recipe["args"] | {"figure": "overlap", "layer": layer_key},
                },
            )
    else:
        st.caption("Press **Analyse singular vectors** (a few seconds for the default MLP).")
