"""Home: what the workbench does, the model zoo's state, and the button that builds the default zoo."""

import streamlit as st

import ui
from core.zoo import DEFAULT_PLAN, default_zoo_ids
from core.zoo import worker as zoo_worker
from ui.zoo_guard import open_zoo

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

zoo = open_zoo(settings.workspace, key="home")
records = zoo.list()
default_ids = default_zoo_ids()
present = {r.id for r in records}
missing = [i for i in default_ids if i not in present]

c1, c2, c3 = st.columns(3)
c1.metric("Models in the zoo", len(records))
c2.metric("Default zoo", f"{len(default_ids) - len(missing)} / {len(default_ids)}")
c3.metric("Fine-tuned task models", sum(r.role == "finetune" for r in records))

st.subheader("Model zoo")


def start_build() -> None:
    """Button callback: runs before the panel reruns, so the panel shows the new build."""
    st.session_state["home.building"] = True
    try:
        zoo_worker.start_build(settings.workspace, device=settings.device)
    except (OSError, ValueError) as err:
        st.session_state["home.build_error"] = f"{type(err).__name__}: {err}"


def cancel_build() -> None:
    zoo_worker.cancel_build(settings.workspace)


@st.fragment(run_every=1.0)
def build_panel() -> None:
    """The background build's state, polled every second (only this panel reruns)."""
    status = zoo_worker.build_status(settings.workspace)
    if err := st.session_state.pop("home.build_error", None):
        st.error(f"The build could not start: {err}")
    if status.running:
        elapsed = f" · {status.elapsed_s:.0f} s" if status.elapsed_s is not None else ""
        st.progress(min(max(status.fraction, 0.0), 1.0), text=status.message + elapsed)
        st.caption(
            "The build runs in its own process: closing this tab does not stop it, and finished "
            "models are stored as they complete."
        )
        st.button("Cancel build", key="home.cancel", on_click=cancel_build)
        return
    if status.state == "done" and st.session_state.get("home.building"):
        st.session_state["home.building"] = False
        st.rerun()  # the whole page: metrics and table show the new models
    missing_now = [i for i in default_ids if i not in {r.id for r in zoo.list()}]
    if status.state == "failed" and missing_now:
        st.error(f"The last build failed: {status.error or status.message}")
    elif status.state == "cancelled" and missing_now:
        st.warning("Build cancelled: finished models are kept, the build resumes where it stopped.")
    if not missing_now:
        st.success("The default zoo is complete.")
        return
    if zoo.read_only:
        st.info(
            f"The default zoo is incomplete ({len(missing_now)} of {len(default_ids)} models "
            "missing) and cannot be built in a read-only workspace."
        )
        return
    st.info(
        f"The default zoo is {'not built yet' if len(missing_now) == len(default_ids) else 'incomplete'}: "
        f"a base MLP pre-trained on digits 0-4 of {len(DEFAULT_PLAN.domains)} digit domains, one "
        "fine-tune per domain on all ten digits (task vectors), and "
        f"{len(DEFAULT_PLAN.independent_seeds)} "
        "independently trained models per architecture (mode connectivity). It trains in one to "
        "two minutes on an idle 2-core CPU, longer under load (docs/BENCHMARKS.md, 'Default zoo')."
        + ("" if len(missing_now) == len(default_ids) else f" Missing: {', '.join(missing_now)}.")
    )
    st.button("Build default zoo", type="primary", key="home.build", on_click=start_build)


build_panel()

if records:
    st.dataframe(
        zoo.table(),
        hide_index=True,
        width="stretch",
        column_config={"test_accuracy": st.column_config.NumberColumn(format="%.3f")},
    )
st.caption("Manage models, train your own or import checkpoints on the **Model Zoo** page.")
