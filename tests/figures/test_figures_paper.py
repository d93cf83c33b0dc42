"""Figures fit for a paper: ten classes in ten looks, labelled class means, one colour bar
that stays clear of the legend, a sequential scale for loss, one name for the plane's unit."""

from __future__ import annotations

from core.figures.export import styled
from core.figures.landscape import PLANE_UNIT
from core.figures.theme import PALETTE_10, category_style
from tests.helpers.figure_cases import FIGURES


def test_ten_classes_have_ten_distinct_looks() -> None:
    fig = FIGURES["projection_figure"]()
    classes = [t for t in fig.data if t.legendgroup and t.name not in ("class means",)]
    looks = {(t.marker.color, t.marker.symbol) for t in classes if t.mode == "markers"}
    assert len(looks) == 10 and len({c for c, _ in looks}) == 10
    assert {category_style(i, 10)[0] for i in range(10)} == set(PALETTE_10)


def test_class_means_are_labelled() -> None:
    for name in ("projection_figure", "mixup_lambda_figure"):
        means = next(t for t in FIGURES[name]().data if t.name == "class means")
        assert "text" in means.mode and list(means.text)[:2] == ["T-shirt/top", "Trouser"]


def test_one_colour_bar_and_a_legend_clear_of_it() -> None:
    fig = styled(FIGURES["mixup_lambda_figure"](), "column")
    bars = [t for t in fig.data if t.marker.showscale]
    assert len(bars) == 1
    assert bars[0].marker.colorbar.x is None  # at the right edge of the plot, default place
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.yref == "container"


def test_loss_plane_is_sequential_and_names_its_unit_once() -> None:
    fig = FIGURES["plane_figure"]()
    contour = fig.data[0]
    assert contour.zmid is None and contour.reversescale is not True
    scale = [c for _, c in contour.colorscale]
    assert scale[0] != scale[-1] and "rgb(103,0,31)" not in scale  # not RdBu
    assert PLANE_UNIT in fig.layout.xaxis.title.text and PLANE_UNIT in fig.layout.yaxis.title.text


def test_main_title_clear_of_subplot_titles() -> None:
    for name in ("path_figure", "nc_epochs_figure", "k_selection_figure", "accuracy_figure"):
        fig = styled(FIGURES[name](), "double")
        assert fig.layout.title.yref == "container"
        # subplot titles sit on the plot area's top edge; the title and legend end above it
        assert fig.layout.margin.t >= 6 + 14 * (fig.layout.title.text.count("<br>") + 1) + 14


def test_subset_size_is_said_per_task_like_the_slider() -> None:
    fig = FIGURES["task_accuracy_figure"]()
    assert "250 / task" in fig.layout.title.text and "n=1000" not in fig.layout.title.text


def test_moderate_scatters_do_not_use_webgl() -> None:
    for name in ("projection_figure", "cluster_scatter_figure", "mixup_lambda_figure"):
        assert {t.type for t in FIGURES[name]().data} <= {"scatter"}, name
