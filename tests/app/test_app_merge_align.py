"""AppTest: the Merge Lab aligns independently trained models before merging and shows the gain."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.merge_eval import lab_from_zoo
from core.zoo import Zoo

ROOT = Path(__file__).resolve().parents[2]
PAIR = ["mlp-mnist-s1", "mlp-mnist-s2"]


def test_independent_models_are_aligned_first_and_the_gain_is_shown(workspace_env: Path) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/2_Merge_Lab.py").run()
    assert not [s for s in at.selectbox if s.key == "merge.align"]  # task vectors: no step
    at.radio(key="merge.setting").set_value("independent").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="merge.align").value == "weight"  # no shared base: on by default
    metrics = {m.label: m.value for m in at.metric}
    zoo = Zoo(workspace_env)
    plain = lab_from_zoo(zoo, PAIR).run("average", {})
    aligned = lab_from_zoo(zoo, PAIR, align="weight").run("average", {})
    assert metrics["Average accuracy"] == f"{aligned.average:.3f}"
    assert metrics["Gain of weight matching"] == f"{aligned.average - plain.average:+.3f}"
    # any method runs on the aligned models; "no alignment" gives the plain numbers, no gain
    at.selectbox(key="merge.method").set_value("slerp").run()
    assert not at.exception and "Gain of weight matching" in {m.label for m in at.metric}
    at.selectbox(key="merge.method").set_value("average").run()
    at.selectbox(key="merge.align").set_value("none").run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Average accuracy"] == f"{plain.average:.3f}"
    assert not [k for k in metrics if k.startswith("Gain of")]
