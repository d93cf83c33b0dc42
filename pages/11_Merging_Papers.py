"""Merging papers: the studies behind the workbench, each runnable on the zoo with its key
figure — Sparse Model Soups (Zimmer et al.), more to come as they land in core.papers."""

import streamlit as st

import ui
from core.figures.papers import sparse_soup_data, sparse_soup_figure
from ui import cache, cache_papers
from ui.errors import shown_errors
from ui.figure_panel import show_figure

settings = ui.frame("Merging Papers", icon=":material/menu_book:")
zoo = cache.zoo(settings.workspace)
records = zoo.list()
if not records:
    st.info("The studies start from zoo models: build the default zoo on the Home page.")
    st.stop()
by_id = {r.id: r for r in records}
ids = [r.id for r in records if r.arch in ("mlp", "cnn", "resnet20")]
if not ids:
    st.info("No built-in-architecture model (mlp, cnn, resnet20) in the zoo yet.")
    st.stop()
tasks = cache.tasks_available()
ss = st.session_state
device = str(settings.torch_device)


def progress_bar(label: str):
    """A progress bar and the (done, total) callback that drives it."""
    bar = st.progress(0.0, text=label)
    return bar, lambda done, total: bar.progress(
        min(done / max(total, 1), 1.0), text=f"{label} {done}/{total}"
    )


(tab_sms,) = st.tabs(["Sparse Model Soups"])

with tab_sms:
    st.caption(
        "Zimmer et al., ICLR 2024 (arXiv 2306.16788): prune by magnitude, retrain several copies "
        "of the pruned model with different seeds under the same mask, average them, and start "
        "the next prune-retrain cycle from the average. Claim: the soup beats each of its "
        "ingredients and stays exactly as sparse."
    )
    c1, c2 = st.columns(2)
    default = ids.index("mlp-mnist-s1") if "mlp-mnist-s1" in ids else 0
    model_id = c1.selectbox("Dense model", ids, index=default, key="papers.sms_model")
    rec = by_id[model_id]
    task_name = c2.selectbox(
        "Task",
        tasks,
        index=tasks.index(rec.task) if rec.task in tasks else 0,
        key="papers.sms_task",
    )
    d1, d2, d3, d4, d5 = st.columns(5)
    cycles = d1.slider("Cycles", 1, 5, 3, key="papers.sms_cycles")
    prune = d2.select_slider(
        "Pruned per cycle", [0.2, 0.3, 0.4, 0.5, 0.6, 0.7], value=0.5, key="papers.sms_prune"
    )
    n_ingredients = d3.slider("Ingredients", 2, 6, 3, key="papers.sms_ingredients")
    epochs = d4.slider("Retraining epochs", 1, 10, 2, key="papers.sms_epochs")
    lr = d5.select_slider(
        "Learning rate (Adam)", [3e-4, 1e-3, 3e-3, 1e-2], value=1e-3, key="papers.sms_lr"
    )
    request = (model_id, task_name, cycles, prune, n_ingredients, epochs, lr, settings.seed)
    if st.button("Run Sparse Model Soups", type="primary", key="papers.run_sms"):
        ss["papers.sms_request"] = request
    if ss.get("papers.sms_request") == request:
        with shown_errors("Sparse Model Soups"):
            bar, cb = progress_bar("Retraining ingredients…")
            res = cache_papers.sparse_model_soup(
                settings.workspace,
                model_id,
                rec.sha256,
                task_name,
                cycles,
                prune,
                n_ingredients,
                epochs,
                lr,
                settings.seed,
                device,
                progress=cb,
            )
            bar.empty()
            show_figure(
                sparse_soup_figure(res),
                key="papers.sms",
                stem=f"sparse_model_soup_{model_id}_{task_name}",
                data=sparse_soup_data(res),
                meta={"models": [model_id], "task": task_name, "seed": settings.seed},
                recipe={
                    "kind": "sparse_model_soup",
                    "args": {
                        "model": model_id,
                        "task": task_name,
                        "cycles": cycles,
                        "prune_fraction": prune,
                        "n_ingredients": n_ingredients,
                        "epochs": epochs,
                        "lr": lr,
                        "seed": settings.seed,
                    },
                },
            )
            st.dataframe(sparse_soup_data(res), hide_index=True, key="papers.sms_table")
    else:
        st.caption(
            "Each ingredient is a short retraining run: cycles × ingredients runs in all "
            "(about a second per epoch for the default MLP on 2 CPU cores)."
        )
