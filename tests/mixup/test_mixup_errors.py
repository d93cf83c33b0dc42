"""Mixers' error messages name the caller's argument, the expected and the actual value; the
CutMix mask is built only when it is read."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import torch

from core.mixup import (
    fmix_masks,
    mix,
    sample_cutmix,
    sample_fmix,
    sample_resizemix,
    to_soft_targets,
)

K = 4


def _call(name: str, x: torch.Tensor, **kw: Any):
    """The registered mixer called directly, as a user of ``MIXERS[name].fn`` would."""
    from core.mixup import MIXERS

    y = to_soft_targets(torch.arange(len(x)) % K, K) if x.ndim and len(x) else torch.zeros(0, K)
    return MIXERS[name].fn(x, y, generator=torch.Generator().manual_seed(0), **kw)


@pytest.mark.parametrize("name", ["cutmix", "fmix", "resizemix", "maskmix"])
def test_bad_batch_is_named_x(name: str) -> None:
    with pytest.raises(ValueError, match=r"^x must have 4 dimensions, got shape \(2, 8, 8\)$"):
        _call(name, torch.rand(2, 8, 8))
    with pytest.raises(
        ValueError, match=r"^x must have at least 1 rows, got shape \(0, 3, 8, 8\)$"
    ):
        _call(name, torch.rand(0, 3, 8, 8))
    with pytest.raises(
        ValueError,
        match=r"^x must have shape \(N, C, H, W\) with every size >= 1, got \(2, 3, 0, 8\)$",
    ):
        _call(name, torch.rand(2, 3, 0, 8))
    with pytest.raises(
        TypeError, match=r"^x must be a floating-point tensor, got dtype torch.int64$"
    ):
        _call(name, torch.zeros(2, 3, 8, 8, dtype=torch.long))


@pytest.mark.parametrize("sample", [sample_cutmix, sample_fmix, sample_resizemix])
def test_bad_shape_is_named_shape(sample: Any) -> None:
    g = torch.Generator().manual_seed(0)
    with pytest.raises(
        ValueError, match=r"^shape must be \(N, C, H, W\) with every size >= 1, got \(2, 8, 8\)$"
    ):
        sample((2, 8, 8), generator=g)


def test_resizemix_scale_errors_name_scale_low_and_high() -> None:
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"^scale_low must be in \[0\.0, 1\.0\], got 1\.5$"):
        _call("resizemix", x, scale_low=1.5)
    with pytest.raises(ValueError, match=r"^scale_high must be in \[0\.0, 1\.0\], got -0\.2$"):
        _call("resizemix", x, scale_high=-0.2)
    with pytest.raises(
        ValueError,
        match=r"^scale_low must be <= scale_high, got scale_low=0\.8 and scale_high=0\.2$",
    ):
        mix(
            "resizemix",
            x,
            torch.arange(2),
            generator=torch.Generator(),
            scale_low=0.8,
            scale_high=0.2,
        )
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"^scale\[1\] must be in \[0\.0, 1\.0\], got 2\.0$"):
        sample_resizemix(x.shape, scale=(0.1, 2.0), generator=g)
    with pytest.raises(ValueError, match=r"^scale must be a \(low, high\) pair, got 0\.5$"):
        sample_resizemix(x.shape, scale=0.5, generator=g)  # type: ignore[arg-type]


def test_fmix_errors_name_decay_power_lam_h_w() -> None:
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"^decay_power must be in \[0\.0, 10\.0\], got -1\.0$"):
        _call("fmix", x, decay_power=-1.0)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"^lam must have 1 dimensions, got shape \(2, 2\)$"):
        fmix_masks(torch.rand(2, 2), 8, 8, generator=g)
    with pytest.raises(
        ValueError, match=r"^lam must hold values in \[0, 1\], got range \[0\.5, 1\.5\]$"
    ):
        fmix_masks(torch.tensor([0.5, 1.5]), 8, 8, generator=g)
    with pytest.raises(ValueError, match=r"^h must be in \[1, "):
        fmix_masks(torch.rand(2), 0, 8, generator=g)
    with pytest.raises(ValueError, match=r"^w must be in \[1, "):
        fmix_masks(torch.rand(2), 8, 0, generator=g)
    with pytest.raises(ValueError, match=r"^decay_power must be in \[0\.0, 10\.0\], got 11\.0$"):
        fmix_masks(torch.rand(2), 8, 8, decay_power=11.0, generator=g)


def test_cutmix_shared_box_must_be_one_box() -> None:
    from core.mixup import CutMixParams, apply_cutmix

    x = torch.rand(2, 3, 8, 8)
    p = CutMixParams(
        boxes=torch.tensor([[0, 4, 0, 4], [1, 5, 1, 5]]),
        partner=torch.tensor([1, 0]),
        shared_box=True,
    )
    with pytest.raises(ValueError, match=r"^params\.boxes must hold one box in every row .*got 2 "):
        apply_cutmix(x, to_soft_targets(torch.arange(2), K), p)


def test_shared_errors_name_alpha_lam_grid() -> None:
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"^alpha must be in \(0\.0, inf[)\]], got -1\.0$"):
        _call("cutmix", x, alpha=-1.0)
    with pytest.raises(ValueError, match=r"^lam must be in \[0\.0, 1\.0\], got 1\.5$"):
        _call("cutmix", x, lam=1.5)
    with pytest.raises(ValueError, match=r"^lam must be in \[0\.0, 1\.0\], got -0\.5$"):
        _call("resizemix", x, lam=-0.5)
    with pytest.raises(ValueError, match=r"^grid must be in \[1, 64\], got 0$"):
        _call("maskmix", x, grid=0)


@pytest.mark.parametrize("per_sample", [False, True])
def test_cutmix_mask_is_built_only_when_read(
    per_sample: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    cm = importlib.import_module("core.mixup.cutmix")
    calls: list[int] = []
    box_mask = cm.box_mask
    monkeypatch.setattr(cm, "box_mask", lambda *a: calls.append(1) or box_mask(*a))
    x = torch.rand(5, 2, 9, 7, generator=torch.Generator().manual_seed(0))
    res = mix(
        "cutmix",
        x,
        torch.arange(5) % K,
        generator=torch.Generator().manual_seed(1),
        n_classes=K,
        per_sample=per_sample,
    )
    assert calls == []  # mixing, the gate and the label λ never needed it
    boxes = res.info["boxes"]
    mask = res.mask
    assert mask is not None and calls == [1] and mask.shape == (5, 1, 9, 7)
    for i, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        expect = torch.ones(9, 7)
        expect[y0:y1, x0:x1] = 0.0
        assert torch.equal(mask[i, 0], expect)
        assert float(res.lam[i]) == pytest.approx(float(expect.mean()), abs=1e-7)
    assert res.mask is mask and calls == [1]  # built once
    assert torch.equal(res.x, torch.where(mask.bool(), x, x[res.partner]))


def test_cutmix_result_pickles_with_its_mask_unbuilt() -> None:
    import copy
    import pickle

    x = torch.rand(3, 2, 6, 5, generator=torch.Generator().manual_seed(0))
    res = mix(
        "cutmix",
        x,
        torch.arange(3) % K,
        generator=torch.Generator().manual_seed(1),
        n_classes=K,
        per_sample=True,
    )
    back = pickle.loads(pickle.dumps(res))
    twin = copy.deepcopy(res)
    assert back.mask is not None and twin.mask is not None and res.mask is not None
    assert torch.equal(back.mask, res.mask) and torch.equal(twin.mask, res.mask)
    assert torch.equal(back.x, res.x) and torch.equal(back.lam, res.lam)
