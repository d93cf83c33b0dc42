"""The FusionBench family (TSV-M, Iso-C, Iso-CTS, WUDI, EMR, TALL masks, consensus, MagMax,
RegMean++, Localize-and-Stitch): checks against each paper's definition (hand-worked
examples and identities) and against FusionBench's own functions on the same tensors.

The FusionBench comparisons run ``tests/helpers/fusionbench_driver.py`` in FusionBench's virtualenv
(``.venv-fusionbench``, see benchmarks/bench_merge_methods.py for how to create it; or
``MIXMERGE_FUSIONBENCH_PYTHON``) and are skipped when it is absent. Inputs are float64, so the
stated tolerances are near machine precision: they fail on any change of formula.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from core.merge import (
    emr_merge,
    evaluate_per_task,
    localize_masks,
    merge,
    merge_per_task,
    tall_masks_merge,
)
from core.merge._subspace import polar
from core.merge.consensus import consensus_counts
from core.merge.iso_cts import common_size
from core.merge.localize_stitch import dataless_mask
from core.merge.regmean import regmean_weight
from core.merge.regmean_pp import layer_gram
from core.merge.tall_masks import task_masks
from core.merge.wudi import wudi_loss, wudi_matrix

ROOT = Path(__file__).resolve().parents[2]
FB_PYTHON = Path(
    os.environ.get("MIXMERGE_FUSIONBENCH_PYTHON", ROOT / ".venv-fusionbench" / "bin" / "python")
)
N_TASKS = 4
WUDI_STEPS = 40
MASK_LAMBDA = 0.6
TOL = {"atol": 1e-9, "rtol": 1e-9}  # float64 throughout


def _setting(seed: int = 0) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"w": (40, 24), "wide": (12, 30), "b": (24,), "conv": (4, 3, 3, 3)}
    base = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in shapes.items()}
    models = [
        {
            k: v + (0.1 + 0.05 * i) * torch.randn(v.shape, generator=g, dtype=torch.float64)
            for k, v in base.items()
        }
        for i in range(N_TASKS)
    ]
    return base, models


def _tvs(base: dict, models: list[dict]) -> list[dict[str, torch.Tensor]]:
    return [{k: m[k] - base[k] for k in base} for m in models]


@pytest.fixture(scope="module")
def fusionbench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not FB_PYTHON.is_file():
        pytest.skip(f"FusionBench virtualenv not found at {FB_PYTHON}")
    base, models = _setting()
    g = torch.Generator().manual_seed(7)
    x = [torch.randn(50, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    grams = [xi.T @ xi / 50 for xi in x]
    weights = [torch.randn(5, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    d = tmp_path_factory.mktemp("fb")
    src, dst = d / "in.pt", d / "out.pt"
    torch.save(
        {
            "tvs": _tvs(base, models),
            "base": base,
            "weights": [0.5, 1.0, 1.5, 2.0],
            "wudi_steps": WUDI_STEPS,
            "mask_lambda": MASK_LAMBDA,
            "regmean": {"weights": weights, "grams": grams, "ratio": 0.9},
        },
        src,
    )
    run = subprocess.run(
        [
            str(FB_PYTHON),
            str(ROOT / "tests" / "helpers" / "fusionbench_driver.py"),
            str(src),
            str(dst),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = torch.load(dst, weights_only=False)
    return {"out": out, "base": base, "models": models, "weights": weights, "grams": grams}


def _tv_of(sd: dict, base: dict) -> dict[str, torch.Tensor]:
    return {k: sd[k] - base[k] for k in base}


# ----------------------------------------------------------------------------- vs FusionBench
@pytest.mark.parametrize(
    ("method", "job", "kw"),
    [
        ("tsv", "tsv", {}),
        ("tsv", "tsv_weighted", {"weights": [0.5, 1.0, 1.5, 2.0]}),
        ("iso_c", "iso_c", {}),
        ("iso_cts", "iso_cts", {}),
        ("iso_cts", "iso_cts_half", {"common_fraction": 0.5}),
        ("wudi", "wudi", {"steps": WUDI_STEPS}),
        ("magmax", "magmax", {"scale": 1.0}),
    ],
)
def test_merged_vector_equals_fusionbench(
    fusionbench: dict, method: str, job: str, kw: dict
) -> None:
    base, models = fusionbench["base"], fusionbench["models"]
    got = _tv_of(merge(method, models, base=base, **kw), base)
    ref = fusionbench["out"][job]
    for k in base:
        torch.testing.assert_close(got[k], ref[k].to(torch.float64), **TOL, msg=f"{job} {k}")


def test_emr_equals_fusionbench(fusionbench: dict) -> None:
    base, models, out = fusionbench["base"], fusionbench["models"], fusionbench["out"]
    res = emr_merge(models, base=base, rescale="tensor_mean")
    for k in base:
        torch.testing.assert_close(res.shared[k], out["emr_unified"][k].to(torch.float64), **TOL)
        for t in range(N_TASKS):
            assert torch.equal(res.masks[t][k], out["emr_masks"][k][t]), (k, t)
    # FusionBench accumulates the rescalers in float32
    torch.testing.assert_close(
        torch.tensor(res.scales, dtype=torch.float64),
        out["emr_rescalers"].double(),
        atol=1e-5,
        rtol=1e-5,
    )


def test_tall_masks_equal_fusionbench(fusionbench: dict) -> None:
    base, models, out = fusionbench["base"], fusionbench["models"], fusionbench["out"]
    res = tall_masks_merge(models, base=base, mask_lambda=MASK_LAMBDA)
    flat = torch.stack([torch.cat([m[k].reshape(-1) for k in base]) for m in res.masks])
    assert torch.equal(flat, out["tall_masks"])


def test_regmean_layer_equals_fusionbench(fusionbench: dict) -> None:
    got = regmean_weight(fusionbench["weights"], fusionbench["grams"], alpha=0.9)
    # FusionBench builds its off-diagonal scale in float32 (torch.ones(n) - ratio): 1e-6
    torch.testing.assert_close(got, fusionbench["out"]["regmean_layer"], atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------- TSV-M
def test_tsv_hand_worked() -> None:
    # τ1 = diag(3, 1), τ2 = diag(0.5, 2): k = 1 each; the top triplets are 3·e1e1ᵀ and 2·e2e2ᵀ,
    # already orthogonal, so τ_m = diag(3, 2)
    base = {"w": torch.zeros(2, 2, dtype=torch.float64)}
    m1 = {"w": torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))}
    m2 = {"w": torch.diag(torch.tensor([0.5, 2.0], dtype=torch.float64))}
    out = merge("tsv", [m1, m2], base=base)
    torch.testing.assert_close(out["w"], torch.diag(torch.tensor([3.0, 2.0], dtype=torch.float64)))


def test_tsv_with_orthogonal_low_rank_task_vectors_is_task_arithmetic() -> None:
    g = torch.Generator().manual_seed(3)
    m, n, t, k = 12, 8, 4, 2  # r = 8, k = r / T = 2 directions per task
    q_left, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    q_right, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    base = {"w": torch.randn(m, n, generator=g, dtype=torch.float64), "b": torch.zeros(n)}
    models = []
    for i in range(t):
        s = torch.rand(k, generator=g, dtype=torch.float64) + 0.5
        tau = (q_left[:, i * k : (i + 1) * k] * s) @ q_right[:, i * k : (i + 1) * k].T
        models.append({"w": base["w"] + tau, "b": torch.full((n,), float(i))})
    out = merge("tsv", models, base=base)
    ta = merge("task_arithmetic", models, base=base, scale=1.0)
    torch.testing.assert_close(out["w"], ta["w"], **TOL)
    torch.testing.assert_close(out["b"], torch.full((n,), 1.5))  # vectors: the mean


def test_tsv_keeps_nothing_when_rank_is_below_task_count() -> None:
    base = {"w": torch.zeros(2, 5)}
    models = [
        {"w": torch.randn(2, 5, generator=torch.Generator().manual_seed(i))} for i in range(3)
    ]
    assert torch.equal(merge("tsv", models, base=base)["w"], torch.zeros(2, 5))


def test_polar_factor_routes_agree_with_the_svd() -> None:
    g = torch.Generator().manual_seed(13)
    for shape in [(100, 10), (10, 100), (30, 20), (20, 20)]:  # Gram route, Gram route, SVD, SVD
        a = torch.randn(*shape, generator=g, dtype=torch.float64)
        u, _, vh = torch.linalg.svd(a, full_matrices=False)
        torch.testing.assert_close(polar(a), u @ vh, **TOL)
    bad = torch.randn(100, 10, generator=g, dtype=torch.float64)
    bad[:, 1] = bad[:, 0] * (1 + 1e-9)  # nearly dependent columns: the SVD route
    u, _, vh = torch.linalg.svd(bad, full_matrices=False)
    torch.testing.assert_close(polar(bad), u @ vh, atol=1e-6, rtol=1e-6)
    assert polar(torch.zeros(0, 3)).shape == (0, 3)


# ----------------------------------------------------------------------------- Iso-C / Iso-CTS
def test_iso_c_hand_worked_and_flat_spectrum() -> None:
    base = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
    m1 = {"w": torch.diag(torch.tensor([3.0, 1.0])), "b": torch.tensor([1.0, 2.0])}
    m2 = {"w": torch.diag(torch.tensor([1.0, 1.0])), "b": torch.tensor([3.0, 0.0])}
    out = merge("iso_c", [m1, m2], base=base)  # Σ = diag(4, 2): mean singular value 3
    torch.testing.assert_close(out["w"], torch.diag(torch.tensor([3.0, 3.0])))
    torch.testing.assert_close(out["b"], torch.tensor([2.0, 1.0]))
    base, models = _setting(1)
    w = merge("iso_c", models, base=base, scale=1.0)["w"] - base["w"]
    sv = torch.linalg.svdvals(w)
    total = torch.linalg.svdvals(sum(m["w"] - base["w"] for m in models))
    torch.testing.assert_close(sv, torch.full_like(sv, float(total.mean())), **TOL)


def test_iso_cts_with_the_whole_rank_common_is_iso_c() -> None:
    base, models = _setting(2)
    a = merge("iso_cts", models, base=base, common_fraction=1.0)
    b = merge("iso_c", models, base=base)
    for k in base:
        torch.testing.assert_close(a[k], b[k], **TOL)


def test_iso_cts_subspace_sizes_and_flat_spectrum() -> None:
    assert common_size(24, 4, 0.8) == (20, 1)  # ⌊19.2⌋ = 19 -> 5 left -> round(5/4)·4 = 4
    assert common_size(12, 4, 0.5) == (4, 2)
    assert sum(common_size(7, 3, 0.3)) >= 1
    base, models = _setting(4)
    w = merge("iso_cts", models, base=base, common_fraction=0.5)["w"] - base["w"]
    sv = torch.linalg.svdvals(w)
    torch.testing.assert_close(sv, torch.full_like(sv, float(sv.mean())), **TOL)


# ----------------------------------------------------------------------------- WUDI
def test_wudi_closed_form_gradient_equals_autograd() -> None:
    g = torch.Generator().manual_seed(5)
    for m, n in [(9, 4), (4, 9)]:
        taus = torch.randn(3, m, n, generator=g, dtype=torch.float64)
        point = torch.randn(m, n, generator=g, dtype=torch.float64, requires_grad=True)
        (auto,) = torch.autograd.grad(wudi_loss(point, taus), point)
        norms = taus.flatten(1).pow(2).sum(1)
        closed = 2 * sum(
            (point.detach() - t) @ t.T @ t / nn for t, nn in zip(taus, norms, strict=True)
        )
        torch.testing.assert_close(auto, closed, **TOL)


def test_wudi_steps_lower_the_loss_and_zero_steps_is_the_sum() -> None:
    base, models = _setting(6)
    taus = torch.stack([m["w"] - base["w"] for m in models])
    start = wudi_matrix(taus, steps=0, lr=1e-3)
    torch.testing.assert_close(start, taus.sum(0))
    losses = [float(wudi_loss(wudi_matrix(taus, steps=n, lr=1e-3), taus)) for n in (0, 50, 200)]
    assert losses[0] > losses[1] > losses[2]
    out = merge("wudi", models, base=base, steps=0)
    torch.testing.assert_close(
        out["b"] - base["b"], torch.stack([m["b"] - base["b"] for m in models]).mean(0)
    )


def test_wudi_orthogonal_rows_are_already_optimal() -> None:
    # τᵢ τⱼᵀ = 0 for i ≠ j: Σ τ has zero loss (the minimum); Adam's normalised steps then
    # only jitter around it by about lr per step
    q, _ = torch.linalg.qr(
        torch.randn(6, 6, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    )
    taus = torch.stack([torch.outer(torch.randn(5, dtype=torch.float64), q[i]) for i in range(3)])
    assert float(wudi_loss(taus.sum(0), taus)) < 1e-25
    out = wudi_matrix(taus, steps=30, lr=1e-5)
    assert float((out - taus.sum(0)).abs().max()) < 30 * 1e-5
    assert float(wudi_loss(out, taus)) < 1e-6


# ----------------------------------------------------------------------------- EMR
def test_emr_hand_worked() -> None:
    base = {"p": torch.zeros(4)}
    m1 = {"p": torch.tensor([1.0, -2.0, 3.0, 0.0])}
    m2 = {"p": torch.tensor([2.0, 1.0, -1.0, 0.0])}
    res = emr_merge([m1, m2], base=base)  # Σ = [3, −1, 2, 0] -> γ = [+, −, +, −]
    torch.testing.assert_close(res.shared["p"], torch.tensor([2.0, -2.0, 3.0, 0.0]))
    assert res.masks[0]["p"].tolist() == [True, True, True, False]
    assert res.masks[1]["p"].tolist() == [True, False, False, False]
    assert res.scales == pytest.approx((6 / 7, 4 / 2))  # Σ|τₜ| / Σ|Mₜ ⊙ τ_uni|
    torch.testing.assert_close(res.for_task(1)["p"], torch.tensor([4.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(merge("emr", [m1, m2], base=base)["p"], res.shared["p"])


def test_emr_rescale_paper_vs_tensor_mean() -> None:
    base = {"a": torch.zeros(2), "b": torch.zeros(4)}
    m1 = {"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([2.0, 0.0, 0.0, 0.0])}
    m2 = {"a": torch.tensor([1.0, -3.0]), "b": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    # γ: a = [+, −], b = [+, +, +, +]; τ_uni: a = [1, −3], b = [2, 1, 1, 1]
    # M₁: a = [T, F], b = [T, F, F, F]; M₂: a = [T, T], b = all
    paper = emr_merge([m1, m2], base=base, rescale="paper").scales
    assert paper == pytest.approx(((2 + 2) / (1 + 2), (4 + 4) / (4 + 5)))
    means = emr_merge([m1, m2], base=base, rescale="tensor_mean").scales
    assert means == pytest.approx(((1 + 0.5) / (0.5 + 0.5), (2 + 1) / (2 + 1.25)))


# ----------------------------------------------------------------------------- TALL / consensus
def test_tall_mask_definition_and_per_task_models() -> None:
    base = {"p": torch.zeros(3)}
    m1 = {"p": torch.tensor([1.0, 0.1, -1.0])}
    m2 = {"p": torch.tensor([0.2, 1.0, 1.0])}
    # τ_MTL = [1.2, 1.1, 0]; |τ1| = [1, .1, 1] vs λ|τ_MTL − τ1| = λ[0.2, 1.0, 1.0]
    res = tall_masks_merge([m1, m2], base=base, mask_lambda=1.0)
    assert res.masks[0]["p"].tolist() == [True, False, False]  # 1 > 0.2, 0.1 < 1, 1 = 1 (strict)
    assert res.masks[1]["p"].tolist() == [False, True, False]
    torch.testing.assert_close(res.for_task(0)["p"], torch.tensor([1.2, 0.0, 0.0]))
    scores = evaluate_per_task(res, lambda t, sd: (t, float(sd["p"].sum())))
    assert scores == [(0, pytest.approx(1.2)), (1, pytest.approx(1.1))]
    torch.testing.assert_close(merge("tall_masks", [m1, m2], base=base)["p"], res.shared["p"])


@pytest.mark.parametrize("merged", ["sum", "ties"])
def test_consensus_with_k_zero_is_the_multi_task_method(merged: str) -> None:
    base, models = _setting(9)
    out = merge("consensus", models, base=base, k=0, scale=0.7, merged=merged, density=0.3)
    if merged == "sum":
        ref = merge("task_arithmetic", models, base=base, scale=0.7)
    else:
        ref = merge("ties", models, base=base, scale=0.7, density=0.3, disjoint="sum")
    for k in base:
        torch.testing.assert_close(out[k], ref[k], atol=1e-12, rtol=1e-12)


def test_consensus_counts_masks_and_drops_below_k() -> None:
    base, models = _setting(10)
    res = tall_masks_merge(models, base=base, mask_lambda=0.6)
    counts = consensus_counts(list(res.masks))
    out = merge("consensus", models, base=base, k=2, scale=1.0)
    for k in base:
        want = base[k] + res.shared[k] * (counts[k] >= 2)
        torch.testing.assert_close(out[k], want, **TOL)
    none = merge("consensus", models, base=base, k=N_TASKS + 1)
    assert all(torch.equal(none[k], base[k]) for k in base)  # k > T keeps nothing
    manual = task_masks(models, base, res.shared, 0.6)
    assert all(
        torch.equal(a[k], b[k]) for a, b in zip(manual, res.masks, strict=True) for k in base
    )


# ----------------------------------------------------------------------------- MagMax
def test_magmax_hand_worked_ties_go_to_the_later_model() -> None:
    base = {"p": torch.ones(4)}
    m1 = {"p": torch.tensor([3.0, 1.0, -1.0, 2.0])}  # τ1 = [2, 0, −2, 1]
    m2 = {"p": torch.tensor([0.0, 2.0, 3.0, 0.0])}  # τ2 = [−1, 1, 2, −1]: a tie at index 2 and 3
    out = merge("magmax", [m1, m2], base=base, scale=0.5)
    torch.testing.assert_close(out["p"], 1 + 0.5 * torch.tensor([2.0, 1.0, 2.0, -1.0]))


# ----------------------------------------------------------------------------- RegMean++
def _mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 3)
    ).double()


def test_regmean_pp_equals_fusionbench_loop_on_an_mlp() -> None:
    """Reference: FusionBench's ``RegMeanAlgorithmPlusPlus.run`` loop (regmean_plusplus.py),
    one block per Linear + ReLU: each model's block input is the merged prefix applied to its
    own data, Grams from that model's block, ``regmean_params_merge`` per block, biases mean."""
    net = _mlp(0)
    models = []
    for i in range(3):
        m = _mlp(10 + i)
        models.append({k: v.detach().clone() for k, v in m.state_dict().items()})
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(40, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    out = merge("regmean_pp", models, model=net, x=xs, alpha=0.9)

    inputs = list(xs)
    for idx in (0, 2, 4):
        w = [sd[f"{idx}.weight"] for sd in models]
        grams = [a.T @ a / a.shape[0] for a in inputs]
        shrunk = [0.9 * gm + 0.1 * torch.diag(torch.diagonal(gm)) for gm in grams]
        ref_w = (
            torch.inverse(sum(shrunk)) @ sum(s @ wi.T for s, wi in zip(shrunk, w, strict=True))
        ).T
        ref_b = torch.stack([sd[f"{idx}.bias"] for sd in models]).mean(0)
        torch.testing.assert_close(out[f"{idx}.weight"], ref_w, **TOL)
        torch.testing.assert_close(out[f"{idx}.bias"], ref_b, **TOL)
        inputs = [torch.relu(a @ ref_w.T + ref_b) for a in inputs]


def test_regmean_pp_first_layer_is_regmean_and_gram_hook_is_exact() -> None:
    net = nn.Sequential(nn.Linear(5, 4)).double()
    models = [{k: v + i for k, v in net.state_dict().items()} for i in range(2)]
    x = torch.randn(30, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    a = merge("regmean_pp", models, model=net, x=x, alpha=0.5)
    grams = [{"0": x.T @ x / 30}] * 2
    b = merge("regmean", models, grams=grams, alpha=0.5)
    torch.testing.assert_close(a["0.weight"], b["0.weight"], **TOL)
    torch.testing.assert_close(
        layer_gram(net, models[0], "0", x, batch_size=7), x.T @ x / 30, **TOL
    )


# ----------------------------------------------------------------------------- Localize-and-Stitch
def _reference_stitch(masks: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """The authors' ``Stitcher.get_average_masks`` (localize_utils.py), as published."""
    out = []
    for i in range(len(masks)):
        om = [m.clone().double() for m in masks[i]]
        for j in range(len(masks)):
            if i != j:
                for k in range(len(masks[i])):
                    om[k] = om[k] + torch.logical_and(masks[i][k], masks[j][k])
        out.append([torch.where(m == 0, 0.0, 1.0 / m) for m in om])
    return out


def test_stitch_equals_the_reference_average_masks() -> None:
    base, models = _setting(11)
    masks = [dataless_mask(base, m, 0.3) for m in models]
    out = merge("localize_stitch", models, base=base, masks=masks)
    keys = list(base)
    avg = _reference_stitch([[m[k] for k in keys] for m in masks])
    for j, k in enumerate(keys):
        want = base[k] + sum(avg[i][j] * (models[i][k] - base[k]) for i in range(N_TASKS))
        torch.testing.assert_close(out[k], want, **TOL)
    dataless = merge("localize_stitch", models, base=base, density=0.3)
    assert all(torch.equal(dataless[k], out[k]) for k in keys)


def test_localize_hand_worked_stitch_and_topk() -> None:
    base = {"p": torch.zeros(4)}
    m1 = {"p": torch.tensor([4.0, 3.0, 0.1, 0.2])}
    m2 = {"p": torch.tensor([2.0, 0.1, 5.0, 0.3])}
    mask = dataless_mask(base, m1, 0.5)  # top 2 of 4
    assert mask["p"].tolist() == [True, True, False, False]
    out = merge("localize_stitch", [m1, m2], base=base, density=0.5)
    torch.testing.assert_close(out["p"], torch.tensor([3.0, 3.0, 5.0, 0.0]))  # overlap averaged


def test_localize_masks_update_rule() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 2, bias=False)
    base = {"weight": torch.zeros(2, 3)}
    tuned = {"weight": torch.tensor([[1.0, -1.0, 0.2], [-0.5, 0.3, 2.0]])}
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 2, (10,), generator=torch.Generator().manual_seed(4))
    start = localize_masks(net, base, tuned, x, y, density=0.5, epochs=0)
    assert start["weight"].tolist() == [[True, True, False], [False, False, True]]  # top 3 of 6
    got = localize_masks(
        net,
        base,
        tuned,
        x,
        y,
        density=0.5,
        epochs=1,
        lr=50.0,
        l1=0.3,
        sigmoid_bias=1.0,
        batch_size=4,
    )
    # one reference step: S = ±1, θ = σ(S) τ, g = Σ_batches lr ∂CE/∂θ ⊙ τ, S -= gσ' − l1 sign σ'
    tau = tuned["weight"]
    s = torch.where(start["weight"], 1.0, -1.0)
    theta = (torch.sigmoid(s) * tau).requires_grad_(True)
    total = torch.zeros(2, 3)
    for i in range(0, 10, 4):
        loss = nn.functional.cross_entropy(x[i : i + 4] @ theta.T, y[i : i + 4])
        total += torch.autograd.grad(loss, theta)[0]
    d = torch.sigmoid(s) * (1 - torch.sigmoid(s))
    s_new = s - 50.0 * total * tau * d + 0.3 * torch.where(s > 0, d, -d)
    assert got["weight"].tolist() == (s_new > 0).tolist()


def test_localize_stitch_validates_masks() -> None:
    base = {"p": torch.zeros(3)}
    models = [{"p": torch.ones(3)}, {"p": torch.ones(3)}]
    with pytest.raises(ValueError, match="one entry per model"):
        merge("localize_stitch", models, base=base, masks=[{"p": torch.ones(3, dtype=torch.bool)}])
    with pytest.raises(ValueError, match="shape"):
        merge("localize_stitch", models, base=base, masks=[{"p": torch.ones(2)}] * 2)
    with pytest.raises(ValueError, match="binary"):
        merge("localize_stitch", models, base=base, masks=[{"p": torch.full((3,), 0.5)}] * 2)


def test_per_task_merge_refuses_other_methods_and_bad_tasks() -> None:
    base, models = _setting(12)
    with pytest.raises(ValueError, match="per-task methods"):
        merge_per_task("ties", models, base=base)
    with pytest.raises(ValueError, match="needs base"):
        merge_per_task("emr", models)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        merge_per_task("emr", models, base=base, density=0.5)
    with pytest.raises(TypeError, match="callable"):
        evaluate_per_task(merge_per_task("emr", models, base=base), 3)  # type: ignore[arg-type]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
