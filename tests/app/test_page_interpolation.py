"""AppTest: the Interpolation page computes paths, barriers, a plane and a Bezier curve."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
PAGE = "pages/3_Interpolation.py"


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def _button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


def test_paths_and_barriers(workspace_env: Path) -> None:
    at = _page()
    assert at.selectbox(key="interp.model_a").value == "mlp-mnist-s1"
    assert at.selectbox(key="interp.model_b").value == "mlp-mnist-s2"
    at.slider(key="interp.n_points").set_value(5).run()
    _button(at, "interp.run_paths").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    df = at.dataframe[0].value
    assert sorted(df["path"].unique()) == sorted(
        ["naive", "weight matching", "activation matching"]
    )
    assert set(df["split"]) == {"train", "test"}
    assert (df["loss barrier (Entezari et al.)"] >= -1e-6).all()
    # the result is kept: a rerun shows it without pressing the button again
    at.run()
    assert len(at.dataframe) >= 1 and not at.exception


@pytest.mark.slow
def test_bn_model_with_reset(workspace_env: Path) -> None:
    at = _page()
    at.selectbox(key="interp.model_a").set_value("cnn-mnist-s1").run()
    assert at.selectbox(key="interp.model_b").value == "cnn-mnist-s2"
    at.multiselect(key="interp.methods").set_value(["naive"])
    at.slider(key="interp.n_points").set_value(5)
    at.toggle(key="interp.bn_reset").set_value(True).run()
    _button(at, "interp.run_paths").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    df = at.dataframe[0].value
    assert list(df["path"].unique()) == ["naive"]


@pytest.mark.slow
def test_plane_and_curve(workspace_env: Path) -> None:
    at = _page()
    at.slider(key="interp.resolution").set_value(5).run()
    _button(at, "interp.run_plane").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("grid in" in c.value for c in at.caption)
    at.select_slider(key="interp.curve_steps").set_value(100)
    at.slider(key="interp.n_points").set_value(5).run()
    _button(at, "interp.run_curve").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    paths = set(at.dataframe[-1].value["path"])
    assert paths == {"straight line", "Bezier curve"}
