"""run_seeds, the one seed loop of the mixing-paper studies: order, aggregation, progress,
cancelling and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.mixup.papers import Cancelled, SeedRun, SeedRuns, run_seeds

ALLOWED = ("erm", "mixup", "cutmix")


def _fake(run: SeedRun) -> dict:
    """A deterministic 'training': two epochs of progress, then outputs from seed and method."""
    for epoch in (1, 2):
        run.progress({"epoch": epoch, "epochs": 2})
    bonus = {"erm": 0, "mixup": 1, "cutmix": 2}[run.method]
    correct = [int((run.seed + bonus + i) % 3 != 0) for i in range(6)]
    return {"score": float(run.seed * 10 + bonus), "correct": correct, "data": run.data}


def test_runs_every_method_per_seed_in_order_and_aggregates() -> None:
    setups: list[int] = []

    def setup(seed: int) -> str:
        setups.append(seed)
        return f"data-{seed}"

    calls: list[tuple[int, str, int]] = []

    def run_one(run: SeedRun) -> dict:
        calls.append((run.seed, run.method, run.index))
        return _fake(run)

    runs = run_seeds(
        run_one, methods=("mixup", "erm"), seeds=(4, 1, 7), allowed=ALLOWED, setup=setup
    )
    assert isinstance(runs, SeedRuns)
    assert setups == [4, 1, 7] and runs.data == ["data-4", "data-1", "data-7"]
    assert calls == [(4, "mixup", 0), (4, "erm", 0), (1, "mixup", 1), (1, "erm", 1)] + [
        (7, "mixup", 2),
        (7, "erm", 2),
    ]
    assert runs.methods == ("mixup", "erm") and runs.seeds == (4, 1, 7)
    assert runs.values("erm", "data") == ["data-4", "data-1", "data-7"]  # each seed's setup
    # mean and sample sd (ddof 1) of the per-seed numbers 41, 11, 71 worked by hand
    agg = runs.mean_sd("mixup", "score")
    assert agg["mean"] == pytest.approx(41.0) and agg["n"] == 3
    assert agg["sd"] == pytest.approx(
        math.sqrt(((41 - 41) ** 2 + (11 - 41) ** 2 + (71 - 41) ** 2) / 2)
    )
    assert agg["per_seed"] == [41.0, 11.0, 71.0]
    # pooled per-sample values: seed order, concatenated
    pooled = runs.pooled("erm", "correct")
    assert pooled.shape == (18,)
    assert pooled.tolist() == sum((_fake_correct(s, 0) for s in (4, 1, 7)), [])
    acc = runs.accuracy("erm")
    assert acc["estimate"] == pytest.approx(pooled.mean()) and acc["n"] == 18
    assert acc["low"] <= acc["estimate"] <= acc["high"]
    gap = runs.paired_gap("mixup", "erm")
    want = runs.pooled("mixup", "correct").mean() - pooled.mean()
    assert gap["estimate"] == pytest.approx(want) and gap["low"] <= gap["estimate"] <= gap["high"]


def _fake_correct(seed: int, bonus: int) -> list[int]:
    return [int((seed + bonus + i) % 3 != 0) for i in range(6)]


def test_one_seed_has_no_sd() -> None:
    runs = run_seeds(_fake, methods=("erm",), seeds=(3,), allowed=ALLOWED)
    assert runs.mean_sd("erm", "score") == {"mean": 30.0, "sd": None, "n": 1, "per_seed": [30.0]}
    assert runs.data == [None]


def test_progress_is_one_fraction_over_all_runs() -> None:
    seen: list[dict] = []
    run_seeds(_fake, methods=("erm", "cutmix"), seeds=(0, 5), allowed=ALLOWED, progress=seen.append)
    # 2 seeds x 2 methods x 2 epochs: fractions k / 8, each dict with method and seed added
    assert [d["fraction"] for d in seen] == pytest.approx([k / 8 for k in range(1, 9)])
    assert [(d["seed"], d["method"]) for d in seen[::2]] == [
        (0, "erm"),
        (0, "cutmix"),
        (5, "erm"),
    ] + [(5, "cutmix")]
    assert all(d["epochs"] == 2 for d in seen)

    def steps(run: SeedRun) -> dict:
        run.progress({"epoch": 1, "epochs": 1, "step": 1, "steps": 4})  # step beats epoch
        run.progress({"loss": 0.5})  # says nothing about how far: the run's start
        return {}

    seen.clear()
    run_seeds(steps, methods=("erm",), seeds=(0, 1), allowed=ALLOWED, progress=seen.append)
    assert [d["fraction"] for d in seen] == pytest.approx([0.125, 0.0, 0.625, 0.5])
    assert seen[1] == {"method": "erm", "loss": 0.5, "seed": 0, "fraction": 0.0}


def test_cancels_before_the_next_run() -> None:
    calls: list[int] = []

    def run_one(run: SeedRun) -> dict:
        calls.append(run.seed)
        return {}

    with pytest.raises(Cancelled, match="seed 0"):
        run_seeds(
            run_one, methods=("erm",), seeds=(0, 1), allowed=ALLOWED, should_stop=lambda: True
        )
    assert calls == []
    with pytest.raises(Cancelled, match="seed 1"):
        run_seeds(
            run_one,
            methods=("erm",),
            seeds=(0, 1),
            allowed=ALLOWED,
            should_stop=lambda: bool(calls),
        )
    assert calls == [0]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"methods": ()}, ValueError, "methods must be a non-empty"),
        ({"methods": "erm"}, ValueError, "methods must be a non-empty"),
        ({"methods": ("sgd",)}, ValueError, r"methods must be distinct names from .*'sgd'"),
        ({"methods": ("erm", "erm")}, ValueError, "methods must be distinct"),
        ({"seeds": ()}, ValueError, "seeds must be a non-empty"),
        ({"seeds": (0, -1)}, ValueError, r"seed must be in \[0, inf\], got -1"),
        ({"seeds": (0.5,)}, TypeError, "seed must be an int, got float"),
        ({"seeds": (2, 2)}, ValueError, r"seeds must be distinct, got \[2, 2\]"),
        ({"setup": 3}, TypeError, "setup must be callable or None, got int"),
    ],
)
def test_rejects_bad_input(kwargs: dict, error: type, match: str) -> None:
    args: dict = {"methods": ("erm",), "seeds": (0,), "allowed": ALLOWED, **kwargs}
    with pytest.raises(error, match=match):
        run_seeds(_fake, **args)


def test_rejects_a_bad_run_function_and_bad_lookups() -> None:
    with pytest.raises(TypeError, match="run_one must be callable, got str"):
        run_seeds("train", methods=("erm",), seeds=(0,), allowed=ALLOWED)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="run_one must return a mapping of outputs, got list"):
        run_seeds(lambda run: [1], methods=("erm",), seeds=(0,), allowed=ALLOWED)  # type: ignore[arg-type, return-value]
    runs = run_seeds(_fake, methods=("erm",), seeds=(0, 1), allowed=ALLOWED)
    with pytest.raises(ValueError, match=r"method must be one of \['erm'\], got 'mixup'"):
        runs.values("mixup", "score")
    with pytest.raises(ValueError, match=r"key must be in every output of 'erm', got 'nope'"):
        runs.pooled("erm", "nope")
    assert np.isfinite(runs.pooled("erm", "correct")).all()
