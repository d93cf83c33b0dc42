"""The mergekit-family methods against mergekit's own functions on the same tensors, against
hand-worked examples of their definitions, and against the identities that tie them to other
methods.

mergekit's outputs come from tests/helpers/mergekit_reference.safetensors, written by
tests/helpers/mergekit_reference.py running mergekit 0.1.5 in its own virtualenv (``.venv-mergekit``;
it cannot be installed beside the workbench's packages). Where that virtualenv exists the
script is rerun and the stored file must match it. Tolerance against mergekit: 1e-5 absolute
and relative in float32 (values of order 0.5; the two sides sum in different orders).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file

from core.merge import METHODS, TENSOR_METHODS, merge
from core.merge.arcee_fusion import arcee_fusion_tensor
from core.merge.breadcrumbs import middle_mask
from core.merge.breadcrumbs_ties import breadcrumbs_mask, breadcrumbs_ties_tensor
from core.merge.della import della_linear_tensor, della_tensor
from core.merge.karcher import karcher_tensor
from core.merge.lora_extract import extract_lora
from core.merge.multislerp import multislerp_tensor
from core.merge.nearswap import nearswap_tensor
from core.merge.nuslerp import nuslerp_tensor
from core.merge.ram import ram_overlap_ratios, ram_tensor
from core.merge.sce import sce_tensor
from core.merge.slerp import slerp_tensor

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "helpers" / "mergekit_reference.safetensors"
MK_PYTHON = ROOT / ".venv-mergekit" / "bin" / "python"
TOL = {"atol": 1e-5, "rtol": 1e-5}


def _cases() -> list[dict[str, Any]]:
    with safe_open(str(FIXTURE), "pt") as f:
        return list(json.loads(f.metadata()["cases"]))


def _weights(p: dict[str, Any], n: int) -> list[float]:
    w = p.get("weight", 1.0)
    return [float(x) for x in w] if isinstance(w, list) else [float(w)] * n


def ours(case: dict[str, Any], base: torch.Tensor | None, models: list[torch.Tensor]):  # type: ignore[no-untyped-def]
    """The workbench's function with the parameters that mean the mergekit case's."""
    m, p, n = case["method"], case["params"], len(models)
    seed = torch.Generator().manual_seed(7 + [c["name"] for c in _cases()].index(case["name"]))
    if m in ("della", "della_linear"):
        kw: dict[str, Any] = {
            "density": p["density"],
            "epsilon": p["epsilon"],
            "scale": p.get("lambda", 1.0),
            "rescale": "l1" if p.get("rescale", True) else "none",
            "weights": _weights(p, n),
            "generator": seed,
        }
        if m == "della":
            return della_tensor(models, base, disjoint=_disjoint(p, True), **kw)
        return della_linear_tensor(models, base, **kw)
    if m == "breadcrumbs_ties":
        return breadcrumbs_ties_tensor(
            models,
            base,
            density=p["density"],
            gamma=p["gamma"],
            scale=p.get("lambda", 1.0),
            scope="tensor",
            disjoint=_disjoint(p, False),
            weights=_weights(p, n),
        )
    if m == "sce":
        return sce_tensor(models, base, density=p.get("select_topk", 1.0))
    if m in ("ram", "ramplus_tl"):
        extra = {"rescale": "tensor", "r": p["r"], "alpha": p["alpha"]} if m != "ram" else {}
        return ram_tensor(models, base, epsilon=p.get("epsilon", 1e-5), **extra)
    if m == "nuslerp":
        return nuslerp_tensor(
            models,
            base,
            weights=p["weight"],
            flatten=p.get("nuslerp_flatten", True),
            row_wise=p.get("nuslerp_row_wise", False),
        )
    if m == "multislerp":
        return multislerp_tensor(
            models, base, weights=p["weight"], normalize=p.get("normalize_weights", True)
        )
    if m == "karcher":
        return karcher_tensor(models)
    if m == "karcher_weighted":
        return karcher_tensor(models, weights=p["alphas"], max_iter=p["max_iter"])
    if m == "nearswap":
        assert base is not None
        return nearswap_tensor([base, models[0]], t=p["t"])
    if m == "arcee_fusion":
        assert base is not None
        return arcee_fusion_tensor([base, models[0]])
    if m == "extract_lora":
        assert base is not None
        ex = extract_lora({"w.weight": base}, {"w.weight": models[0]}, rank=p["max_rank"])
        return ex.layers["w"].delta()
    raise AssertionError(m)


def _disjoint(p: dict[str, Any], default: bool) -> str:
    return "mean" if p.get("normalize", default) else "sum"


@pytest.mark.parametrize("case", [c["name"] for c in _cases()])
def test_matches_mergekit_on_the_same_tensors(case: str) -> None:
    data = load_file(str(FIXTURE))
    spec = next(c for c in _cases() if c["name"] == case)
    base = data.get(f"{case}/base")
    models = [data[f"{case}/in{i}"] for i in range(spec["n"])]
    expected = data[f"{case}/out"]
    got = ours(spec, base, models)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, **TOL)


def test_every_mergekit_method_is_covered() -> None:
    methods = {c["method"] for c in _cases()}
    assert {
        "della",
        "della_linear",
        "breadcrumbs_ties",
        "sce",
        "ram",
        "ramplus_tl",
        "nuslerp",
        "multislerp",
        "karcher",
        "nearswap",
        "arcee_fusion",
        "extract_lora",
    } <= methods
    with safe_open(str(FIXTURE), "pt") as f:
        assert f.metadata()["mergekit"] == "0.1.5"


@pytest.mark.slow  # runs mergekit on every case: ~10 s idle, ~40 s on the shared machine
@pytest.mark.skipif(not MK_PYTHON.exists(), reason="mergekit's virtualenv is not installed")
def test_reference_file_is_what_mergekit_computes_now(tmp_path: Path) -> None:
    out = tmp_path / "ref.safetensors"
    script = ROOT / "tests" / "helpers" / "mergekit_reference.py"
    res = subprocess.run(
        [str(MK_PYTHON), str(script), str(out)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    fresh, stored = load_file(str(out)), load_file(str(FIXTURE))
    assert sorted(fresh) == sorted(stored)
    for k in stored:
        assert torch.equal(fresh[k], stored[k]), k


# ---- DELLA -------------------------------------------------------------------------------


def _della_reference(taus, weights, density, epsilon, seed, scale=1.0):  # type: ignore[no-untyped-def]
    """declare-lab/della's MagPrune (``mergekit/sparsify.py::rank_magnitude``, rescale by
    1/p) and its TIES merge (``generalized_task_arithmetic.py``: election on weighted
    deltas, divisor Σ w over the agreeing entries), written plainly over stacked tensors;
    the Bernoulli draws are u < p with the uniforms of the seeded generator."""
    g = torch.Generator().manual_seed(seed)
    n = len(taus)
    dens = density if isinstance(density, list) else [density] * n
    eps = epsilon if isinstance(epsilon, list) else [epsilon] * n
    pruned = []
    for tau, density, epsilon in zip(taus, dens, eps, strict=True):
        t2 = tau.unsqueeze(0) if tau.ndim < 2 else tau
        ranks = torch.argsort(torch.argsort(t2.abs(), dim=1), dim=1).float() + 1
        lo = ranks.min(dim=1, keepdim=True).values
        hi = ranks.max(dim=1, keepdim=True).values
        probs = (density - epsilon) + (ranks - lo) / (hi - lo) * (2 * epsilon)
        mask = (torch.rand(t2.shape, generator=g) < probs).float()
        pruned.append((t2 * mask / probs).reshape(tau.shape))
    d = torch.stack(pruned)  # (N, ...)
    w = torch.tensor(weights).reshape(-1, *([1] * (d.ndim - 1)))
    wd = d * w
    sign = torch.where(wd.sum(0) >= 0, 1.0, -1.0)
    agree = (wd.sign() == sign).float()
    div = (w * agree).sum(0)
    div[div == 0] = 1
    return scale * (wd * agree).sum(0) / div


def test_della_prob_rescale_matches_the_reference_code() -> None:
    g = torch.Generator().manual_seed(0)
    taus = [torch.randn(12, 30, generator=g) * 0.1 for _ in range(3)]
    for shape in [(12, 30), (360,)]:
        ts = [t.reshape(shape) for t in taus]
        got = della_tensor(
            ts,
            None,
            generator=torch.Generator().manual_seed(5),
            density=0.6,
            epsilon=0.2,
            scale=1.1,
            weights=[1.0, 0.5, 2.0],
        )
        ref = _della_reference(ts, [1.0, 0.5, 2.0], 0.6, 0.2, 5, scale=1.1)
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


def test_della_per_model_density_and_epsilon_match_the_reference_code() -> None:
    """mergekit's per-model ``density``/``epsilon``: each model's MagPrune window is its own."""
    g = torch.Generator().manual_seed(3)
    taus = [torch.randn(10, 24, generator=g) * 0.1 for _ in range(3)]
    dens, eps = [0.4, 0.6, 0.8], [0.1, 0.2, 0.15]
    got = della_tensor(
        taus,
        None,
        generator=torch.Generator().manual_seed(5),
        density=dens,
        epsilon=eps,
        weights=[1.0, 0.5, 2.0],
    )
    ref = _della_reference(taus, [1.0, 0.5, 2.0], dens, eps, 5)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    # a different merge from one shared window (else the per-model path could be ignored)
    one = della_tensor(
        taus, None, generator=torch.Generator().manual_seed(5), density=0.6, epsilon=0.15
    )
    assert not torch.allclose(got, one)
    # a repeated value is the scalar, draw for draw
    same = della_linear_tensor(
        taus, None, generator=torch.Generator().manual_seed(5), density=[0.6] * 3, epsilon=0.1
    )
    scalar = della_linear_tensor(
        taus, None, generator=torch.Generator().manual_seed(5), density=0.6, epsilon=0.1
    )
    assert torch.equal(same, scalar)


def test_della_per_model_values_are_checked_per_model() -> None:
    x = [torch.ones(3), torch.ones(3)]
    with pytest.raises(ValueError, match="one value per model \\(2\\), got 3"):
        della_tensor(x, None, density=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"\(model 1\)"):
        della_tensor(x, None, density=[0.5, 0.1], epsilon=0.2)
    with pytest.raises(TypeError, match="epsilon must be a number or one number per model"):
        della_tensor(x, None, epsilon="0.1")  # type: ignore[arg-type]


def test_della_hand_worked_row() -> None:
    # |τ| ranks of [0.1, -0.4, 0.2, 0.3] are 1, 4, 2, 3: p = 0.2 + 0.6 (r - 1)/3
    tau = torch.tensor([0.1, -0.4, 0.2, 0.3])
    p = torch.tensor([0.2, 0.8, 0.4, 0.6])
    u = torch.rand(1, 4, generator=torch.Generator().manual_seed(2)).reshape(4)
    expected = tau * (u < p) / p
    got = della_linear_tensor(
        [tau], None, generator=torch.Generator().manual_seed(2), density=0.5, epsilon=0.3
    )
    torch.testing.assert_close(got, expected)
    assert 0 < int((u < p).sum()) < 4  # the seed keeps some and drops some


def test_della_is_unbiased_and_its_keep_probability_grows_with_magnitude() -> None:
    tau = torch.linspace(0.1, 1.0, 10).repeat(6, 1)  # (6, 10): ranks 1..10 in every row
    n = 3000
    g = torch.Generator().manual_seed(0)
    total = torch.zeros_like(tau)
    kept = torch.zeros_like(tau)
    for _ in range(n):
        out = della_linear_tensor([tau], None, generator=g, density=0.5, epsilon=0.3)
        total += out
        kept += out != 0
    rel = float((total / n - tau).norm() / tau.norm())
    assert rel < 0.03  # E[τ̃] = τ; ~1% expected at 3000 draws
    freq = kept.mean(0) / n  # (10,) keep frequency by rank
    expected = 0.2 + 0.6 * torch.arange(10) / 9
    assert float((freq - expected).abs().max()) < 0.04  # 3σ of 6·3000 draws is ~0.02


def test_della_epsilon_zero_is_dare_and_density_one_is_task_arithmetic() -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(8, 9, generator=g)
    models = [base + 0.1 * torch.randn(8, 9, generator=g) for _ in range(2)]
    u = [torch.rand(8, 9, generator=torch.Generator().manual_seed(4)) for _ in range(1)]
    got = della_linear_tensor(
        models[:1], base, generator=torch.Generator().manual_seed(4), density=0.3, epsilon=0.0
    )
    torch.testing.assert_close(got, base + (models[0] - base) * (u[0] < 0.3) / 0.3)
    full = della_linear_tensor(models, base, density=1.0, epsilon=0.3, weights=[1.0, 0.5])
    torch.testing.assert_close(full, base + (models[0] - base) + 0.5 * (models[1] - base))


def test_della_rejects_windows_outside_zero_one() -> None:
    x = [torch.ones(3)]
    with pytest.raises(ValueError, match="density ± epsilon"):
        della_tensor(x, None, density=0.1, epsilon=0.2)
    with pytest.raises(ValueError, match="density ± epsilon"):
        della_tensor(x, None, density=0.9, epsilon=0.2)
    with pytest.raises(ValueError, match="rescale"):
        della_tensor(x, None, rescale="l2")
    with pytest.raises(ValueError, match="epsilon"):
        della_tensor(x, None, epsilon=-0.1)


# ---- Breadcrumbs + TIES --------------------------------------------------------------------


def test_breadcrumbs_ties_hand_worked() -> None:
    # γ = 0.2 removes the largest of 5, density 0.4 keeps the next 2:
    # τ1 = [5, -1, 2, 0.5, -3] -> [0, 0, 2, 0, -3]; τ2 = [-4, 2, 0.1, -0.2, 1.5] -> [0, 2, 0, 0, 1.5]
    t1 = torch.tensor([5.0, -1.0, 2.0, 0.5, -3.0])
    t2 = torch.tensor([-4.0, 2.0, 0.1, -0.2, 1.5])
    kw: dict[str, Any] = {"density": 0.4, "gamma": 0.2}
    # signs of the sum [0, 2, 2, 0, -1.5]: the last entry elects −, so 1.5 is dropped
    out = breadcrumbs_ties_tensor([t1, t2], None, **kw)
    torch.testing.assert_close(out, torch.tensor([0.0, 2.0, 2.0, 0.0, -3.0]))
    # weights vote: 1·(−3) + 2·1.5 = 0 elects +, so −3 is dropped; sum 3, mean 3 / 2
    w = breadcrumbs_ties_tensor([t1, t2], None, weights=[1.0, 2.0], **kw)
    torch.testing.assert_close(w, torch.tensor([0.0, 4.0, 2.0, 0.0, 3.0]))
    m = breadcrumbs_ties_tensor([t1, t2], None, weights=[1.0, 2.0], disjoint="mean", **kw)
    torch.testing.assert_close(m, torch.tensor([0.0, 2.0, 2.0, 0.0, 1.5]))


def test_breadcrumbs_ties_masks_are_breadcrumbs_masks_ties_included() -> None:
    g = torch.Generator().manual_seed(0)
    tau = torch.randint(-3, 4, (7, 20), generator=g).float()  # many equal magnitudes
    for density, gamma in [(0.3, 0.1), (0.5, 0.0), (0.05, 0.2), (1.0, 0.0)]:
        ours = breadcrumbs_mask(tau, density, gamma, "row")
        assert torch.equal(ours, middle_mask(tau, density, gamma)), (density, gamma)
        flat = breadcrumbs_mask(tau, density, gamma, "tensor")
        assert torch.equal(flat, middle_mask(tau.reshape(-1), density, gamma).reshape(7, 20))


def test_breadcrumbs_ties_of_one_model_is_breadcrumbs() -> None:
    g = torch.Generator().manual_seed(2)
    base = {"w": torch.randn(6, 40, generator=g)}
    model = {"w": base["w"] + 0.1 * torch.randn(6, 40, generator=g)}
    a = merge("breadcrumbs_ties", [model], base=base, density=0.3, gamma=0.05, scale=0.7)
    b = merge("breadcrumbs", [model], base=base, density=0.3, gamma=0.05, scale=0.7)
    torch.testing.assert_close(a["w"], b["w"])


# ---- SCE -----------------------------------------------------------------------------------


def test_sce_hand_worked() -> None:
    t = [
        torch.tensor([1.0, -1.0, 2.0, 0.0]),
        torch.tensor([1.0, 1.0, -2.0, 0.0]),
        torch.tensor([1.0, 1.0, 0.0, 0.0]),
    ]
    # η = [6, 6, 2] / 14; signs of Σ τ = [3, 1, 0, 0] are all +
    torch.testing.assert_close(sce_tensor(t, None), torch.tensor([1.0, 1.0, 2.0, 0.0]))
    s = sce_tensor(t, None, disjoint="sum")
    torch.testing.assert_close(s, torch.tensor([1.0, 8 / 14, 12 / 14, 0.0]))
    # variances [0, 8/9, 8/3, 0]: density 0.5 of the 2 non-zero ones keeps entry 2 only;
    # η = [0.5, 0.5, 0] and the tie Σ = 0 elects +
    torch.testing.assert_close(sce_tensor(t, None, density=0.5), torch.tensor([0.0, 0.0, 2.0, 0.0]))
    torch.testing.assert_close(
        sce_tensor(t, None, density=0.5, disjoint="sum"), torch.tensor([0.0, 0.0, 1.0, 0.0])
    )


def test_sce_of_agreeing_vectors_is_their_energy_weighted_mean() -> None:
    g = torch.Generator().manual_seed(0)
    taus = [torch.rand(50, generator=g) * (i + 1) for i in range(3)]  # all positive
    eta = torch.tensor([float(t.square().sum()) for t in taus])
    eta = eta / eta.sum()
    expected = sum(e * t for e, t in zip(eta, taus, strict=True))
    torch.testing.assert_close(sce_tensor(taus, None, disjoint="sum"), expected)
    torch.testing.assert_close(sce_tensor(taus, None), expected)


# ---- RAM -----------------------------------------------------------------------------------


def _ram_models() -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    base = {"a": torch.zeros(4), "b": torch.zeros(2)}
    ms = [
        {"a": torch.tensor([0.5, 0.0, 0.2, 0.0]), "b": torch.tensor([0.1, 0.2])},
        {"a": torch.tensor([0.3, 0.0, 0.0, 0.0]), "b": torch.zeros(2)},
        {"a": torch.tensor([0.1, 0.4, 0.0, 0.0]), "b": torch.zeros(2)},
    ]
    return base, ms


def test_ram_hand_worked_unique_kept_shared_averaged() -> None:
    base, ms = _ram_models()
    out = merge("ram", ms, base=base)
    torch.testing.assert_close(out["a"], torch.tensor([0.3, 0.4, 0.2, 0.0]))
    torch.testing.assert_close(out["b"], torch.tensor([0.1, 0.2]))


def test_ramplus_tensor_local_and_global_ratios() -> None:
    base, ms = _ram_models()
    # per tensor "a": model 1 shares 1 / owns 1 (ρ 1), model 2 shares 1 / owns 0 (ρ = 1/ε),
    # model 3 shares 1 / owns 1: with α = 1, r = 0.5 every λ = 1.5
    local = merge("ram", ms, base=base, rescale="tensor", r=0.5, alpha=1.0)
    torch.testing.assert_close(local["a"], torch.tensor([0.3, 0.6, 0.3, 0.0]))
    # over the model, model 1 owns 3 entries (1 in "a", 2 in "b"): ρ₁ = 1/3, λ₁ = 1 + 0.5/3
    assert ram_overlap_ratios(ms, base)[0] == pytest.approx(1 / 3)
    glob = merge("ram", ms, base=base, rescale="global", r=0.5, alpha=1.0)
    lam1 = 1 + 0.5 / 3
    torch.testing.assert_close(glob["a"], torch.tensor([0.3, 0.6, 0.2 * lam1, 0.0]))
    torch.testing.assert_close(glob["b"], torch.tensor([0.1, 0.2]) * lam1)
    with pytest.raises(ValueError, match="rho="):
        ram_tensor([m["a"] for m in ms], base["a"], rescale="global")


def test_ram_global_equals_tensor_local_for_a_one_tensor_model() -> None:
    base, ms = _ram_models()
    one = [{"a": m["a"]} for m in ms]
    a = merge("ram", one, base={"a": base["a"]}, rescale="global", r=0.3, alpha=0.5)
    b = merge("ram", one, base={"a": base["a"]}, rescale="tensor", r=0.3, alpha=0.5)
    torch.testing.assert_close(a["a"], b["a"])


# ---- NuSLERP, Multi-SLERP, Karcher ---------------------------------------------------------


def test_nuslerp_is_slerp_with_weights_and_per_slice() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    for t in (0.0, 0.25, 0.7, 1.0):
        got = nuslerp_tensor([a, b], weights=[1 - t, t])
        torch.testing.assert_close(got, slerp_tensor([a, b], t=t), atol=1e-6, rtol=1e-5)
        rows = nuslerp_tensor([a, b], weights=[1 - t, t], flatten=False)
        for i in range(6):
            torch.testing.assert_close(rows[i], slerp_tensor([a[i], b[i]], t=t), **TOL)
        cols = nuslerp_tensor([a, b], weights=[1 - t, t], flatten=False, row_wise=True)
        for j in range(8):
            torch.testing.assert_close(cols[:, j], slerp_tensor([a[:, j], b[:, j]], t=t), **TOL)
    # with a base: SLERP of the task vectors, base added back
    base = torch.randn(6, 8, generator=g)
    got = nuslerp_tensor([base + a, base + b], base, weights=[2.0, 2.0])
    torch.testing.assert_close(got, base + slerp_tensor([a, b], t=0.5), **TOL)
    # equal-norm orthogonal vectors: cos(tπ/2) v0 + sin(tπ/2) v1
    v0, v1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    got = nuslerp_tensor([v0, v1], weights=[0.7, 0.3])
    torch.testing.assert_close(
        got, torch.tensor([math.cos(0.15 * math.pi), math.sin(0.15 * math.pi)])
    )


def test_multislerp_is_the_normalised_mean_of_unit_vectors_times_the_mean_norm() -> None:
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(40, generator=g) * (i + 1) for i in range(4)]
    w = torch.tensor([0.1, 0.4, 0.2, 0.3])
    units = [x / x.norm() for x in xs]
    m = sum(wi * u for wi, u in zip(w, units, strict=True))
    expected = m / m.norm() * sum(wi * x.norm() for wi, x in zip(w, xs, strict=True))
    torch.testing.assert_close(multislerp_tensor(xs, weights=w.tolist()), expected, **TOL)
    # two equal-norm inputs at equal weights: SLERP's midpoint
    a, b = units[0], units[1]
    torch.testing.assert_close(multislerp_tensor([a, b]), slerp_tensor([a, b], t=0.5), **TOL)
    with pytest.raises(ValueError, match="unit vectors is zero"):
        multislerp_tensor([a, -a, 2 * a, -2 * a])
    torch.testing.assert_close(multislerp_tensor([a, -a]), torch.zeros_like(a))  # lerp


def test_karcher_mean_of_two_points_is_the_geodesic_point() -> None:
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(30, generator=g), torch.randn(30, generator=g)
    a, b = a / a.norm() * 2.0, b / b.norm() * 2.0  # equal norms
    mid = karcher_tensor([a, b])
    torch.testing.assert_close(mid, slerp_tensor([a, b], t=0.5), **TOL)
    # weights (0.7, 0.3): the point at t = 0.3 along the arc (fixed point of the iteration)
    w = karcher_tensor([a, b], weights=[0.7, 0.3], max_iter=100, tol=1e-9)
    torch.testing.assert_close(w, slerp_tensor([a, b], t=0.3), **TOL)
    same = karcher_tensor([a, a, a])
    torch.testing.assert_close(same, a, **TOL)
    zero = karcher_tensor([torch.zeros(3), torch.zeros(3)])
    assert torch.equal(zero, torch.zeros(3))


def test_spherical_methods_return_a_single_model() -> None:
    x = torch.randn(5, 3)
    assert torch.equal(multislerp_tensor([x]), x)
    assert torch.equal(karcher_tensor([x]), x)


# ---- NearSwap, Arcee Fusion ----------------------------------------------------------------


def test_nearswap_hand_worked() -> None:
    a = torch.zeros(3)
    b = torch.tensor([0.01, 0.1, -1.0])
    # |a − b| = [0.01, 0.1, 1]: w = [1, 0.5, 0.05]
    got = nearswap_tensor([a, b], t=0.05)
    torch.testing.assert_close(got, torch.tensor([0.01, 0.05, -0.05]))
    assert torch.equal(nearswap_tensor([a, b], t=0.0), a)
    assert torch.equal(nearswap_tensor([b, b], t=0.3), b)


def _fusion_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mergekit's arcee_fusion (``merge_methods/arcee_fusion.py``), exact quantiles."""
    p = torch.softmax(b, dim=-1) + 1e-8
    q = torch.softmax(a, dim=-1) + 1e-8
    score = (b - a).abs() * (p * torch.log(p / q)).sum(-1, keepdim=True)
    s = torch.sort(score.reshape(-1)).values
    idx = (torch.tensor([0.25, 0.5, 0.75]) * (s.numel() - 1)).long()
    q1, med, q3 = s[idx]
    return a + (b - a) * (score >= med + 1.5 * (q3 - q1))


def test_arcee_fusion_matches_its_definition_and_keeps_a_or_b() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.randn(30, 17, generator=g)
    b = a + torch.randn(30, 17, generator=g) * torch.rand(30, 1, generator=g)
    got = arcee_fusion_tensor([a, b])
    torch.testing.assert_close(got, _fusion_reference(a, b))
    taken = got == b
    assert bool(((got == a) | taken).all()) and 0 < int(taken.sum()) < a.numel()
    assert torch.equal(arcee_fusion_tensor([a, a]), a)


# ---- registry: every new name is there, with its paper and per-tensor kernel --------------


NEW = [
    "della",
    "della_linear",
    "breadcrumbs_ties",
    "sce",
    "nuslerp",
    "multislerp",
    "karcher",
    "ram",
    "nearswap",
    "arcee_fusion",
]


@pytest.mark.parametrize("name", NEW)
def test_registered_with_paper_and_kernel(name: str) -> None:
    entry = METHODS[name]
    assert entry.paper.startswith("https://arxiv.org/abs/")
    assert "per_tensor" in entry.tags and name in TENSOR_METHODS
    assert entry.doc


@pytest.mark.parametrize("name", ["nuslerp", "nearswap", "arcee_fusion"])
def test_two_model_methods_of_one_model_with_itself_return_it(name: str) -> None:
    x = {"w": torch.randn(4, 6, generator=torch.Generator().manual_seed(0))}
    out = merge(name, [x, x])
    torch.testing.assert_close(out["w"], x["w"], **TOL)


# ---- properties ----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), seed=st.integers(0, 10_000), d=st.sampled_from([1, 5, 33]))
def test_no_pruning_and_no_conflict_reduce_to_task_arithmetic(n: int, seed: int, d: int) -> None:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(4, d, generator=g)
    taus = [torch.rand(4, d, generator=g) + 0.1 for _ in range(n)]  # all positive: no conflict
    models = [base + t for t in taus]
    ta = base + sum(taus)
    kw: dict[str, Any] = {"density": 1.0}
    torch.testing.assert_close(della_linear_tensor(models, base, **kw), ta, **TOL)
    torch.testing.assert_close(della_tensor(models, base, disjoint="sum", **kw), ta, **TOL)
    bt = breadcrumbs_ties_tensor(models, base, density=1.0, gamma=0.0)
    torch.testing.assert_close(bt, ta, **TOL)
    torch.testing.assert_close(ram_tensor(models, base) - base, _ram_plain(taus), **TOL)


def _ram_plain(taus: list[torch.Tensor]) -> torch.Tensor:
    """Every entry active: the mean of the task vectors (one model: itself)."""
    return sum(taus) / len(taus)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.floats(0.0, 0.5))
def test_nearswap_moves_each_entry_at_most_t_and_never_past_b(seed: int, t: float) -> None:
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(50, generator=g), torch.randn(50, generator=g)
    out = nearswap_tensor([a, b], t=t)
    step = (out - a).abs()
    assert bool((step <= t + 1e-6).all()) or t == 0.0
    assert bool((step <= (b - a).abs() + 1e-6).all())
    assert bool(((out - a) * (b - a) >= -1e-12).all())  # towards b


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 5), seed=st.integers(0, 10_000))
def test_spherical_means_have_the_weighted_mean_norm(n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(30, generator=g) + 1.0 for _ in range(n)]  # one half-space: no cancel
    w = torch.rand(n, generator=g) + 0.1
    w = (w / w.sum()).tolist()
    target = sum(wi * float(x.norm()) for wi, x in zip(w, xs, strict=True))
    for out in (karcher_tensor(xs, weights=w), multislerp_tensor(xs, weights=w)):
        assert float(out.norm()) == pytest.approx(target, rel=1e-4)


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4), ()])
def test_empty_and_scalar_tensors(name: str, shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(shape, generator=g) for _ in range(2)]
    out = TENSOR_METHODS[name](xs, torch.randn(shape, generator=g))
    assert out.shape == torch.Size(shape) and bool(torch.isfinite(out).all())
