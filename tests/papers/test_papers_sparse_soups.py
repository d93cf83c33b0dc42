"""Sparse Model Soups (Zimmer et al., arXiv 2306.16788): masks, masked retraining, the soup."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from core.data import get_task
from core.figures.papers import sparse_soup_data, sparse_soup_figure
from core.models import create_model
from core.notebook_export import notebook_for
from core.papers.sparse_soups import (
    SoupConfig,
    apply_mask,
    magnitude_mask,
    masked_retrain,
    prunable_keys,
    sparse_model_soup,
    sparsity_of,
)
from core.train import TrainConfig


def _tiny():
    d = get_task("digits")
    data = replace(d, x_train=d.x_train[:256], y_train=d.y_train[:256])
    model = create_model("mlp", width=16, depth=2, seed=0)
    return model, {k: v.clone() for k, v in model.state_dict().items()}, data


def test_magnitude_mask_is_global_and_monotone() -> None:
    _, sd, _ = _tiny()
    keys = prunable_keys(sd)
    assert keys == ["trunk.fc0.weight", "trunk.fc1.weight", "head.weight"]
    mask = magnitude_mask(sd, 0.5)
    flat = np.concatenate([sd[k].abs().flatten().numpy() for k in keys])
    kept = np.concatenate([mask[k].flatten().numpy() for k in keys])
    assert kept.sum() == flat.size - round(0.5 * flat.size)
    assert flat[kept].min() >= flat[~kept].max()  # independent check: a global threshold
    pruned = apply_mask(sd, mask)
    assert sparsity_of(pruned, keys) == pytest.approx(0.5, abs=1e-3)
    torch.testing.assert_close(pruned["trunk.fc0.bias"], sd["trunk.fc0.bias"])  # biases kept
    # next cycle from weights that changed: everything pruned before stays pruned
    moved = {k: v + 0.5 for k, v in pruned.items()}
    mask2 = magnitude_mask(moved, 0.75, previous=mask)
    for k in keys:
        assert not (mask2[k] & ~mask[k]).any()
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_mask(sd, 1.0)
    with pytest.raises(ValueError, match="keys"):
        magnitude_mask(sd, 0.5, keys=["nope"])


def test_masked_retraining_keeps_the_zeros_and_trains_the_rest() -> None:
    model, sd, data = _tiny()
    mask = magnitude_mask(sd, 0.8)
    start = apply_mask(sd, mask)
    out = masked_retrain(model, start, mask, data, TrainConfig(epochs=1, max_steps=5, lr=1e-2))
    for k, m in mask.items():
        assert (out[k][~m] == 0).all()
        assert not torch.equal(out[k][m], start[k][m])


def test_the_soup_is_the_average_of_the_seeded_ingredients_and_as_sparse() -> None:
    model, sd, data = _tiny()
    retrain = TrainConfig(epochs=1, max_steps=4, lr=1e-2)
    cfg = SoupConfig(cycles=1, prune_fraction=0.6, n_ingredients=2, retrain=retrain)
    calls: list[tuple[int, int]] = []
    res = sparse_model_soup(
        model, sd, data, cfg, seed=7, progress=lambda a, b: calls.append((a, b))
    )
    assert calls == [(1, 2), (2, 2)]
    mask = magnitude_mask(sd, 0.6)
    pruned = apply_mask(sd, mask)
    ingredients = [
        masked_retrain(model, pruned, mask, data, replace(retrain, seed=7 + 1000 + i))
        for i in range(2)
    ]
    for k in res.soup:
        torch.testing.assert_close(res.soup[k], (ingredients[0][k] + ingredients[1][k]) / 2)
    (c,) = res.cycles
    assert c.soup_sparsity == pytest.approx(0.6, abs=1e-3)
    assert c.ingredient_sparsity == [pytest.approx(0.6, abs=1e-3)] * 2
    assert 0 <= c.soup_accuracy <= 1 and len(c.ingredient_accuracy) == 2


@pytest.mark.slow
def test_cycles_raise_the_sparsity_and_the_figure_shows_them() -> None:
    model, sd, data = _tiny()
    cfg = SoupConfig(
        cycles=2, prune_fraction=0.5, n_ingredients=2, retrain=TrainConfig(epochs=1, max_steps=3)
    )
    res = sparse_model_soup(model, sd, data, cfg)
    assert [c.target_sparsity for c in res.cycles] == [0.5, 0.75]
    assert res.cycles[1].soup_sparsity == pytest.approx(0.75, abs=1e-3)
    fig = sparse_soup_figure(res)
    names = [t.name for t in fig.data]
    assert names == ["ingredients", "best ingredient", "soup (uniform)"]
    df = sparse_soup_data(res)
    assert set(df["role"]) == {"dense", "pruned, before retraining", "ingredient", "soup"}
    nb = notebook_for({"kind": "sparse_model_soup", "args": {"model": "m", "task": "digits"}})
    assert "sparse_model_soup" in "\n".join(c.source for c in nb.cells)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="n_ingredients"):
        SoupConfig(n_ingredients=1)
    with pytest.raises(ValueError, match="prune_fraction"):
        SoupConfig(prune_fraction=1.0)
