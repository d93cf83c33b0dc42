"""Mixers: contract tests over every registered mixer, exact checks per mixer, properties."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.mixup import MIXERS, mix, mix_fn, to_soft_targets
from core.models import create_model

N, C, H, W, K = 6, 3, 16, 16, 4


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, C, H, W, generator=g)
    y = torch.arange(N) % K
    return x, y


_MODEL: dict[str, Any] = {}


def _hyper(name: str) -> dict[str, Any]:
    """Hyperparameters a mixer needs beyond the defaults (a model for the model-based ones)."""
    if "model" in MIXERS[name].tags:
        if "m" not in _MODEL:
            _MODEL["m"] = create_model("cnn", width=4, n_classes=K, in_channels=C, image_size=H)
        return {"model": _MODEL["m"]}
    return {}


def _mix(name: str, x: torch.Tensor, y: torch.Tensor, seed: int = 0, **kw: Any):
    return mix(name, x, y, generator=torch.Generator().manual_seed(seed), n_classes=K,
               **_hyper(name), **kw)  # fmt: skip


ALL = MIXERS.names()
MASKED = [n for n in ALL if "mask" in MIXERS[n].tags]


def test_registry_lists_the_first_mixers() -> None:
    assert {"mixup", "cutmix"} <= set(ALL)
    for entry in MIXERS.entries():
        assert entry.paper.startswith("https://"), entry.name


@pytest.mark.parametrize("name", ALL)
def test_contract_shapes_targets_permutation(name: str) -> None:
    x, y = _batch()
    res = _mix(name, x, y)
    assert res.x.shape == x.shape and res.x.dtype == x.dtype
    assert res.y.shape == (N, K)
    torch.testing.assert_close(res.y.sum(1), torch.ones(N), atol=1e-6, rtol=0)
    assert (res.y >= 0).all()
    assert (res.y > 0).sum(1).max() <= 2
    assert sorted(res.partner.tolist()) == list(range(N))
    assert res.lam.shape == (N,) and ((res.lam >= 0) & (res.lam <= 1)).all()


@pytest.mark.parametrize("name", ALL)
def test_contract_inputs_untouched_and_seeded(name: str) -> None:
    x, y = _batch()
    x0, y0 = x.clone(), y.clone()
    a = _mix(name, x, y, seed=3)
    b = _mix(name, x, y, seed=3)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.partner, b.partner)


@pytest.mark.parametrize("name", ALL)
def test_contract_lam_one_returns_input(name: str) -> None:
    x, y = _batch()
    res = _mix(name, x, y, lam=1.0)
    assert torch.equal(res.x, x)
    torch.testing.assert_close(res.y, to_soft_targets(y, K))
    assert (res.lam == 1).all()


@pytest.mark.parametrize("name", MASKED)
@pytest.mark.parametrize("per_sample", [False, True])
def test_label_weight_equals_exact_pixel_share(name: str, per_sample: bool) -> None:
    x, y = _batch()
    for seed in range(5):
        res = _mix(name, x, y, seed=seed, per_sample=per_sample)
        assert res.mask is not None
        mask = res.mask.expand(N, 1, H, W)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        # each output pixel is exactly the own pixel where mask=1, the partner's elsewhere
        own = x
        other = x[res.partner]
        expect = torch.where(mask.bool(), own, other)
        assert torch.equal(res.x, expect)
        torch.testing.assert_close(res.lam, mask.mean(dim=(1, 2, 3)), atol=1e-6, rtol=0)
        ya, yb = to_soft_targets(y, K), to_soft_targets(y[res.partner], K)
        torch.testing.assert_close(res.y, res.lam[:, None] * ya + (1 - res.lam[:, None]) * yb)


def test_mixup_is_the_convex_combination() -> None:
    x, y = _batch()
    res = _mix("mixup", x, y, lam=0.3)
    torch.testing.assert_close(res.x, 0.3 * x + 0.7 * x[res.partner])
    res0 = _mix("mixup", x, y, lam=0.0)
    assert torch.equal(res0.x, x[res0.partner])


def test_mixup_per_sample_lam_differs_per_row() -> None:
    x, y = _batch()
    res = _mix("mixup", x, y, per_sample=True)
    assert res.lam.unique().numel() == N
    lam = res.lam.view(N, 1, 1, 1)
    torch.testing.assert_close(res.x, lam * x + (1 - lam) * x[res.partner])


def test_cutmix_box_is_clipped_and_lam_corrected() -> None:
    from core.mixup import apply_cutmix, sample_cutmix

    g = torch.Generator().manual_seed(0)
    params = sample_cutmix((N, C, H, W), lam=0.0, generator=g)  # full-size box, clipped
    y0, y1, x0, x1 = params.boxes[0].tolist()
    x, y = _batch()
    res = apply_cutmix(x, to_soft_targets(y, K), params)
    expect = 1 - (y1 - y0) * (x1 - x0) / (H * W)
    torch.testing.assert_close(res.lam, torch.full((N,), expect))
    assert torch.equal(res.x[:, :, y0:y1, x0:x1], x[res.partner][:, :, y0:y1, x0:x1])


def test_prob_gate_per_row_keeps_lam_one() -> None:
    x, y = _batch()
    res = _mix("cutmix", torch.rand(64, C, H, W), torch.arange(64) % K, prob=0.5, gate="elem",
               per_sample=True, lam=0.5)  # fmt: skip
    assert res.mixed is not None
    off = ~res.mixed
    assert 0 < int(off.sum()) < 64
    assert (res.lam[off] == 1).all()


def test_prob_gate_per_batch_rate_is_p_not_p_squared() -> None:
    x, y = _batch()
    g = torch.Generator().manual_seed(0)
    hits = sum(bool(mix("mixup", x, y, generator=g, prob=0.5, n_classes=K).mixed.any())
               for _ in range(400))  # fmt: skip
    assert 160 < hits < 240


def test_separate_label_lam() -> None:
    x, y = _batch()
    res = _mix("mixup", x, y, lam=0.3, lam_y=0.8)
    assert res.lam_x is not None
    torch.testing.assert_close(res.lam_x, torch.full((N,), 0.3))
    torch.testing.assert_close(res.lam, torch.full((N,), 0.8))
    torch.testing.assert_close(res.x, 0.3 * x + 0.7 * x[res.partner])


def test_errors_name_the_argument() -> None:
    x, y = _batch()
    g = torch.Generator()
    with pytest.raises(ValueError, match="mixer"):
        mix("nope", x, y, generator=g)
    with pytest.raises(ValueError, match="lam"):
        mix("mixup", x, y, lam=1.5, generator=g)
    with pytest.raises(ValueError, match="alpha"):
        mix("mixup", x, y, alpha=0.0, generator=g)
    with pytest.raises(TypeError, match="generator"):
        mix("mixup", x, y, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="y must"):
        mix("mixup", x, y[:3], generator=g)
    with pytest.raises(TypeError, match="hyperparameters"):
        mix("mixup", x, y, generator=g, bogus=1)


def test_mix_fn_plugs_into_train() -> None:
    from core.train import TrainConfig, train

    x = torch.rand(64, 1, 8, 8)
    y = torch.arange(64) % K
    model = create_model("mlp", width=16, depth=1, n_classes=K, image_size=8)
    hist = train(model, x, y, TrainConfig(epochs=2, batch_size=16, mix_until_epoch=1),
                 mix_fn=mix_fn("cutmix", n_classes=K), device="cpu")  # fmt: skip
    assert len(hist.train_loss) == 2


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 9),
    side=st.integers(2, 12),
    lam=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31),
    name=st.sampled_from([n for n in MASKED if "model" not in MIXERS[n].tags]),
)
def test_property_mask_share_and_targets(
    n: int, side: int, lam: float, seed: int, name: str
) -> None:
    x = torch.rand(n, 2, side, side)
    y = torch.arange(n) % K
    res = mix(name, x, y, lam=lam, generator=torch.Generator().manual_seed(seed), n_classes=K,
              per_sample=True)  # fmt: skip
    assert sorted(res.partner.tolist()) == list(range(n))
    torch.testing.assert_close(res.y.sum(1), torch.ones(n), atol=1e-6, rtol=0)
    assert res.mask is not None
    torch.testing.assert_close(res.lam, res.mask.expand(n, 1, side, side).mean((1, 2, 3)),
                               atol=1e-6, rtol=0)  # fmt: skip
