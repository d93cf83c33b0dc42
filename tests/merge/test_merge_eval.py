"""core.merge_eval: the Merge Lab's evaluation, checked against the naive path and by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core import params
from core.data import get_task
from core.merge import merge
from core.merge_eval import (
    SCALE_LINEAR,
    MergeLab,
    coefficient_landscape,
    compare_methods,
    lab_from_zoo,
    make_eval_set,
    save_merged,
    sweep,
)
from core.models import create_model
from core.stats import mcnemar
from core.train import evaluate
from core.zoo import Zoo

FT = ["mlp-ft-mnist", "mlp-ft-mnist_inverted", "mlp-ft-mnist_rotated", "mlp-ft-digits"]


@pytest.fixture(scope="module")
def synthetic_lab() -> MergeLab:
    """A lab over untrained MLPs (no zoo needed): base + two perturbed copies."""
    gen = torch.Generator().manual_seed(0)
    base = create_model("mlp", seed=0, width=32, depth=1).state_dict()
    models = [
        {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
        for _ in range(2)
    ]
    return MergeLab(
        models,
        arch="mlp",
        arch_kwargs={"width": 32, "depth": 1},
        model_tasks=["mnist", "digits"],
        base=base,
        model_ids=["a", "b"],
        base_id="base",
        n_per_task=60,
    )


def test_eval_set_is_seeded_and_independent_of_other_tasks() -> None:
    a = make_eval_set(["mnist", "digits"], n_per_task=50, random_state=3)
    b = make_eval_set(["digits"], n_per_task=50, random_state=3)
    assert a.sizes == (50, 50) and a.x.shape == (100, 1, 28, 28) and not a.full
    assert torch.equal(a.x[50:], b.x) and torch.equal(a.y[50:], b.y)
    c = make_eval_set(["digits"], n_per_task=50, random_state=4)
    assert not torch.equal(b.y, c.y) or not torch.equal(b.x, c.x)
    full = make_eval_set(["digits"], n_per_task=None)
    assert full.full and full.sizes == (len(get_task("digits").y_test),)
    assert (a.groups == np.repeat([0, 1], 50)).all()
    with pytest.raises(ValueError, match="tasks"):
        make_eval_set(["mnist", "mnist"])
    with pytest.raises(ValueError, match="n_per_task"):
        make_eval_set(["mnist"], n_per_task=0)


def test_fast_path_matches_naive_rebuild_and_evaluate(synthetic_lab: MergeLab) -> None:
    lab = synthetic_lab
    sd = lab.merge("task_arithmetic", {"scale": 0.7})
    ev = lab.evaluate(sd)
    model = create_model("mlp", seed=None, width=32, depth=1)
    model.load_state_dict(sd)
    es = lab.eval_set()
    naive = evaluate(model, es.x, es.y, device="cpu")
    np.testing.assert_array_equal(ev.correct, naive.correct.numpy())
    per_task = [float(naive.correct[s:e].float().mean()) for s, e in ((0, 60), (60, 120))]
    assert ev.accuracy == pytest.approx(per_task)
    assert ev.average == pytest.approx(np.mean(per_task))
    assert float(np.average(ev.loss, weights=es.sizes)) == pytest.approx(naive.loss, rel=1e-5)


def test_references_normalised_accuracy_and_identities(synthetic_lab: MergeLab) -> None:
    lab = synthetic_lab
    ref, base = lab.references()
    assert base is not None
    # λ = 0 is the base model
    ev0 = lab.run("task_arithmetic", {"scale": 0.0})
    assert ev0.accuracy == pytest.approx(base)
    # the reference of task j is the model trained on task j, on the same samples
    assert lab.evaluate(lab.models[0]).accuracy[0] == pytest.approx(ref[0])
    assert lab.evaluate(lab.models[1]).accuracy[1] == pytest.approx(ref[1])
    ev = lab.run("task_arithmetic", {"scale": 0.4})
    assert ev.normalized == pytest.approx([a / r for a, r in zip(ev.accuracy, ref, strict=True)])
    assert ev.average_normalized == pytest.approx(np.mean(ev.normalized))
    # the cached task vectors give task arithmetic exactly
    ta = merge("task_arithmetic", list(lab.models), base=lab.base, scale=0.4)
    assert params.allclose(lab.combine([0.4, 0.4]), ta, atol=1e-6)
    # inputs untouched by all of the above
    assert params.allclose(lab.combine([0.0, 0.0]), lab.base, atol=0)


def test_available_methods_follow_tags(synthetic_lab: MergeLab) -> None:
    assert "task_arithmetic" in synthetic_lab.available_methods()
    indep = MergeLab(
        list(synthetic_lab.models),
        arch="mlp",
        arch_kwargs={"width": 32, "depth": 1},
        model_tasks=["mnist", "digits"],
        n_per_task=10,
    )
    assert indep.setting == "independent" and "task_arithmetic" not in indep.available_methods()
    assert "average" in indep.available_methods()
    with pytest.raises(ValueError, match="method must be one of"):
        indep.run("task_arithmetic", {"scale": 0.3})
    with pytest.raises(ValueError, match="base"):
        coefficient_landscape(indep)


def test_lab_rejects_bad_input(synthetic_lab: MergeLab) -> None:
    models = list(synthetic_lab.models)
    with pytest.raises(ValueError, match="model_tasks"):
        MergeLab(models, arch="mlp", arch_kwargs={"width": 32, "depth": 1}, model_tasks=["mnist"])
    with pytest.raises(ValueError, match="do not fit"):
        MergeLab(models, arch="cnn", arch_kwargs={"width": 8}, model_tasks=["mnist", "digits"])
    with pytest.raises(ValueError, match="models"):
        MergeLab([], arch="mlp", arch_kwargs={}, model_tasks=[])


def test_landscape_corners_are_base_and_models(synthetic_lab: MergeLab) -> None:
    lab = synthetic_lab
    calls: list[int] = []
    res = coefficient_landscape(lab, lams=[0.0, 1.0], progress=lambda d, n, m: calls.append(d))
    assert calls == [1, 2, 3, 4]
    assert res.accuracy.shape == (2, 2, 2) and res.average.shape == (2, 2)
    _, base = lab.references()
    np.testing.assert_allclose(res.accuracy[:, 0, 0], base)
    np.testing.assert_allclose(res.accuracy[:, 1, 0], lab.evaluate(lab.models[0]).accuracy)
    np.testing.assert_allclose(res.accuracy[:, 0, 1], lab.evaluate(lab.models[1]).accuracy)
    assert res.best()[2] == pytest.approx(res.average.max())
    with pytest.raises(ValueError, match="pair"):
        coefficient_landscape(lab, (1, 1))


def test_sweep_scale(synthetic_lab: MergeLab) -> None:
    res = sweep(synthetic_lab, "task_arithmetic", "scale", [0.0, 0.5, 1.0])
    _, base = synthetic_lab.references()
    np.testing.assert_allclose(res.accuracy[:, 0], base)
    one = synthetic_lab.run("task_arithmetic", {"scale": 1.0})
    np.testing.assert_allclose(res.accuracy[:, 2], one.accuracy)
    assert res.average == pytest.approx(res.accuracy.mean(0))
    with pytest.raises(ValueError, match="param"):
        sweep(synthetic_lab, "task_arithmetic", "density", [0.5])


def test_compare_methods_statistics_are_independent_recomputations(synthetic_lab: MergeLab) -> None:
    res = compare_methods(
        synthetic_lab,
        ["average", "task_arithmetic"],
        full=False,
        n_boot=500,
        hyperparameters={"task_arithmetic": {"scale": 0.5}},
    )
    ref_row, avg_row = res.rows
    assert ref_row.method == "task_arithmetic" and ref_row.p_value is None
    ta = synthetic_lab.run("task_arithmetic", {"scale": 0.5})
    av = synthetic_lab.run("average", {})
    assert ref_row.average == pytest.approx(ta.average)
    expected = mcnemar(ta.correct, av.correct)
    assert avg_row.p_value == pytest.approx(expected.p_value)
    assert (avg_row.n01, avg_row.n10) == (expected.n01, expected.n10)
    for r in res.rows:
        assert r.ci_low <= r.average <= r.ci_high
    assert {"method", "average", "ci_low", "p_vs_task_arithmetic"} <= set(res.table()[0])


def test_compare_methods_reports_a_failing_method(synthetic_lab: MergeLab) -> None:
    def bad_data(method: str) -> dict:
        raise ValueError("no data for you")

    res = compare_methods(
        synthetic_lab, ["task_arithmetic"], full=False, n_boot=100, data_args=bad_data
    )
    assert res.rows[0].error is None  # not data-dependent: data_args not called
    with pytest.raises(ValueError, match="methods"):
        compare_methods(synthetic_lab, ["no_such_method"])


def test_lab_from_zoo_and_save(tiny_zoo_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(tiny_zoo_dir, ws)
    zoo = Zoo(ws)
    lab = lab_from_zoo(zoo, FT, base_id="mlp-base", n_per_task=40)
    assert lab.tasks == ("mnist", "mnist_inverted", "mnist_rotated", "digits")
    rec = save_merged(zoo, lab, "task_arithmetic", {"scale": 0.3}, name="ta-test")
    assert rec.role == "merged" and rec.base_id == "mlp-base"
    assert rec.recipe["method"] == "task_arithmetic" and rec.recipe["source_ids"] == FT
    assert rec.recipe["hyperparameters"] == {"scale": 0.3}
    stored = zoo.state_dict(rec.id)
    expected = merge(
        "task_arithmetic",
        [zoo.state_dict(i) for i in FT],
        base=zoo.state_dict("mlp-base"),
        scale=0.3,
    )
    assert params.allclose(stored, expected, atol=1e-6)
    full = lab.evaluate(stored, full=True)
    assert rec.metrics["test_accuracy"] == pytest.approx(full.average)
    with pytest.raises(ValueError, match="architecture"):
        lab_from_zoo(zoo, ["mlp-mnist-s1", "cnn-mnist-s1"])
    with pytest.raises(ValueError, match="base_id"):
        lab_from_zoo(zoo, FT, base_id="mlp-ft-mnist")


def test_data_dependent_inputs_are_computed_once_and_used(synthetic_lab: MergeLab) -> None:
    from core.merge import fisher_diagonal

    lab = synthetic_lab
    assert not lab.has_data_arguments("fisher") and lab.has_data_arguments("task_arithmetic")
    steps: list[str] = []
    args = lab.data_arguments("fisher", progress=lambda d, n, m: steps.append(m))
    assert len(steps) == 3 and lab.has_data_arguments("fisher")
    assert lab.data_arguments("fisher") is args  # cached
    module = create_model("mlp", seed=None, width=32, depth=1)
    module.load_state_dict(lab.models[1])
    x, y = lab.train_data("digits")
    ref = fisher_diagonal(module, x, y, n_examples=len(y))
    assert params.allclose(args["fishers"][1], ref, atol=1e-7)
    ev = lab.run("fisher", {"floor": 1e-6})
    merged = merge("fisher", list(lab.models), fishers=args["fishers"], floor=1e-6)
    assert ev.accuracy == pytest.approx(lab.evaluate(merged).accuracy)


def test_greedy_soup_uses_training_subsets(synthetic_lab: MergeLab) -> None:
    """The held-out score is on training subsets; the soup is never below its best model."""
    lab = synthetic_lab
    soup = lab.merge("greedy_soup", {})
    score = lab.data_arguments("greedy_soup")["evaluate"]
    assert score(soup) >= max(score(m) for m in lab.models)


@pytest.mark.parametrize("method", sorted(SCALE_LINEAR))
def test_incremental_scale_path_equals_merge(synthetic_lab: MergeLab, method: str) -> None:
    """θ₀ + λ·f(τ) from the cache equals a fresh core.merge.merge at that λ."""
    lab = synthetic_lab
    hyper = {"density": 0.5} if method in ("ties", "breadcrumbs", "pcb") else {}
    if method in ("dare", "dare_ties"):
        hyper = {"drop": 0.3, **({"density": 0.5} if method == "dare_ties" else {})}
    for scale in (0.7, 1.3):
        fast = lab.merge(method, {**hyper, "scale": scale}, seed=3)
        gen = torch.Generator().manual_seed(3)
        ref = merge(method, list(lab.models), base=lab.base, generator=gen, scale=scale, **hyper)
        assert params.allclose(fast, ref, atol=1e-6, rtol=1e-5), method
    assert params.allclose(
        lab.merge(method, {**hyper, "scale": 1.3}, seed=3, exact=True), ref, atol=0
    )
