"""Orthogonal Adaptation (Po et al., CVPR 2024): bases, adapters, and the study on a tiny suite."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from core.benchmark.zoo_build import build_suite_zoo
from core.papers.orthogonal_adaptation import (
    VARIANTS,
    LowRankAdapters,
    OrthoStudy,
    _with_deltas,
    adaptable_layers,
    lora_init,
    orthogonal_adaptation_study,
    orthogonal_bases,
    random_bases,
)
from core.recipes import check_args
from core.suite_lab import SuiteLab
from core.zoo import Zoo
from tests.helpers.suites import TINY_VISION_3


def test_orthogonal_bases_are_orthonormal_and_mutually_orthogonal() -> None:
    bases = orthogonal_bases(24, 3, 5, seed=7)
    assert len(bases) == 5 and all(a.shape == (3, 24) for a in bases)
    for i, a in enumerate(bases):
        torch.testing.assert_close(a @ a.T, torch.eye(3), atol=1e-5, rtol=0)
        for b in bases[i + 1 :]:
            assert float((a @ b.T).abs().max()) < 1e-5
    again = orthogonal_bases(24, 3, 5, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(bases, again, strict=True))
    assert not torch.equal(bases[0], orthogonal_bases(24, 3, 5, seed=8)[0])
    with pytest.raises(ValueError, match="n_tasks \\* rank must be <= in_features"):
        orthogonal_bases(10, 3, 4)
    with pytest.raises(ValueError, match="rank"):
        orthogonal_bases(10, 0, 2)


def test_random_bases_have_unit_rows_and_are_only_nearly_orthogonal() -> None:
    bases = random_bases(256, 4, 3, seed=1)
    for a in bases:
        torch.testing.assert_close(a.norm(dim=1), torch.ones(4))
    cross = float((bases[0] @ bases[1].T).abs().max())
    assert 0 < cross < 0.35  # about 1/sqrt(256) each, far from orthogonal to machine precision


def test_lora_init_is_peft_kaiming_uniform() -> None:
    a = lora_init(400, 8, seed=3)
    want = torch.empty(8, 400)
    nn.init.kaiming_uniform_(want, a=math.sqrt(5))  # PEFT's LoRA A init
    bound = float(want.abs().max())
    assert float(a.abs().max()) <= 1 / math.sqrt(400) + 1e-7
    assert float(a.abs().max()) == pytest.approx(bound, rel=0.02)
    assert torch.equal(a, lora_init(400, 8, seed=3))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pw = nn.Conv2d(16, 12, 1, stride=2)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.small = nn.Linear(4, 16)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dw(self.pw(x)).mean((2, 3))
        return self.fc(h)


def test_adaptable_layers_are_linear_and_pointwise_convs_wide_enough() -> None:
    net = _Net()
    assert set(adaptable_layers(net, 8)) == {"pw", "fc"}
    assert set(adaptable_layers(net, 4)) == {"pw", "fc", "small"}
    assert set(adaptable_layers(net, 13)) == {"pw"}


def test_adapter_hooks_equal_the_merged_weights() -> None:
    torch.manual_seed(0)
    net = _Net()
    layers = adaptable_layers(net, 8)
    base = {f"trunk.{k}": v.clone() for k, v in net.state_dict().items()}
    ads = []
    for seed in (0, 1):
        bases = {n: lora_init(16 if n == "pw" else 12, 3, seed=seed) for n in layers}
        ad = LowRankAdapters(layers, bases, train_a=False, scale=0.5)
        with torch.no_grad():
            for b in ad.b:
                b.normal_()
        ads.append(ad)
    x = torch.randn(2, 16, 8, 8)
    for ad in ads:
        ad.attach()
    hooked = net(x)
    for ad in ads:
        ad.detach()
    plain = net(x)
    merged = _with_deltas(base, ads)
    net.load_state_dict({k.removeprefix("trunk."): v for k, v in merged.items()})
    torch.testing.assert_close(net(x), hooked, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain, hooked)
    assert ads[0].a[0].requires_grad is False and ads[0].b[0].requires_grad is True
    assert ads[0].deltas()["pw"].shape == (12, 16, 1, 1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_adapters_run_on_half_precision_layers(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    net = _Net()
    layers = adaptable_layers(net, 8)
    ad = LowRankAdapters(
        layers, {n: lora_init(16 if n == "pw" else 12, 3) for n in layers}, train_a=False, scale=1.0
    )
    with torch.no_grad():
        for b in ad.b:
            b.normal_()
    x = torch.randn(2, 16, 8, 8)
    ad.attach()
    want = net(x)
    half = net.to(dtype)(x.to(dtype))
    ad.detach()
    assert half.dtype == dtype
    torch.testing.assert_close(half.float(), want, atol=0.1, rtol=0.05)
    assert ad.deltas()["pw"].dtype == dtype  # in the layer's own dtype


def test_summary_and_figure_on_a_synthetic_study() -> None:
    from core.figures.adapters import orthogonal_adaptation_data, orthogonal_adaptation_figure

    study = OrthoStudy("vision", ["a", "b"], ["orthogonal", "lora"], rank=2, n_layers=3)
    study.pretrained = {"a": 0.5, "b": 0.4}
    study.alone = {"orthogonal": {"a": 0.8, "b": 0.6}, "lora": {"a": 0.9, "b": 0.7}}
    study.summed = {"orthogonal": {"a": 0.8, "b": 0.3}, "lora": {"a": 0.45, "b": 0.35}}
    study.overlap = {"orthogonal": 0.0, "lora": 0.2}
    assert study.kept("orthogonal") == pytest.approx({"a": 1.0, "b": 0.5})
    rows = {r["variant"]: r for r in study.summary()}
    assert rows["lora"]["summed"] == pytest.approx(0.4)
    assert rows["orthogonal"]["kept"] == pytest.approx(0.75)
    data = orthogonal_adaptation_data(study)
    assert len(data) == 4 and set(data.columns) >= {"variant", "task", "alone", "summed", "kept"}
    fig = orthogonal_adaptation_figure(study)
    assert [t.name for t in fig.data][:2] == ["adapter alone", "adapters summed"]
    assert list(fig.data[1].y) == pytest.approx([55.0, 40.0])
    with pytest.raises(ValueError, match="no results"):
        orthogonal_adaptation_figure(OrthoStudy("vision", [], [], rank=1, n_layers=0))


def test_recipe_args_are_checked() -> None:
    args = check_args("orthogonal_adaptation", {"suite": "vision", "variants": ["lora"]})
    assert args["variants"] == ["lora"]
    with pytest.raises(ValueError, match="variants"):
        check_args("orthogonal_adaptation", {"suite": "vision", "variants": ["svd"]})
    with pytest.raises(ValueError, match="rank"):
        check_args("orthogonal_adaptation", {"suite": "vision", "rank": 0})
    with pytest.raises(ValueError, match="lr"):
        check_args("orthogonal_adaptation", {"suite": "vision", "lr": -1.0})
    with pytest.raises(ValueError, match="suite"):
        check_args("orthogonal_adaptation", {"suite": "audio"})


def test_study_arguments_are_checked(tmp_path: Path) -> None:
    zoo = Zoo(tmp_path / "ws")  # checked before any model is read
    with pytest.raises(ValueError, match="variants"):
        orthogonal_adaptation_study(zoo, "vision", variants=["orthogonal", "orthogonal"])
    with pytest.raises(ValueError, match="variants"):
        orthogonal_adaptation_study(zoo, "vision", variants="orthogonal")
    with pytest.raises(ValueError, match="rank"):
        orthogonal_adaptation_study(zoo, "vision", rank=0)
    with pytest.raises(ValueError, match="lr"):
        orthogonal_adaptation_study(zoo, "vision", lr=0.0)
    with pytest.raises(TypeError, match="zoo"):
        orthogonal_adaptation_study("ws", "vision")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    z = Zoo(tmp_path_factory.mktemp("ortho") / "ws")
    build_suite_zoo(z, TINY_VISION_3, device="cpu")
    return z


@pytest.mark.slow
def test_study_on_a_tiny_suite(zoo: Zoo) -> None:
    calls: list[tuple[int, int]] = []
    study = orthogonal_adaptation_study(
        zoo, "vision", rank=2, steps=2, lr=1e-2, progress=lambda d, t: calls.append((d, t))
    )
    n = len(study.tasks)
    assert n == 3 and study.variants == list(VARIANTS) and study.n_layers > 10
    assert calls[-1] == (len(VARIANTS) * n * 2, len(VARIANTS) * n * 2)
    # the pretrained column is the suite's own pretrained test accuracy
    refs = SuiteLab(zoo, "vision", split="test", n_per_task=None, device="cpu").references()
    assert study.pretrained == pytest.approx(refs["pretrained"])
    # fixed orthogonal bases stay orthogonal through training; trained LoRA A's do not
    assert study.overlap["orthogonal"] < 1e-5
    assert study.overlap["lora"] > 1e-3 and study.overlap["random_fixed"] > 1e-3
    for v in VARIANTS:
        assert set(study.alone[v]) == set(study.summed[v]) == set(study.tasks)
        assert all(0.0 <= a <= 1.0 for a in study.summed[v].values())
        assert all(len(h) == 2 for h in study.losses[v].values())
    with pytest.raises(ValueError, match="lower rank"):
        orthogonal_adaptation_study(zoo, "vision", rank=1000, steps=1)
    again = orthogonal_adaptation_study(
        zoo, "vision", variants=["orthogonal"], rank=2, steps=2, lr=1e-2
    )
    assert again.summed["orthogonal"] == study.summed["orthogonal"]
