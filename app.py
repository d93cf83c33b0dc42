"""Home: what the workbench does, the model zoo's state, and the button that builds the default zoo."""

import streamlit as st

import ui
from core.zoo import DEFAULT_PLAN, default_zoo_ids, ensure_default
from ui import cache
from ui.errors import shown_errors

settings = ui.frame("Mixmerge Workbench", icon=":material/science:")

st.markdown(
    """
How do neural networks combine? **Merge weights** — model soups, task arithmetic, TIES, DARE,
Fisher, RegMean, PCB, AdaMerging, permutation alignment — and **mix data** — mixup, CutMix, FMix,
ResizeMix, MaskMix, manifold mixup. Drag a slider and see per-task accuracy of the merged model,
loss along interpolation paths, mixed samples with their label weights, the neural-collapse
geometry of the features and the clusters they form, with statistics that say whether a
difference is real. Every figure exports into a paper (PDF/SVG/PNG + data + provenance).
"""
)

zoo = cache.zoo(settings.workspace)
records = zoo.list()
default_ids = default_zoo_ids()
present = {r.id for r in records}
missing = [i for i in default_ids if i not in present]

c1, c2, c3 = st.columns(3)
c1.metric("Models in the zoo", len(records))
c2.metric("Default zoo", f"{len(default_ids) - len(missing)} / {len(default_ids)}")
c3.metric("Fine-tuned task models", sum(r.role == "finetune" for r in records))

st.subheader("Model zoo")
if missing:
    st.info(
        f"The default zoo is {'not built yet' if len(missing) == len(default_ids) else 'incomplete'}: "
        f"a base MLP pre-trained on digits 0-4 of {len(DEFAULT_PLAN.domains)} digit domains, one fine-tune "
        "per domain on all ten digits "
        f"(task vectors), and {len(DEFAULT_PLAN.independent_seeds)} independently trained models per "
        "architecture (mode connectivity). It trains in about a minute on a laptop CPU."
    )
    if st.session_state.get("home.cancel"):
        st.warning("Build cancelled: finished models are kept, the build resumes where it stopped.")
    if st.button("Build default zoo", type="primary", key="home.build"):
        bar = st.progress(0.0, text="Starting…")
        # any click interrupts this run at the next progress update; a model is stored only when done
        st.button("Cancel", key="home.cancel")
        with shown_errors("Building the default zoo"):

            def on_progress(info: dict) -> None:
                k, n = info["model"], info["models"]
                frac = (k - 1) / n
                if info.get("epochs"):
                    frac += (info.get("epoch", 0) / info["epochs"]) / n
                acc = info.get("test_accuracy")
                text = info["message"] + (f" · test accuracy {acc:.3f}" if acc is not None else "")
                bar.progress(min(frac, 1.0), text=text)

            ensure_default(zoo, device=settings.device, progress=on_progress)
            bar.progress(1.0, text="Default zoo ready")
            st.success("Default zoo ready.")
            st.rerun()
else:
    st.success("The default zoo is complete.")

if records:
    st.dataframe(
        zoo.table(),
        hide_index=True,
        width="stretch",
        column_config={"test_accuracy": st.column_config.NumberColumn(format="%.3f")},
    )
st.caption("Manage models, train your own or import checkpoints on the **Model Zoo** page.")
