"""core.align: permutation specs keep functions intact; matching recovers planted permutations."""

from __future__ import annotations

import pytest
import torch

from core.align import (
    MatchingInfo,
    PermutationSpec,
    activation_matching,
    apply_permutation,
    identity_permutation,
    invert_permutation,
    random_permutation,
    spec_for,
    weight_matching,
)
from core.landscape import barrier, interpolate
from core.models import create_model
from core.params import clone
from core.zoo import Zoo

ARCHS = [
    ("mlp", {"width": 32, "depth": 3}),
    ("cnn", {"width": 4}),
    ("resnet20", {"width": 4}),
    ("mlp", {"width": 16, "depth": 2, "n_heads": 2}),
]
IDS = ["mlp", "cnn", "resnet20", "mlp-2heads"]


def _model(name: str, kw: dict, seed: int = 0) -> torch.nn.Module:
    """A float64 model with non-trivial BatchNorm statistics (so permuting them matters)."""
    m = create_model(name, seed=seed, **kw).double().eval()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for k, v in m.state_dict().items():
            if k.endswith("running_mean"):
                v.copy_(0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype))
            elif k.endswith("running_var"):
                v.copy_(0.5 + torch.rand(v.shape, generator=g, dtype=v.dtype))
            elif k.endswith(".bias") and "bn" in k:
                v.copy_(0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype))
    return m


def _inputs(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(
        n, 1, 28, 28, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


@pytest.mark.parametrize(("name", "kw"), ARCHS, ids=IDS)
def test_permuting_keeps_outputs(name: str, kw: dict) -> None:
    m = _model(name, kw)
    spec = spec_for(m)
    sd = m.state_dict()
    before = clone(sd)
    pi = random_permutation(spec, generator=torch.Generator().manual_seed(1))
    sdp = apply_permutation(spec, pi, sd)
    # every floating tensor with a unit axis is covered, and the permutation moved something
    covered = {k for k, v in sd.items() if v.is_floating_point() and k.startswith("trunk")}
    assert covered <= set(spec.axes_to_perm)
    assert any(not torch.equal(sd[k], sdp[k]) for k in sd)
    m2 = _model(name, kw, seed=7)
    m2.load_state_dict(sdp)
    x = _inputs()
    heads = range(kw.get("n_heads", 1))
    for h in heads:
        torch.testing.assert_close(m2(x, head=h), m(x, head=h), rtol=1e-9, atol=1e-9)
    assert all(torch.equal(before[k], sd[k]) for k in sd)  # input untouched
    # inverting restores the state dict exactly
    back = apply_permutation(spec, invert_permutation(pi), sdp)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_resnet_stream_permutation_is_shared() -> None:
    spec = spec_for(create_model("resnet20", width=4))
    stage2 = {k for k, _ in spec.perm_to_axes["P_stage2"]}
    assert "trunk.layer2.0.shortcut.conv.weight" in stage2
    assert {f"trunk.layer2.{b}.conv2.weight" for b in range(3)} <= stage2
    readers = {
        "trunk.layer2.1.conv1.weight",
        "trunk.layer2.2.conv1.weight",
        "trunk.layer3.0.conv1.weight",
        "trunk.layer3.0.shortcut.conv.weight",
    }
    assert readers <= stage2  # blocks reading the stage-2 stream
    assert "trunk.layer3.1.conv1.weight" not in stage2
    assert spec.axes_to_perm["trunk.layer2.0.conv1.weight"] == (
        "P_layer2.0.inner",
        "P_stage1",
        None,
        None,
    )
    assert spec.axes_to_perm["head.weight"] == (None, "P_stage3")
    assert len(spec.sizes) == 3 + 9  # one per stream, one inside each block


@pytest.mark.parametrize(("name", "kw"), ARCHS[:3], ids=IDS[:3])
def test_weight_matching_recovers_planted_permutation(name: str, kw: dict) -> None:
    m = _model(name, kw)
    spec = spec_for(m)
    sd = m.state_dict()
    pi = random_permutation(spec, generator=torch.Generator().manual_seed(2))
    sdp = apply_permutation(spec, pi, sd)
    before = clone(sdp)
    info = MatchingInfo()
    q = weight_matching(spec, sd, sdp, generator=torch.Generator().manual_seed(0), info=info)
    for p in spec.names:
        assert torch.equal(q[p], torch.argsort(pi[p])), p
    aligned = apply_permutation(spec, q, sdp)
    assert all(torch.equal(aligned[k], sd[k]) for k in sd)
    assert info.converged and all(
        b >= a - 1e-6 * abs(a) for a, b in zip(info.objective, info.objective[1:], strict=False)
    )
    assert all(torch.equal(before[k], sdp[k]) for k in sdp)


@pytest.mark.parametrize(("name", "kw"), ARCHS[:3], ids=IDS[:3])
def test_activation_matching_recovers_planted_permutation(name: str, kw: dict) -> None:
    m = _model(name, kw)
    spec = spec_for(m)
    sd = m.state_dict()
    pi = random_permutation(spec, generator=torch.Generator().manual_seed(3))
    sdp = apply_permutation(spec, pi, sd)
    x = _inputs(24, seed=4)
    q = activation_matching(m, sd, sdp, [(x[:12], None), (x[12:], None)])
    for p in spec.names:
        assert torch.equal(q[p], torch.argsort(pi[p])), p
    assert all(torch.equal(m.state_dict()[k], sd[k]) for k in sd)  # model untouched


def test_matching_identical_models_gives_identity() -> None:
    m = _model("cnn", {"width": 4})
    spec = spec_for(m)
    ident = identity_permutation(spec)
    q = weight_matching(spec, m.state_dict(), m.state_dict())
    assert all(torch.equal(q[p], ident[p]) for p in ident)


@pytest.mark.parametrize("model_id", ["mlp-mnist-s1", "cnn-mnist-s1", "resnet20-mnist-s1"])
def test_matched_permuted_copy_has_zero_barrier(tiny_zoo: Zoo, model_id: str) -> None:
    model = tiny_zoo.load_model(model_id)
    spec = spec_for(model)
    sd = tiny_zoo.state_dict(model_id)
    sdp = apply_permutation(
        spec, random_permutation(spec, generator=torch.Generator().manual_seed(5)), sd
    )
    g = torch.Generator().manual_seed(6)
    data = {
        "test": (
            torch.randn(128, 1, 28, 28, generator=g),
            torch.randint(0, 10, (128,), generator=g),
        )
    }
    q = weight_matching(spec, sd, sdp)
    res = interpolate(model, sd, apply_permutation(spec, q, sdp), data, n_points=5)
    rep = barrier(res)
    assert abs(rep.values["test"]["loss_barrier"]) < 1e-6
    assert abs(rep.values["test"]["accuracy_barrier"]) < 1e-9


def test_weight_matching_brings_independent_models_closer(tiny_zoo: Zoo) -> None:
    model = tiny_zoo.load_model("mlp-mnist-s1")
    spec = spec_for(model)
    a, b = tiny_zoo.state_dict("mlp-mnist-s1"), tiny_zoo.state_dict("mlp-mnist-s2")
    q = weight_matching(spec, a, b, generator=torch.Generator().manual_seed(0))
    bq = apply_permutation(spec, q, b)

    def dist(x: dict, y: dict) -> float:
        return sum(float((x[k] - y[k]).pow(2).sum()) for k in x if x[k].is_floating_point())

    assert dist(a, bq) < 0.95 * dist(a, b)


def test_errors_name_the_argument() -> None:
    m = create_model("mlp", width=16, depth=2)
    spec = spec_for(m)
    sd = m.state_dict()
    bad = identity_permutation(spec)
    bad["P_fc0"] = torch.arange(15)
    with pytest.raises(ValueError, match=r"perm\['P_fc0'\]"):
        apply_permutation(spec, bad, sd)
    with pytest.raises(ValueError, match="sd lacks key 'trunk.fc1.weight'"):
        apply_permutation(
            spec,
            identity_permutation(spec),
            {k: v for k, v in sd.items() if k != "trunk.fc1.weight"},
        )
    with pytest.raises(ValueError, match="max_iter"):
        weight_matching(spec, sd, sd, max_iter=0)
    with pytest.raises(TypeError, match="generator"):
        weight_matching(spec, sd, sd, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="architecture"):
        spec_for(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="names 'P_x', not in sizes"):
        PermutationSpec({"w": ("P_x",)}, {"P_y": 2})
