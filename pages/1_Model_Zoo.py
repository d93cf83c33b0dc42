"""Model Zoo: all models, train a custom model, import a checkpoint, delete a model."""

from pathlib import Path

import streamlit as st

import ui
from ui import cache
from ui.errors import shown_errors
from ui.external_import import import_panel
from ui.figure_panel import show_figure
from ui.zoo_guard import open_zoo
from core.recipes import build_figure
from core.models import ARCHITECTURES
from core.zoo import import_checkpoint, train_custom

settings = ui.frame("Model Zoo", icon=":material/inventory_2:")
zoo = open_zoo(settings.workspace, key="zoo")

table = zoo.table()
if table.empty:
    st.info(
        "The zoo is empty. Build the default zoo on the Home page, or train / import a model below."
    )
else:
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={"test_accuracy": st.column_config.NumberColumn(format="%.3f")},
    )

tab_train, tab_import, tab_external, tab_details, tab_delete = st.tabs(
    ["Train a model", "Import a checkpoint", "Import external models", "Details", "Delete"]
)

with tab_train:
    if st.session_state.get("zoo.cancel"):
        st.warning("Training cancelled: nothing was stored (a model is stored only when done).")
    with st.form("zoo.train_form"):
        c1, c2 = st.columns(2)
        arch = c1.selectbox("Architecture", ARCHITECTURES.names(), key="zoo.arch")
        task = c2.selectbox("Dataset / task", cache.tasks_available(), key="zoo.task")
        c3, c4, c5 = st.columns(3)
        epochs = c3.slider("Epochs", 1, 30, 5, key="zoo.epochs")
        width = c4.number_input(
            "Width",
            min_value=4,
            max_value=2048,
            value=ARCHITECTURES[arch].defaults()["width"],
            step=4,
            key="zoo.width",
        )
        seed = c5.number_input(
            "Seed", min_value=0, max_value=2**31 - 1, value=settings.seed, step=1, key="zoo.seed"
        )
        name = st.text_input("Name (optional)", key="zoo.name")
        submitted = st.form_submit_button("Train", type="primary")
    if submitted:
        bar = st.progress(0.0, text="Training…")
        # any click interrupts this run at the next progress update, before anything is stored
        st.button("Cancel training", key="zoo.cancel")

        def on_progress(info: dict) -> None:
            frac = info["step"] / max(info["steps"], 1)
            acc = info.get("test_accuracy")
            bar.progress(
                min(frac, 1.0),
                text=f"epoch {info['epoch']}/{info['epochs']} · loss {info['train_loss']:.3f}"
                + (f" · test accuracy {acc:.3f}" if acc is not None else ""),
            )

        with shown_errors("Training"):
            rec = train_custom(
                zoo,
                arch=arch,
                task=task,
                epochs=int(epochs),
                width=int(width),
                seed=int(seed),
                name=name or None,
                device=settings.device,
                progress=on_progress,
            )
            bar.progress(1.0, text="done")
            st.success(f"Stored **{rec.id}** · test accuracy {rec.test_accuracy:.3f}")

with tab_import:
    st.caption(
        "Safetensors, or a PyTorch state dict (loaded with `weights_only=True`: files that would run code are refused)."
    )
    up = st.file_uploader(
        "Checkpoint", type=["safetensors", "pt", "pth", "bin", "ckpt"], key="zoo.upload"
    )
    c1, c2, c3 = st.columns(3)
    imp_arch = c1.selectbox("Architecture", ARCHITECTURES.names(), key="zoo.imp_arch")
    imp_width = c2.number_input(
        "Width",
        min_value=4,
        max_value=2048,
        value=ARCHITECTURES[imp_arch].defaults()["width"],
        step=4,
        key="zoo.imp_width",
    )
    imp_task = c3.selectbox("Task it was trained on", cache.tasks_available(), key="zoo.imp_task")
    imp_name = st.text_input("Name", value=Path(up.name).stem if up else "", key="zoo.imp_name")
    if st.button("Import", disabled=up is None, key="zoo.import"):
        with shown_errors("Import"):
            rec = import_checkpoint(
                zoo,
                up.getvalue(),
                up.name,
                arch=imp_arch,
                arch_kwargs={"width": int(imp_width)},
                task=imp_task,
                name=imp_name or None,
            )
            st.success(f"Imported **{rec.id}**.")

with tab_external:  # Hugging Face folders, timm names, package.module:factory + user data
    import_panel(zoo)

with tab_details:
    ids = table["id"].tolist()
    if ids:
        pick = st.selectbox("Model", ids, key="zoo.detail_id")
        rec = zoo.get(pick)
        hist = rec.metrics.get("history")
        if hist and hist.get("epoch"):
            args = {"models": [rec.id], "title": f"Training of {rec.id}"}
            show_figure(
                build_figure("training_history", {rec.id: hist}, args),
                key="zoo.history",
                stem=f"training_{rec.id}",
                recipe=("training_history", args),
            )
        st.json(
            {k: v for k, v in rec.to_dict().items() if k != "metrics"}
            | {"metrics": {k: v for k, v in rec.metrics.items() if k != "history"}},
            expanded=False,
        )
    else:
        st.caption("No models yet.")

with tab_delete:
    ids = table["id"].tolist()
    if ids:
        victim = st.selectbox("Model to delete", ids, key="zoo.delete_id")
        sure = st.checkbox(f"Yes, delete {victim} and its checkpoint", key="zoo.delete_sure")
        if st.button("Delete", disabled=not sure, key="zoo.delete"):
            with shown_errors("Delete"):
                zoo.delete(victim)
                st.success(f"Deleted {victim}.")
                st.rerun()
    else:
        st.caption("No models yet.")
