"""AppTest: the home page and the Model Zoo page run, build, train and report errors."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=120)


def test_home_renders_with_zoo_state(workspace_env: Path) -> None:
    at = _app().run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Default zoo"] == "11 / 11"
    assert "Device" in "".join(c.value for c in at.sidebar.caption)


def test_home_on_empty_workspace_offers_build(empty_workspace: Path) -> None:
    at = _app().run()
    assert not at.exception
    assert any(b.label == "Build default zoo" for b in at.button)
    assert {m.label: m.value for m in at.metric}["Models in the zoo"] == "0"


def test_zoo_page_lists_models(workspace_env: Path) -> None:
    at = _app().run()
    at.switch_page("pages/1_Model_Zoo.py").run()
    assert not at.exception
    df = at.dataframe[0].value
    assert {"mlp-base", "mlp-ft-mnist", "resnet20-mnist-s1"} <= set(df["id"])


def test_zoo_page_trains_a_model(empty_workspace: Path) -> None:
    at = _app().run()
    at.switch_page("pages/1_Model_Zoo.py").run()
    at.selectbox(key="zoo.arch").set_value("mlp").run()
    at.selectbox(key="zoo.task").set_value("digits")
    at.slider(key="zoo.epochs").set_value(1)
    at.number_input(key="zoo.width").set_value(32)
    at.text_input(key="zoo.name").set_value("tiny-digits")
    at.button[0].click()  # the form's submit button
    at.run()
    assert not at.exception
    assert any("tiny-digits" in s.value for s in at.success), [e.value for e in at.error]
    from core.zoo import Zoo

    rec = Zoo(empty_workspace).get("tiny-digits")
    assert rec.arch == "mlp" and rec.task == "digits" and rec.arch_kwargs == {"width": 32}


def test_bad_workspace_setting_is_refused(workspace_env: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    at = _app().run()
    at.sidebar.text_input[0].set_value(str(blocker)).run()
    assert not at.exception
    assert any("Workspace not changed" in e.value for e in at.error)
