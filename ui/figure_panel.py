"""``show_figure``: render a figure and offer its export (every page's figures go through here).

Downloads are generated when the button is clicked (Streamlit's deferred ``data`` callable), so
a page pays nothing for its export panel until someone exports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from core.figures import MIME, SIZE_LABELS, SIZES, render, safe_name, static_available
from core.figures.export import styled
from core.figures.layout import title_text
from core.figures.store import FigureStore
from core.zoo import default_workspace

from . import state
from .errors import shown_errors

STATIC_LABELS = {"png": "PNG (300 dpi)", "svg": "SVG", "pdf": "PDF"}
PREVIEW_HELP = (
    "The figure as exported: laid out for the chosen print size (legend, fonts, tick angles), "
    "at its true size in CSS pixels (96 per inch)."
)


def _deferred(fn: Callable[[], bytes]) -> Callable[[], bytes]:
    """A download callable that never raises into Streamlit's download thread."""

    def call() -> bytes:
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - the download gets the message instead
            return f"Export failed: {type(err).__name__}: {err}".encode()

    return call


def show_figure(
    fig: go.Figure,
    *,
    key: str,
    stem: str,
    data: Any = None,
    meta: Mapping[str, Any] | None = None,
    recipe: Mapping[str, Any] | tuple[str, Mapping[str, Any]] | None = None,
    caption: str = "",
) -> None:
    """Draw ``fig`` and, under it, an export panel: PNG/SVG/PDF/HTML/CSV/JSON downloads in a
    chosen print size, a notebook that recomputes it (with ``recipe``), and "Add to figures".

    Args:
        fig: a figure from ``core.figures``.
        key: unique widget key prefix ("<page>.<name>").
        stem: file name stem for downloads, e.g. "merge_lab_accuracy" (made file-name safe).
        data: the DataFrame behind the figure (default: extracted from the traces).
        meta: provenance (model ids under "models", method, hyperparameters, seed...); by
            default derived from a ``core.recipes`` recipe (its kind and compute args).
        recipe: ``(kind, args)`` of a ``core.recipes`` kind, or ``{"kind": ..., "args": {...}}``
            of a ``core.notebook_export`` template; enables the notebook download and is stored
            with the figure.
        caption: default caption when the figure is added to the Figures page.
    """
    if not isinstance(fig, go.Figure):
        raise TypeError(f"fig must be a plotly.graph_objects.Figure, got {type(fig).__name__}")
    stem = safe_name(stem)
    if recipe is not None:
        from core.notebook_export import as_recipe

        recipe = as_recipe(recipe)
        if meta is None:
            meta = _recipe_meta(recipe)
    st.plotly_chart(fig, key=f"{key}.chart", config={"displaylogo": False})
    with st.expander("Export", expanded=False):
        _export_panel(fig, key=key, stem=stem, data=data, meta=meta, recipe=recipe, caption=caption)


def _recipe_meta(recipe: Mapping[str, Any]) -> dict[str, Any] | None:
    """The provenance of a ``core.recipes`` kind (None for a template without a registry entry)."""
    from core.recipes import load_recipes, recipe_meta

    if recipe.get("kind") not in load_recipes():
        return None
    return recipe_meta(recipe["kind"], recipe.get("args", {}))


def _export_panel(
    fig: go.Figure,
    *,
    key: str,
    stem: str,
    data: Any,
    meta: Mapping[str, Any] | None,
    recipe: Mapping[str, Any] | None,
    caption: str,
) -> None:
    c_size, c_title, c_show = st.columns([2, 4, 1], vertical_alignment="bottom")
    size = c_size.selectbox(
        "Size", list(SIZES), format_func=lambda s: SIZE_LABELS.get(s, s), key=f"{key}.size"
    )
    original = title_text(fig)
    show_title = c_show.toggle("Title", value=True, key=f"{key}.show_title")
    edited = c_title.text_input(
        "Title", value=original, key=f"{key}.title", disabled=not show_title
    )
    title: str | None = (None if edited == original else edited) if show_title else ""
    frozen = go.Figure(fig)  # the callables below must not see later changes to ``fig``
    if title is not None:
        frozen.update_layout(title_text=title)
    if st.toggle("Preview at this size", key=f"{key}.preview", help=PREVIEW_HELP):
        st.plotly_chart(
            styled(frozen, size),
            key=f"{key}.preview_chart",
            theme=None,
            width="content",
            config={"staticPlot": True, "displaylogo": False},
        )
    workspace = st.session_state.get(state.WORKSPACE) or str(default_workspace())
    can_static = static_available()
    cols = st.columns(7 if recipe else 6)
    for col, fmt in zip(cols, ("png", "svg", "pdf", "html", "csv", "json"), strict=False):
        label = STATIC_LABELS.get(
            fmt, {"html": "HTML", "csv": "Data (CSV)", "json": "Provenance"}.get(fmt, fmt)
        )

        def make(fmt: str = fmt) -> bytes:
            return render(frozen, fmt, size=size, data=data, meta=meta, workspace=workspace)

        col.download_button(
            label,
            _deferred(make),
            file_name=f"{stem}.{fmt}",
            mime=MIME[fmt],
            key=f"{key}.{fmt}",
            on_click="ignore",
            disabled=fmt in STATIC_LABELS and not can_static,
        )
    if recipe:
        from core.notebook_export import notebook_bytes

        def make_nb() -> bytes:
            return notebook_bytes(recipe, workspace=workspace, title=caption or stem)

        cols[6].download_button(
            "Notebook",
            _deferred(make_nb),
            file_name=f"{stem}.ipynb",
            mime="application/x-ipynb+json",
            key=f"{key}.ipynb",
            on_click="ignore",
            help="A runnable notebook that recomputes this figure from the workspace",
        )
    if not can_static:
        st.caption(
            "PNG, SVG and PDF need Chromium (`sudo apt-get install chromium fonts-open-sans`); "
            "HTML, CSV and JSON work without it."
        )
    # One form: the typed caption and the click travel in the same message, so a caption
    # that was never blurred (or whose rerun was cut short by the click) is not lost.
    with st.form(key=f"{key}.add_form", border=False, enter_to_submit=False):
        c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
        text = c1.text_input(
            "Caption", value=caption, key=f"{key}.caption", placeholder="Caption for the paper"
        )
        add = c2.form_submit_button(
            "Add to figures", key=f"{key}.add", icon=":material/add_photo_alternate:"
        )
    if add:
        with shown_errors("Adding the figure"):
            entry = FigureStore(workspace).add(
                frozen,
                caption=text,
                stem=stem,
                data=data,
                meta=meta,
                recipe=recipe,
                page=key.split(".")[0],
                size=size,
            )
            st.success(
                f"Added **{entry.id}** to the Figures page"
                + (f" with the caption “{entry.caption}”." if entry.caption else " (no caption).")
            )
