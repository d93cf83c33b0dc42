"""AppTest: the Merge Lab's labels say what the numbers are (issue 21 item 10)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


def _lab_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/2_Merge_Lab.py").run()
    return at


def _values(x: object) -> list[float]:
    """A trace's x as floats (plotly.js typed arrays arrive as {"dtype", "bdata"})."""
    if isinstance(x, dict):
        return np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]).tolist()
    return [float(v) for v in (x or [])]


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_subset_size_and_deltas_name_what_they_are(workspace_env: Path) -> None:
    at = _lab_page()
    assert at.select_slider(key="merge.n_eval").value == 250
    title = _figures(at)[0]["layout"]["title"]["text"]
    assert "250 / task" in title and "n=1000" not in title, title
    deltas = [m.delta for m in at.metric if m.label.startswith("acc · ")]
    assert deltas and all(d.endswith("vs fine-tuned") for d in deltas), deltas
    # independent models have no fine-tuned reference: the delta is against the best input
    at.radio(key="merge.setting").set_value("independent").run()
    assert not at.exception
    deltas = [m.delta for m in at.metric if m.label.startswith("acc · ")]
    assert deltas and all(d.endswith("vs best input model") for d in deltas), deltas


def test_regmean_description_is_a_sentence_on_the_page(workspace_env: Path) -> None:
    at = _lab_page()
    at.selectbox(key="merge.method").set_value("regmean").run()
    text = next(c.value for c in at.caption if c.value.startswith("**RegMean"))
    assert "RegMean: merge linear layers" in text and "``" not in text and "grams[i]" not in text


def test_sweep_grid_holds_zero_and_the_current_value(workspace_env: Path) -> None:
    at = _lab_page()
    at.slider(key="merge.scale").set_value(0.35).run()
    at.slider(key="merge.sweep_n").set_value(3)
    at.button(key="merge.sweep_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    sweep = next(f for f in _figures(at) if "sweep" in json.dumps(f["layout"]).lower())
    xs = {round(x, 4) for tr in sweep["data"] for x in _values(tr.get("x"))}
    assert {0.0, 0.35} <= xs, sorted(xs)
