"""``show_figure``: render a figure and offer its export (every page's figures go through here)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from core.figures import apply_paper, figure_data, provenance


def show_figure(
    fig: go.Figure,
    *,
    key: str,
    stem: str,
    data: Any = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Draw ``fig`` and, under it, download buttons for its HTML, data (CSV) and provenance (JSON).

    Args:
        fig: a figure from ``core.figures``.
        key: unique widget key prefix ("<page>.<name>").
        stem: file name stem for downloads, e.g. "merge_lab_accuracy".
        data: the DataFrame behind the figure (default: extracted from the traces).
        meta: provenance (model ids, method, hyperparameters, seed...).
    """
    st.plotly_chart(fig, key=f"{key}.chart", config={"displaylogo": False})
    with st.expander("Export", expanded=False):
        c1, c2, c3 = st.columns(3)
        html = apply_paper(go.Figure(fig)).to_html(include_plotlyjs=True, full_html=True)
        c1.download_button(
            "HTML", html, file_name=f"{stem}.html", mime="text/html", key=f"{key}.html"
        )
        df = data if data is not None else figure_data(fig)
        c2.download_button("Data (CSV)", df.to_csv(index=False), file_name=f"{stem}.csv", mime="text/csv",
                           key=f"{key}.csv")  # fmt: skip
        c3.download_button("Provenance (JSON)", json.dumps(provenance(meta), indent=2, default=str),
                           file_name=f"{stem}.json", mime="application/json", key=f"{key}.json")  # fmt: skip
