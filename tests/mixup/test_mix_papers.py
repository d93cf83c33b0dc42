"""The mixing-paper studies (core.mixup.papers): definitions, records, figures, notebooks."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from core.figures.mix_papers import FIGURES
from core.geometry.mixup_geometry import MixupGeometry
from core.mixup.papers import (
    Cancelled,
    bootstrap_mean_ci,
    load_paper_runs,
    random_subset,
    rerun,
    store_run,
)
from core.mixup.papers import adamixup as am
from core.mixup.papers import adautomix as aa
from core.mixup.papers import attention_labels as al
from core.mixup.papers import feature_learning as fl
from core.mixup.papers import mochi as mc
from core.mixup.papers import neural_collapse as nc
from core.mixup.papers import supremix as sr
from core.models import create_model
from core.notebook_export import notebook_for
from core.zoo import Zoo

TINY_FL = fl.FeatureNoiseConfig(n_train=20, n_test=40, dim=40, steps=6, log_every=3, mix_until=3)


# ---------------------------------------------------------------------------- shared plumbing
def test_bootstrap_mean_ci_brackets_mean_and_narrows_with_n() -> None:
    rng = np.random.default_rng(0)
    small = bootstrap_mean_ci(rng.normal(1.0, 1.0, 20))
    big = bootstrap_mean_ci(rng.normal(1.0, 1.0, 2000))
    assert small.low < small.estimate < small.high
    assert big.high - big.low < (small.high - small.low) / 4
    assert big.low < 1.0 < big.high


def test_bootstrap_mean_ci_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2 finite"):
        bootstrap_mean_ci([1.0])
    with pytest.raises(ValueError, match="at least 2 finite"):
        bootstrap_mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean_ci([1.0, 2.0], level=1.5)


def test_store_and_load_runs(tmp_path: Path) -> None:
    zoo = Zoo(tmp_path / "ws")
    rid = store_run(zoo, "feature_learning", {"study": "feature_learning", "x": 1})
    assert load_paper_runs(zoo, "feature_learning")[rid]["x"] == 1
    with pytest.raises(ValueError, match="paper must be one of"):
        store_run(zoo, "nope", {})


# ---------------------------------------------------------------------------- Zou et al. 2023
def _data(
    cfg: fl.FeatureNoiseConfig, n: int, seed: int = 0
) -> tuple[torch.Tensor, fl.FeatureNoiseData]:
    g = torch.Generator().manual_seed(seed)
    feats = fl.make_features(cfg, g)
    return feats, fl.sample_data(cfg, feats, n, g)


def test_feature_noise_data_follows_the_model() -> None:
    cfg = fl.FeatureNoiseConfig(dim=60, n_patches=4, rho=0.2, feature_noise=0.3)
    feats, d = _data(cfg, 3000)
    flat = feats.reshape(-1, cfg.dim)
    assert torch.allclose(
        flat @ flat.T, torch.eye(2 * cfg.n_classes) * cfg.feature_norm**2, atol=1e-5
    )
    coef = torch.einsum("npd,fd->npf", d.x, flat)  # feature content of each patch
    for i in range(50):
        k, r = int(d.y[i]), int(d.rare[i])
        label_patch = (coef[i, :, 2 * k + r] - 1.0).abs() < 1e-4
        assert int(label_patch.sum()) == 1  # one patch is the label feature
        own = [2 * k, 2 * k + 1]
        others = [f for f in range(2 * cfg.n_classes) if f not in own]
        noise_patch = (coef[i][:, others] - cfg.feature_noise).abs() < 1e-4
        assert int(noise_patch.sum()) == 1  # one patch holds α·v of another class
    assert abs(float(d.rare.float().mean()) - cfg.rho) < 0.03
    assert float((d.noise.reshape(-1, cfg.dim) @ flat.T).abs().max()) < 1e-4  # noise ⟂ features
    assert torch.allclose(d.noise.abs().sum(2).gt(0).sum(1), torch.full((3000,), cfg.n_patches - 2))


def test_cnn_logits_match_the_definition() -> None:
    g = torch.Generator().manual_seed(1)
    w, x = torch.randn(3, 4, 7, generator=g), torch.randn(5, 2, 7, generator=g)
    ref = torch.zeros(5, 3)
    for n in range(5):
        for k in range(3):
            ref[n, k] = (
                sum(max(float(w[k, r] @ x[n, p]), 0.0) ** 3 for r in range(4) for p in range(2)) / 4
            )
    assert torch.allclose(fl.cnn_logits(w, x, 3), ref, atol=1e-4)
    with pytest.raises(ValueError, match="same d"):
        fl.cnn_logits(w, torch.randn(5, 2, 6), 2)


def test_feature_learning_measure() -> None:
    cfg = fl.FeatureNoiseConfig(dim=20, width=3)
    feats = fl.make_features(cfg, torch.Generator().manual_seed(0))
    w = torch.zeros(2, 3, 20)
    w[0, 1] = 2 * feats[0, 0]
    w[1, 2] = 4 * feats[1, 0] + 0.5 * feats[1, 1]
    common, rare = fl.feature_learning(w, feats)
    assert common == pytest.approx(3.0, abs=1e-5) and rare == pytest.approx(0.25, abs=1e-5)


def test_config_and_run_validation() -> None:
    with pytest.raises(ValueError, match="rho"):
        fl.FeatureNoiseConfig(rho=0.7)
    with pytest.raises(ValueError, match="mix_until"):
        fl.FeatureNoiseConfig(steps=10, mix_until=20, log_every=5)
    with pytest.raises(ValueError, match="methods"):
        fl.run_feature_learning(TINY_FL, methods=("sgd",))
    with pytest.raises(TypeError, match="FeatureNoiseConfig"):
        fl.run_feature_learning({"rho": 0.1})  # type: ignore[arg-type]


def test_run_is_seeded_reports_progress_and_cancels(tmp_path: Path) -> None:
    seen: list[dict] = []
    a = fl.run_feature_learning(TINY_FL, seeds=(3,), progress=seen.append)
    b = fl.run_feature_learning(TINY_FL, seeds=(3,))
    assert a["runs"] == b["runs"] and seen and 0 < seen[-1]["fraction"] <= 1
    assert set(a["summary"]["mixup"]) >= {"rare", "common", "rare_minus_erm"}
    with pytest.raises(Cancelled):
        fl.run_feature_learning(TINY_FL, seeds=(0,), should_stop=lambda: True)
    zoo = Zoo(tmp_path / "ws")
    rid = store_run(zoo, "feature_learning", a)
    again = rerun(load_paper_runs(zoo)[rid])
    assert again["runs"] == a["runs"]
    fig = FIGURES["feature_learning"](load_paper_runs(zoo)[rid])
    assert isinstance(fig, go.Figure) and len(fig.data) == 3 * 3 + 1
    nb = notebook_for({"kind": "mix_paper", "args": {"run": rid}}, workspace=zoo.root)
    assert 'FIGURES[record["study"]]' in "".join(c.source for c in nb.cells)


@pytest.mark.slow
def test_mixup_learns_the_rare_feature_erm_misses() -> None:
    """The paper's claim on a quick setting (one seed): mixup's rare-feature alignment and its
    accuracy on rare-feature test points exceed ERM's, while both get the common points."""
    cfg = fl.FeatureNoiseConfig(log_every=250)
    rec = fl.run_feature_learning(cfg, methods=("erm", "mixup"), seeds=(0,))
    erm, mix = rec["runs"]["erm"][0], rec["runs"]["mixup"][0]
    assert erm["acc_common"] > 0.95 and mix["acc_common"] > 0.95
    assert mix["history"]["rare"][-1] > 2 * erm["history"]["rare"][-1]
    assert erm["history"]["noise"][-1] > mix["history"]["noise"][-1]  # ERM memorises noise
    assert rec["summary"]["mixup"]["rare_minus_erm"]["low"] > 0


# ---------------------------------------------------------------------------- Fisher et al. 2024
def _geometry(
    lam: torch.Tensor, a: torch.Tensor, b: torch.Tensor, feats: torch.Tensor
) -> MixupGeometry:
    w = torch.eye(3, 4, dtype=torch.float64)  # (C, D) classifier rows
    means = 2 * w  # class means on the classifier directions, μ_G = mean of them
    return MixupGeometry(
        features=feats,
        lam=lam,
        label_a=a,
        label_b=b,
        same_class=a == b,
        clean_features=feats,
        clean_labels=a,
        classes=torch.arange(3),
        class_means=means,
        global_mean=means.mean(0),
        classifier=w,
        mixer="mixup",
    )


def test_collapse_statistics_on_the_ideal_geometry() -> None:
    """Features built to the paper's optimum give alignment 1, R² 1, slope 1, convex gap 0."""
    g = torch.Generator().manual_seed(0)
    n = 60
    lam = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    a = torch.randint(0, 3, (n,), generator=g)
    b = torch.where(torch.arange(n) % 2 == 0, a, (a + 1) % 3)
    geo0 = _geometry(lam, a, b, torch.zeros(n, 4, dtype=torch.float64))
    convex = lam[:, None] * geo0.class_means[a] + (1 - lam[:, None]) * geo0.class_means[b]
    same = a == b
    wc = geo0.classifier - geo0.classifier.mean(0)  # centred rows
    feats = torch.where(same[:, None], geo0.global_mean + 3 * wc[a], convex)
    geo = _geometry(lam, a, b, feats)
    logits = torch.zeros(n, 3, dtype=torch.float64)
    logits[torch.arange(n), a] = torch.log(lam / (1 - lam))  # margin z_a - z_b = logit(λ)
    v = nc.geometry_stats(geo, logits)
    assert np.allclose(v["same_cos"], 1.0)
    assert np.allclose(v["convex_gap"], 0.0, atol=1e-9)
    r2, slope = nc.channel_fit(v["lam"], v["margin"])
    assert r2 == pytest.approx(1.0) and slope == pytest.approx(1.0)


def test_channel_fit_on_a_step_is_poor() -> None:
    lam = np.linspace(0.05, 0.95, 50)
    r2, slope = nc.channel_fit(lam, np.where(lam > 0.5, 8.0, -8.0))
    assert r2 < 0.9 and slope > 2
    with pytest.raises(ValueError, match="equal-length"):
        nc.channel_fit(lam, lam[:3])


def test_collapse_run_is_seeded_stored_and_drawn(tmp_path: Path) -> None:
    cfg = nc.CollapseConfig(width=16, epochs=1, n_mix=60, n_figure=30)
    a = nc.run_neural_collapse(cfg, seeds=(0,))
    assert set(a["summary"]["mixup"]) >= {"same_alignment", "channel_r2", "channel_slope"}
    zoo = Zoo(tmp_path / "ws")
    rid = store_run(zoo, "neural_collapse", a)
    rec = load_paper_runs(zoo, "neural_collapse")[rid]
    assert rerun(rec)["per_seed"] == a["per_seed"]
    fig = FIGURES["neural_collapse"](rec)
    assert isinstance(fig, go.Figure) and any(
        "logit" in str(t.text) for t in fig.layout.annotations
    )
    with pytest.raises(ValueError, match="figure_classes"):
        nc.CollapseConfig(figure_classes=(0, 0, 1))
    with pytest.raises(ValueError, match="methods"):
        nc.run_neural_collapse(cfg, methods=("cutmix",))
    with pytest.raises(Cancelled):
        nc.run_neural_collapse(cfg, seeds=(0,), should_stop=lambda: True)


# ---------------------------------------------------------------------------- SupReMix
def test_rotate_is_a_rotation() -> None:
    x = torch.randn(2, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sr.rotate(x, torch.zeros(2)), x, atol=1e-5)
    r = sr.rotate(x, torch.full((2,), 90.0))
    assert any(torch.allclose(r, torch.rot90(x, k, dims=(2, 3)), atol=1e-4) for k in (1, -1))
    assert torch.allclose(sr.rotate(r, torch.full((2,), -90.0)), x, atol=1e-4)
    with pytest.raises(ValueError, match="degrees"):
        sr.rotate(x, torch.zeros(3))


def _rnc_naive(
    z: torch.Tensor, y: torch.Tensor, cz: torch.Tensor, cy: torch.Tensor, t: float
) -> float:
    terms = []
    for i in range(len(z)):
        for j in range(cz.shape[1]):
            if math.isnan(float(cy[i, j])):
                continue
            dij = abs(float(cy[i, j] - y[i]))
            den = sum(
                math.exp(float(z[i] @ cz[i, k]) / t)
                for k in range(cz.shape[1])
                if not math.isnan(float(cy[i, k])) and abs(float(cy[i, k] - y[i])) >= dij
            )
            terms.append(-math.log(math.exp(float(z[i] @ cz[i, j]) / t) / den))
    return sum(terms) / len(terms)


def test_rnc_loss_matches_the_definition_with_mixed_candidates() -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.nn.functional.normalize(torch.randn(6, 5, generator=g), dim=1)
    y = torch.rand(6, generator=g)
    cz, cy = sr.batch_candidates(z, y)
    mz, my = sr.mixed_candidates(z, y, 3, 0.5, g)
    cz, cy = torch.cat([cz, mz], 1), torch.cat([cy, my], 1)
    got = float(sr.rnc_loss(z, y, cz, cy, 0.3))
    assert got == pytest.approx(_rnc_naive(z, y, cz, cy, 0.3), rel=1e-4)


def test_mixed_candidates_follow_supremix() -> None:
    g = torch.Generator().manual_seed(3)
    z = torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=1)
    y = torch.linspace(0, 1, 8)
    mz, my = sr.mixed_candidates(z, y, 5, 0.6, g)
    assert mz.shape == (8, 10, 4) and torch.allclose(mz.norm(dim=2), torch.ones(8, 10))
    neg, pos = my[:, :5], my[:, 5:]
    inner = torch.arange(1, 7)  # anchors with a label below and above
    assert torch.allclose(pos[inner], y[inner, None].expand(-1, 5))  # hard positives: y_i exactly
    assert torch.isnan(pos[0]).all() and torch.isnan(pos[7]).all()  # extremes have none
    for i in range(8):  # hard negatives: λ y_i + (1 − λ) y_k with λ >= λ_low
        for v in neg[i][~torch.isnan(neg[i])]:
            lam_ok = [
                (float(y[i]) - float(yk)) == 0
                or 0.6 - 1e-6 <= (float(v) - float(yk)) / (float(y[i]) - float(yk)) <= 1 + 1e-6
                for yk in y
            ]
            assert any(lam_ok)


def test_ridge_probe_recovers_a_linear_map() -> None:
    g = torch.Generator().manual_seed(4)
    z = torch.randn(50, 3, generator=g)
    y = z @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    assert torch.allclose(sr.ridge_probe(z, y, z[:5], 0.0), y[:5], atol=1e-4)


def test_supremix_run_seeded_stored_drawn(tmp_path: Path) -> None:
    cfg = sr.SupReMixConfig(n_train=64, n_test=40, width=16, epochs=1, batch_size=32)
    a = sr.run_supremix(cfg, seeds=(1,))
    assert set(a["summary"]["supremix"]) >= {"mae", "minus_rnc"}
    zoo = Zoo(tmp_path / "ws")
    rid = store_run(zoo, "supremix", a)
    assert rerun(load_paper_runs(zoo)[rid])["errors"] == a["errors"]
    assert len(FIGURES["supremix"](a).data) == 1 + 3 + 1
    with pytest.raises(Cancelled):
        sr.run_supremix(cfg, seeds=(0,), should_stop=lambda: True)
    with pytest.raises(ValueError, match="lam_low"):
        sr.SupReMixConfig(lam_low=1.0)


# ---------------------------------------------------------------------------- MoCHi
def test_hard_negatives_mix_only_the_hardest() -> None:
    d, n_hard = 12, 4
    queue = torch.eye(d)  # (K, D) orthonormal negatives e_0..e_11
    weights = torch.linspace(1.0, 0.1, d)
    q = torch.nn.functional.normalize(weights, dim=0)[None].requires_grad_(
        True
    )  # hardest: e_0..e_3
    syn = mc.hard_negatives(q, queue, n_hard, 6, 5, torch.Generator().manual_seed(0))
    assert syn.shape == (1, 11, d) and not syn.requires_grad
    assert torch.allclose(syn.norm(dim=2), torch.ones(1, 11))
    t1, t2 = syn[0, :6], syn[0, 6:]
    assert float(t1[:, n_hard:].abs().max()) < 1e-6  # type 1: mixes of the N hardest only
    assert ((t1[:, :n_hard].abs() > 1e-6).sum(1) <= 2).all()
    qd = q.detach()[0]
    for h in t2:  # type 2: β q + (1 − β) n_j with β <= 0.5
        r = h[n_hard:] / qd[n_hard:]
        assert torch.allclose(r, r.mean().expand_as(r), atol=1e-5)
        rest = h - r.mean() * qd
        nz = rest.abs() > 1e-5
        assert int(nz.sum()) == 1 and int(nz.nonzero()) < n_hard
        assert float(r.mean() / rest[nz]) <= 1.0 + 1e-5  # β/(1 − β) <= 1
    with pytest.raises(ValueError, match="share D"):
        mc.hard_negatives(qd[None], torch.eye(5), 2, 1, 1, torch.Generator())


def test_linear_probe_separates_separable_classes() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=g)
    z = torch.nn.functional.one_hot(y, 3).float() * 3 + 0.3 * torch.randn(300, 3, generator=g)
    pred = mc.linear_probe(z[:200], y[:200], z[200:], 3, 100, 0)
    assert float((pred == y[200:]).float().mean()) > 0.95


def test_mochi_run_seeded_stored_drawn(tmp_path: Path) -> None:
    cfg = mc.MoChiConfig(
        n_train=128,
        width=16,
        embed_dim=8,
        epochs=1,
        batch_size=32,
        queue=64,
        n_hard=8,
        s1=4,
        s2=2,
        probe_epochs=5,
    )
    a = mc.run_mochi(cfg, seeds=(0,))
    assert set(a["summary"]["mochi"]) >= {"probe", "minus_moco", "false_neg", "uniformity"}
    assert 0 < a["summary"]["moco"]["false_neg"] < 1  # held-out split is shuffled
    zoo = Zoo(tmp_path / "ws")
    rid = store_run(zoo, "mochi", a)
    assert rerun(load_paper_runs(zoo)[rid])["correct"] == a["correct"]
    assert len(FIGURES["mochi"](a).data) == 1 + 2 * 2
    with pytest.raises(Cancelled):
        mc.run_mochi(cfg, seeds=(0,), should_stop=lambda: True)
    with pytest.raises(ValueError, match="n_hard"):
        mc.MoChiConfig(queue=128, n_hard=500)


# ---------------------------------------------------------------------------- AdaMixUp
def test_policy_lam_lies_in_the_region_and_has_gradients() -> None:
    logits = torch.randn(50, 3, requires_grad=True)
    region = torch.softmax(logits, 1)
    lam = am.sample_policy_lam(region, torch.Generator().manual_seed(0))
    lo, hi = region[:, 0], region[:, 0] + region[:, 1]
    assert bool(((lam >= lo - 1e-6) & (lam <= hi + 1e-6)).all())
    lam.sum().backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="region"):
        am.sample_policy_lam(torch.rand(5, 2), torch.Generator())


def test_intrusion_loss_definition() -> None:
    real, mixed = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    ref = -(torch.log(torch.sigmoid(real)).mean() + torch.log(1 - torch.sigmoid(mixed)).mean())
    assert float(am.intrusion_loss(real, mixed)) == pytest.approx(float(ref), rel=1e-5)


def test_random_subset_keeps_every_class_of_a_sorted_split() -> None:
    y = torch.arange(10).repeat_interleave(50)  # sorted by class, like MNIST-5k
    _, ys = random_subset(torch.zeros(500, 1), y, 100, 0)
    assert len(ys) == 100 and len(set(ys.tolist())) == 10


def test_adamixup_run_seeded_stored_drawn(tmp_path: Path) -> None:
    cfg = am.AdaMixUpConfig(n_train=64, width=4, epochs=2, batch_size=32)
    a = am.run_adamixup(cfg, seeds=(0,))
    assert set(a["summary"]["adamixup"]) >= {"accuracy", "minus_erm", "minus_mixup"}
    log = a["logs"]["adamixup"][0]
    assert all(0 <= lo <= hi <= 1 for lo, hi in zip(log["lam_low"], log["lam_high"], strict=True))
    zoo = Zoo(tmp_path / "ws")
    rid = store_run(zoo, "adamixup", a)
    assert rerun(load_paper_runs(zoo)[rid])["correct"] == a["correct"]
    assert isinstance(FIGURES["adamixup"](a), go.Figure)
    with pytest.raises(Cancelled):
        am.run_adamixup(cfg, seeds=(0,), should_stop=lambda: True)
    with pytest.raises(ValueError, match="arch"):
        am.AdaMixUpConfig(arch="vit")


# ---------------------------------------------------------------------------- AdAutoMix
def test_adversarial_losses_definition() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=g)
    target = torch.softmax(torch.randn(4, 3, generator=g), 1)
    fa, fb = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    lam = torch.tensor([0.2, 0.5, 0.7, 0.9])
    fm = lam[:, None] * fa + (1 - lam[:, None]) * fb  # consistent mix features
    mask = lam.view(4, 1, 1, 1).expand(4, 1, 3, 3)  # mean(m) = λ
    ce, gl = aa.adversarial_losses(logits, target, fm, fa, fb, mask, lam, 0.3)
    ref = -(target * torch.log_softmax(logits, 1)).sum(1).mean()
    assert float(ce) == pytest.approx(float(ref), rel=1e-5)
    assert float(gl) == pytest.approx(-0.3 * float(ref), abs=1e-5)  # R = 0
    _, gl2 = aa.adversarial_losses(logits, target, fm, fa, fb, mask * 0, lam, 0.3)
    assert float(gl2) == pytest.approx(-0.3 * float(ref) + 0.7 * float(lam.mean()), abs=1e-5)


def test_generator_steps_make_mixes_harder() -> None:
    """With the classifier fixed, descending the generator loss (β = 1) raises the mixed CE."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 8, 8, generator=g)
    y = torch.arange(16) % 2
    clf = create_model("cnn", width=4, n_classes=2, image_size=8, seed=0).eval()
    gen = aa.MaskGenerator(1, 4, 0)
    opt = torch.optim.Adam(gen.parameters(), lr=0.05)
    lam = torch.full((16,), 0.5)
    perm = torch.roll(torch.arange(16), 1)
    target = (
        torch.nn.functional.one_hot(y, 2).float() * 0.5
        + torch.nn.functional.one_hot(y[perm], 2) * 0.5
    )

    def ce_now() -> torch.Tensor:
        m = torch.sigmoid(gen(x, x[perm], lam))
        xm = m * x + (1 - m) * x[perm]
        f = clf.features(xm)
        with torch.no_grad():
            fa, fb = clf.features(x), clf.features(x[perm])
        return aa.adversarial_losses(clf.classify(f), target, f, fa, fb, m, lam, 1.0)

    before = float(ce_now()[0].detach())
    for _ in range(20):
        _, gl = ce_now()
        opt.zero_grad()
        gl.backward()
        opt.step()
    assert float(ce_now()[0].detach()) > before


def test_adautomix_run_seeded_stored_drawn(tmp_path: Path) -> None:
    cfg = aa.AdAutoMixConfig(n_train=64, width=4, epochs=1, batch_size=32, gen_width=4)
    a = aa.run_adautomix(cfg, seeds=(0,))
    assert {"minus_mixup", "minus_cutmix", "minus_erm"} <= set(a["summary"]["adautomix"])
    zoo = Zoo(tmp_path / "ws")
    rid = store_run(zoo, "adautomix", a)
    assert rerun(load_paper_runs(zoo)[rid])["correct"] == a["correct"]
    assert isinstance(FIGURES["adautomix"](a), go.Figure)
    with pytest.raises(Cancelled):
        aa.run_adautomix(cfg, seeds=(0,), should_stop=lambda: True)
    with pytest.raises(ValueError, match="beta"):
        aa.AdAutoMixConfig(beta=2.0)


# ---------------------------------------------------------------------------- TransMix / MixPro
def test_vit_exposes_cls_attention() -> None:
    m = create_model("vit", width=16, depth=1, heads=2, patch_size=4, seed=0).eval()
    m(torch.randn(3, 1, 28, 28))
    att = m.trunk.cls_attention()
    assert att.shape == (3, 7, 7)
    tot = att.flatten(1).sum(1)  # softmax row minus the CLS→CLS entry
    assert bool(((tot > 0) & (tot < 1)).all())
    with pytest.raises(ValueError, match="patch_size must divide"):
        create_model("vit", patch_size=5)


def test_attention_lam_and_label_rules() -> None:
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2, :] = 1.0  # own image in the top half
    att = torch.zeros(2, 2, 2)
    att[0] = 0.25  # uniform attention
    att[1, 0, 0] = 1.0  # all attention on the top-left (own) patch
    lam_attn = al.attention_lam(mask, att)
    assert torch.allclose(lam_attn, torch.tensor([0.5, 1.0]))
    area = torch.tensor([0.5, 0.5])
    assert torch.allclose(al.transmix_lam(area, lam_attn), torch.tensor([0.5, 0.75]))
    target = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    confident = torch.tensor([[10.0, -10.0], [10.0, -10.0]])  # cos(target, p) = 1/√2
    got = al.mixpro_lam(area, lam_attn, target, confident)
    s = 1 / math.sqrt(2)
    assert torch.allclose(got, s * lam_attn + (1 - s) * area, atol=1e-4)
    with pytest.raises(ValueError, match="dividing"):
        al.attention_lam(torch.zeros(2, 1, 5, 5), att)


def test_attention_labels_run_seeded_stored_drawn(tmp_path: Path) -> None:
    cfg = al.AttentionLabelConfig(n_train=64, width=16, depth=1, heads=2, epochs=1, batch_size=32)
    a = al.run_attention_labels(cfg, seeds=(0,))
    assert "minus_cutmix" in a["summary"]["transmix"] and "minus_maskmix" in a["summary"]["mixpro"]
    assert (
        a["logs"]["transmix"][0]["label_shift"][0] > 0 == a["logs"]["cutmix"][0]["label_shift"][0]
    )
    zoo = Zoo(tmp_path / "ws")
    rid = store_run(zoo, "attention_labels", a)
    assert rerun(load_paper_runs(zoo)[rid])["correct"] == a["correct"]
    assert isinstance(FIGURES["attention_labels"](a), go.Figure)
    with pytest.raises(Cancelled):
        al.run_attention_labels(cfg, seeds=(0,), should_stop=lambda: True)


# ---------------------------------------------------------------------------- notebook recipe
@pytest.mark.slow
def test_generated_notebook_redraws_and_retrains_a_study(tmp_path: Path) -> None:
    """The ``mix_paper`` notebook redraws the stored figure, and with rerun=True retrains the
    study from its stored config and seeds to the same figure data."""
    import nbformat
    from nbclient import NotebookClient

    from core.figures import figure_data

    zoo = Zoo(tmp_path / "ws")
    rec = fl.run_feature_learning(TINY_FL, seeds=(0,))
    rid = store_run(zoo, "feature_learning", rec)
    want = figure_data(FIGURES["feature_learning"](rec))
    for rerun_flag in (False, True):
        recipe = {"kind": "mix_paper", "args": {"run": rid, "rerun": rerun_flag}}
        nb = notebook_for(recipe, workspace=zoo.root)
        out = tmp_path / f"fig{int(rerun_flag)}.csv"
        nb.cells.append(
            nbformat.v4.new_code_cell(
                f"from core.figures import figure_data as _fd\n_fd(fig).to_csv({str(out)!r}, index=False)"
            )
        )
        NotebookClient(nb, timeout=300, kernel_name="python3").execute()
        got = pd.read_csv(out)
        pd.testing.assert_frame_equal(got, pd.read_csv(io.StringIO(want.to_csv(index=False))))


def test_study_subsets_are_stratified_on_class_sorted_labels() -> None:
    """The studies' subsets go through core.data.stratified_subset: a class-sorted split keeps
    every class in proportion (the first n rows would hold two classes)."""
    import torch

    from core.mixup.papers._common import random_subset

    y = torch.arange(10).repeat_interleave(50)  # sorted by class, like MNIST-5k
    x = torch.arange(500).float()[:, None]
    xs, ys = random_subset(x, y, 100, seed=3)
    assert torch.bincount(ys, minlength=10).tolist() == [10] * 10
    assert torch.equal(
        xs[:, 0].long(), torch.nonzero(torch.isin(torch.arange(500), xs[:, 0].long()))[:, 0]
    )
    angles = torch.linspace(0, 1, 500)  # a continuous target: a seeded random sample
    _, a1 = random_subset(x, angles, 40, seed=1)
    _, a2 = random_subset(x, angles, 40, seed=1)
    assert torch.equal(a1, a2) and len(a1) == 40
