"""Interference diagnostics: hand-worked values and agreement with the merges themselves."""

import math

import numpy as np
import pytest
import torch

from core.merge import merge
from core.merge.diagnostics import (
    dare_keep,
    interference,
    layer_norms,
    sign_conflicts,
    task_vector_cosine,
    ties_keep,
)


def _hand() -> list[dict[str, torch.Tensor]]:
    """Two task vectors, layers a (a.weight, a.bias: 5 entries) and b (b.weight: 2)."""
    t1 = {
        "a.weight": torch.tensor([1.0, -2.0, 3.0, 0.0]),
        "a.bias": torch.tensor([1.0]),
        "b.weight": torch.tensor([[2.0, 0.0]]),
    }
    t2 = {
        "a.weight": torch.tensor([-1.0, -1.0, 2.0, 4.0]),
        "a.bias": torch.tensor([0.0]),
        "b.weight": torch.tensor([[0.0, -3.0]]),
    }
    return [t1, t2]


def test_cosine_and_norms_by_hand():
    cos = task_vector_cosine(_hand())
    assert cos[0, 1] == pytest.approx(7 / math.sqrt(19 * 31))
    assert cos[1, 0] == pytest.approx(cos[0, 1])
    assert np.allclose(np.diag(cos), 1.0)
    layers, norms = layer_norms(_hand())
    assert layers == ["a", "b"]
    assert np.allclose(norms, [[math.sqrt(15), 2.0], [math.sqrt(22), 3.0]])


def test_sign_conflicts_by_hand():
    layers, rate = sign_conflicts(_hand())
    assert layers == ["a", "b"]
    assert rate[0] == pytest.approx(1 / 3)  # a.w0 conflicts; a.w1, a.w2 agree; others single
    assert math.isnan(rate[1])  # no coordinate of b has two non-zero entries
    _, trimmed = sign_conflicts(_hand(), density=0.5)
    assert trimmed[0] == 0.0 and math.isnan(trimmed[1])  # only a.w2 (3, 2) survives in both


def test_ties_keep_by_hand_without_trim():
    res = ties_keep(_hand(), density=1.0)
    # elected signs: a.w (+, -, +, +) (the 0 sum counts +), a.b +, b.w (+, -)
    assert np.allclose(res.fraction, [[4 / 5, 1 / 2], [3 / 5, 1 / 2]])
    assert np.allclose(res.trimmed, [[4 / 5, 1 / 2], [4 / 5, 1 / 2]])
    assert np.allclose(res.agree, [1.0, 4 / 5])
    assert np.allclose(res.sign_share, [5 / 9, 4 / 9])
    assert np.allclose(res.mass_share, [9 / 19, 10 / 19])
    assert np.allclose(res.merged_nonzero, [1.0, 1.0])


def test_ties_keep_by_hand_with_global_trim():
    res = ties_keep(_hand(), density=0.5)  # each keeps floor(0.5 * 7) = 3 entries
    assert np.allclose(res.fraction, [[2 / 5, 1 / 2], [2 / 5, 1 / 2]])
    assert np.allclose(res.agree, [1.0, 1.0])
    assert np.allclose(res.mass_share, [7 / 16, 9 / 16])
    assert np.allclose(res.merged_nonzero, [3 / 5, 1.0])  # a.w1, a.w2, a.w3; b.w0, b.w1


def _random_models(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = {
        "fc1.weight": torch.randn(16, 8, generator=g),
        "fc1.bias": torch.randn(16, generator=g),
        "fc2.weight": torch.randn(4, 16, generator=g),
        "steps": torch.tensor(3),
    }
    models = []
    for _ in range(n):
        m = {
            k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items() if k != "steps"
        }
        models.append(m | {"steps": torch.tensor(3)})
    tvs = [{k: m[k] - base[k] for k in base if k != "steps"} for m in models]
    return base, models, tvs


def _nonzero_by_layer(sd, base):
    fc1 = torch.cat([(sd[k] - base[k]).reshape(-1) for k in ("fc1.weight", "fc1.bias")])
    fc2 = (sd["fc2.weight"] - base["fc2.weight"]).reshape(-1)
    return [float((fc1 != 0).float().mean()), float((fc2 != 0).float().mean())]


@pytest.mark.parametrize("trim", ["global", "tensor"])
def test_ties_keep_matches_the_ties_merge(trim):
    base, models, tvs = _random_models()
    res = ties_keep(tvs, density=0.3, trim=trim)
    merged = merge("ties", models, base=base, density=0.3, trim=trim)
    # agreeing entries share one sign, so the disjoint mean is non-zero exactly where kept
    assert np.allclose(res.merged_nonzero, _nonzero_by_layer(merged, base), atol=1e-9)
    assert res.layers == ("fc1", "fc2")
    assert np.all(res.fraction <= res.trimmed + 1e-12)
    assert res.mass_share.sum() == pytest.approx(1.0)


def test_dare_keep_matches_dare_ties_and_drop_rate():
    base, models, tvs = _random_models()
    res = dare_keep(tvs, drop=0.5, density=0.4, generator=torch.Generator().manual_seed(7))
    merged = merge(
        "dare_ties",
        models,
        base=base,
        drop=0.5,
        density=0.4,
        generator=torch.Generator().manual_seed(7),
    )
    assert np.allclose(res.merged_nonzero, _nonzero_by_layer(merged, base), atol=1e-9)
    plain = dare_keep(tvs, drop=0.5, generator=torch.Generator().manual_seed(7))
    assert np.allclose(plain.fraction, plain.trimmed)
    assert abs(float(plain.fraction.mean()) - 0.5) < 0.06  # 3 x 660 Bernoulli(0.5) draws
    assert np.allclose(dare_keep(tvs, drop=0.0).fraction, 1.0)
    again = dare_keep(tvs, drop=0.5, generator=torch.Generator().manual_seed(7))
    assert np.array_equal(again.fraction, plain.fraction)


def test_interference_report_and_json():
    _, _, tvs = _random_models()
    rep = interference(tvs, names=["a", "b", "c"], density=0.2, drop=0.3, seed=1)
    assert rep.cosine.shape == (3, 3) and rep.norms.shape == (3, 2)
    assert rep.ties.fraction.shape == (3, 2)
    d = rep.to_dict()
    assert d["names"] == ["a", "b", "c"] and d["layers"] == ["fc1", "fc2"]
    again = interference(tvs, names=["a", "b", "c"], density=0.2, drop=0.3, seed=1)
    assert np.array_equal(again.dare.fraction, rep.dare.fraction)


def test_inputs_are_validated():
    tvs = _hand()
    with pytest.raises(ValueError, match="at least 2"):
        sign_conflicts(tvs[:1])
    with pytest.raises(ValueError, match="density"):
        ties_keep(tvs, density=0.0)
    with pytest.raises(ValueError, match="drop"):
        dare_keep(tvs, drop=1.0)
    with pytest.raises(ValueError, match="trim"):
        ties_keep(tvs, trim="layer")
    with pytest.raises(ValueError, match="names"):
        interference(tvs, names=["only one"])
    with pytest.raises(TypeError, match="task_vectors"):
        task_vector_cosine(tvs[0])
    bad = [tvs[0], {**tvs[1], "a.bias": torch.tensor([float("nan")])}]
    with pytest.raises(ValueError, match="NaN"):
        layer_norms(bad)
    with pytest.raises(ValueError):
        layer_norms([tvs[0], {"a.weight": tvs[1]["a.weight"]}])


def test_dare_ties_without_drops_is_ties_around_a_base():
    """Regression: DARE-TIES with a global trim used to trim and elect on θ₀ + DARE(τ)."""
    base, models, _ = _random_models()
    a = merge("dare_ties", models, base=base, drop=0.0, density=0.5)
    b = merge("ties", models, base=base, density=0.5)
    for k in b:
        assert torch.allclose(a[k], b[k]), k
