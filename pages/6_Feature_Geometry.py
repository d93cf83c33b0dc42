"""Feature Geometry: neural-collapse metrics, projections with class means and classifier
directions, the ETF comparison, mixup-λ colouring, and NC over training for ERM vs mixup."""

import pandas as pd
import streamlit as st

import ui
from core.geometry import runs_with_nc, train_nc_comparison
from core.mixup import MIXERS
from core.recipes import build_figure
from ui import cache, suite_panels
from ui.errors import shown_errors
from ui.figure_panel import show_figure

settings = ui.frame("Feature Geometry", icon=":material/scatter_plot:")
suite = suite_panels.model_set(settings.workspace, "geometry.model_set")
if suite is not None:  # a real pretrained suite (backbone, fine-tunes, fixed heads)
    suite_panels.geometry(settings, suite)
    st.stop()
zoo = cache.zoo(settings.workspace)
device = str(settings.torch_device)  # "cpu" or "cuda"
cache.umap_warm_up()

records = zoo.list()
if not records:
    st.info("The zoo is empty: build the default zoo on the Home page first.")
    st.stop()
ids = [r.id for r in records]
by_id = {r.id: r for r in records}
tasks = cache.tasks_available()

c1, c2, c3, c4 = st.columns(4)
model_id = c1.selectbox(
    "Model",
    ids,
    index=ids.index("mlp-mnist-s1") if "mlp-mnist-s1" in ids else 0,
    key="geometry.model",
)
rec = by_id[model_id]
task_name = c2.selectbox(
    "Dataset", tasks, index=tasks.index(rec.task) if rec.task in tasks else 0, key="geometry.task"
)
split = c3.radio(
    "Split",
    ["train", "test"],
    horizontal=True,
    key="geometry.split",
    help="Neural collapse is defined on the training set",
)
n = c4.select_slider("Samples", [500, 1000, 2000, 5000], value=1000, key="geometry.n")
args = {
    "model": model_id,
    "task": task_name,
    "split": split,
    "n": int(n),
    "seed": settings.seed,
    "device": device,
}

report = None
with shown_errors("Computing the features"):
    report = cache.recipe_result(settings.workspace, "geometry_etf", args)
if report is None:
    st.stop()
names = report["class_names"]
nc = report["nc"]

st.subheader("Neural-collapse metrics")
cols = st.columns(6)
for col, (key, label) in zip(
    cols,
    [
        ("nc1", "NC1"),
        ("nc2_equinorm", "NC2 equinorm"),
        ("nc2_equiangular", "NC2 angle"),
        ("etf_distance", "ETF distance"),
        ("nc3", "NC3"),
        ("nc4", "NC4"),
    ],
    strict=True,
):
    col.metric(label, f"{nc[key]:.3g}")
with st.expander("All metrics and their definitions"):
    st.dataframe(pd.DataFrame({"metric": list(nc), "value": list(nc.values())}), hide_index=True)
    st.caption(
        "NC1 = Tr(Σ_W Σ_B⁺)/C; NC2 equinorm = CV of ‖μ_c − μ_G‖; NC2 angle = mean |cos + 1/(C−1)|; "
        "ETF distance = ‖G/‖G‖ − (I − 11ᵀ/C)/√(C−1)‖; NC3 = ‖Wᵀ/‖W‖ − Ṁ/‖Ṁ‖‖; NC4 = classifier vs "
        "nearest-class-centre mismatch. All → 0 at collapse (Papyan et al. 2020)."
    )

tab_proj, tab_etf, tab_mix, tab_epochs = st.tabs(
    ["Projection", "ETF comparison", "Mixup geometry", "NC over training"]
)

with tab_proj:
    method = st.radio(
        "Projection",
        ["pca", "class_plane", "umap", "tsne"],
        horizontal=True,
        key="geometry.method",
        format_func={
            "pca": "PCA",
            "class_plane": "class-mean plane",
            "umap": "UMAP (slow)",
            "tsne": "t-SNE (slow)",
        }.get,
    )
    slow = method in ("umap", "tsne")
    if not slow or st.toggle(
        "Compute the nonlinear projection",
        key="geometry.run_slow",
        help="UMAP's first fit in a server process also compiles (10–20 s)",
    ):
        with shown_errors("Projecting"):
            proj_args = args | {"method": method}
            proj = cache.recipe_result(settings.workspace, "geometry_projection", proj_args)
            title = f"{model_id} features on {task_name} ({method})"
            show_figure(
                build_figure("geometry_projection", proj, proj_args | {"title": title}),
                key="geometry.projection",
                stem=f"geometry_{model_id}_{method}",
                recipe=("geometry_projection", proj_args | {"title": title}),
            )
            if not slow:
                st.caption(
                    f"The two axes keep {proj['projection']['explained']:.0%} of the variance. Arrows: classifier rows "
                    "w_c from the global mean (scaled to the mean class-mean norm)."
                )

with tab_etf:
    show_figure(
        build_figure("geometry_etf", report, args),
        key="geometry.etf",
        stem=f"geometry_etf_{model_id}",
        recipe=("geometry_etf", args),
    )

with tab_mix:
    with st.form("geometry.mix_form"):
        m1, m2, m3 = st.columns(3)
        mixers = [m for m in MIXERS.names() if m not in ("manifold_mixup", "saliencymix")]
        mixer = m1.selectbox("Mixer", mixers, key="geometry.mixer")
        alpha = m2.slider("α (λ ~ Beta(α, α))", 0.1, 4.0, 1.0, 0.1, key="geometry.alpha")
        picked = m3.multiselect(
            "Classes (three show the simplex plane)",
            list(range(len(names))),
            default=[0, 1, 2],
            format_func=lambda c: names[c],
            key="geometry.classes",
        )
        go_mix = st.form_submit_button("Show mixed features")
    if go_mix or st.session_state.get("geometry.mix_shown"):
        st.session_state["geometry.mix_shown"] = True
        with shown_errors("Mixup geometry"):
            mix_args = {
                "model": model_id,
                "task": task_name,
                "n": 600,
                "seed": settings.seed,
                "mixer": mixer,
                "alpha": float(alpha),
                "classes": sorted(int(c) for c in picked),
                "device": device,
                "title": f"{mixer} features of {model_id} (class-mean plane)",
            }
            mr = cache.recipe_result(settings.workspace, "geometry_mixup", mix_args)
            show_figure(
                build_figure("geometry_mixup", mr, mix_args),
                key="geometry.mixup",
                stem=f"geometry_mixup_{model_id}_{mixer}",
                recipe=("geometry_mixup", mix_args),
            )
            st.caption(
                "Fisher, Meng & Papyan (ICLR 2024): after mixup training, same-class mixes align with the "
                "classifier, different-class mixes spread along the decision boundaries, ordered by λ."
            )

with tab_epochs:
    runs = runs_with_nc(zoo)
    if runs:
        run_id = st.selectbox("Run", list(runs)[::-1], key="geometry.run")
        nc_args = {"run": run_id}
        nc_res = cache.recipe_result(settings.workspace, "geometry_nc_epochs", nc_args)
        show_figure(
            build_figure("geometry_nc_epochs", nc_res, nc_args),
            key="geometry.epochs",
            stem=f"geometry_nc_epochs_{run_id}",
            recipe=("geometry_nc_epochs", nc_args),
        )
    else:
        st.info(
            "No stored training run carries NC metrics yet (Mixup Training runs store them when trained "
            "with NC tracking). Train ERM and mixup here with NC tracked every epoch."
        )
    with st.form("geometry.train_form"):
        t1, t2, t3, t4 = st.columns(4)
        t_task = t1.selectbox(
            "Dataset",
            tasks,
            index=tasks.index("digits") if "digits" in tasks else 0,
            key="geometry.t_task",
        )
        t_arch = t2.selectbox("Architecture", ["mlp", "cnn", "resnet20"], key="geometry.t_arch")
        t_epochs = t3.slider("Epochs", 1, 40, 10, key="geometry.t_epochs")
        t_n = t4.select_slider(
            "Training samples", [500, 1000, 2000, 5000], value=1000, key="geometry.t_n"
        )
        train_clicked = st.form_submit_button(
            "Train ERM and mixup with NC tracking", type="primary"
        )
    if train_clicked:
        bar = st.progress(0.0, text="Training…")

        def on_progress(info: dict) -> None:
            frac = (
                (info["method"] - 1) + info.get("step", 0) / max(info.get("steps", 1), 1)
            ) / info["methods"]
            bar.progress(
                min(frac, 1.0),
                text=f"{info['label']} · epoch {info.get('epoch', 0)}/{info.get('epochs', '?')}",
            )

        with shown_errors("Training"):
            run = train_nc_comparison(
                zoo,
                task=t_task,
                arch=t_arch,
                epochs=int(t_epochs),
                n_train=int(t_n),
                n_track=min(int(t_n), 1000),
                seed=settings.seed,
                device=device,
                progress=on_progress,
            )
            bar.progress(1.0, text="done")
            st.success(f"Stored run **{run['run_id']}**.")
            st.rerun()
