from __future__ import annotations

import pytest
import torch

from core.models import ARCHITECTURES, create_model, penultimate_features


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_forward_features_and_seeded_init(name: str) -> None:
    x = torch.randn(5, 1, 28, 28)
    state = torch.random.get_rng_state()
    m1, m2 = create_model(name, seed=3), create_model(name, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    m1.eval()
    out = m1(x)
    assert out.shape == (5, 10)
    before = {k: v.clone() for k, v in m1.state_dict().items()}
    feats = penultimate_features(m1, x)
    assert feats.shape == (5, m1.feature_dim)
    assert torch.allclose(m1.classify(feats), out, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in m1.state_dict().items())
    assert not torch.equal(
        create_model(name, seed=4).state_dict()["head.weight"], m1.state_dict()["head.weight"]
    )


def test_multi_head() -> None:
    m = create_model("mlp", width=32, depth=1, n_heads=3)
    x = torch.randn(2, 1, 28, 28)
    assert "heads.2.weight" in m.state_dict()
    assert not torch.allclose(m(x, head=0), m(x, head=2))
    with pytest.raises(ValueError, match="head must be in"):
        m(x, head=3)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        create_model("vgg")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['depth'\]"):
        create_model("cnn", depth=3)
    with pytest.raises(ValueError, match=r"width must be in \[16, 2048\], got 0"):
        create_model("mlp", width=0)
    with pytest.raises(TypeError, match="width must be an int"):
        create_model("mlp", width=1.5)
