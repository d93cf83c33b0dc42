"""AppTest: the Merge Lab page renders, reacts to sliders and methods, saves, and handles errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.merge_eval import lab_from_zoo
from core.zoo import Zoo

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
PAGE = "pages/2_Merge_Lab.py"
FT = ["mlp-ft-mnist", "mlp-ft-mnist_inverted", "mlp-ft-mnist_rotated", "mlp-ft-digits"]


def _lab_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page(PAGE).run()
    return at


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_page_renders_on_tiny_zoo(workspace_env: Path) -> None:
    at = _lab_page()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="merge.method").value == "task_arithmetic"
    assert at.multiselect(key="merge.models").value == FT
    metrics = _metrics(at)
    assert {"Average accuracy", "Normalised accuracy", "acc · mnist", "acc · digits"} <= set(
        metrics
    )
    # the shown numbers are the lab's numbers at the default λ = 0.3
    lab = lab_from_zoo(Zoo(workspace_env), FT, base_id="mlp-base")
    expected = lab.run("task_arithmetic", {"scale": 0.3, "weights": [1.0] * 4})
    assert metrics["Average accuracy"] == f"{expected.average:.3f}"
    assert metrics["acc · mnist_rotated"] == f"{expected.accuracy[2]:.3f}"


def test_scale_slider_changes_accuracies(workspace_env: Path) -> None:
    at = _lab_page()
    at.slider(key="merge.scale").set_value(0.0).run()
    assert not at.exception
    at0 = _metrics(at)
    # λ = 0 is the base model: no change against the base
    assert [m.delta for m in at.metric if m.label == "Average accuracy"] == ["+0.000 vs base"]
    assert at.metric[2].value.endswith(" ms")  # computed now
    at.slider(key="merge.scale").set_value(0.3).run()
    at.slider(key="merge.scale").set_value(0.0).run()
    assert _metrics(at)["Merge + evaluation"] == "cached"  # not the old compute time
    at.slider(key="merge.scale").set_value(1.0).run()
    at1 = _metrics(at)
    assert at0 != at1
    lab = lab_from_zoo(Zoo(workspace_env), FT, base_id="mlp-base")
    assert at1["Average accuracy"] == f"{lab.run('task_arithmetic', {'scale': 1.0}).average:.3f}"


def test_switching_method_redraws_sliders(workspace_env: Path) -> None:
    at = _lab_page()
    at.selectbox(key="merge.method").set_value("ties").run()
    assert not at.exception
    keys = {s.key for s in at.slider}
    assert {"merge.density", "merge.scale"} <= keys
    at.selectbox(key="merge.method").set_value("dare").run()
    assert not at.exception
    assert "merge.drop" in {s.key for s in at.slider}
    assert "Average accuracy" in _metrics(at)


def test_independent_setting_and_bad_selection(workspace_env: Path) -> None:
    at = _lab_page()
    at.radio(key="merge.setting").set_value("independent").run()
    assert not at.exception
    assert at.multiselect(key="merge.independent_models").value == ["mlp-mnist-s1", "mlp-mnist-s2"]
    assert "task_arithmetic" not in at.selectbox(key="merge.method").options
    assert at.selectbox(key="merge.method").value == "average"
    assert "Average accuracy" in _metrics(at)
    at.multiselect(key="merge.independent_models").set_value(["mlp-mnist-s1", "cnn-mnist-s1"]).run()
    assert not at.exception
    assert any("architecture" in e.value for e in at.error)


def test_save_merged_model_to_zoo(
    tiny_zoo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(tiny_zoo_dir, ws)
    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(ws))
    at = _lab_page()
    at.slider(key="merge.scale").set_value(0.5).run()
    at.text_input(key="merge.save_name").set_value("ta-half").run()
    at.button(key="merge.save").click().run()
    assert not at.exception
    assert any("ta-half" in s.value for s in at.success), [e.value for e in at.error]
    rec = Zoo(ws).get("ta-half")
    assert rec.role == "merged" and rec.base_id == "mlp-base"
    assert rec.recipe["method"] == "task_arithmetic"
    assert rec.recipe["hyperparameters"]["scale"] == 0.5 and rec.recipe["source_ids"] == FT


def test_panels_landscape_sweep_comparison_full(workspace_env: Path) -> None:
    at = _lab_page()
    at.slider(key="merge.land_res").set_value(3)
    at.button(key="merge.land_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Best grid point" in c.value for c in at.caption)
    at.slider(key="merge.sweep_n").set_value(3)
    at.button(key="merge.sweep_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.multiselect(key="merge.cmp_methods").set_value(["task_arithmetic", "average", "ties"])
    at.checkbox(key="merge.cmp_full").uncheck()
    at.button(key="merge.cmp_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = next(d.value for d in at.dataframe if "ci_low" in d.value.columns)
    assert list(table["method"]) == ["task_arithmetic", "average", "ties"]
    assert table["ci_low"].le(table["average"]).all()
    at.button(key="merge.full_go").click().run()
    assert "Average accuracy (full test sets)" in _metrics(at)


def test_data_dependent_method_computes_inputs_on_demand(workspace_env: Path) -> None:
    at = _lab_page()
    at.selectbox(key="merge.method").set_value("fisher").run()
    assert not at.exception
    assert "Average accuracy" not in _metrics(at)
    at.button(key="merge.compute_inputs").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    # a data-dependent method runs when asked, not on every slider move
    assert "Average accuracy" not in _metrics(at)
    assert any("press **Run**" in c.value for c in at.caption)
    at.button(key="merge.run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    metrics = _metrics(at)
    assert "Average accuracy" in metrics and metrics["Merge + evaluation"].endswith(" ms")
    at.run()  # the same request again: the stored result, labelled as such
    assert _metrics(at)["Merge + evaluation"] == "cached"
    floor = at.slider(key="merge.floor")
    floor.set_value(floor.max).run()  # a slider move does not start it
    assert "Average accuracy" not in _metrics(at)


def test_empty_zoo_shows_hint(empty_workspace: Path) -> None:
    at = _lab_page()
    assert not at.exception
    assert any("Home" in i.value for i in at.info)
    assert len(at.slider) == 0
