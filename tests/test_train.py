from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.data import get_task
from core.models import create_model
from core.train import TrainConfig, TrainingCancelled, evaluate, soft_cross_entropy, train


def _small():
    ds = get_task("digits")
    return ds.x_train[:400], ds.y_train[:400], ds.x_test, ds.y_test


@pytest.mark.parametrize("arch,kw", [("mlp", {"width": 32, "depth": 1}), ("cnn", {"width": 4})])
def test_same_seed_same_weights(arch: str, kw: dict) -> None:
    x, y, *_ = _small()
    cfg = TrainConfig(epochs=1, batch_size=64, seed=5)
    m1, m2 = create_model(arch, seed=1, **kw), create_model(arch, seed=1, **kw)
    train(m1, x, y, cfg, device="cpu")
    train(m2, x, y, cfg, device="cpu")
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    m3 = create_model(arch, seed=1, **kw)
    train(m3, x, y, TrainConfig(epochs=1, batch_size=64, seed=6), device="cpu")
    assert not torch.equal(m3.state_dict()["head.weight"], m1.state_dict()["head.weight"])


def test_training_learns_and_evaluate_is_consistent() -> None:
    ds = get_task("digits")
    x, y, xt, yt = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    m = create_model("mlp", width=64, depth=1, seed=0)
    before = evaluate(m, xt, yt).accuracy
    seen = []
    hist = train(
        m,
        x,
        y,
        TrainConfig(epochs=4, batch_size=32, lr=3e-3, seed=0),
        eval_data=(xt, yt),
        progress=seen.append,
        device="cpu",
    )
    ev = evaluate(m, xt, yt)
    assert ev.accuracy > 0.85 > 0.3 > before
    assert ev.accuracy == pytest.approx(hist.test_accuracy[-1])
    assert ev.correct.dtype == torch.bool and ev.correct.shape == yt.shape
    assert ev.accuracy == pytest.approx(float(ev.correct.float().mean()))
    with torch.no_grad():
        assert ev.loss == pytest.approx(float(F.cross_entropy(m(xt), yt)), rel=1e-5)
    assert [s["epoch"] for s in seen if "train_accuracy" in s] == [1, 2, 3, 4]


def test_mixer_hook_and_cancel() -> None:
    x, y, *_ = _small()
    calls = []

    def mix(xb, yb, gen):
        calls.append(len(xb))
        return xb, F.one_hot(yb, 10).float()

    m = create_model("mlp", width=16, depth=1)
    train(
        m, x, y, TrainConfig(epochs=2, batch_size=100, mix_until_epoch=1), mix_fn=mix, device="cpu"
    )
    assert calls == [100] * 4  # only the first epoch mixes
    with pytest.raises(TrainingCancelled):
        train(m, x, y, TrainConfig(epochs=1), should_stop=lambda: True, device="cpu")


def test_bad_config_and_data() -> None:
    with pytest.raises(ValueError, match="lr must be in"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="lion")
    m = create_model("mlp", width=16, depth=1)
    with pytest.raises(ValueError, match="same length"):
        train(m, torch.randn(4, 1, 28, 28), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"y must lie in \[0, 10\)"):
        train(m, torch.randn(4, 1, 28, 28), torch.full((4,), 12))


def test_custom_loss_fn_is_used() -> None:
    x, y, *_ = _small()
    seen = []

    def loss(logits, target):
        seen.append(target.shape)
        return soft_cross_entropy(logits, target) * 0.0 + logits.pow(2).mean()

    m = create_model("mlp", width=16, depth=1, seed=0)
    train(m, x, y, TrainConfig(epochs=1, batch_size=200), loss_fn=loss, device="cpu")
    assert seen == [(200, 10), (200, 10)]
    with torch.no_grad():
        # the only objective was shrinking the logits: they end up smaller than a fresh model's
        fresh = create_model("mlp", width=16, depth=1, seed=0)
        assert m(x).pow(2).mean() < fresh(x).pow(2).mean()
