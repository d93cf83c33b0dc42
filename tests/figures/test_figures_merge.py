"""core.figures.merge: figures show exactly the numbers of the result records."""

from __future__ import annotations

import numpy as np
import pytest

from core.figures.merge import (
    comparison_figure,
    comparison_task_figure,
    landscape_figure,
    merge_accuracy_figure,
    merge_landscape_figure,
    merge_sweep_figure,
    sweep_figure,
    task_accuracy_figure,
    task_radar_figure,
)
from core.merge_eval import (
    ComparisonResult,
    ComparisonRow,
    LandscapeResult,
    MergeEval,
    SweepResult,
)

TASKS = ("a", "b", "c")


def _eval(base: bool = True) -> MergeEval:
    return MergeEval(
        tasks=TASKS,
        accuracy=(0.5, 0.6, 0.7),
        loss=(1.0, 0.9, 0.8),
        reference=(0.9, 0.8, 0.95),
        base=(0.2, 0.3, 0.1) if base else None,
        correct=np.ones(30, dtype=bool),
        groups=np.repeat([0, 1, 2], 10),
        full=False,
    )


def test_task_accuracy_bars_carry_the_numbers() -> None:
    fig = task_accuracy_figure(_eval())
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["merged"].y) == pytest.approx([0.5, 0.6, 0.7, 0.6])
    assert list(by_name["fine-tuned"].y) == pytest.approx(
        [0.9, 0.8, 0.95, np.mean([0.9, 0.8, 0.95])]
    )
    assert list(by_name["base (θ₀)"].x) == [*TASKS, "average"]
    assert "base (θ₀)" not in {t.name for t in task_accuracy_figure(_eval(base=False)).data}
    with pytest.raises(TypeError, match="MergeEval"):
        task_accuracy_figure(object())


def test_radar_closes_the_polygon() -> None:
    fig = task_radar_figure(_eval())
    merged = next(t for t in fig.data if t.name == "merged")
    assert list(merged.r) == [0.5, 0.6, 0.7, 0.5] and list(merged.theta) == ["a", "b", "c", "a"]


def test_landscape_marks_current_point_and_best() -> None:
    lams = np.array([0.0, 0.5, 1.0])
    acc = np.stack([np.arange(9).reshape(3, 3) / 10] * 3)
    res = LandscapeResult(lams, lams, acc, acc.mean(0), acc.mean(0), TASKS, ("m1", "m2"))
    fig = landscape_figure(res, point=(0.3, 0.6))
    heat, best, current = fig.data
    np.testing.assert_allclose(heat.z, res.average)
    assert (best.x[0], best.y[0]) == (1.0, 1.0)  # argmax at λ1 = λ2 = 1
    assert (current.x[0], current.y[0]) == (0.6, 0.3)  # x is λ2, y is λ1
    np.testing.assert_allclose(landscape_figure(res, metric="b").data[0].z, acc[1])
    with pytest.raises(ValueError, match="metric"):
        landscape_figure(res, metric="zzz")


def test_sweep_lines() -> None:
    vals = np.array([0.1, 0.5, 0.9])
    acc = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]])
    res = SweepResult(
        "ties", "density", vals, acc, acc.mean(0), acc.mean(0), TASKS, (0.9, 0.9, 0.9)
    )
    fig = sweep_figure(res, current=0.5)
    avg = next(t for t in fig.data if t.name == "average")
    np.testing.assert_allclose(avg.y, acc.mean(0))
    assert [t.name for t in fig.data][:3] == list(TASKS)


def _row(method: str, avg: float, p: float | None, error: str | None = None) -> ComparisonRow:
    return ComparisonRow(
        method, method, avg, avg - 0.05, avg + 0.02, avg, (avg, avg, avg), p, 1, 2, {}, 0.1, error
    )


def test_comparison_error_bars_and_p_values() -> None:
    rows = (
        _row("task_arithmetic", 0.6, None),
        _row("ties", 0.7, 0.01),
        _row("fisher", float("nan"), None, "no data"),
    )
    res = ComparisonResult(rows, TASKS, "task_arithmetic", 0.95, True, (0.9, 0.9, 0.9), None)
    bar = comparison_figure(res).data[0]
    assert list(bar.y) == ["task_arithmetic", "ties"]  # failed method left out, sorted by accuracy
    np.testing.assert_allclose(bar.error_x.array, [0.02, 0.02])
    np.testing.assert_allclose(bar.error_x.arrayminus, [0.05, 0.05])
    assert list(bar.text) == ["ref", "p = 0.010"]
    assert len(comparison_task_figure(res).data) == 3
    empty = ComparisonResult(rows[2:], TASKS, "task_arithmetic", 0.95, True, (0.9,) * 3, None)
    with pytest.raises(ValueError, match="no method"):
        comparison_figure(empty)


def test_recipe_result_figures_mark_the_sliders_and_check_their_input() -> None:
    lams = np.array([0.0, 0.5, 1.0])
    acc = np.stack([np.arange(9).reshape(3, 3) / 10] * 3)
    land = LandscapeResult(lams, lams, acc, acc.mean(0), acc.mean(0), TASKS, ("m1", "m3"))
    result = {"landscape": land, "pair": (0, 2), "n_models": 3}
    scales = {"scale": 0.5, "weights": [0.4, 1.0, 1.4]}
    fig = merge_landscape_figure(result, method="task_arithmetic", hyperparameters=scales)
    current = fig.data[2]
    assert (current.x[0], current.y[0]) == (0.7, 0.2)  # λ2 = model 3's scale, λ1 = model 1's
    assert len(merge_landscape_figure(result, method="ties").data) == 2  # no ✕ for TIES
    with pytest.raises(TypeError, match="coefficient_landscape"):
        merge_landscape_figure({"landscape": land})
    res = SweepResult(
        "ties", "density", lams, acc[0], acc[0].mean(0), acc[0].mean(0), TASKS, (1,) * 3
    )
    assert len(merge_sweep_figure({"sweep": res, "current": 0.5}).data) == len(
        sweep_figure(res, current=0.5).data
    )
    with pytest.raises(TypeError, match="hyperparameter_sweep"):
        merge_sweep_figure(res)
    ev = _eval()
    assert merge_accuracy_figure(ev, chart="radar").data[0].type == "scatterpolar"
    with pytest.raises(ValueError, match="chart"):
        merge_accuracy_figure(ev, chart="pie")
