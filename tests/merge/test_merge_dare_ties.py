"""DARE-TIES is drop-then-TIES on the task vectors: θ₀ + λ · TIES(DARE(τ₁), …, DARE(τ_N)).

Checked three ways: with ``drop=0`` it is TIES bit for bit (every path and dtype); its mean over
many seeds matches an independent drop-then-TIES written here; and it matches PEFT's building
blocks (``prune(..., "random", rescale=True)`` then ``ties``) and PEFT's own ``dare_ties`` where
the two mean the same thing.
"""

from __future__ import annotations

import math

import pytest
import torch

from core.merge import merge
from core.merge.dare_ties import dare_ties, dare_ties_tensor
from core.merge.ties import ties, ties_tensor

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _models(n: int, dtype: torch.dtype, seed: int = 0) -> tuple[dict, list[dict]]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"a.weight": (6, 5), "a.bias": (6,), "b.weight": (3, 6)}
    base = {k: torch.randn(s, generator=g).to(dtype) for k, s in shapes.items()}
    models = [
        {
            k: (v.float() + 0.3 * torch.randn(v.shape, generator=g)).to(dtype)
            for k, v in base.items()
        }
        for _ in range(n)
    ]
    return base, models


def _fused_off(monkeypatch: pytest.MonkeyPatch, fused: bool) -> None:
    if not fused:
        monkeypatch.setenv("MIXMERGE_FUSED", "0")


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trim", ["global", "tensor"])
def test_drop_zero_is_ties_bit_for_bit(
    trim: str, dtype: torch.dtype, fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fused_off(monkeypatch, fused)
    base, models = _models(3, dtype)
    for kw in (
        {"density": 0.3, "scale": 0.8, "disjoint": "mean"},
        {"density": 0.5, "scale": 1.3, "disjoint": "sum", "weights": [0.5, 2.0, -1.0]},
        {"density": 1.0, "scale": 1.0, "disjoint": "mean"},
    ):
        for b in (base, None):
            want = ties(models, base=b, trim=trim, **kw)
            got = dare_ties(models, base=b, drop=0.0, trim=trim, generator=None, **kw)
            assert got.keys() == want.keys()
            for k in want:
                assert got[k].dtype == dtype
                assert torch.equal(got[k], want[k]), (k, kw, b is None)
            if trim == "tensor":
                for k in want:
                    ts = [m[k] for m in models]
                    bk = None if b is None else b[k]
                    one = dare_ties_tensor(ts, bk, drop=0.0, trim="tensor", **kw)
                    assert torch.equal(one, ties_tensor(ts, bk, trim="tensor", **kw))


def _ties_reference(
    taus: list[dict[str, torch.Tensor]],
    density: float,
    trim: str,
    disjoint: str,
    weights: list[float],
) -> dict[str, torch.Tensor]:
    """Plain TIES of float64 task vectors: top-k trim (per tensor or over the whole model),
    sign by total mass (0 counts as +), mean or sum of the agreeing entries."""
    keys = list(taus[0])
    keep: list[dict[str, torch.Tensor]] = []
    for tv in taus:
        groups = [[k] for k in keys] if trim == "tensor" else [keys]
        mask = {}
        for group in groups:
            flat = torch.cat([tv[k].reshape(-1) for k in group]).abs()
            kk = max(1, math.floor(density * flat.numel()))
            thr = flat.sort(descending=True).values[kk - 1]
            for k in group:
                mask[k] = (tv[k].abs() >= thr) & (tv[k] != 0)
        keep.append(mask)
    out = {}
    for k in keys:
        x = torch.stack([tv[k] for tv in taus])  # (N, ...)
        m = torch.stack([kp[k] for kp in keep])  # (N, ...) kept
        elected = torch.where((x * m).sum(0) >= 0, 1.0, -1.0).double()
        agree = m & (torch.sign(x) == elected)
        w = torch.tensor(weights, dtype=torch.float64).view(-1, *[1] * (x.dim() - 1))
        merged = (w * x * agree).sum(0)
        if disjoint == "mean":
            merged = merged / agree.sum(0).clamp(min=1)
        out[k] = merged
    return out


def _independent_dare_ties(
    base: dict, models: list[dict], seed: int, drop: float, **kw: object
) -> dict[str, torch.Tensor]:
    """Drop-then-TIES with this file's own draws and TIES (float64)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    taus = []
    for m in models:
        tv = {}
        for k in m:
            tau = m[k].double() - base[k].double()
            keep = torch.rand(tau.shape, generator=g, dtype=torch.float64) >= drop
            tv[k] = tau * keep / (1.0 - drop)
        taus.append(tv)
    merged = _ties_reference(taus, **kw)  # type: ignore[arg-type]
    return {k: base[k].double() + v for k, v in merged.items()}


@pytest.mark.slow
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("trim", ["global", "tensor"])
def test_mean_over_seeds_matches_an_independent_drop_then_ties(
    trim: str, fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fused_off(monkeypatch, fused)
    base, models = _models(3, torch.float64, seed=4)
    drop, n_seeds = 0.5, 300  # 0.5 is exact at the 2⁻¹⁵ quantisation of the drop rate
    kw = {"density": 0.4, "trim": trim, "disjoint": "mean", "weights": [1.0, 0.5, 1.5]}
    ours = [
        dare_ties(models, base=base, drop=drop, generator=torch.Generator().manual_seed(s), **kw)
        for s in range(n_seeds)
    ]
    ref = [_independent_dare_ties(base, models, s, drop, **kw) for s in range(n_seeds)]
    for k in base:
        a = torch.stack([o[k] for o in ours])  # (S, ...)
        b = torch.stack([r[k] for r in ref])  # (S, ...)
        se = ((a.var(0) + b.var(0)) / n_seeds).sqrt()
        gap = (a.mean(0) - b.mean(0)).abs()
        # (the old code added θ₀ twice and trimmed full weights: gaps of hundreds of SEs)
        assert bool((gap <= 5 * se + 1e-9).all()), (k, float((gap / (se + 1e-12)).max()))


def test_the_merge_api_and_default_hyperparameters_are_drop_then_ties() -> None:
    base, models = _models(2, torch.float32, seed=1)
    got = merge("dare_ties", models, base=base, generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v).all() for v in got.values())
    # drop-then-TIES moves the model by at most what TIES of the rescaled vectors can:
    # each merged entry lies within the agreeing entries' range, i.e. |Δ| <= max |τ|/(1−p)
    for k, v in got.items():
        reach = max((m[k] - base[k]).abs().max() for m in models) / 0.5
        assert float((v - base[k]).abs().max()) <= float(reach) + 1e-6


peft_merge = pytest.importorskip("peft.utils.merge_utils")


def _mean_peft(fn, n_seeds: int):  # type: ignore[no-untyped-def]
    out = []
    with torch.random.fork_rng():
        for s in range(n_seeds):
            torch.manual_seed(s)  # PEFT draws from the global RNG; restored on exit
            out.append(fn())
    return torch.stack(out)


@pytest.mark.slow
@pytest.mark.parametrize("density", [1.0, 0.3])
def test_against_peft_prune_then_ties(density: float) -> None:
    """PEFT's ``dare_ties`` is drop-then-elect without a magnitude trim (its ``density`` is our
    1 − p and our ``density=1``); PEFT's ``prune(random, rescale)`` then ``ties`` is our
    drop-then-TIES with a trim. Both compared in mean over seeds, float64, on one tensor."""
    g = torch.Generator().manual_seed(7)
    taus = [0.2 * torch.randn(48, generator=g, dtype=torch.float64) for _ in range(3)]
    keep, n_seeds = 0.75, 400
    ones = torch.ones(3, dtype=torch.float64)
    if density >= 1.0:
        theirs = _mean_peft(lambda: peft_merge.dare_ties(taus, ones, keep), n_seeds)
    else:

        def fn() -> torch.Tensor:
            dropped = [peft_merge.prune(t, keep, "random", rescale=True) for t in taus]
            return peft_merge.ties(dropped, ones, density)

        theirs = _mean_peft(fn, n_seeds)
    ours = torch.stack(
        [
            dare_ties_tensor(
                taus,
                None,
                drop=1.0 - keep,
                density=density,
                disjoint="mean",
                generator=torch.Generator().manual_seed(s),
            )
            for s in range(n_seeds)
        ]
    )
    se = ((ours.var(0) + theirs.var(0)) / n_seeds).sqrt()
    gap = (ours.mean(0) - theirs.mean(0)).abs()
    assert bool((gap <= 5 * se + 1e-9).all()), float((gap / (se + 1e-12)).max())
    # with no drop the two agree exactly (PEFT warns that density 1 prunes nothing)
    with pytest.warns(UserWarning, match="no pruning"):
        exact = peft_merge.dare_ties(taus, ones, 1.0)
    torch.testing.assert_close(
        dare_ties_tensor(taus, None, drop=0.0, density=1.0, disjoint="mean"), exact
    )
