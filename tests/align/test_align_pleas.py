"""PLeaS (Nasery et al., arXiv 2407.02447): partial matching blocks, initial merge, least squares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.align import apply_permutation, random_permutation, spec_for
from core.align.pleas import parameter_count, pleas
from core.models import create_model


def _mlp(seed: int, width: int = 16, depth: int = 2):
    m = create_model("mlp", width=width, depth=depth, image_size=8, seed=seed)
    return m, {k: v.clone() for k, v in m.state_dict().items()}


def _x(n: int = 300, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("least_squares", [False, True])
def test_a_permuted_copy_merges_back_into_the_same_function(least_squares: bool) -> None:
    model, sd_a = _mlp(1)
    spec = spec_for(model)
    perm = random_permutation(spec, generator=torch.Generator().manual_seed(2))
    sd_b = apply_permutation(spec, perm, sd_a)
    x = _x()
    res = pleas(model, sd_a, sd_b, x, ratio=0.0, least_squares=least_squares, ridge=0.0)
    assert res.width == 16 and res.n_merged == [16, 16]
    assert parameter_count(res.model) == parameter_count(model)
    model.load_state_dict(sd_a)
    with torch.no_grad():
        torch.testing.assert_close(res.model(x), model(x), atol=1e-4, rtol=1e-4)
    assert max(res.fit_error) < 1e-6


def test_ratio_one_is_the_concatenation_and_averages_the_logits() -> None:
    model, sd_a = _mlp(0)
    _, sd_b = _mlp(1)
    x = _x()
    res = pleas(model, sd_a, sd_b, x, ratio=1.0, least_squares=False)
    assert res.width == 32 and res.n_merged == [0, 0]
    net_b = create_model("mlp", width=16, depth=2, image_size=8, seed=1)
    model.load_state_dict(sd_a)
    with torch.no_grad():
        ensemble = (model(x) + net_b(x)) / 2
        torch.testing.assert_close(res.model(x), ensemble, atol=1e-5, rtol=1e-5)
    half = pleas(model, sd_a, sd_b, x, ratio=0.5)
    assert half.width == 24 and half.n_merged == [8, 8]


def test_least_squares_solves_the_constrained_per_layer_problem() -> None:
    model, sd_a = _mlp(0)
    _, sd_b = _mlp(1)
    x = _x(400)
    init = pleas(model, sd_a, sd_b, x, ratio=0.25, least_squares=False)
    fit = pleas(model, sd_a, sd_b, x, ratio=0.25, least_squares=True, ridge=0.0)
    assert all(f <= i + 1e-9 for f, i in zip(fit.fit_error, init.fit_error, strict=True))
    assert init.fit_error[0] < 1e-20  # layer 0: the averaged rows already fit exactly
    assert fit.fit_error[1] < 0.9 * init.fit_error[1] and fit.fit_error[2] < init.fit_error[2]
    # merged 12 + A-only 4 + B-only 4: B-only inputs never feed A-only outputs and back
    w1 = fit.state_dict["trunk.fc1.weight"]
    assert w1.shape == (20, 20)
    assert torch.count_nonzero(w1[12:16, 16:20]) == 0 and torch.count_nonzero(w1[16:20, 12:16]) == 0
    # independent check of layer 0 (input not permuted, so every output reads all inputs):
    # numpy least squares on the stacked targets
    xs = x.flatten(1).double().numpy()
    xb = np.concatenate([xs, np.ones((len(xs), 1))], 1)
    z0 = fit.model.trunk.fc0(x.flatten(1)).detach().double().numpy()
    sol, *_ = np.linalg.lstsq(xb, z0, rcond=None)
    np.testing.assert_allclose(xb @ sol, z0, atol=1e-4)  # the fitted layer is its own optimum
    # A-only units are A's own units (exactly reachable): their rows are rows of A's fc0
    dist = torch.cdist(
        fit.state_dict["trunk.fc0.weight"][12:16].double(), sd_a["trunk.fc0.weight"].double()
    )
    assert float(dist.min(1).values.max()) < 1e-5


def test_bad_inputs_are_named() -> None:
    model, sd_a = _mlp(0)
    _, sd_b = _mlp(1)
    with pytest.raises(ValueError, match="ratio"):
        pleas(model, sd_a, sd_b, _x(), ratio=1.5)
    with pytest.raises(ValueError, match="matcher"):
        pleas(model, sd_a, sd_b, _x(), matcher="zip")
    with pytest.raises(ValueError, match="x must"):
        pleas(model, sd_a, sd_b, torch.zeros(1, 64))
    cnn = create_model("cnn", width=4, seed=0)
    with pytest.raises(ValueError, match="MLP"):
        pleas(cnn, cnn.state_dict(), cnn.state_dict(), _x())
    wm = pleas(model, sd_a, sd_b, _x(), matcher="weight matching", generator=torch.Generator())
    assert wm.width == 16
