"""Clustering: PPP on model features or raw pixels — the k-selection plot, clusters vs labels,
stability across seeds and a cluster scatter."""

import streamlit as st

import ui
from core.recipes import build_figure
from ui import cache, suite_panels
from ui.errors import shown_errors
from ui.figure_panel import show_figure

settings = ui.frame("Clustering", icon=":material/bubble_chart:")
suite = suite_panels.model_set(settings.workspace, "cluster.model_set")
if suite is not None:  # a real pretrained suite (backbone, fine-tunes, fixed heads)
    suite_panels.clustering(settings, suite)
    st.stop()
zoo = cache.zoo(settings.workspace)
device = str(settings.torch_device)  # "cpu" or "cuda"
records = zoo.list()
ids = [r.id for r in records]
by_id = {r.id: r for r in records}
tasks = cache.tasks_available()

st.caption(
    "PPP (Sultan 2020): k-means partitions from several seeds, each validated by a Gaussian mixture "
    "initialised from it; the chosen k is stable across seeds, confirmed by the mixture, and best by BIC "
    "among those. Data are reduced to 16 PCA dimensions first."
)
with st.form("cluster.form"):
    c1, c2, c3 = st.columns(3)
    source = c1.radio(
        "Cluster",
        ["features", "pixels"],
        horizontal=True,
        key="cluster.source",
        format_func={"features": "model features", "pixels": "raw pixels"}.get,
    )
    model_id = c2.selectbox("Model (for features)", ids or ["(no models)"], key="cluster.model")
    task_name = c3.selectbox(
        "Dataset",
        tasks,
        index=tasks.index("digits") if "digits" in tasks else 0,
        key="cluster.task",
    )
    c4, c5, c6 = st.columns(3)
    n = c4.select_slider("Samples", [300, 500, 1000, 2000, 5000], value=500, key="cluster.n")
    k_max = c5.slider("Largest k", 3, 20, 12, key="cluster.k_max")
    n_seeds = c6.slider("k-means seeds per k", 2, 10, 4, key="cluster.n_seeds")
    run = st.form_submit_button("Run PPP", type="primary")

if run or st.session_state.get("cluster.shown"):
    st.session_state["cluster.shown"] = True
    with shown_errors("Clustering"):
        if source == "features" and model_id not in by_id:
            raise ValueError("pick a model, or cluster raw pixels (the zoo is empty)")
        args = {
            "source": source,
            "model": model_id if source == "features" else None,
            "task": task_name,
            "n": int(n),
            "k_max": int(k_max),
            "n_seeds": int(n_seeds),
            "seed": settings.seed,
            "device": device,
        }
        res = cache.recipe_result(settings.workspace, "cluster_k_selection", args)
        m = st.columns(5)
        m[0].metric("Chosen k", res["k"])
        m[1].metric("Stability (ARI across seeds)", f"{res['stability']:.3f}")
        m[2].metric("NMI with labels", f"{res['agreement']['nmi']:.3f}")
        m[3].metric("ARI with labels", f"{res['agreement']['ari']:.3f}")
        m[4].metric("Purity", f"{res['agreement']['purity']:.3f}")
        show_figure(
            build_figure("cluster_k_selection", res, args),
            key="cluster.k",
            stem=f"cluster_k_{source}_{task_name}",
            recipe=("cluster_k_selection", args),
        )
        left, right = st.columns(2)
        with left:
            show_figure(
                build_figure("cluster_contingency", res, args),
                key="cluster.table",
                stem=f"cluster_contingency_{source}_{task_name}",
                recipe=("cluster_contingency", args),
            )
        with right:
            show_figure(
                build_figure("cluster_scatter", res, args),
                key="cluster.scatter",
                stem=f"cluster_scatter_{source}_{task_name}",
                recipe=("cluster_scatter", args),
            )
