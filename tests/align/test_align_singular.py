"""Singular-vector alignment under permutation (Ito et al., arXiv 2402.04051)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.align import (
    apply_permutation,
    compare_singular_alignment,
    random_permutation,
    singular_alignment,
    spec_for,
    weight_matching,
)
from core.figures import figure_data
from core.figures.papers import (
    singular_alignment_data,
    singular_alignment_figure,
    singular_alignment_table,
    singular_overlap_figure,
)
from core.models import create_model
from core.notebook_export import notebook_for


def _mlp(seed: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    m = create_model("mlp", width=16, depth=2, image_size=8, seed=seed)
    return m, {k: v.clone() for k, v in m.state_dict().items()}


def test_permutation_keeps_singular_values_and_identity_changes_nothing() -> None:
    model, sd_a = _mlp(0)
    _, sd_b = _mlp(1)
    spec = spec_for(model)
    perm = random_permutation(spec, generator=torch.Generator().manual_seed(3))
    res = singular_alignment(spec, sd_a, sd_b, perm)
    assert [la.key for la in res.layers] == ["trunk.fc0.weight", "trunk.fc1.weight", "head.weight"]
    for la in res.layers:
        torch.testing.assert_close(la.sigma_b, la.sigma_b_permuted, atol=1e-5, rtol=1e-5)
        assert la.overlap_before.shape == (min(16, len(la.sigma_a)),) * 2
        assert float(la.overlap_after.max()) <= 1 + 1e-6
    same = singular_alignment(spec, sd_a, sd_b, None)
    for la in same.layers:
        torch.testing.assert_close(la.diag_before, la.diag_after)
    assert same.distance_ratio == pytest.approx(1.0)


def test_matching_a_permuted_copy_aligns_every_singular_pair() -> None:
    """B = pi(A): weight matching recovers pi, so every pair lines up (a_ii = 1) and the
    distance drops to 0, while the unpermuted pairs are far from aligned."""
    model, sd_a = _mlp(0)
    spec = spec_for(model)
    pi = random_permutation(spec, generator=torch.Generator().manual_seed(1))
    sd_b = apply_permutation(spec, pi, sd_a)
    res = compare_singular_alignment(model, sd_a, sd_b)["weight matching"]
    assert res.distance_after == pytest.approx(0.0, abs=1e-5)
    assert res.distance_before > 1.0
    for la in res.layers:
        torch.testing.assert_close(la.diag_after, torch.ones_like(la.diag_after), atol=1e-4, rtol=0)
    hidden = res.layers[0]
    assert float(hidden.diag_before.abs().mean()) < 0.5


def test_alignment_matches_an_independent_numpy_svd() -> None:
    model, sd_a = _mlp(0)
    _, sd_b = _mlp(1)
    spec = spec_for(model)
    perm = weight_matching(spec, sd_a, sd_b)
    res = singular_alignment(spec, sd_a, sd_b, perm, top_k=4)
    sd_bp = apply_permutation(spec, perm, sd_b)
    wa = sd_a["trunk.fc1.weight"].double().numpy()
    wb = sd_bp["trunk.fc1.weight"].double().numpy()
    ua, sa, vha = np.linalg.svd(wa)
    ub, _, vhb = np.linalg.svd(wb)
    want = np.einsum("ki,ki->i", ua, ub) * np.einsum("ik,ik->i", vha, vhb)  # (u_i.u_i)(v_i.v_i)
    layer = res.layers[1]
    np.testing.assert_allclose(layer.diag_after.numpy(), want, atol=1e-4)
    np.testing.assert_allclose(layer.sigma_a.numpy(), sa, rtol=1e-5)
    flat = [
        (sd_a[k].double() - sd_bp[k].double()).square().sum()
        for k in ("trunk.fc0.weight", "trunk.fc1.weight", "head.weight")
    ]
    assert res.distance_after == pytest.approx(float(sum(flat)) ** 0.5, rel=1e-6)


def test_bad_inputs_are_named() -> None:
    model, sd_a = _mlp(0)
    spec = spec_for(model)
    with pytest.raises(ValueError, match="top_k"):
        singular_alignment(spec, sd_a, sd_a, top_k=0)
    with pytest.raises(ValueError, match="matcher"):
        compare_singular_alignment(model, sd_a, sd_a, matchers=("magic",))
    with pytest.raises(ValueError, match="x"):
        compare_singular_alignment(model, sd_a, sd_a, matchers=("activation matching",))


def test_figures_and_table() -> None:
    model, sd_a = _mlp(0)
    _, sd_b = _mlp(1)
    x = torch.randn(64, 1, 8, 8)
    res = compare_singular_alignment(
        model, sd_a, sd_b, matchers=("weight matching", "activation matching"), x=x, top_k=6
    )
    fig = singular_alignment_figure(res)
    assert len(fig.data) == 3 * (1 + 1 + 2)  # per layer: sigma bars, before, two matchers
    data = singular_alignment_data(res)
    assert set(data["matcher"]) == {"weight matching", "activation matching"}
    table = singular_alignment_table(res)
    assert len(table) == 6 and (table["distance ratio"] <= 1.0 + 1e-9).all()
    heat = singular_overlap_figure(res["weight matching"], layer="trunk.fc1.weight")
    assert len(heat.data) == 2 and np.asarray(heat.data[0].z).shape == (6, 6)
    assert not figure_data(fig).empty
    with pytest.raises(ValueError, match="layer"):
        singular_overlap_figure(res["weight matching"], layer="nope")


def test_recipe_builds_a_notebook() -> None:
    nb = notebook_for(
        {"kind": "singular_alignment", "args": {"models": ["a", "b"], "task": "digits"}}
    )
    src = "\n".join(c.source for c in nb.cells)
    assert "compare_singular_alignment" in src and "singular_alignment_figure" in src
    with pytest.raises(ValueError, match="models"):
        notebook_for({"kind": "singular_alignment", "args": {"models": ["a"], "task": "digits"}})


@pytest.mark.slow
def test_interpolation_page_tab_and_notebook(
    workspace_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers.app import record_figures
    from tests.test_notebooks import _page_recipe, _reproduce, _run_page

    root = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("PYTHONPATH", str(root))  # the notebook kernel imports this checkout
    seen = record_figures(monkeypatch)

    def setup(at: Any) -> None:
        next(b for b in at.button if b.key == "interp.run_sv").click().run()

    at = _run_page("pages/3_Interpolation.py", setup)
    table = next(d for d in at.dataframe if "top-5 alignment after" in d.value.columns).value
    assert (table["top-5 alignment after"] > table["top-5 alignment before"]).all()
    fig, recipe = _page_recipe(seen, "interp.sv", "singular_alignment")
    assert recipe["args"]["models"] == ["mlp-mnist-s1", "mlp-mnist-s2"]
    _reproduce(recipe, fig, workspace_env, tmp_path)
