"""Display formatting of p-values (core.figures.text, ui.tables) and the Merge Lab's comparison
table as the page shows it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.figures.text import p_value_text

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
P_TEXT = re.compile(r"^(ref|—|[01]\.\d{3}|\d\.\de-\d+|< 1e-300)$")


@pytest.mark.parametrize(
    ("p", "text"),
    [
        (None, "ref"),
        (1.0, "1.000"),
        (0.04321, "0.043"),
        (0.001, "0.001"),
        (0.00099, "9.9e-4"),
        (1.4e-14, "1.4e-14"),
        (2.5e-120, "2.5e-120"),
        (0.0, "< 1e-300"),
    ],
)
def test_p_value_text(p: float | None, text: str) -> None:
    assert p_value_text(p) == text


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_p_value_text_rejects_out_of_range(bad: float) -> None:
    with pytest.raises(ValueError, match="p must be in"):
        p_value_text(bad)
    with pytest.raises(TypeError, match="p must be a float"):
        p_value_text("0.1")  # type: ignore[arg-type]


@pytest.mark.slow
def test_merge_lab_comparison_prints_p_values_and_ref(workspace_env: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=240).run()
    at.switch_page("pages/2_Merge_Lab.py").run()
    at.multiselect(key="merge.cmp_methods").set_value(["task_arithmetic", "average", "ties"])
    at.checkbox(key="merge.cmp_full").uncheck()
    at.button(key="merge.cmp_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = next(d.value for d in at.dataframe if "ci_low" in d.value.columns)
    col = table["p_vs_task_arithmetic"]
    assert col.tolist()[0] == "ref", col.tolist()  # the reference row
    assert all(isinstance(v, str) and P_TEXT.match(v) for v in col), col.tolist()
    assert not any(v in ("None", "nan") or len(v) > 9 for v in col), col.tolist()
    fig = next(c for c in at.get("plotly_chart") if "McNemar" in c.proto.spec)
    assert '"ref"' in fig.proto.spec and "None" not in fig.proto.spec
