"""AppTest: the Merging Papers page runs each paper's study on the tiny zoo."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.test_notebooks import _reproduce, shown  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
PAGE = "pages/11_Merging_Papers.py"


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def _button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


def test_page_opens_with_every_study(workspace_env: Path) -> None:
    at = _page()
    assert at.selectbox(key="papers.sms_model").value == "mlp-mnist-s1"
    assert _button(at, "papers.run_sms") is not None


def test_empty_workspace_says_what_to_do(empty_workspace: Path) -> None:
    at = _page()
    assert any("build the default zoo" in i.value for i in at.info)


@pytest.mark.slow
def test_sparse_model_soup_runs(workspace_env: Path) -> None:
    at = _page()
    at.selectbox(key="papers.sms_task").set_value("digits")
    at.slider(key="papers.sms_cycles").set_value(2)
    at.slider(key="papers.sms_ingredients").set_value(2)
    at.slider(key="papers.sms_epochs").set_value(1).run()
    _button(at, "papers.run_sms").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    df = at.dataframe[0].value
    soups = df[df["role"] == "soup"]
    assert list(soups["cycle"]) == [1, 2]
    assert soups["sparsity"].tolist() == pytest.approx([0.5, 0.75], abs=1e-3)


@pytest.mark.slow
def test_bn_stream_study_runs(workspace_env: Path) -> None:
    at = _page()
    assert at.selectbox(key="papers.bn_a").value == "cnn-mnist-s1"
    assert at.selectbox(key="papers.bn_b").value == "cnn-mnist-s2"
    at.multiselect(key="papers.bn_levels").set_value([1])
    at.select_slider(key="papers.bn_n").set_value(500).run()
    _button(at, "papers.run_bn").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    df = next(d for d in at.dataframe if "method" in d.value.columns).value
    assert list(df["method"]) == ["stored", "cumulative", "unmixed", "cumulative", "unmixed"]


@pytest.mark.slow
def test_different_init_study_runs(workspace_env: Path) -> None:
    at = _page()
    assert at.selectbox(key="papers.zip_a").value == "mlp-mnist-s1"
    assert at.selectbox(key="papers.zip_b").value == "mlp-mnist-s2"
    at.multiselect(key="papers.zip_ratios").set_value([0.0, 1.0])
    at.select_slider(key="papers.zip_n").set_value(500).run()
    _button(at, "papers.run_zip").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    df = next(d for d in at.dataframe if "family" in d.value.columns).value
    assert {"ZipIt!", "PLeaS", "weight matching", "ensemble"} <= set(df["method"])
    assert sorted(df[df["method"] == "PLeaS"]["ratio"]) == [0.0, 1.0]


def test_mc_smoe_tab_offers_training_without_a_moe(workspace_env: Path) -> None:
    at = _page()
    assert any("No sparse MoE" in i.value for i in at.info)
    assert _button(at, "papers.moe_train") is not None
    assert not [b for b in at.button if b.key == "papers.run_moe"]  # nothing to study yet


@pytest.mark.slow
def test_mc_smoe_trains_a_moe_then_runs_the_study(
    tiny_zoo_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shown: dict,  # noqa: F811 - the fixture imported above
) -> None:
    import core.papers.mc_smoe as mod
    from core.papers.mc_smoe import METHODS

    ticks: list[tuple[int, int]] = []
    real = mod.mc_smoe_study

    def study_reporting_progress(*args, progress=None, **kwargs):  # the real study, observed
        assert progress is not None  # the page passes its progress bar's callback

        def tick(done: int, total: int) -> None:
            ticks.append((done, total))
            progress(done, total)

        return real(*args, progress=tick, **kwargs)

    monkeypatch.setattr(mod, "mc_smoe_study", study_reporting_progress)

    ws = tmp_path / "ws"  # a copy: the trained MoE must not enter the shared tiny zoo
    shutil.copytree(tiny_zoo_dir, ws)
    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(ws))
    at = _page()
    at.selectbox(key="papers.moe_task").set_value("digits")
    at.slider(key="papers.moe_train_epochs").set_value(1).run()
    _button(at, "papers.moe_train").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="papers.moe_model").value.startswith("moe-digits-s")
    at.multiselect(key="papers.moe_groups").set_value([4, 1])
    at.select_slider(key="papers.moe_n").set_value(500).run()
    _button(at, "papers.run_moe").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    df = next(d for d in at.dataframe if "n_groups" in d.value.columns).value
    assert set(df["method"]) == {"full SMoE", *METHODS, "MC-SMoE (merge + compress)"}
    merged = df[df["method"] != "full SMoE"]
    assert sorted(set(merged["n_groups"])) == [1, 4]
    full_kb = float(df[df["method"] == "full SMoE"]["memory_kb"].iloc[0])
    assert (merged["memory_kb"] < full_kb).all()
    assert ticks[-1] == (13, 13) and len(ticks) == 13  # the bar advanced once per row
    fig, recipe = shown["papers.moe"]
    assert recipe["kind"] == "mc_smoe_study" and recipe["args"]["group_counts"] == [4, 1]
    assert {t.name for t in fig.data} >= {*METHODS, "MC-SMoE (merge + compress)"}
    _reproduce(recipe, fig, ws, tmp_path / "nb")  # its notebook redraws the shown figure
