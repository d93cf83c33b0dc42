"""The Benchmark page's Orthogonal Adaptation tab (Po et al., CVPR 2024) end to end on a tiny
three-task vision suite: controls, Run, progress, the figure, its tables, and the notebook of
its recipe recomputing the same figure; without a suite, a message saying how to build one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.benchmark.zoo_build import build_suite_zoo
from core.figures import figure_data
from core.notebook_export import notebook_for
from core.papers.orthogonal_adaptation import orthogonal_adaptation_study
from core.zoo import Zoo
from tests.helpers.suites import TINY_VISION_3

ROOT = Path(__file__).resolve().parents[2]
PAGE = "pages/9_Benchmark.py"


@pytest.fixture(scope="module")
def suite_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ortho_page_ws")
    build_suite_zoo(Zoo(root), TINY_VISION_3, device="cpu")
    return root


def _benchmark_page(ws: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MIXMERGE_WORKSPACE", str(ws))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def _notebook_figure(recipe: dict[str, Any], ws: Path) -> Any:
    nb = notebook_for(recipe, workspace=ws)
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "streamlit" not in src and "orthogonal_adaptation" in src
    ns: dict[str, Any] = {}
    for cell in nb.cells[1:-1]:
        if cell.cell_type == "code":
            exec(cell.source, ns)  # noqa: S102 - our own generated notebook
    return ns["fig"]


@pytest.mark.slow  # the tiny suite zoo (~30 s on 2 cores), then 60 adapter steps
def test_orthogonal_adaptation_tab_runs_the_study(
    suite_ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers.app import record_figures

    seen = record_figures(monkeypatch)
    at = _benchmark_page(suite_ws, monkeypatch)
    assert at.selectbox(key="benchmark.ortho_suite").value == "vision"
    assert "benchmark.ortho_figure" not in seen  # nothing runs before the button
    at.multiselect(key="benchmark.ortho_variants").set_value(["orthogonal", "lora"])
    at.select_slider(key="benchmark.ortho_rank").set_value(2)
    at.select_slider(key="benchmark.ortho_steps").set_value(10)
    at.select_slider(key="benchmark.ortho_test").set_value(32)
    at.button(key="benchmark.ortho_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]

    fig, recipe = seen["benchmark.ortho_figure"]
    args = {"suite": "vision", "variants": ["orthogonal", "lora"], "rank": 2, "steps": 10}
    assert recipe == ("orthogonal_adaptation", args | {"test_per_task": 32, "seed": 0})
    want = orthogonal_adaptation_study(
        Zoo(suite_ws), "vision", variants=["orthogonal", "lora"], rank=2, steps=10, test_per_task=32
    )
    # left panel: mean accuracy alone and summed per variant; right: kept per task and variant
    alone, summed, kept_orth, kept_lora = fig.data[:4]
    means = {row["variant"]: row for row in want.summary()}
    assert list(alone.y) == pytest.approx([100 * means[v]["alone"] for v in want.variants])
    assert list(summed.y) == pytest.approx([100 * means[v]["summed"] for v in want.variants])
    assert list(kept_orth.x) == list(TINY_VISION_3.task_names)
    assert list(kept_orth.y) == pytest.approx([want.kept("orthogonal")[t] for t in want.tasks])
    assert list(kept_lora.y) == pytest.approx([want.kept("lora")[t] for t in want.tasks])
    # the basis overlap in the summary table: 0 for orthogonal bases, > 0 for LoRA's
    assert len(at.dataframe) == 2  # the summary, then the per-task table
    summary = at.dataframe[0].value
    overlap = dict(zip(summary["variant"], summary["overlap"], strict=True))
    assert overlap["orthogonal"] == pytest.approx(0.0, abs=1e-5) and overlap["lora"] > 0.01
    per_task = at.dataframe[1].value
    assert len(per_task) == 2 * len(TINY_VISION_3.task_names)
    bars = [e.proto for e in at.get("progress")]
    assert not bars  # emptied once the study is done
    # the notebook of the recipe recomputes the page's figure
    assert figure_data(_notebook_figure(dict(kind=recipe[0], args=recipe[1]), suite_ws)).equals(
        figure_data(fig)
    )
    # a rerun shows the cached study without the button; another rank is not cached
    at.run()
    assert not at.exception and at.dataframe[0].value.equals(summary)
    at.select_slider(key="benchmark.ortho_rank").set_value(4).run()
    assert not at.exception and len(at.dataframe) == 0


def test_orthogonal_adaptation_tab_without_a_suite_says_how_to_build_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _benchmark_page(tmp_path / "ws", monkeypatch)
    assert not at.error, [e.value for e in at.error]
    assert any("No suite zoo in this workspace" in i.value for i in at.info)
    assert any("zoo build --suite vision" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "benchmark.ortho_run"]
