"""core.landscape: paths, barriers, planes, random directions and Bezier curves, checked against
independent computations (core.params.lerp + core.train.evaluate, flattened Gram-Schmidt)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from core.landscape import (
    PathResult,
    barrier,
    bezier_curve,
    filter_normalized_direction,
    interpolate,
    plane,
    random_directions,
    reset_batchnorm,
)
from core.models import create_model
from core.params import clone, flatten, lerp, unflatten
from core.train import evaluate


def _data(n_train: int = 96, n_test: int = 48, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "train": (
            torch.randn(n_train, 1, 28, 28, generator=g),
            torch.randint(0, 10, (n_train,), generator=g),
        ),
        "test": (
            torch.randn(n_test, 1, 28, 28, generator=g),
            torch.randint(0, 10, (n_test,), generator=g),
        ),
    }


def _pair(name: str, **kw: int) -> tuple[torch.nn.Module, dict, dict]:
    a, b = create_model(name, seed=1, **kw), create_model(name, seed=2, **kw)
    return a, a.state_dict(), b.state_dict()


def _eval_sd(model: torch.nn.Module, sd: dict, x: torch.Tensor, y: torch.Tensor):
    m = copy.deepcopy(model)
    m.load_state_dict(sd)
    return evaluate(m, x, y, device="cpu")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_interpolate_matches_independent_evaluation(name: str) -> None:
    model, sa, sb = _pair(name, width=16) if name == "mlp" else _pair(name, width=4)
    before_a, before_b, before_m = clone(sa), clone(sb), clone(model.state_dict())
    model.train()
    data = _data()
    res = interpolate(model, sa, sb, data, n_points=5, max_examples=None)
    assert res.t == [0.0, 0.25, 0.5, 0.75, 1.0] and res.exact
    for i, t in enumerate(res.t):
        for split, (x, y) in data.items():
            ref = _eval_sd(model, lerp(sa, sb, t), x, y)
            assert res.loss[split][i] == pytest.approx(ref.loss, rel=1e-5, abs=1e-6)
            assert res.accuracy[split][i] == pytest.approx(ref.accuracy)
    # nothing of the caller's changed, not even the train/eval mode
    assert model.training
    for k in sa:
        assert torch.equal(sa[k], before_a[k]) and torch.equal(sb[k], before_b[k])
        assert torch.equal(model.state_dict()[k], before_m[k])


def test_interpolate_subset_is_fixed_and_reported() -> None:
    model, sa, sb = _pair("mlp", width=16, depth=1)
    data = _data(200, 50)
    r1 = interpolate(model, sa, sb, data, n_points=3, max_examples=40)
    r2 = interpolate(model, sa, sb, data, n_points=3, max_examples=40)
    assert r1.n_examples == {"train": 40, "test": 40} and r1.n_total == {"train": 200, "test": 50}
    assert not r1.exact and r1.loss == r2.loss


def test_recompute_bn_resets_statistics_at_every_point() -> None:
    model, sa, sb = _pair("cnn", width=4)
    data = _data()
    res = interpolate(
        model, sa, sb, data, n_points=3, recompute_bn=True, max_examples=None, bn_examples=64
    )
    assert res.recompute_bn
    # independent: model at t = 0.5 with statistics re-estimated on the same 64 training inputs
    m = copy.deepcopy(model)
    m.load_state_dict(lerp(sa, sb, 0.5))
    from core.data import stratified_subset

    idx = stratified_subset(data["train"][1], 64, random_state=0)  # the BN subset (seed 0)
    for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None
    m.train()
    with torch.no_grad():
        m(data["train"][0][idx])
    ref = evaluate(m, *data["test"], device="cpu")
    assert res.loss["test"][1] == pytest.approx(ref.loss, rel=1e-4)
    naive = interpolate(model, sa, sb, data, n_points=3, max_examples=None)
    assert naive.loss["test"][1] != pytest.approx(res.loss["test"][1], rel=1e-3)


def test_reset_batchnorm_restores_mode_and_momentum() -> None:
    m = create_model("cnn", width=4).eval()
    reset_batchnorm(m, torch.randn(8, 1, 28, 28))
    assert not m.training
    assert all(b.momentum == 0.1 for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))
    assert not torch.equal(m.trunk.bn0.running_var, torch.ones(4))


def test_barrier_definitions_on_a_hand_worked_path() -> None:
    res = PathResult(
        t=[0, 0.25, 0.5, 0.75, 1],
        loss={"test": [1, 2.9, 2, 1.8, 3]},
        accuracy={"test": [0.9, 0.5, 0.6, 0.7, 0.8]},
        n_examples={"test": 1},
        n_total={"test": 1},
        label="demo",
    )
    rep = barrier(res)
    v = rep.values["test"]
    assert v["loss_barrier"] == pytest.approx(1.0)  # 3 - (1 + 3) / 2
    assert v["loss_barrier_linear"] == pytest.approx(1.4)  # 2.9 - (1 + 2 * 0.25)
    assert v["accuracy_barrier"] == pytest.approx(0.35)
    assert v["midpoint_accuracy"] == pytest.approx(0.6)
    assert v["argmax_t"] == 1.0
    assert float(rep) == pytest.approx(1.0)
    assert rep.rows()[0]["path"] == "demo"
    even = PathResult(
        t=[0, 1 / 3, 2 / 3, 1],
        loss={"s": [0, 1, 3, 0]},
        accuracy={"s": [1, 0.5, 0.2, 1]},
        n_examples={"s": 1},
        n_total={"s": 1},
    )
    assert barrier(even).values["s"]["midpoint_loss"] == pytest.approx(2.0)


def test_identical_models_have_zero_barrier() -> None:
    model, sa, _ = _pair("mlp", width=16, depth=1)
    rep = barrier(interpolate(model, sa, sa, _data(), n_points=4))
    for v in rep.values.values():
        assert v["loss_barrier"] == pytest.approx(0, abs=1e-6)
        assert v["loss_barrier_linear"] == pytest.approx(0, abs=1e-6)
        assert v["accuracy_barrier"] == pytest.approx(0, abs=1e-12)


def test_plane_geometry_and_grid_values() -> None:
    model, s0, s1 = _pair("mlp", width=16, depth=1)
    s2 = create_model("mlp", seed=3, width=16, depth=1).state_dict()
    data = _data(64, 32)
    levels: list = []
    calls: list = []
    res = plane(
        model,
        [s0, s1, s2],
        data,
        resolution=9,
        max_examples=None,
        on_level=levels.append,
        progress=lambda d, n: calls.append((d, n)),
    )
    # independent Gram-Schmidt on flattened vectors
    f0, f1, f2 = flatten(s0).double(), flatten(s1).double(), flatten(s2).double()
    d = (f1 - f0).norm()
    u = (f1 - f0) / d
    c = torch.dot(f2 - f0, u)
    vp = f2 - f0 - c * u
    assert res.positions[0] == (0.0, 0.0) and res.positions[1] == (1.0, 0.0)
    assert res.positions[2] == pytest.approx((float(c / d), float(vp.norm() / d)))
    assert res.scale == pytest.approx(float(d), rel=1e-6)
    # a grid point equals an independent evaluation of theta_0 + d (x u + y v)
    i, j = 6, 2
    x, y = res.x[i], res.y[j]
    theta = unflatten((f0 + d * (x * u + y * vp / vp.norm())).float(), s0)
    ref = _eval_sd(model, theta, *data["test"])
    assert res.loss["test"][j][i] == pytest.approx(ref.loss, rel=1e-4)
    # coarse first (5 x 5), then the full grid, every point once
    assert [len(lv.x) for lv in levels] == [5] and not levels[0].complete
    assert levels[0].loss["test"][0][0] == res.loss["test"][0][0]
    assert res.complete and not any(math.isnan(v) for row in res.loss["test"] for v in row)
    assert calls[-1] == (81, 81) and len(calls) == 81


def test_plane_rejects_bad_input() -> None:
    model, s0, s1 = _pair("mlp", width=16, depth=1)
    with pytest.raises(ValueError, match="three state dicts"):
        plane(model, [s0, s1], _data())
    mid = lerp(s0, s1, 0.5)
    with pytest.raises(ValueError, match="collinear"):
        plane(model, [s0, s1, mid], _data())
    with pytest.raises(ValueError, match="resolution"):
        plane(model, [s0, s1, s1], _data(), resolution=1)
    with pytest.raises(ValueError, match="n_points"):
        interpolate(model, s0, s1, _data(), n_points=1)
    with pytest.raises(TypeError, match="data"):
        interpolate(model, s0, s1, [1, 2], n_points=3)  # type: ignore[arg-type]


def test_filter_normalized_direction() -> None:
    sd = create_model("cnn", width=4).state_dict()
    fsd = {k: v for k, v in sd.items() if v.is_floating_point()}
    d = filter_normalized_direction(fsd, generator=torch.Generator().manual_seed(0))
    assert set(d) == {k for k, v in fsd.items() if v.ndim >= 2}  # no biases, BN or statistics
    for k, v in d.items():
        w = fsd[k]
        torch.testing.assert_close(
            v.reshape(len(v), -1).norm(dim=1), w.reshape(len(w), -1).norm(dim=1)
        )


def test_random_directions_centre_is_the_model() -> None:
    model, sa, _ = _pair("mlp", width=16, depth=1)
    data = _data(64, 32)
    line = random_directions(
        model, sa, data, resolution=5, generator=torch.Generator().manual_seed(0), max_examples=None
    )
    assert isinstance(line, PathResult) and line.t[2] == 0.0
    ref = _eval_sd(model, sa, *data["test"])
    assert line.loss["test"][2] == pytest.approx(ref.loss, rel=1e-5)
    surf = random_directions(
        model, sa, data, dims=2, resolution=3, generator=torch.Generator().manual_seed(0)
    )
    assert len(surf.loss["train"]) == 3 and surf.loss["test"][1][1] == pytest.approx(
        ref.loss, rel=1e-5
    )


@pytest.mark.slow
def test_bezier_curve_keeps_endpoints_and_lowers_the_path() -> None:
    model, sa, sb = _pair("mlp", width=16, depth=1)
    data = _data(128, 64)
    before = clone(sa)
    res = bezier_curve(
        model,
        sa,
        sb,
        data,
        steps=60,
        lr=1e-2,
        n_points=5,
        generator=torch.Generator().manual_seed(0),
        max_examples=None,
    )
    for s in ("train", "test"):
        assert res.curve.loss[s][0] == pytest.approx(res.line.loss[s][0])
        assert res.curve.loss[s][-1] == pytest.approx(res.line.loss[s][-1])
    assert max(res.curve.loss["train"][1:-1]) < max(res.line.loss["train"][1:-1])
    assert len(res.train_loss) == 60 and set(res.bend) == {n for n, _ in model.named_parameters()}
    assert all(torch.equal(before[k], sa[k]) for k in sa)
