"""AppTest: the Mixup Gallery and Mixup Training pages render, mix, train and report errors."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


def _app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)


def test_gallery_page_shows_figures_for_every_method(workspace_env: Path) -> None:
    at = _app().run()
    at.switch_page("pages/4_Mixup_Gallery.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 3
    at.selectbox(key="mixup_gallery.method").set_value("fmix").run()
    at.toggle(key="mixup_gallery.fixed").set_value(True).run()
    at.slider(key="mixup_gallery.lam").set_value(0.3).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 3


def test_gallery_page_dataset_samples(workspace_env: Path) -> None:
    at = _app().run()
    at.switch_page("pages/4_Mixup_Gallery.py").run()
    at.radio(key="mixup_gallery.source").set_value("dataset").run()
    at.selectbox(key="mixup_gallery.task").set_value("digits").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == 3


def test_gallery_page_asks_for_two_photos(workspace_env: Path) -> None:
    at = _app().run()
    at.switch_page("pages/4_Mixup_Gallery.py").run()
    at.multiselect(key="mixup_gallery.photos").set_value(["astronaut"]).run()
    assert not at.exception
    assert any("at least two" in i.value for i in at.info)


def test_training_page_trains_and_shows_run(empty_workspace: Path) -> None:
    at = _app().run()
    at.switch_page("pages/5_Mixup_Training.py").run()
    assert not at.exception
    assert any("No mixup runs" in i.value for i in at.info)
    assert at.number_input(key="mixup_training.width.cnn").value == 16
    at.selectbox(key="mixup_training.arch").set_value("mlp").run()  # the width follows at once
    assert at.number_input(key="mixup_training.width.mlp").value == 512
    at.selectbox(key="mixup_training.arch").set_value("cnn").run()
    assert at.number_input(key="mixup_training.width.cnn").value == 16
    at.selectbox(key="mixup_training.arch").set_value("mlp").run()
    at.selectbox(key="mixup_training.task").set_value("digits")
    at.number_input(key="mixup_training.width.mlp").set_value(16)
    at.slider(key="mixup_training.epochs").set_value(2)
    at.number_input(key="mixup_training.n_train").set_value(100)
    at.multiselect(key="mixup_training.mixers").set_value(["mixup"])
    at.number_input(key="mixup_training.stop").set_value(1)
    next(b for b in at.button if b.proto.is_form_submitter).click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Stored run" in s.value for s in at.success)
    assert len(at.get("plotly_chart")) == 4
    from core.mixup.training import load_runs
    from core.zoo import Zoo

    runs = load_runs(Zoo(empty_workspace))
    (run,) = runs.values()
    assert set(run["methods"]) == {"erm", "mixup α=1", "mixup α=1 (off at 1)"}


def _gallery_pairs(at: AppTest) -> list[str]:
    """The subplot titles "a + b" of the gallery figure (the first chart)."""
    import json

    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    return [a["text"] for a in spec["layout"]["annotations"] if " + " in a.get("text", "")]


def test_gallery_never_pairs_an_image_with_itself(workspace_env: Path) -> None:
    at = _app().run()
    at.switch_page("pages/4_Mixup_Gallery.py").run()
    for seed in range(4):
        at.number_input(key="mixup_gallery.seed").set_value(seed).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        pairs = _gallery_pairs(at)
        assert len(pairs) == 4, pairs
        assert all(a != b for a, b in (p.split(" + ") for p in pairs)), (seed, pairs)
