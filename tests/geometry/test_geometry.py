"""core.geometry: neural-collapse metrics against exact ETF cases, hand-worked examples and a
straightforward reference; feature extraction; tracking during training; projections."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.geometry import (
    class_stats,
    etf_distance,
    extract_features,
    layer_features,
    mixup_geometry,
    neural_collapse,
    normalized_gram,
    project,
    simplex_etf_gram,
    track_neural_collapse,
)
from core.models import create_model
from core.train import TrainConfig, train


def _etf(c: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """(C, D) rows of a simplex ETF with unit norms."""
    u, _ = torch.linalg.qr(torch.randn(d, c, generator=gen, dtype=torch.float64))  # (D, C)
    m = math.sqrt(c / (c - 1)) * (u @ (torch.eye(c, dtype=torch.float64) - 1.0 / c))  # (D, C)
    return m.T


def _collapsed(c: int = 10, d: int = 32, n: int = 20, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    m = _etf(c, d, gen)  # (C, D)
    offset = torch.randn(d, generator=gen, dtype=torch.float64)
    y = torch.arange(c).repeat_interleave(n)
    h = m[y] + offset  # every sample at its class vertex, plus a global offset
    w = 3.0 * m  # classifier = scaled ETF
    b = -w @ offset  # bias consistent with μ_G (needed for NC4)
    return h, y, w, b


def _reference_nc(h: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> dict:
    """Per-class loops and numpy pinv of the full D x D Σ_B, as public codes do."""
    hn, yn, wn, bn = (t.double().numpy() for t in (h, y.double(), w, b))
    classes = np.unique(yn)
    c = len(classes)
    mu_g = hn.mean(0)
    means = np.stack([hn[yn == k].mean(0) for k in classes])
    sw = sum((hn[yn == k] - means[i]).T @ (hn[yn == k] - means[i]) for i, k in enumerate(classes))
    sw = sw / len(hn)
    mc = means - mu_g
    sb = mc.T @ mc / c
    nc1 = np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / c
    norms = np.linalg.norm(mc, axis=1)
    cos = (mc @ mc.T) / np.outer(norms, norms)
    off = cos[~np.eye(c, dtype=bool)]
    w_p = wn[classes.astype(int)]
    nc3 = np.linalg.norm(w_p.T / np.linalg.norm(w_p) - mc.T / np.linalg.norm(mc))
    pred = (hn @ w_p.T + bn[classes.astype(int)]).argmax(1)
    ncc = np.stack([np.linalg.norm(hn - m, axis=1) for m in means], 1).argmin(1)
    return {
        "nc1": nc1,
        "nc2_equinorm": norms.std() / norms.mean(),
        "nc2_equiangular": np.abs(off + 1 / (c - 1)).mean(),
        "nc3": nc3,
        "nc4": float((pred != ncc).mean()),
    }


def test_exact_etf_collapse_gives_zero_metrics() -> None:
    h, y, w, b = _collapsed()
    nc = neural_collapse(h, y, (w, b))
    for key in (
        "nc1",
        "nc1_quotient",
        "nc1_cdnv",
        "nc2_equinorm",
        "nc2_equiangular",
        "nc2_equiangular_std",
        "etf_distance",
        "nc3",
        "nc2_equinorm_w",
        "etf_distance_w",
        "bias_relation",
    ):
        assert abs(nc[key]) < 1e-12, (key, nc[key])
    assert nc["nc4"] == 0.0
    assert nc["n_classes"] == 10 and nc["n_samples"] == 200


def test_random_features_are_far_from_collapse() -> None:
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(300, 32, generator=gen)
    y = torch.arange(10).repeat(30)
    nc = neural_collapse(h, y, torch.nn.Linear(32, 10))
    assert nc["nc1"] > 1.0 and nc["nc1_quotient"] > 1.0
    assert nc["nc2_equiangular"] > 0.05 and nc["etf_distance"] > 0.2
    assert nc["nc3"] > 0.5 and nc["nc4"] > 0.5


def test_collapse_metrics_match_reference_implementation() -> None:
    h, y, w, b = _collapsed(c=5, d=12, n=30)
    gen = torch.Generator().manual_seed(2)
    h = h + 0.3 * torch.randn(h.shape, generator=gen, dtype=torch.float64)
    w = w + 0.2 * torch.randn(w.shape, generator=gen, dtype=torch.float64)
    ours, ref = neural_collapse(h, y, (w, b)), _reference_nc(h, y, w, b)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    # float32 input takes the float32 streaming path: same values to float32 accuracy
    ours32 = neural_collapse(h.float(), y, (w.float(), b.float()))
    assert ours32["nc1"] == pytest.approx(ref["nc1"], rel=1e-4)


def test_nc1_invariant_to_global_rescaling_and_translation() -> None:
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(200, 16, generator=gen, dtype=torch.float64)
    y = torch.arange(4).repeat(50)
    h = h + 2.0 * torch.eye(16, dtype=torch.float64)[y]  # some class structure
    base = neural_collapse(h, y)
    moved = neural_collapse(7.5 * h + 3.0, y)
    for key in (
        "nc1",
        "nc1_quotient",
        "nc1_cdnv",
        "nc2_equinorm",
        "nc2_equiangular",
        "etf_distance",
    ):
        assert moved[key] == pytest.approx(base[key], rel=1e-9), key
    assert math.isnan(base["nc3"]) and math.isnan(base["nc4"])  # no classifier given


def test_hand_checked_two_class_case() -> None:
    # class 0 at x = ±1 around -2, class 1 at x = ±1 around +2 (1-D features, padded to 2-D)
    h = torch.tensor([[-3.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    nc = neural_collapse(h, y, (torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64), None))
    # Σ_W = diag(1, 0), Σ_B = diag(4, 0): Tr(Σ_W Σ_B^†)/C = (1/4)/2
    assert nc["nc1"] == pytest.approx(0.125)
    assert nc["nc1_quotient"] == pytest.approx(0.25)
    # CDNV = (1 + 1) / (2 · 4²)
    assert nc["nc1_cdnv"] == pytest.approx(2 / 32)
    assert nc["nc2_equinorm"] == pytest.approx(0.0, abs=1e-12)
    assert nc["nc2_equiangular"] == pytest.approx(0.0, abs=1e-12)  # cos = -1 = -1/(C-1)
    assert nc["nc3"] == pytest.approx(0.0, abs=1e-12) and nc["nc4"] == 0.0


def test_nc4_counts_disagreements() -> None:
    h = torch.tensor([[-2.0], [-1.0], [1.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    # a classifier whose boundary sits at x = 1.5: the sample at x = 1 flips to class 0
    w, b = (
        torch.tensor([[-1.0], [1.0]], dtype=torch.float64),
        torch.tensor([1.5, -1.5], dtype=torch.float64),
    )
    assert neural_collapse(h, y, (w, b))["nc4"] == pytest.approx(0.25)


def test_etf_helpers() -> None:
    g = simplex_etf_gram(10)
    assert torch.allclose(g.diagonal(), torch.ones(10, dtype=torch.float64))
    assert g[0, 1] == pytest.approx(-1 / 9) and torch.allclose(
        g.sum(1), torch.zeros(10, dtype=torch.float64)
    )
    m = _etf(10, 20, torch.Generator().manual_seed(0))
    assert torch.allclose(normalized_gram(m), g, atol=1e-12)
    assert etf_distance(5.0 * m) == pytest.approx(0.0, abs=1e-12)
    assert etf_distance(torch.eye(10, dtype=torch.float64)) > 0.1  # orthogonal is not an ETF


def test_class_labels_may_skip_and_classifier_may_be_wider() -> None:
    h, y, w, b = _collapsed(c=3, d=8, n=5)
    y2 = torch.tensor([1, 4, 6])[y]  # labels 1, 4, 6 of a 7-way head
    w7 = torch.zeros(7, 8, dtype=torch.float64)
    b7 = torch.zeros(7, dtype=torch.float64)
    w7[[1, 4, 6]], b7[[1, 4, 6]] = w, b
    nc = neural_collapse(h, y2, (w7, b7))
    assert nc["n_classes"] == 3 and nc["nc3"] < 1e-12 and nc["nc4"] == 0.0
    assert torch.equal(class_stats(h, y2).classes, torch.tensor([1, 4, 6]))


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        (
            {"features": torch.ones(4, 2), "labels": torch.zeros(4, dtype=torch.int64)},
            ValueError,
            "at least 2 classes",
        ),
        (
            {
                "features": torch.tensor([[0.0, float("nan")], [1.0, 1.0]]),
                "labels": torch.tensor([0, 1]),
            },
            ValueError,
            "finite",
        ),
        (
            {"features": torch.ones(4, 2), "labels": torch.tensor([0, 1, 0])},
            ValueError,
            "same length",
        ),
        (
            {"features": torch.ones(4), "labels": torch.tensor([0, 1, 0, 1])},
            ValueError,
            "dimensions",
        ),
        (
            {"features": torch.ones(4, 2), "labels": torch.tensor([0.0, 1, 0, 1])},
            TypeError,
            "integer",
        ),
        (
            {
                "features": torch.ones(4, 2),
                "labels": torch.tensor([0, 1, 0, 1]),
                "classifier": torch.ones(2, 3),
            },
            ValueError,
            "columns",
        ),
        (
            {
                "features": torch.ones(4, 2),
                "labels": torch.tensor([0, 3, 0, 3]),
                "classifier": torch.ones(2, 2),
            },
            ValueError,
            "more than 3 rows",
        ),
        (
            {"features": torch.ones(4, 2), "labels": torch.tensor([0, 1, 0, 1]), "classifier": "w"},
            TypeError,
            "classifier",
        ),
    ],
)
def test_invalid_inputs_are_refused(kwargs: dict, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        neural_collapse(**kwargs)


def test_feature_extraction_leaves_model_unchanged() -> None:
    model = create_model("cnn", width=4, seed=0)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    feats = extract_features(model, x, batch_size=3, device="cpu")
    assert feats.shape == (10, model.feature_dim) and model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm running stats untouched (eval mode)
    model.eval()
    assert torch.allclose(feats, model.features(x), atol=1e-6)
    layers = layer_features(model, x, ["trunk", "head"], batch_size=4, device="cpu")
    assert torch.allclose(layers["trunk"], feats, atol=1e-6)
    assert torch.allclose(layers["head"], model(x), atol=1e-5)
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed
    with pytest.raises(ValueError, match="not submodules"):
        layer_features(model, x, ["nope"])


def test_track_neural_collapse_records_metrics_per_epoch() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = 3.0 * torch.randn(3, 64, generator=gen)
    y = torch.arange(3).repeat(60)
    x = (centres[y] + 0.5 * torch.randn(180, 64, generator=gen)).view(-1, 1, 8, 8)
    model = create_model("mlp", width=32, depth=2, image_size=8, n_classes=3, seed=0)
    cb = track_neural_collapse(x, y, n_max=90, device="cpu")
    hist = train(
        model, x, y, TrainConfig(epochs=3, batch_size=32, lr=3e-3), device="cpu", epoch_callback=cb
    )
    assert [e["epoch"] for e in hist.extra] == [1, 2, 3]
    assert all(e["n_samples"] == 90 and 0 <= e["nc4"] <= 1 for e in hist.extra)
    assert hist.extra[-1]["nc1"] < hist.extra[0]["nc1"] * 1.5  # finite and comparable


def test_pca_projection_maps_anchors_linearly() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(100, 5, generator=gen) * torch.tensor([5.0, 3.0, 0.1, 0.1, 0.1])
    y = torch.arange(4).repeat(25)
    means = class_stats(x, y).means.float()
    p = project(x, "pca", labels=y, anchors={"class_means": means})
    assert p.coords.shape == (100, 2) and p.explained > 0.95
    expected = np.stack([p.coords[y.numpy() == k].mean(0) for k in range(4)])
    np.testing.assert_allclose(p.anchors["class_means"], expected, atol=1e-5)
    plane = project(x, "class_plane", labels=y)
    assert plane.coords.shape == (100, 2)
    with pytest.raises(ValueError, match="method"):
        project(x, "lda")


def test_mixup_geometry_colours_by_lambda_and_pair_type() -> None:
    model = create_model("mlp", width=16, depth=1, seed=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 1, 28, 28, generator=gen)
    y = torch.arange(3).repeat(20)
    geo = mixup_geometry(
        model, x, y, generator=torch.Generator().manual_seed(1), n=40, classes=[0, 2], device="cpu"
    )
    assert geo.features.shape == (40, 16) and geo.lam.shape == (40,)
    assert set(geo.label_a.tolist()) <= {0, 2} and torch.equal(
        geo.same_class, geo.label_a == geo.label_b
    )
    assert geo.same_class.any() and (~geo.same_class).any()
    assert geo.classifier.shape == (2, 16) and geo.classifier_tips().shape == (2, 16)
    assert bool(((geo.lam >= 0) & (geo.lam <= 1)).all())
    with pytest.raises(ValueError, match="mixer"):
        mixup_geometry(model, x, y, generator=gen, mixer="manifold_mixup")


@pytest.mark.slow
def test_umap_and_tsne_projections_run() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 8, generator=gen)
    y = torch.arange(3).repeat(20)
    means = class_stats(x, y).means.float()
    u = project(x, "umap", labels=y, anchors={"class_means": means}, n_neighbors=5)
    assert u.coords.shape == (60, 2) and u.anchors["class_means"].shape == (3, 2)
    t = project(x, "tsne", labels=y, random_state=0)
    assert t.coords.shape == (60, 2) and np.isfinite(t.coords).all()


def test_collapse_metrics_match_reference_across_chunks() -> None:
    # 5,003 rows: the deviation pass streams several full chunks and a partial one through
    # its reused buffer; float64 matches the reference tightly, float32 to float32 accuracy
    h, y, w, b = _collapsed(c=4, d=40, n=1000)
    h, y = torch.cat([h, h[:3]]), torch.cat([y, y[:3]])
    gen = torch.Generator().manual_seed(5)
    h = h + 0.5 * torch.randn(h.shape, generator=gen, dtype=torch.float64)
    perm = torch.randperm(len(y), generator=gen)
    h, y = h[perm], y[perm]
    ref = _reference_nc(h, y, w, b)
    ours = neural_collapse(h, y, (w, b))
    ours32 = neural_collapse(h.float(), y, (w.float(), b.float()))
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        assert ours32[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_report_from_features_is_feature_report_of_the_same_features() -> None:
    from core.geometry import extract_features, feature_report, report_from_features
    from core.models import create_model

    torch.manual_seed(0)
    model = create_model("mlp", width=16, depth=1).eval()
    x = torch.rand(40, 1, 28, 28)
    y = torch.arange(40) % 10
    full = feature_report(model, x, y, device="cpu")
    layer = model.classifier_layer(0)
    feats = extract_features(model, x, device="cpu")
    mine = report_from_features(feats, y, layer.weight, layer.bias)
    assert mine["nc"] == pytest.approx(full["nc"])
    assert np.allclose(mine["gram"], full["gram"]) and np.allclose(
        mine["classifier"], full["classifier"]
    )
    with pytest.raises(ValueError, match="weight must be a"):
        report_from_features(feats, y, layer.weight[:, :3])
    with pytest.raises(ValueError, match="y must be an"):
        report_from_features(feats, y[:5], layer.weight)
