"""Merge Search: CMA-ES over per-model weights, per-layer coefficients and hyperparameters of a
merge, scored on a validation split; resumable, with the best-so-far curve."""

import streamlit as st

import ui
from ui import cache, search_panel
from ui.errors import shown_errors
from ui.figure_panel import show_figure
from core.figures.search import search_figure
from core.search import load_search_spec, stored_spec

settings = ui.frame("Merge Search", icon=":material/travel_explore:")
zoo = cache.zoo(settings.workspace)
st.caption(
    "An evolutionary search (CMA-ES, Hansen's `cma` package) for the merge coefficients that "
    "score best on a validation split: a seeded subset of each task's *training* set, which the "
    "test sets never see. The best point is scored once on test at the end. Every evaluation "
    "is stored in the workspace: rerunning a search of the same name continues where it "
    "stopped. The same search runs from the command line (`python -m core search "
    "SEARCH.yaml`, `--backend ray` for a Ray cluster)."
)
if not zoo.list():
    st.info("The zoo is empty. Build the default zoo on the **Home** page (one click).")
    st.page_link("app.py", label="Go to Home", icon=":material/home:")
    st.stop()

if st.session_state.get(search_panel.CANCEL):
    st.warning("Cancelled: the finished evaluations are stored; Run again to resume.")

st.subheader("Setup")
raw = search_panel.setup(zoo, settings.seed)
backend = st.radio(
    "Run on",
    ["inprocess", "ray"],
    format_func={"inprocess": "this process", "ray": "Ray (local cluster)"}.get,
    horizontal=True,
    key="search.backend",
)
run = st.button("Run search", type="primary", key="search.run", disabled=raw is None)
if run and raw is not None:
    with shown_errors("The search"):
        spec = load_search_spec(raw)
        summary = search_panel.run(zoo, spec, backend=backend, device=str(settings.torch_device))
        st.session_state[search_panel.SHOWN] = spec.name
        if summary["resumed"]:
            st.info(
                f"Resumed {summary['resumed']} evaluations stored earlier; "
                f"evaluated {summary['n_evals'] - summary['resumed']} new."
            )
        st.success(
            f"Search **{spec.name}**: {summary['n_evals']} evaluations, {summary['status']}."
        )

st.subheader("Stored searches")
stored = search_panel.stored_searches(zoo)
if not stored:
    st.info("No search in this workspace yet: set one up above and run it.")
    st.stop()
names = list(stored)
if st.session_state.get(search_panel.SHOWN) not in names:
    st.session_state[search_panel.SHOWN] = names[-1]
name = st.selectbox(
    "Search",
    names,
    format_func=lambda n: search_panel.describe(stored[n]),
    key=search_panel.SHOWN,
)
summary = stored[name]
with shown_errors("Showing the search"):
    args = {"search": name}
    result = cache.recipe_result(settings.workspace, "search_progress", args)
    n_done = len(result["evals"])
    if summary.get("status") != "done":
        st.caption(f"Stopped after {n_done} of {summary['spec']['budget']} evaluations.")
        if st.button("Resume this search", key="search.resume"):
            done = search_panel.run(
                zoo, stored_spec(summary), backend=backend, device=str(settings.torch_device)
            )
            st.session_state["search.resumed"] = done["resumed"]
            st.rerun()
    resumed = st.session_state.pop("search.resumed", None)
    if resumed is not None:
        st.info(f"Resumed {resumed} evaluations stored earlier, then continued.")
    show_figure(
        search_figure(result),
        key="search.curve",
        stem=f"merge_search_{name}",
        data=result["evals"],
        recipe=("search_progress", args),
        meta={"kind": "search_progress", **args, **summary["spec"]},
        caption=f"CMA-ES search {name}: validation score per evaluation and the best so far.",
    )
    st.markdown("**Best point**")
    search_panel.best_table(summary)
