"""Different-initialisation merging study: ZipIt! and PLeaS vs permutation-only merging."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from core.data import get_task
from core.models import create_model
from core.papers.different_init import different_init_study


@pytest.mark.slow
def test_study_rows_sizes_and_identities() -> None:
    d = get_task("digits")
    data = replace(
        d,
        x_train=d.x_train[:200],
        y_train=d.y_train[:200],
        x_test=d.x_test[:150],
        y_test=d.y_test[:150],
    )
    model = create_model("mlp", width=16, depth=2, seed=0)
    sd_a = {k: v.clone() for k, v in model.state_dict().items()}
    sd_b = {
        k: v.clone() for k, v in create_model("mlp", width=16, depth=2, seed=1).state_dict().items()
    }
    calls: list[tuple[int, int]] = []
    study = different_init_study(
        model,
        sd_a,
        sd_b,
        data,
        ratios=(0.0, 1.0),
        n_examples=200,
        progress=lambda d, t: calls.append((d, t)),
    )
    rows = {(r["method"], r["ratio"]): r for r in study.rows}
    assert calls[-1] == (12, 12)
    assert rows[("model A", None)]["size"] == 1.0 and rows[("ensemble", None)]["size"] == 2.0
    assert rows[("PLeaS", 0.0)]["size"] == pytest.approx(1.0)
    assert 1.0 < rows[("ZipIt! (partial, 1 layer)", None)]["size"] < 2.0
    # the concatenation without least squares is the ensemble's function
    assert (
        rows[("partial permutation (no LS)", 1.0)]["accuracy"]
        == rows[("ensemble", None)]["accuracy"]
    )
    for r in study.rows:
        assert r["low"] <= r["accuracy"] <= r["high"]
    with pytest.raises(ValueError, match="ratios"):
        different_init_study(model, sd_a, sd_b, data, ratios=(2.0,))
    assert torch.equal(sd_a["head.weight"], model.state_dict()["head.weight"])


@pytest.mark.slow
def test_figure_and_recipe() -> None:
    from core.figures.papers import different_init_data, different_init_figure
    from core.notebook_export import notebook_for
    from core.papers.different_init import DifferentInitStudy

    def row(method, family, ratio, size, acc):
        return dict(
            method=method,
            family=family,
            ratio=ratio,
            size=size,
            accuracy=acc,
            low=acc - 0.02,
            high=acc + 0.02,
        )

    study = DifferentInitStudy(
        [
            row("model A", "endpoint", None, 1.0, 0.9),
            row("ensemble", "endpoint", None, 2.0, 0.95),
            row("weight matching", "permutation", None, 1.0, 0.6),
            row("ZipIt!", "ZipIt!", None, 1.0, 0.7),
            row("PLeaS", "PLeaS", 0.5, 1.5, 0.85),
            row("PLeaS", "PLeaS", 0.0, 1.0, 0.8),
            row("partial permutation (no LS)", "PLeaS", 0.0, 1.0, 0.6),
        ],
        task="digits",
    )
    fig = different_init_figure(study)
    pleas_trace = next(t for t in fig.data if t.name == "PLeaS")
    assert list(pleas_trace.x) == [1.0, 1.5] and list(pleas_trace.y) == pytest.approx([80, 85])
    assert {t.name for t in fig.data} >= {"ZipIt!", "weight matching", "ensemble"}
    assert len(different_init_data(study)) == 7
    with pytest.raises(ValueError, match="no rows"):
        different_init_figure(DifferentInitStudy([]))
    nb = notebook_for(
        {"kind": "different_init_study", "args": {"models": ["a", "b"], "task": "digits"}}
    )
    assert "different_init_study(" in "\n".join(c.source for c in nb.cells)
    with pytest.raises(ValueError, match="models"):
        notebook_for({"kind": "different_init_study", "args": {"models": ["a"], "task": "digits"}})
