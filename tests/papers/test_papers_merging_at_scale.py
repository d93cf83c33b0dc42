"""Merging at scale (Yadav et al., 2024): held-in / held-out as experts are added."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from core.benchmark.zoo_build import build_suite_zoo
from core.merge import merge
from core.papers.merging_at_scale import (
    ScaleStudy,
    _check_methods,
    default_grids,
    merging_at_scale_study,
    task_orders,
)
from core.recipes import check_args
from core.suite_lab import SuiteLab
from core.zoo import Zoo
from tests.helpers.suites import TINY_VISION_3


def test_task_orders_are_distinct_seeded_permutations() -> None:
    tasks = ["a", "b", "c", "d"]
    orders = task_orders(tasks, 5, seed=1)
    assert len(orders) == 5 and len({tuple(o) for o in orders}) == 5
    assert all(sorted(o) == tasks for o in orders)
    assert orders == task_orders(tasks, 5, seed=1)
    assert orders != task_orders(tasks, 5, seed=2)
    assert len(task_orders(["a", "b"], 10, seed=0)) == 2  # only 2! orders exist
    with pytest.raises(ValueError, match="n_orders"):
        task_orders(tasks, 0, seed=0)


def test_methods_are_checked() -> None:
    grids = default_grids()
    assert set(grids) == {"average", "task_arithmetic", "ties", "dare_ties"}
    with pytest.raises(ValueError, match="registered methods"):
        _check_methods(["no_such_method"], grids)
    with pytest.raises(ValueError, match="data-free"):
        _check_methods(["regmean"], {"regmean": [{}]})
    with pytest.raises(ValueError, match="grids must have an entry"):
        _check_methods(["ties"], {})
    with pytest.raises(ValueError, match="non-empty list"):
        _check_methods("ties", grids)


def test_recipe_args_are_checked() -> None:
    assert check_args("merging_at_scale", {"suite": "text", "n_orders": 2})["suite"] == "text"
    with pytest.raises(ValueError, match="suite"):
        check_args("merging_at_scale", {"suite": "audio"})
    with pytest.raises(ValueError, match="n_orders"):
        check_args("merging_at_scale", {"suite": "text", "n_orders": 0})


def _synthetic() -> ScaleStudy:
    tasks = ["t0", "t1", "t2"]
    study = ScaleStudy("vision", tasks, ["average", "ties"], [tasks, tasks[::-1]])
    for o in range(2):
        for k in (1, 2, 3):
            for m in study.methods:
                study.rows.append(
                    {
                        "order": o,
                        "k": k,
                        "method": m,
                        "held_in": 1.0 - 0.05 * k - 0.01 * o,
                        "held_out": 1.0 + 0.02 * k if k < 3 else math.nan,
                    }
                )
    study.pretrained = {t: 0.5 for t in tasks}
    study.individual = {t: 0.8 for t in tasks}
    return study


def test_summary_and_figure_on_a_synthetic_study() -> None:
    from core.figures.scale import merging_at_scale_data, merging_at_scale_figure

    study = _synthetic()
    assert study.base_strength == pytest.approx(0.625)
    summary = {(r["method"], r["k"]): r for r in study.summary()}
    assert summary[("ties", 2)]["held_in"] == pytest.approx(0.895)
    assert summary[("ties", 2)]["held_in_min"] == pytest.approx(0.89)
    assert summary[("ties", 2)]["held_in_max"] == pytest.approx(0.9)
    assert math.isnan(summary[("ties", 3)]["held_out"])
    fig = merging_at_scale_figure(study)
    names = {t.name for t in fig.data if t.showlegend is not False}
    assert names == {"Averaging", "TIES"}
    assert len(merging_at_scale_data(study)) == 6
    with pytest.raises(ValueError, match="no rows"):
        merging_at_scale_figure(ScaleStudy("vision", [], [], []))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    z = Zoo(tmp_path_factory.mktemp("scale") / "ws")
    build_suite_zoo(z, TINY_VISION_3, device="cpu")
    return z


@pytest.mark.slow
def test_study_on_a_tiny_suite(zoo: Zoo) -> None:
    calls: list[tuple[int, int]] = []
    study = merging_at_scale_study(
        zoo,
        "vision",
        methods=["average", "task_arithmetic"],
        n_orders=2,
        val_per_task=None,
        progress=lambda d, t: calls.append((d, t)),
    )
    n = len(study.tasks)
    assert n == 3 and len(study.rows) == 2 * n * 2
    assert calls[-1][0] == calls[-1][1]
    rows = {(r["order"], r["k"], r["method"]): r for r in study.rows}
    for o in range(2):
        # one expert averaged is the expert itself: held-in is exactly 1
        assert rows[(o, 1, "average")]["held_in"] == pytest.approx(1.0)
        assert math.isnan(rows[(o, n, "average")]["held_out"])
        assert not math.isnan(rows[(o, 1, "average")]["held_out"])
    # held-in / held-out recomputed independently for one row, on the full test split
    test = SuiteLab(zoo, "vision", split="test", n_per_task=None, device="cpu")
    refs = test.references()
    r = rows[(0, 2, "task_arithmetic")]
    idx = [test.tasks.index(t) for t in r["tasks"]]
    sd = merge(
        "task_arithmetic",
        [test.finetunes[i] for i in idx],
        base=test.base,
        generator=torch.Generator().manual_seed(0),
        **r["hyperparameters"],
    )
    acc = {t: float(c.float().mean()) for t, c in test.predict(sd).items()}
    held_in = sum(acc[t] / refs["individual"][t] for t in r["tasks"]) / 2
    out = [t for t in test.tasks if t not in r["tasks"]]
    held_out = sum(acc[t] / refs["pretrained"][t] for t in out) / len(out)
    assert r["held_in"] == pytest.approx(held_in)
    assert r["held_out"] == pytest.approx(held_out)
    assert r["hyperparameters"] in default_grids()["task_arithmetic"]


@pytest.mark.slow
def test_benchmark_page_runs_the_sweep(zoo: Zoo, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.helpers.app import record_figures

    seen = record_figures(monkeypatch)
    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(zoo.root))
    root = Path(__file__).resolve().parents[2]
    at = AppTest.from_file(str(root / "app.py"), default_timeout=300).run()
    at.switch_page("pages/9_Benchmark.py").run()
    assert not at.exception, at.exception
    assert "benchmark.scale_figure" not in seen  # nothing heavy before the button
    at.slider(key="benchmark.scale_orders").set_value(1)
    at.multiselect(key="benchmark.scale_methods").set_value(["average", "ties"])
    at.button(key="benchmark.scale_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    fig, recipe = seen["benchmark.scale_figure"]
    assert recipe["kind"] == "merging_at_scale"
    assert recipe["args"]["methods"] == ["average", "ties"] and recipe["args"]["n_orders"] == 1
    assert {t.name for t in fig.data if t.showlegend is not False} == {"Averaging", "TIES"}
