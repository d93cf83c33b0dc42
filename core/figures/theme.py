"""The "paper" template: fonts, a colour-blind-safe palette, thin axes and named sizes.

Sizes are in pixels at 96 px/inch for the on-screen layout; export scales PNGs to 300 dpi.
"""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

# Okabe-Ito palette (colour-blind safe), black last
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
FONT_FAMILY = "Open Sans, Liberation Sans, Arial, sans-serif"
DPI = 300
PX_PER_INCH = 96
SIZES: dict[str, tuple[float, float]] = {  # name -> (width, height) in inches
    "column": (3.5, 2.6),
    "double": (7.0, 3.2),
    "square": (3.5, 3.5),
    "screen": (8.0, 4.5),
}

PAPER = go.layout.Template(
    layout=go.Layout(
        font=dict(family=FONT_FAMILY, size=10, color="#222222"),
        colorway=list(PALETTE),
        paper_bgcolor="white",
        plot_bgcolor="white",
        margin=dict(l=50, r=15, t=35, b=45),
        title=dict(font=dict(size=11), x=0.02, xanchor="left"),
        legend=dict(font=dict(size=9), bgcolor="rgba(255,255,255,0.7)", borderwidth=0),
        xaxis=dict(showline=True, linewidth=0.8, linecolor="#333333", ticks="outside", tickwidth=0.8,
                   ticklen=3, showgrid=True, gridcolor="#EBEBEB", gridwidth=0.5, zeroline=False, mirror=False),
        yaxis=dict(showline=True, linewidth=0.8, linecolor="#333333", ticks="outside", tickwidth=0.8,
                   ticklen=3, showgrid=True, gridcolor="#EBEBEB", gridwidth=0.5, zeroline=False, mirror=False),
        coloraxis=dict(colorbar=dict(thickness=10, outlinewidth=0)),
    )
)  # fmt: skip
pio.templates["paper"] = PAPER


def size_px(size: str) -> tuple[int, int]:
    """Named size -> (width, height) in layout pixels."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    w, h = SIZES[size]
    return round(w * PX_PER_INCH), round(h * PX_PER_INCH)


def apply_paper(fig: go.Figure, *, size: str | None = None) -> go.Figure:
    """Apply the paper template (and optionally a named size) to ``fig`` in place; returns it."""
    fig.update_layout(template=PAPER)
    if size is not None:
        w, h = size_px(size)
        fig.update_layout(width=w, height=h)
    return fig
