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
    return mix(
        name,
        x,
        y,
        generator=torch.Generator().manual_seed(seed),
        n_classes=K,
        **{**_hyper(name), **kw},
    )


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
        if "resized" in MIXERS[name].tags:  # the partner is shrunk into the box
            assert torch.equal(res.x * mask, x * mask)
        else:
            assert torch.equal(res.x, torch.where(mask.bool(), x, x[res.partner]))
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
    res = _mix(
        "cutmix",
        torch.rand(64, C, H, W),
        torch.arange(64) % K,
        prob=0.5,
        gate="elem",
        per_sample=True,
        lam=0.5,
    )
    assert res.mixed is not None
    off = ~res.mixed
    assert 0 < int(off.sum()) < 64
    assert (res.lam[off] == 1).all()


def test_prob_gate_per_batch_rate_is_p_not_p_squared() -> None:
    x, y = _batch()
    g = torch.Generator().manual_seed(0)
    hits = sum(
        bool(mix("mixup", x, y, generator=g, prob=0.5, n_classes=K).mixed.any()) for _ in range(400)
    )
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
    hist = train(
        model,
        x,
        y,
        TrainConfig(epochs=2, batch_size=16, mix_until_epoch=1),
        mix_fn=mix_fn("cutmix", n_classes=K),
        device="cpu",
    )
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
    res = mix(
        name,
        x,
        y,
        lam=lam,
        generator=torch.Generator().manual_seed(seed),
        n_classes=K,
        per_sample=True,
    )
    assert sorted(res.partner.tolist()) == list(range(n))
    torch.testing.assert_close(res.y.sum(1), torch.ones(n), atol=1e-6, rtol=0)
    assert res.mask is not None
    torch.testing.assert_close(
        res.lam, res.mask.expand(n, 1, side, side).mean((1, 2, 3)), atol=1e-6, rtol=0
    )


def test_fmix_masks_hit_lam_within_one_pixel_per_row() -> None:
    from core.mixup import fmix_masks

    lam = torch.tensor([0.0, 0.13, 0.5, 0.77, 1.0])
    for h, w in ((32, 32), (17, 23)):
        masks = fmix_masks(lam, h, w, generator=torch.Generator().manual_seed(0))
        assert masks.shape == (5, 1, h, w)
        assert ((masks.mean((1, 2, 3)) - lam).abs() <= 1 / (h * w)).all()
    # low frequency: neighbouring pixels agree far more often than chance
    m = fmix_masks(torch.full((8,), 0.5), 32, 32, generator=torch.Generator().manual_seed(1))
    agree = (m[..., 1:, :] == m[..., :-1, :]).float().mean()
    assert agree > 0.85


def test_resizemix_pastes_the_shrunk_partner() -> None:
    import torch.nn.functional as F

    from core.mixup import apply_resizemix, sample_resizemix

    x, y = _batch()
    p = sample_resizemix(x.shape, lam=0.75, generator=torch.Generator().manual_seed(0))
    res = apply_resizemix(x, to_soft_targets(y, K), p)
    small = F.interpolate(x[res.partner], size=(8, 8), mode="nearest")  # τ = 0.5
    for i in range(N):
        y0, y1, x0, x1 = p.boxes[i].tolist()
        assert (y1 - y0, x1 - x0) == (8, 8) and 0 <= y0 and y1 <= H and 0 <= x0 and x1 <= W
        assert torch.equal(res.x[i, :, y0:y1, x0:x1], small[i])
    torch.testing.assert_close(res.lam, torch.full((N,), 0.75))
    taus = [(1 - float(_mix("resizemix", x, y, seed=s).lam[0])) ** 0.5 for s in range(30)]
    assert 0.1 - 0.05 <= min(taus) and max(taus) <= 0.8 + 0.05


def test_maskmix_lam_is_count_over_cells() -> None:
    x, y = _batch()
    res = _mix("maskmix", x, y, lam=0.3, grid=4)  # round(0.3 * 16) = 5 cells
    torch.testing.assert_close(res.lam, torch.full((N,), 5 / 16))
    assert res.mask is not None
    cells = res.mask[:, 0, ::4, ::4]  # (N, 4, 4): one pixel per cell
    assert (cells.sum((1, 2)) == 5).all()
    assert not all(torch.equal(cells[0], cells[i]) for i in range(1, N))  # subsets differ per row


def test_saliencymix_box_sits_on_partner_peak_and_model_is_untouched() -> None:
    from core.mixup import input_saliency

    x, y = _batch()
    model = create_model("cnn", width=4, n_classes=K, in_channels=C, image_size=H).train()
    bn_before = model.trunk.bn0.running_mean.clone()
    sal = input_saliency(model, x, y)
    assert sal.shape == (N, H, W) and (sal >= 0).all() and sal.sum() > 0
    res = _mix("saliencymix", x, y, lam=0.75, model=model)
    assert model.training and torch.equal(model.trunk.bn0.running_mean, bn_before)
    assert all(p.grad is None for p in model.parameters())
    sal = res.info["saliency"]
    for i in range(N):
        j = int(res.partner[i])
        peak = int(sal[j].argmax())
        cy, cx = divmod(peak, W)
        y0, y1, x0, x1 = res.info["boxes"][i].tolist()
        assert y0 <= cy <= y1 and x0 <= cx <= x1


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet20"])
def test_manifold_mixup_mixes_hidden_state_once(arch: str) -> None:
    from core.mixup import mix_layers

    model = create_model(
        arch, width=4 if arch != "mlp" else 16, n_classes=K, in_channels=C, image_size=H
    ).eval()
    layers = mix_layers(model)
    assert layers[0] == "input" and len(layers) >= 2
    x, y = _batch()
    layer = layers[1]
    captured: dict[str, torch.Tensor] = {}
    module = model.get_submodule(layer)
    h = module.register_forward_hook(lambda m, i, o: captured.__setitem__("h", o))
    with torch.no_grad():
        model(x)
    h.remove()
    res = _mix("manifold_mixup", x, y, lam=0.25, layers=[layer], model=model)
    assert res.x is x and res.info["layer"] == layer
    out = {}
    h2 = module.register_forward_hook(lambda m, i, o: out.__setitem__("h", o))
    with torch.no_grad():
        model(x)
    h2.remove()
    hid = captured["h"]
    torch.testing.assert_close(out["h"], 0.25 * hid + 0.75 * hid[res.partner])
    with torch.no_grad():  # the hook fired once and is gone
        torch.testing.assert_close(model(x), model(x))
    assert getattr(model, "_pending_hidden_mix", None) is None


def test_manifold_mixup_trains_through_core_train() -> None:
    from core.train import TrainConfig, train

    x = torch.rand(48, 1, 8, 8)
    y = torch.arange(48) % K
    model = create_model("cnn", width=4, n_classes=K, image_size=8)
    hist = train(
        model,
        x,
        y,
        TrainConfig(epochs=1, batch_size=16),
        mix_fn=mix_fn("manifold_mixup", n_classes=K, model=model),
        device="cpu",
    )
    assert len(hist.train_loss) == 1 and hist.train_loss[0] > 0


# --- fast paths pinned to the straightforward computation -------------------------------------


@pytest.mark.parametrize("per_sample", [False, True])
def test_mixup_row_loop_equals_gather_then_lerp(per_sample: bool) -> None:
    from core.mixup import apply_mixup, sample_mixup
    from core.mixup._base import ROW_LOOP_MIN

    x = torch.randn(5, 3, 80, 80, generator=torch.Generator().manual_seed(0))
    assert x[0].numel() >= ROW_LOOP_MIN  # the row-by-row path
    p = sample_mixup(5, per_sample=per_sample, generator=torch.Generator().manual_seed(1))
    res = apply_mixup(x, to_soft_targets(torch.arange(5) % K, K), p)
    expect = torch.lerp(x[p.partner], x, p.lam.view(5, 1, 1, 1))  # reference: one gather + lerp
    assert torch.equal(res.x, expect)
    x_cl = x.to(memory_format=torch.channels_last)  # non-contiguous rows give the same values
    assert torch.equal(apply_mixup(x_cl, res.y, p).x, expect)


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("inside", [False, True])
@pytest.mark.parametrize("size", [(13, 11), (130, 140)])  # torch path; numba paste kernel
def test_cutmix_box_paste_equals_mask_where(per_sample: bool, inside: bool, size) -> None:
    from core.mixup import apply_cutmix, sample_cutmix
    from core.mixup._base import fused_ok

    for seed in range(5):
        x = torch.randn(7, 2, *size, generator=torch.Generator().manual_seed(seed))
        assert fused_ok(x) == (size[0] > 100)
        p = sample_cutmix(
            x.shape,
            per_sample=per_sample,
            inside=inside,
            generator=torch.Generator().manual_seed(seed),
        )
        res = apply_cutmix(x, to_soft_targets(torch.arange(7) % K, K), p)
        assert res.mask is not None
        assert torch.equal(res.x, torch.where(res.mask.bool(), x, x[p.partner]))
    empty = sample_cutmix(x.shape, lam=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(apply_cutmix(x, res.y, empty).x, x)  # empty box: the input itself


@pytest.mark.parametrize("tied", [False, True])
def test_fmix_threshold_equals_top_k_by_rank(tied: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    fm = importlib.import_module("core.mixup.fmix")  # the attribute core.mixup.fmix is the mixer
    grey_fn = fm._grey_noise
    if tied:  # few distinct grey values: the k-th largest repeats, rank must decide
        monkeypatch.setattr(fm, "_grey_noise", lambda *a: grey_fn(*a).div(10).round())
    lam = torch.rand(40, generator=torch.Generator().manual_seed(2))
    lam[:3] = torch.tensor([0.0, 1.0, 0.5])
    for h, w in ((16, 16), (9, 14)):
        masks = fm.fmix_masks(lam, h, w, generator=torch.Generator().manual_seed(3))
        grey = fm._grey_noise(40, h, w, 3.0, torch.Generator().manual_seed(3))
        k = torch.round(lam.double() * h * w).long()
        expect = torch.zeros(40, h * w)
        for i in range(40):  # reference: sort each row, keep the first k by rank
            expect[i, torch.argsort(grey[i], descending=True, stable=True)[: k[i]]] = 1.0
        assert torch.equal(masks.view(40, -1), expect)
        assert torch.equal(masks.view(40, -1).sum(1).long(), k)


@pytest.mark.parametrize("shared", [False, True])
def test_cutmix_paste_with_repeated_partners(shared: bool) -> None:
    from core.mixup import CutMixParams, apply_cutmix

    x = torch.randn(4, 2, 9, 8, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor(
        [[2, 7, 1, 5]] * 4 if shared else [[2, 7, 1, 5], [0, 9, 0, 8], [3, 3, 0, 8], [8, 9, 7, 8]]
    )
    partner = torch.tensor([1, 1, 0, 2])  # not a permutation: row 1 is its own partner
    res = apply_cutmix(
        x,
        to_soft_targets(torch.arange(4), K),
        CutMixParams(boxes=boxes, partner=partner, shared_box=shared),
    )
    expect = x.clone()
    for i, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        expect[i, :, y0:y1, x0:x1] = x[int(partner[i]), :, y0:y1, x0:x1]
    assert torch.equal(res.x, expect)
    assert res.mask is not None
    assert torch.equal(res.x, torch.where(res.mask.bool(), x, x[partner]))


def test_fmix_masks_do_not_depend_on_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    fm = importlib.import_module("core.mixup.fmix")
    lam = torch.rand(9, generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    try:
        out = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for parallel_min in (0, 1 << 40):  # threads used / never used
                monkeypatch.setattr(fm, "_PARALLEL_MIN", parallel_min)
                out.append(fm.fmix_masks(lam, 20, 18, generator=torch.Generator().manual_seed(4)))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(out[0], o) for o in out[1:])
    k = torch.round(lam.double() * 20 * 18)
    assert torch.equal(out[0].sum((1, 2, 3)).double(), k)
    assert fm._row_chunks(9) == [(0, 2), (2, 4), (4, 7), (7, 9)] and fm._row_chunks(1) == [(0, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mixup_fused_rows_are_bit_identical_to_torch_lerp(dtype: torch.dtype, monkeypatch) -> None:
    """The numba row kernel (one parallel region per batch) against torch.lerp per row, with λ
    on both sides of 0.5 (torch switches formula there) and the exact ends 0 and 1."""
    from core.mixup import MixupParams, apply_mixup
    from core.mixup._base import fused_ok

    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 3, 80, 80, generator=g, dtype=dtype)
    lam = torch.tensor([0.0, 1.0, 0.5, 0.49999, 0.2, 0.8, 0.999, 0.001, 0.6])
    p = MixupParams(lam=lam, partner=torch.randperm(9, generator=g))
    soft = to_soft_targets(torch.arange(9) % K, K)
    assert fused_ok(x)
    got = apply_mixup(x, soft, p).x
    expect = torch.stack([torch.lerp(x[int(p.partner[i])], x[i], float(lam[i])) for i in range(9)])
    assert torch.equal(got, expect)
    assert torch.equal(got[1], x[1]) and torch.equal(got[0], x[int(p.partner[0])])
    monkeypatch.setenv("MIXMERGE_FUSED", "0")  # the torch row loop gives the same bits
    assert not fused_ok(x) and torch.equal(apply_mixup(x, soft, p).x, got)
