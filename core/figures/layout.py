"""Per-size layout: where the title, subplot titles and legend go, and line styles that
survive greyscale print. Applied by :func:`core.figures.theme.apply_paper` to every figure, and
again by export at the chosen print size, so each figure is laid out for the size it has.

Rules (checked for every registered figure at both column sizes by tests/figures/test_figure_layout.py):

- the title sits in the top margin (container coordinates), never over a subplot title;
- the legend is horizontal, between the title and the plotting area, never on the tick labels
  and never over a colourbar (colourbars stay at the right);
- tick labels tilt at most 45° (``autotickangles`` in the template);
- line traces that share a dash pattern get distinct marker symbols, one per colour, so that
  no two legend entries look alike in greyscale;
- fonts are a step smaller below 4 in width;
- a figure too dense for a single column records its own narrow layout with
  :func:`narrow_variant` (stacked panels, short tick labels); it is applied below 4 in width and
  undone above, so one stored figure exports well at every size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

NARROW_PX = 384  # below 4 in: single-column sizes
LINE_PX = {True: 12, False: 14}  # height of one text line at (narrow, wide) font sizes
_TAG = re.compile(r"<[^>]+>")
LINE_TYPES = ("scatter", "scattergl", "scatterpolar")


def title_text(fig: go.Figure) -> str:
    """The figure's title text ("" when it has none)."""
    t = fig.layout.title.text
    return t if isinstance(t, str) else ""


def subplot_title_annotations(fig: go.Figure) -> list[Any]:
    """The annotations ``make_subplots`` wrote for subplot titles."""
    return [
        a
        for a in fig.layout.annotations
        if a.yref == "paper" and a.yanchor == "bottom" and a.showarrow is False and a.text
    ]


def legend_entries(fig: go.Figure) -> list[str]:
    """Names that appear in the legend (colour scales and images never do unless asked)."""
    if fig.layout.showlegend is False:
        return []
    out = []
    for i, tr in enumerate(fig.data):
        if tr.type == "image":
            continue
        if tr.type in ("heatmap", "contour", "histogram2d", "histogram2dcontour", "surface"):
            if tr.showlegend is not True:
                continue
        elif tr.showlegend is False:
            continue
        out.append(str(tr.name) if tr.name is not None else f"trace {i}")
    return out


def _text_width(text: str, font_px: float) -> float:
    return 0.56 * font_px * len(_TAG.sub("", text))


def legend_rows(names: list[str], width_px: float, font_px: float) -> int:
    """Rows a horizontal legend needs at this width: Plotly aligns the entries in columns as
    wide as the widest entry (symbol 40 px + text)."""
    if not names:
        return 0
    entry = 46 + 1.1 * max(_text_width(n, font_px) for n in names)
    per_row = max(1, int(width_px // entry))
    return -(-len(names) // per_row)


def legend_row_px(font_px: float) -> float:
    """Height of one legend row (Plotly: about twice the font size)."""
    return 2.2 * font_px


def _title_lines(text: str) -> int:
    return 0 if not text.strip() else text.count("<br>") + 1


def fit_layout(fig: go.Figure, size: str | None = None) -> go.Figure:
    """Lay out ``fig`` in place for its width (``fig.layout.width``; None: a screen of 700 px).

    Idempotent: the placement is recomputed from the figure's content each time.
    """
    width = float(fig.layout.width or 700)
    narrow = width < NARROW_PX
    _apply_variant(fig, "narrow" if narrow else "wide")
    line = LINE_PX[narrow]
    tick_px, title_px = (9, 10) if narrow else (10, 11)
    if narrow:
        fig.update_layout(font_size=tick_px, legend_font_size=tick_px - 1)
        fig.update_xaxes(tickfont_size=tick_px, title_font_size=tick_px)
        fig.update_yaxes(tickfont_size=tick_px, title_font_size=tick_px)
    sub_lines = 1
    domains = None  # the x axes' domains, read once (not once per subplot title)
    for a in subplot_title_annotations(fig):
        if domains is None:
            domains = [(float(x.domain[0]), float(x.domain[1])) for x in _xaxes(fig)]
        a.font = dict(size=tick_px + 1)
        a.text = wrap(a.text, _annotation_width(a, width, domains), tick_px + 1)
        sub_lines = max(sub_lines, a.text.count("<br>") + 1)
    _distinguish_lines(fig)

    top = 6.0
    title = title_text(fig)
    if title and "<" not in title.replace("<br>", ""):
        # re-wrapped from one line: the breaks of an earlier size are not this one's
        title = wrap(title.replace("<br>", " "), 0.9 * width - 16, title_px)
    n_title = _title_lines(title)
    if n_title:
        fig.update_layout(
            title=dict(
                text=title,
                yref="container",
                y=1 - (top + (n_title - 1) * line) / float(fig.layout.height or 450),
                yanchor="top",
                x=0.01,
                xref="container",
                xanchor="left",
                font_size=title_px,
                automargin=False,
            )
        )
        top += n_title * (line + 1) + 4
    names = legend_entries(fig)
    polar = any(tr.type == "scatterpolar" for tr in fig.data)
    if len(names) > 1:
        rows = legend_rows(names, width - 16, tick_px - 1)
        fig.update_layout(
            showlegend=True,
            legend=dict(
                orientation="h",
                yref="container",
                y=1 - top / float(fig.layout.height or 450),
                yanchor="top",
                xref="container",
                x=0.01,
                xanchor="left",
                entrywidth=0,
                bgcolor="rgba(255,255,255,0)",
            ),
        )
        top += rows * legend_row_px(tick_px - 1) + 4
    else:
        fig.update_layout(showlegend=False)
    if subplot_title_annotations(fig):
        top += sub_lines * line + 4
    if polar:
        top += 2 * line
    fig.update_layout(margin=dict(t=top + 4))
    _limit_yticks(fig, tick_px)
    return fig


def narrow_variant(
    fig: go.Figure,
    layout: Mapping[str, Any] | None = None,
    traces: Mapping[int, Mapping[str, Any]] | None = None,
) -> go.Figure:
    """Record in ``fig.layout.meta`` how ``fig`` changes below :data:`NARROW_PX` (single-column
    sizes): ``layout`` updates (axis domains, tick labels, annotations) and ``traces`` updates by
    trace index (names, colourbars). The current values of the same properties are recorded as
    the wide variant, so :func:`fit_layout` can switch either way; call it once the figure is
    complete. Returns ``fig``.

    Raises:
        TypeError: ``fig`` is not a Figure, or ``layout`` / ``traces`` are not mappings.
        ValueError: a trace index out of range, or a "title" in ``layout`` (the title is the
            user's to edit).
    """
    if not isinstance(fig, go.Figure):
        raise TypeError(f"fig must be a plotly.graph_objects.Figure, got {type(fig).__name__}")
    layout = dict(layout or {})
    traces = dict(traces or {})
    if not all(isinstance(v, Mapping) for v in (layout, *traces.values())):
        raise TypeError("layout and each value of traces must be a mapping")
    if "title" in layout:
        raise ValueError("layout must not change the title (the user edits it), got 'title'")
    bad = [i for i in traces if not isinstance(i, int) or not 0 <= i < len(fig.data)]
    if bad:
        raise ValueError(f"traces keys must be trace indices in [0, {len(fig.data)}), got {bad}")
    cur = fig.layout.to_plotly_json()
    wide_traces = {str(i): _current(fig.data[i].to_plotly_json(), t) for i, t in traces.items()}
    meta = fig.layout.meta if isinstance(fig.layout.meta, dict) else {}
    fig.layout.meta = {
        **meta,
        "narrow": {"layout": layout, "traces": {str(i): dict(t) for i, t in traces.items()}},
        "wide": {"layout": _current(cur, layout), "traces": wide_traces},
    }
    return fig


def _current(obj: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """The values ``obj`` has now at the keys of ``update`` (None where unset)."""
    out: dict[str, Any] = {}
    for k, v in update.items():
        now = obj.get(k)
        if isinstance(v, Mapping):
            out[k] = _current(now if isinstance(now, Mapping) else {}, v)
        else:
            tolist = getattr(now, "tolist", None)
            out[k] = tolist() if callable(tolist) else now
    return out


def _apply_variant(fig: go.Figure, which: str) -> None:
    meta = fig.layout.meta
    variant = meta.get(which) if isinstance(meta, dict) else None
    if not isinstance(variant, dict):
        return
    if variant.get("layout"):
        fig.update_layout(variant["layout"])
    for i, upd in (variant.get("traces") or {}).items():
        if int(i) < len(fig.data):
            fig.data[int(i)].update(upd)


def _limit_yticks(fig: go.Figure, tick_px: float) -> None:
    """At most one y tick label per 2.5 text lines of each y axis's height, so stacked panels
    of a small figure do not print their tick labels over each other."""
    height = float(fig.layout.height or 450)
    m = fig.layout.margin
    plot_h = height - float(m.t if m.t is not None else 80) - float(m.b if m.b is not None else 80)
    for axis in _yaxes(fig):
        if axis.type == "category" or axis.tickvals is not None:
            continue
        lo, hi = axis.domain or (0.0, 1.0)
        n = int(max(plot_h, 0.0) * (hi - lo) / (2.5 * tick_px))
        if n < 8:
            axis.nticks = max(n, 2)


def wrap(text: str, width_px: float, font_px: float) -> str:
    """``text`` broken into lines at spaces to fit ``width_px``; words too long for a line are
    cut with an ellipsis. Existing ``<br>`` breaks are kept."""
    plain = _TAG.sub("", text.replace("<br>", " \n "))
    if "<" in text.replace("<br>", "") or _text_width(plain, font_px) <= width_px:
        return text
    max_chars = max(4, int(width_px / (0.56 * font_px)))
    lines: list[str] = []
    cur = ""
    for word in plain.split(" "):
        if word == "\n":
            lines.append(cur)
            cur = ""
            continue
        if len(word) > max_chars:
            word = word[: max_chars - 1] + "…"
        if cur and len(cur) + 1 + len(word) > max_chars:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    lines.append(cur)
    return "<br>".join(x for x in lines if x)


def _annotation_width(a: Any, width: float, domains: list[tuple[float, float]]) -> float:
    """Width in px of the subplot whose title ``a`` is (the plot width left of margins), given
    the figure's x-axis ``domains``."""
    plot_w = width - 60
    n_cols = max(1, len({round(lo, 3) for lo, _ in domains}))
    # a panel spanning several columns (its title centred on it) may take its own width
    spans = [hi - lo for lo, hi in domains if a.x is not None and abs((lo + hi) / 2 - a.x) < 0.005]
    own = max(spans, default=0.0) * plot_w - 6
    return max(30.0, plot_w / n_cols - 6, own)


def short_names(names: list[str]) -> tuple[list[str], str]:
    """(``names`` without their common prefix cut at a ``-``, ``_``, ``.`` or ``/``, the prefix):
    long model ids as tick labels fit a single-column figure ("" when nothing is shared)."""
    if len(names) < 2:
        return list(names), ""
    common = names[0]
    for n in names[1:]:
        while not n.startswith(common):
            common = common[:-1]
    cut = max(common.rfind(c) for c in "-_./") + 1
    if cut == 0 or any(len(n) == cut for n in names):
        return list(names), ""
    return [n[cut:] for n in names], names[0][:cut]


def _yaxes(fig: go.Figure) -> list[Any]:
    return [fig.layout[k] for k in fig.layout if k.startswith("yaxis")]


def _xaxes(fig: go.Figure) -> list[Any]:
    keys = [k for k in fig.layout.to_plotly_json() if k.startswith("xaxis")]
    return [fig.layout[k] for k in keys if fig.layout[k].domain]


def _distinguish_lines(fig: go.Figure) -> None:
    """Give line traces that look alike in greyscale (same dash, same symbol) one marker symbol
    per colour; markers are thinned to at most 12 per trace on long lines."""
    from .theme import SYMBOLS

    lines = [
        tr
        for tr in fig.data
        if tr.type in LINE_TYPES
        and (tr.mode or "lines") != "markers"
        and "lines" in (tr.mode or "lines")
        and tr.showlegend is not False
    ]
    if len(lines) < 2:
        return

    def look(tr: Any) -> tuple[str, str]:
        return (str(tr.line.dash or "solid"), str(tr.marker.symbol or "circle"))

    looks = [look(tr) for tr in lines]
    if len(set(looks)) == len(looks):
        return
    colours: dict[str, int] = {}
    for tr in lines:
        k = colours.setdefault(str(tr.line.color), len(colours))
        tr.marker.symbol = SYMBOLS[k % len(SYMBOLS)]
        tr.mode = "lines+markers"
        if tr.type == "scatter":
            tr.marker.maxdisplayed = 12
    looks = [look(tr) for tr in lines]
    if len(set(looks)) < len(looks):  # same colour and dash twice: one symbol per trace
        for k, tr in enumerate(lines):
            tr.marker.symbol = SYMBOLS[k % len(SYMBOLS)]
