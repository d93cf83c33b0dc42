"""AppTest: the Feature Geometry and Clustering pages render, compute and report errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")


def _page(name: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.switch_page(name).run()
    return at


def test_feature_geometry_shows_nc_metrics_projection_and_etf(workspace_env: Path) -> None:
    at = _page("pages/6_Feature_Geometry.py")
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    labels = {m.label: m.value for m in at.metric}
    assert {"NC1", "NC2 equinorm", "NC3", "NC4"} <= set(labels)
    assert float(labels["NC1"]) > 0
    assert len(at.get("plotly_chart")) >= 2  # projection and ETF heatmaps
    # the class-mean plane projection, then the mixup geometry panel on request
    at.radio(key="geometry.method").set_value("class_plane").run()
    assert not at.exception
    [b for b in at.button if b.label == "Show mixed features"][0].click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) >= 3


def test_feature_geometry_trains_erm_vs_mixup_with_nc(workspace_env: Path) -> None:
    at = _page("pages/6_Feature_Geometry.py")
    at.selectbox(key="geometry.t_task").set_value("digits")
    at.slider(key="geometry.t_epochs").set_value(2)
    at.select_slider(key="geometry.t_n").set_value(500)
    train_button = [b for b in at.button if "NC tracking" in b.label][0]
    train_button.click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    from core.geometry import nc_histories, runs_with_nc
    from core.zoo import Zoo

    runs = runs_with_nc(Zoo(workspace_env))
    assert runs
    hist = nc_histories(list(runs.values())[-1])
    assert set(hist) == {"erm", "mixup α=1"} and all(len(v) == 2 for v in hist.values())
    assert "NC over training" in [t.label for t in at.tabs]


def test_clustering_page_runs_ppp_on_pixels(workspace_env: Path) -> None:
    at = _page("pages/7_Clustering.py")
    assert not at.exception
    at.radio(key="cluster.source").set_value("pixels")
    at.select_slider(key="cluster.n").set_value(300)
    at.slider(key="cluster.k_max").set_value(5)
    at.slider(key="cluster.n_seeds").set_value(2)
    at.button[0].click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert 2 <= int(metrics["Chosen k"]) <= 5
    assert 0 <= float(metrics["Purity"]) <= 1
    assert len(at.get("plotly_chart")) == 3


@pytest.mark.slow
def test_clustering_page_on_model_features(workspace_env: Path) -> None:
    at = _page("pages/7_Clustering.py")
    at.selectbox(key="cluster.model").set_value("mlp-mnist-s1")
    at.selectbox(key="cluster.task").set_value("mnist")
    at.select_slider(key="cluster.n").set_value(300)
    at.slider(key="cluster.k_max").set_value(4)
    at.button[0].click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Chosen k" in {m.label for m in at.metric}
