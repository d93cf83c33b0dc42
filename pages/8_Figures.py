"""Figures: every figure added from any page — preview, caption, recipe; download one or all
as a zip; re-render all in another size; delete."""

import json

import streamlit as st

import ui
from core.figures import FORMATS, SIZE_LABELS, SIZES, static_available
from core.figures.store import FigureStore
from ui.errors import shown_errors

settings = ui.frame("Figures", icon=":material/image:")
store = FigureStore(settings.workspace)
entries = store.list()

if not entries:
    st.info(
        "No figures yet. Every figure in the workbench has an **Export** panel under it; "
        "**Add to figures** collects it here with its caption, data and recipe."
    )
    st.stop()

all_formats = list(FORMATS) + ["ipynb"]
static_ok = static_available()
c1, c2 = st.columns([1, 2])
size = c1.selectbox(
    "Size", list(SIZES), format_func=lambda s: SIZE_LABELS.get(s, s), key="figures.size"
)
default_formats = all_formats if static_ok else ["html", "csv", "json", "ipynb"]
formats = c2.multiselect("Formats", all_formats, default=default_formats, key="figures.formats")
if not static_ok:
    st.warning("PNG, SVG and PDF need Chromium (`sudo apt-get install chromium fonts-open-sans`).")

a1, a2, _ = st.columns([1, 1, 2])
with a1:
    st.download_button(
        f"Download all {len(entries)} (zip)",
        lambda: store.zip(size=size, formats=formats or ["csv"]),
        file_name="figures.zip",
        mime="application/zip",
        key="figures.zip_all",
        on_click="ignore",
        icon=":material/folder_zip:",
        disabled=not formats,
    )
with a2:
    rerender = st.button(
        "Re-render all in this size",
        key="figures.rerender",
        icon=":material/autorenew:",
        help="Writes PNG/SVG/PDF of every figure into workspace/figures/<id>/export/",
        disabled=not static_ok,
    )
if rerender:
    bar = st.progress(0.0, text="Rendering…")
    with shown_errors("Re-rendering"):
        written = store.rerender(
            size, progress=lambda k, n, fid: bar.progress(k / max(n, 1), text=fid or "done")
        )
        st.success(f"Wrote {len(written)} files in the {SIZE_LABELS[size]} size.")
        entries = store.list()

st.divider()


def _save_caption(fig_id: str) -> None:
    with shown_errors("Saving the caption"):
        store.set_caption(fig_id, st.session_state[f"figures.caption.{fig_id}"])


for e in entries:
    with st.container(border=True):
        left, right = st.columns([3, 2])
        with left:
            with shown_errors("Loading the figure"):
                st.plotly_chart(
                    e.figure(), key=f"figures.preview.{e.id}", config={"displaylogo": False}
                )
        with right:
            st.markdown(
                f"**{e.stem}** · from `{e.page or '?'}` · {e.created} · default size *{e.size}*"
            )
            st.text_area(
                "Caption",
                value=e.caption,
                key=f"figures.caption.{e.id}",
                on_change=_save_caption,
                args=(e.id,),
                height=80,
            )
            with st.expander("Recipe and provenance"):
                st.json({"recipe": e.recipe, "meta": e.meta}, expanded=True)
            b1, b2 = st.columns(2)
            b1.download_button(
                "Download (zip)",
                lambda fid=e.id: store.zip([fid], size=size, formats=formats or ["csv"]),
                file_name=f"{e.stem}.zip",
                mime="application/zip",
                key=f"figures.zip.{e.id}",
                on_click="ignore",
                disabled=not formats,
            )
            sure = b2.checkbox("Confirm delete", key=f"figures.sure.{e.id}")
            if b2.button("Delete", key=f"figures.delete.{e.id}", disabled=not sure):
                with shown_errors("Delete"):
                    store.delete(e.id)
                    st.rerun()
        if e.recipe:
            st.caption("Recipe: " + json.dumps(e.recipe)[:300])
