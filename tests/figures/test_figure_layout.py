"""Every registered figure laid out for print at single- and double-column size: rules on the
layout (fast), and the rendered SVG measured in Chromium (text boxes must not overlap or be cut
off, x tick labels tilt at most 45°)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import core.figures
from core.figures.export import render, static_available, styled
from core.figures.layout import legend_entries, title_text
from tests.helpers.figure_cases import FIGURES
from tests.helpers.layout_check import MEASURE_JS, outside, overlaps

SIZES = ("column", "double")
# every module of core.figures that builds figures (not the export, layout and theme helpers)
MODULES = tuple(
    m.name
    for m in pkgutil.iter_modules(core.figures.__path__)
    if m.name not in {"export", "layout", "store", "theme", "vendor"}
)
# Known single-column defects (multi-panel figures too dense for 3.5 in): strict, so a fix that
# makes one pass must remove it from here.
KNOWN_DEFECTS: dict[tuple[str, str], str] = {}
CASES = [(name, size) for name in FIGURES for size in SIZES]
RENDER_CASES = [
    pytest.param(
        name,
        size,
        marks=pytest.mark.xfail(strict=True, reason=KNOWN_DEFECTS[(name, size)]),
    )
    if (name, size) in KNOWN_DEFECTS
    else (name, size)
    for name, size in CASES
]


def test_every_figure_builder_has_a_case() -> None:
    public = {
        name
        for mod in MODULES
        for name, fn in inspect.getmembers(importlib.import_module(f"core.figures.{mod}"))
        if name.endswith("_figure") and inspect.isfunction(fn) and fn.__module__.endswith(mod)
    }
    assert public - set(FIGURES) == set(), "add these to tests/helpers/figure_cases.py"


@pytest.mark.parametrize(("name", "size"), CASES)
def test_layout_rules(name: str, size: str) -> None:
    fig = styled(FIGURES[name](), size)
    if title_text(fig):
        assert fig.layout.title.yref == "container", "the title must sit in the top margin"
    if len(legend_entries(fig)) > 1:
        leg = fig.layout.legend
        assert leg.orientation == "h" and leg.yref == "container" and leg.yanchor == "top"
        assert leg.y * fig.layout.height > fig.layout.height - fig.layout.margin.t
    # greyscale: no two legend entries drawn as lines look alike (dash pattern + marker symbol)
    lines = [
        (str(t.line.dash or "solid"), str(t.marker.symbol or "circle"), str(t.line.color))
        for t in fig.data
        if t.type in ("scatter", "scattergl")
        and "lines" in (t.mode or "lines")
        and t.showlegend is not False
        and (t.x is None or len(t.x) > 0)
    ]
    looks = [(d, s) for d, s, _ in lines]
    assert len(set(looks)) == len(looks), lines
    assert max(fig.layout.xaxis.autotickangles or [0]) <= 45


def test_title_can_be_edited_or_dropped() -> None:
    fig = FIGURES["sweep_figure"]()
    assert title_text(styled(fig, "column", title="λ sweep")) == "λ sweep"
    dropped = styled(fig, "column", title="")
    assert (
        title_text(dropped) == ""
        and dropped.layout.margin.t < styled(fig, "column").layout.margin.t
    )
    assert title_text(fig) != ""  # the input is not changed


@pytest.fixture(scope="module")
def chromium_page() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    from tests.app.test_browser import ARGS, CHROMIUM

    if not Path(CHROMIUM).exists() or not static_available():
        pytest.fail(f"the rendered-layout test needs Chromium at {CHROMIUM}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b.new_page()
        b.close()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), RENDER_CASES)
def test_rendered_text_does_not_overlap(name: str, size: str, chromium_page: object) -> None:
    svg = render(FIGURES[name](), "svg", size=size).decode()
    chromium_page.set_content(f"<html><body style='margin:0'>{svg}</body></html>")  # type: ignore[attr-defined]
    m = chromium_page.evaluate(MEASURE_JS)  # type: ignore[attr-defined]
    assert m["boxes"], "no text measured"
    assert overlaps(m["boxes"], tol=2.0) == []
    assert outside(m["boxes"], m["width"], m["height"]) == []
    tilted = [b["text"] for b in m["boxes"] if b["group"] == "xtick" and abs(b["angle"]) > 46]
    assert tilted == [], "x tick labels rotated beyond 45°"


def test_narrow_variant_switches_both_ways() -> None:
    """A figure's single-column layout applies below 4 in and is undone above, whatever the
    order of exports (and survives the JSON round trip of the figure store)."""
    import plotly.io as pio

    fig = FIGURES["layer_profile_figure"]()
    wide = styled(fig, "double")
    narrow = styled(fig, "column")
    assert narrow.layout.yaxis.domain != wide.layout.yaxis.domain
    assert narrow.data[0].name != wide.data[0].name
    again = styled(pio.from_json(narrow.to_json()), "double")
    assert again.layout.yaxis.domain == wide.layout.yaxis.domain
    assert again.layout.xaxis2.ticktext == wide.layout.xaxis2.ticktext
    assert [t.name for t in again.data] == [t.name for t in wide.data]


def test_narrow_variant_validates() -> None:
    from core.figures.layout import narrow_variant

    fig = FIGURES["layer_profile_figure"]()
    with pytest.raises(ValueError, match="title"):
        narrow_variant(fig, layout={"title": {"text": "x"}})
    with pytest.raises(ValueError, match="trace indices"):
        narrow_variant(fig, traces={99: {"name": "x"}})
    with pytest.raises(TypeError, match="fig"):
        narrow_variant(None)  # type: ignore[arg-type]
