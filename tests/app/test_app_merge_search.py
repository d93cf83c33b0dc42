"""AppTest: the Merge Search page runs a tiny CMA-ES search on the tiny zoo, draws the
best-so-far curve and the best point's table, and a second run resumes without evaluating
again; bad input is a readable error."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from core.search import EVAL_KIND, RECORD_KIND
from core.zoo import Zoo
from tests.helpers.app import record_figures

ROOT = Path(__file__).resolve().parents[2]
PAGE = "pages/12_Merge_Search.py"


@pytest.fixture
def workspace(tiny_zoo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the tiny zoo (the search writes records into it)."""
    ws = tmp_path / "ws"
    shutil.copytree(tiny_zoo_dir, ws)
    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(ws))
    return ws


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def _button(at: AppTest, key: str) -> Any:
    return next(b for b in at.button if b.key == key)


def _tiny(at: AppTest, name: str = "tiny") -> None:
    at.number_input(key="search.budget").set_value(8)
    at.number_input(key="search.popsize").set_value(4)
    at.select_slider(key="search.n_val").set_value(50)
    at.select_slider(key="search.n_test").set_value(100)
    at.text_input(key="search.name").set_value(name).run()


def _evals(ws: Path, name: str) -> list[dict]:
    return [r for r in Zoo(ws).get_records(EVAL_KIND).values() if r["search"] == name]


def test_search_runs_draws_the_curve_and_resumes(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = record_figures(monkeypatch)
    at = _page()
    # defaults: the default zoo's base and its fine-tunes, task arithmetic, weights searched
    assert at.selectbox(key="search.base").value == "mlp-base"
    assert len(at.multiselect(key="search.models").value) == 4
    assert all(m.startswith("mlp-ft-") for m in at.multiselect(key="search.models").value)
    assert at.selectbox(key="search.method").value == "task_arithmetic"
    _tiny(at)
    _button(at, "search.run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(_evals(workspace, "tiny")) == 8
    summary = Zoo(workspace).get_records(RECORD_KIND)["tiny"]
    assert summary["status"] == "done" and "test" in summary
    fig, recipe = shown["search.curve"]
    assert recipe == ("search_progress", {"search": "tiny"})
    best = [t for t in fig.data if t.name == "best so far"][0]
    assert list(best.y) == [-v for v in summary["best_so_far"]]
    table = next(d.value for d in at.dataframe if "kind" in d.value.columns)
    weights = table[table["kind"] == "weight"]
    assert list(weights["value"]) == pytest.approx(summary["best"]["point"]["weights"])
    test_mean = table[(table["kind"] == "test accuracy") & (table["name"] == "mean")]
    assert float(test_mean["value"].iloc[0]) == pytest.approx(summary["test"]["mean_accuracy"])

    stamps = sorted(r["seconds"] for r in _evals(workspace, "tiny"))
    _button(at, "search.run").click().run()  # the same named search: replayed, not evaluated
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Resumed 8 evaluations" in i.value for i in at.info), [i.value for i in at.info]
    assert sorted(r["seconds"] for r in _evals(workspace, "tiny")) == stamps


def test_layers_and_a_conflicting_definition_are_readable(workspace: Path) -> None:
    at = _page()
    at.checkbox(key="search.weights").set_value(False)
    at.checkbox(key="search.layers").set_value(True)
    _tiny(at, "layers")
    at.number_input(key="search.budget").set_value(4).run()
    _button(at, "search.run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    points = [r["point"] for r in _evals(workspace, "layers")]
    assert len(points) == 4 and set(points[0]["layers"]) == {"trunk.fc0", "trunk.fc1", "head"}
    at.number_input(key="search.popsize").set_value(2).run()  # same name, another definition
    _button(at, "search.run").click().run()
    assert not at.exception
    assert any("another definition" in e.value for e in at.error)
    at.checkbox(key="search.layers").set_value(False).run()  # nothing searched
    assert _button(at, "search.run").disabled
    at.checkbox(key="search.weights").set_value(True).run()
    at.number_input(key="search.weights.low").set_value(2.0).run()  # low above high
    _button(at, "search.run").click().run()
    assert not at.exception
    assert any("low must be below high" in e.value for e in at.error)


def test_a_stopped_search_is_listed_and_resumed_from_the_page(workspace: Path) -> None:
    from core.search import run_search

    spec = {
        "name": "half",
        "models": ["mlp-ft-mnist", "mlp-ft-mnist_rotated"],
        "base": "mlp-base",
        "method": "task_arithmetic",
        "search": {"weights": {"low": 0.0, "high": 1.0, "init": 0.3}},
        "n_val": 20,
        "n_test": 100,
        "budget": 6,
        "popsize": 3,
    }

    def stop() -> bool:  # as the page's Cancel: stop after the first generation
        return len(_evals(workspace, "half")) >= 3

    partial = run_search(spec, Zoo(workspace), should_stop=stop)
    assert partial["status"] == "partial" and partial["n_evals"] == 3
    at = _page()
    assert at.selectbox(key="search.shown").value == "half"
    assert any("Stopped after 3 of 6" in c.value for c in at.caption), [c.value for c in at.caption]
    first = {(r["generation"], r["index"]): r for r in _evals(workspace, "half")}
    _button(at, "search.resume").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Resumed 3 evaluations" in i.value for i in at.info), [i.value for i in at.info]
    evals = _evals(workspace, "half")
    assert len(evals) == 6  # the first generation was not evaluated again
    assert all(r == first[(r["generation"], r["index"])] for r in evals if r["generation"] == 0)
    assert Zoo(workspace).get_records(RECORD_KIND)["half"]["status"] == "done"
    assert not any(b.key == "search.resume" for b in at.button)
