"""The "paper" template: Open Sans, a colour-blind-safe palette, thin axes and named sizes.

Layout sizes are CSS pixels at 96 px per inch (what Plotly and Chromium use); a figure of the
"column" size is 3.5 in wide on paper: 336 px in the layout, 252 pt in a PDF/SVG, and 1050 px
in a 300-dpi PNG (export scales PNGs by ``DPI / PX_PER_INCH``). Every height is a multiple of
1/12 in so that the 300-dpi pixel sizes are whole numbers. Font sizes are chosen for print:
10 px = 7.5 pt for ticks and legends, 11 px = 8.25 pt for titles, readable at 100 % zoom in a
two-column paper.
"""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

# Okabe & Ito (2008) colour-blind-safe palette; black last. Yellow is kept last-but-one
# because it is weak on white.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def rgba(hex_colour: str, alpha: float) -> str:
    """``"#0072B2"`` and 0.2 -> ``"rgba(0,114,178,0.2)"`` (a translucent fill of a colour)."""
    h = hex_colour.lstrip("#")
    if len(h) != 6:
        raise ValueError(f"hex_colour must be '#RRGGBB', got {hex_colour!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


# For more than eight categories (e.g. 10 classes): Tableau 10 (Stone 2016), ten distinct hues;
# figures pair it with :data:`SYMBOLS` so that classes also differ in greyscale.
PALETTE_10 = (
    "#4E79A7",
    "#F28E2B",
    "#E15759",
    "#76B7B2",
    "#59A14F",
    "#EDC948",
    "#B07AA1",
    "#FF9DA7",
    "#9C755F",
    "#79706E",
)
SYMBOLS = (
    "circle",
    "square",
    "diamond",
    "triangle-up",
    "x",
    "triangle-down",
    "cross",
    "star",
    "pentagon",
    "hexagon",
    "circle-open",
    "square-open",
)
# Sequential and diverging scales that stay readable in greyscale and for colour-blind readers.
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"
FONT_FAMILY = "Open Sans, Liberation Sans, Arial, sans-serif"
DPI = 300
PX_PER_INCH = 96
SIZES: dict[str, tuple[float, float]] = {  # name -> (width, height) in inches
    "column": (3.5, 2.5),  # single column of a two-column paper (ICML/NeurIPS/IEEE ~3.3-3.5 in)
    "column_tall": (3.5, 3.5),
    "double": (7.0, 3.0),  # full text width of a two-column paper (~6.75-7 in)
    "double_tall": (7.0, 5.0),
    "square": (3.5, 3.5),
    "screen": (8.0, 4.5),  # slides and on-screen use
}
SIZE_LABELS: dict[str, str] = {
    "column": "single column (3.5 × 2.5 in)",
    "column_tall": "single column, tall (3.5 × 3.5 in)",
    "double": "double column (7 × 3 in)",
    "double_tall": "double column, tall (7 × 5 in)",
    "square": "square (3.5 × 3.5 in)",
    "screen": "screen / slides (8 × 4.5 in)",
}

_AXIS = dict(
    showline=True,
    linewidth=0.75,
    linecolor="#333333",
    mirror=False,
    ticks="outside",
    tickwidth=0.75,
    ticklen=3,
    tickcolor="#333333",
    tickfont=dict(size=10),
    title=dict(font=dict(size=10), standoff=4),
    showgrid=True,
    gridcolor="#EBEBEB",
    gridwidth=0.5,
    zeroline=False,
    automargin=True,
    autotickangles=[0, 30, 45],  # never 90°: long labels tilt at most 45°
)

PAPER = go.layout.Template(
    layout=go.Layout(
        font=dict(family=FONT_FAMILY, size=10, color="#222222"),
        colorway=list(PALETTE),
        colorscale=dict(sequential=SEQUENTIAL, diverging=DIVERGING),
        paper_bgcolor="white",
        plot_bgcolor="white",
        margin=dict(l=48, r=12, t=30, b=40),
        title=dict(font=dict(size=11), x=0.02, xanchor="left"),
        legend=dict(
            font=dict(size=9),
            bgcolor="rgba(255,255,255,0.7)",
            borderwidth=0,
            tracegroupgap=2,
            itemwidth=30,
        ),
        xaxis=_AXIS,
        yaxis=_AXIS,
        coloraxis=dict(colorbar=dict(thickness=8, outlinewidth=0, tickfont=dict(size=9))),
        hoverlabel=dict(font=dict(family=FONT_FAMILY)),
    ),
    data=dict(
        scatter=[go.Scatter(line=dict(width=1.5), marker=dict(size=5))],
        bar=[go.Bar(marker=dict(line=dict(width=0)))],
        heatmap=[go.Heatmap(colorbar=dict(thickness=8, outlinewidth=0))],
        contour=[go.Contour(colorbar=dict(thickness=8, outlinewidth=0), line=dict(width=0.5))],
    ),
)
pio.templates["paper"] = PAPER


def size_px(size: str) -> tuple[int, int]:
    """Named size -> (width, height) in layout pixels (96 per inch).

    Raises:
        ValueError: ``size`` is not one of :data:`SIZES`.
    """
    if not isinstance(size, str) or size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    w, h = SIZES[size]
    return round(w * PX_PER_INCH), round(h * PX_PER_INCH)


def png_px(size: str) -> tuple[int, int]:
    """Pixel size of the 300-dpi PNG of a named size, e.g. "column" -> (1050, 750)."""
    w, h = SIZES[size] if size in SIZES else size_px(size)
    return round(w * DPI), round(h * DPI)


def apply_paper(fig: go.Figure, *, size: str | None = None) -> go.Figure:
    """Apply the paper template (and optionally a named size) to ``fig`` in place; returns it.

    Raises:
        TypeError: ``fig`` is not a plotly Figure.
        ValueError: unknown ``size``.
    """
    if not isinstance(fig, go.Figure):
        raise TypeError(f"fig must be a plotly.graph_objects.Figure, got {type(fig).__name__}")
    if size is not None:
        w, h = size_px(size)
        fig.update_layout(width=w, height=h)
    fig.update_layout(template=PAPER)
    from .layout import fit_layout

    fit_layout(fig, size)
    return fig


def category_style(i: int, n: int) -> tuple[str, str]:
    """(colour, marker symbol) of category ``i`` of ``n``: the Okabe-Ito palette up to eight
    categories, Tableau 10 beyond, and a distinct symbol per category when there are more than
    eight (so ten classes never share a colour, and differ in greyscale too)."""
    if not isinstance(i, int) or not isinstance(n, int) or n < 1 or not 0 <= i < n:
        raise ValueError(f"i must be in [0, n) and n >= 1, got i={i!r}, n={n!r}")
    if n <= len(PALETTE):
        return PALETTE[i], SYMBOLS[0]
    return PALETTE_10[i % len(PALETTE_10)], SYMBOLS[i % len(SYMBOLS)]
