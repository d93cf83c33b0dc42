"""The Merge Lab's interference section: figures, page, and the figure-to-notebook recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest
import torch

from core.figures import figure_data
from core.figures.interference import (
    cosine_figure,
    interference_figure,
    keep_figure,
    layer_profile_figure,
)
from core.merge.diagnostics import interference
from tests.test_notebooks import _differs, _page_recipe, _reproduce, _run_page, shown  # noqa: F401

PAGE = "pages/2_Merge_Lab.py"


def _report(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tvs = [
        {"l1.weight": torch.randn(6, 4, generator=g), "l2.weight": torch.randn(3, 6, generator=g)}
        for _ in range(3)
    ]
    return interference(tvs, names=["a", "b", "c"], density=0.3, drop=0.4, seed=seed)


def test_figures_show_the_report():
    rep = _report()
    cos = cosine_figure(rep)
    assert cos.data[0].z.tolist() == rep.cosine.tolist()
    prof = layer_profile_figure(rep)
    names = [t.name for t in prof.data]
    assert "‖τ‖ · a" in names and any("sign conflicts" in n for n in names)
    assert list(prof.data[-1].y) == pytest.approx(rep.norms[2].tolist())
    for method in ("ties", "dare", "dare_ties"):
        fig = keep_figure(rep, method)
        assert fig.data[0].z.tolist() == getattr(rep, method).fraction.tolist()
        assert not figure_data(fig).empty
    assert isinstance(interference_figure(rep, "layers"), go.Figure)
    with pytest.raises(ValueError, match="chart"):
        interference_figure(rep, "pie")
    with pytest.raises(ValueError, match="method"):
        keep_figure(rep, "pcb")
    with pytest.raises(TypeError, match="InterferenceReport"):
        cosine_figure(object())


@pytest.mark.slow
def test_page_section_and_notebook_reproduce(
    workspace_env: Path,
    shown: dict,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    def setup(at: Any) -> None:
        at.slider(key="merge.intf_density").set_value(0.3)
        at.button(key="merge.intf_go").click().run()
        assert not at.exception, at.exception
        at.segmented_control(key="merge.intf_chart").set_value("keep").run()

    at = _run_page(PAGE, setup)
    assert not at.exception and not at.error, [e.value for e in at.error]
    fig, recipe = _page_recipe(shown, "merge.intf", "merge_interference")
    assert recipe["args"]["chart"] == "keep" and recipe["args"]["density"] == 0.3
    _reproduce(recipe, fig, workspace_env, tmp_path / "a")
    from core.merge_eval import lab_from_zoo
    from core.zoo import Zoo

    lab = lab_from_zoo(Zoo(workspace_env), recipe["args"]["models"], base_id=recipe["args"]["base"])
    other = interference(list(lab.task_vectors), names=lab.model_ids, density=0.8, seed=0)
    _differs(fig, keep_figure(other))


def test_page_without_base_says_what_is_needed(workspace_env: Path) -> None:
    at = _run_page(PAGE, lambda at: at.radio(key="merge.setting").set_value("independent").run())
    assert any("task-vector setting" in c.value for c in at.caption)
