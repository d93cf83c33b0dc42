"""AppTest: the home page and the Model Zoo page run, build, train and report errors."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
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


def test_home_build_runs_in_the_background_and_can_be_cancelled(empty_workspace: Path) -> None:
    """The button starts a build process that outlives the script run; the panel shows its
    progress and Cancel stops it (the build no longer dies with the browser tab)."""
    from core.zoo import worker as zoo_worker

    at = _app().run()
    next(b for b in at.button if b.label == "Build default zoo").click().run()
    assert not at.exception
    status = zoo_worker.build_status(empty_workspace)
    try:
        assert status.running and status.pid is not None
        assert any(b.label == "Cancel build" for b in at.button)  # the panel shows the build
        assert at.get("progress")
        next(b for b in at.button if b.label == "Cancel build").click().run()
        assert not at.exception
    finally:
        zoo_worker.cancel_build(empty_workspace)
        import os
        import signal
        import time

        t0 = time.time()
        while zoo_worker.build_status(empty_workspace).running and time.time() - t0 < 60:
            time.sleep(0.2)
        if zoo_worker.build_status(empty_workspace).running:  # pragma: no cover
            os.kill(status.pid, signal.SIGKILL)
    at.run()
    assert not any(b.label == "Cancel build" for b in at.button)
    assert any(b.label == "Build default zoo" for b in at.button)  # resumable


def test_home_names_the_missing_models_of_an_incomplete_zoo(
    tiny_zoo_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    import shutil

    from core.zoo import Zoo

    ws = tmp_path / "ws"
    shutil.copytree(tiny_zoo_dir, ws)
    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(ws))
    Zoo(ws).delete("mlp-ft-mnist")
    at = _app().run()
    assert not at.exception
    assert any("Missing: mlp-ft-mnist." in i.value for i in at.info)
    assert any(b.label == "Build default zoo" for b in at.button)


def test_every_page_is_linked_in_the_sidebar() -> None:
    from ui.frame import ROOT, SECTIONS

    linked = {f for _, pages in SECTIONS for f, _, _ in pages}
    present = {f"pages/{p.name}" for p in (ROOT / "pages").glob("*.py")} | {"app.py"}
    assert present - linked == set(), "add these pages to ui.frame.SECTIONS"
    assert "pages/12_Merge_Search.py" in linked
