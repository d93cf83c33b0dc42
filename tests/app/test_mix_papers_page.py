"""AppTest: the Mixup Papers page runs each study, stores it and shows its figure."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

# each test renders all eight study tabs and trains one study: tens of seconds on a busy CPU
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
    at.switch_page("pages/10_Mixup_Papers.py").run()
    assert not at.exception, at.exception
    return at


def _submit(at: AppTest, form_key: str) -> None:
    next(b for b in at.button if b.proto.form_id == form_key).click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]


def test_feature_learning_tab_runs_and_shows_figure(empty_workspace: Path) -> None:
    at = _page()
    assert any("No stored runs" in i.value for i in at.info)
    at.number_input(key="mixup_papers.fl.n").set_value(20)
    at.number_input(key="mixup_papers.fl.steps").set_value(20)
    at.number_input(key="mixup_papers.fl.seeds").set_value(1)
    _submit(at, "mixup_papers.feature_learning.form")
    assert any("Stored run" in s.value for s in at.success)
    assert len(at.get("plotly_chart")) >= 1


def test_neural_collapse_tab_runs_and_rejects_bad_classes(empty_workspace: Path) -> None:
    at = _page()
    at.selectbox(key="mixup_papers.nc.task").set_value("digits")
    at.number_input(key="mixup_papers.nc.epochs").set_value(1)
    at.number_input(key="mixup_papers.nc.width").set_value(16)
    at.number_input(key="mixup_papers.nc.seeds").set_value(1)
    at.text_input(key="mixup_papers.nc.classes").set_value("0,1")
    next(b for b in at.button if b.proto.form_id == "mixup_papers.neural_collapse.form").click()
    at.run()
    assert not at.exception and any("three classes" in e.value for e in at.error)
    at.text_input(key="mixup_papers.nc.classes").set_value("3,4,5")
    _submit(at, "mixup_papers.neural_collapse.form")
    assert any("Stored run" in s.value for s in at.success)


def test_supremix_tab_runs(empty_workspace: Path) -> None:
    at = _page()
    at.number_input(key="mixup_papers.sr.n").set_value(64)
    at.number_input(key="mixup_papers.sr.epochs").set_value(1)
    at.number_input(key="mixup_papers.sr.width").set_value(16)
    at.number_input(key="mixup_papers.sr.seeds").set_value(1)
    _submit(at, "mixup_papers.supremix.form")
    assert any("Stored run" in s.value for s in at.success)


def test_mochi_tab_runs_and_reports_bad_settings(empty_workspace: Path) -> None:
    at = _page()
    at.number_input(key="mixup_papers.mc.n").set_value(128)
    at.number_input(key="mixup_papers.mc.epochs").set_value(1)
    at.number_input(key="mixup_papers.mc.seeds").set_value(1)
    at.number_input(key="mixup_papers.mc.queue").set_value(128)
    at.number_input(key="mixup_papers.mc.hard").set_value(500)  # more than the queue
    next(b for b in at.button if b.proto.form_id == "mixup_papers.mochi.form").click()
    at.run()
    assert not at.exception and any("n_hard" in e.value for e in at.error)
    at.number_input(key="mixup_papers.mc.hard").set_value(16)
    _submit(at, "mixup_papers.mochi.form")
    assert any("Stored run" in s.value for s in at.success)


def test_adamixup_tab_runs(empty_workspace: Path) -> None:
    at = _page()
    at.selectbox(key="mixup_papers.am.task").set_value("digits")
    at.number_input(key="mixup_papers.am.n").set_value(64)
    at.number_input(key="mixup_papers.am.epochs").set_value(1)
    at.number_input(key="mixup_papers.am.seeds").set_value(1)
    at.number_input(key="mixup_papers.am.width").set_value(4)
    _submit(at, "mixup_papers.adamixup.form")
    assert any("Stored run" in s.value for s in at.success)


def test_adautomix_tab_runs(empty_workspace: Path) -> None:
    at = _page()
    at.selectbox(key="mixup_papers.aa.task").set_value("digits")
    at.number_input(key="mixup_papers.aa.n").set_value(64)
    at.number_input(key="mixup_papers.aa.epochs").set_value(1)
    at.number_input(key="mixup_papers.aa.seeds").set_value(1)
    at.number_input(key="mixup_papers.aa.width").set_value(4)
    _submit(at, "mixup_papers.adautomix.form")
    assert any("Stored run" in s.value for s in at.success)
    assert len(at.get("plotly_chart")) >= 1


def test_attention_labels_tab_reports_bad_patch(empty_workspace: Path) -> None:
    at = _page()
    at.selectbox(key="mixup_papers.al.task").set_value("digits")
    at.number_input(key="mixup_papers.al.n").set_value(32)
    at.number_input(key="mixup_papers.al.epochs").set_value(1)
    at.number_input(key="mixup_papers.al.seeds").set_value(1)
    at.number_input(key="mixup_papers.al.width").set_value(16)
    at.number_input(key="mixup_papers.al.depth").set_value(1)
    at.number_input(key="mixup_papers.al.patch").set_value(3)  # does not divide 8 px
    next(b for b in at.button if b.proto.form_id == "mixup_papers.attention_labels.form").click()
    at.run()
    assert not at.exception and any("patch_size" in e.value for e in at.error)
    at.number_input(key="mixup_papers.al.patch").set_value(2)
    _submit(at, "mixup_papers.attention_labels.form")
    assert any("Stored run" in s.value for s in at.success)


def test_dualmix_tab_runs_and_reports_uneven_tasks(empty_workspace: Path) -> None:
    at = _page()
    at.selectbox(key="mixup_papers.dm.task").set_value("digits")
    # 3 tasks: 10 classes do not split into equal increments
    for key, value in {"n": 200, "buffer": 20, "seeds": 1, "width": 4, "tasks": 3}.items():
        at.number_input(key=f"mixup_papers.dm.{key}").set_value(value)
    next(b for b in at.button if b.proto.form_id == "mixup_papers.dualmix.form").click()
    at.run()
    assert not at.exception and any("n_tasks must divide" in e.value for e in at.error)
    at.number_input(key="mixup_papers.dm.tasks").set_value(5)
    _submit(at, "mixup_papers.dualmix.form")
    assert any("Stored run" in s.value for s in at.success)
    assert len(at.get("plotly_chart")) >= 1
