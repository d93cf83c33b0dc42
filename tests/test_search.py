"""CMA-ES search (core.search): validation before any evaluation, the best-so-far curve,
resume by replay (same points, nothing evaluated twice), layer coefficients, CLI, Ray."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.cli import main
from core.merge import merge
from core.search import (
    EVAL_KIND,
    apply_point,
    layer_groups,
    load_search,
    load_search_spec,
    run_search,
)
from core.zoo import Zoo

FTS = ["mlp-ft-mnist", "mlp-ft-mnist_inverted", "mlp-ft-mnist_rotated"]
SPEC: dict[str, Any] = {
    "name": "s",
    "models": FTS,
    "base": "mlp-base",
    "method": "task_arithmetic",
    "params": {"scale": 1.0},
    "search": {"weights": {"low": 0.0, "high": 1.0, "init": 0.3}},
    "n_val": 60,
    "n_test": 100,
    "budget": 8,
    "popsize": 4,
    "seed": 3,
}


@pytest.fixture
def zoo(tiny_zoo_dir: Path, tmp_path: Path) -> Zoo:
    shutil.copytree(tiny_zoo_dir, tmp_path / "ws")
    return Zoo(tmp_path / "ws")


def _evals(zoo: Zoo, name: str) -> list[dict]:
    return [r for _, r in sorted(zoo.get_records(EVAL_KIND).items()) if r["search"] == name]


def test_search_runs_stores_every_evaluation_and_the_curve(zoo: Zoo) -> None:
    seen: list[dict] = []
    summary = run_search(SPEC, zoo, progress=seen.append)
    evals = _evals(zoo, "s")
    assert len(evals) == 8 and summary["n_evals"] == 8 and summary["status"] == "done"
    curve = summary["best_so_far"]
    assert curve == list(np.minimum.accumulate([e["objective"] for e in evals]))
    assert summary["best"]["objective"] == min(e["objective"] for e in evals)
    assert -summary["best"]["objective"] == pytest.approx(summary["best"]["mean_val_accuracy"])
    assert 0.0 <= summary["test"]["mean_accuracy"] <= 1.0
    assert [s["done"] for s in seen] == list(range(1, 9)) and not any(s["replayed"] for s in seen)
    for e in evals:  # every candidate is a real merge at its decoded weights
        assert all(0.0 <= w <= 1.0 for w in e["point"]["weights"])
    df = load_search(zoo, "s")["evals"]
    assert list(df["best_so_far"]) == curve and len(df) == 8


def test_resume_replays_finished_points_and_matches_an_uninterrupted_run(
    zoo: Zoo, tmp_path: Path
) -> None:
    other = Zoo(tmp_path / "fresh")
    shutil.copytree(zoo.root / "models", other.root / "models", dirs_exist_ok=True)
    shutil.copy(zoo.root / "index.sqlite", other.root / "index.sqlite")
    full = run_search(SPEC, other, progress=lambda info: np.random.rand())  # noqa: NPY002 (draws cma must not see)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return len(_evals(zoo, "s")) >= 5

    part = run_search(SPEC, zoo, should_stop=stop)
    assert part["status"] == "partial" and len(_evals(zoo, "s")) == 5
    seen: list[dict] = []
    done = run_search(SPEC, zoo, progress=seen.append)
    assert [s["replayed"] for s in seen] == [True] * 5 + [False] * 3
    assert [e["x"] for e in _evals(zoo, "s")] == [e["x"] for e in _evals(other, "s")]
    assert done["best_so_far"] == full["best_so_far"]
    again = run_search(SPEC, zoo)  # finished: replay only
    assert again["best_so_far"] == full["best_so_far"] and len(_evals(zoo, "s")) == 8


def test_layer_coefficients_scale_each_module(zoo: Zoo) -> None:
    models = [zoo.state_dict(m) for m in FTS]
    base = zoo.state_dict("mlp-base")
    groups = layer_groups(models[0])
    assert set(groups) == {"trunk.fc0", "trunk.fc1", "head"}
    point = {
        "weights": [0.2, 0.5, 1.0],
        "layers": {"trunk.fc0": 0.0, "trunk.fc1": 1.0, "head": 2.0},
        "params": {},
    }
    out = apply_point("task_arithmetic", models, base, point, {"scale": 1.0}, groups, 0)
    ta = merge("task_arithmetic", models, base=base, scale=1.0, weights=[0.2, 0.5, 1.0])
    assert torch.equal(out["trunk.fc0.weight"], base["trunk.fc0.weight"])
    torch.testing.assert_close(out["trunk.fc1.bias"], ta["trunk.fc1.bias"])
    torch.testing.assert_close(
        out["head.weight"], base["head.weight"] + 2 * (ta["head.weight"] - base["head.weight"])
    )
    spec = {
        **SPEC,
        "name": "layers",
        "budget": 4,
        "search": {
            "layers": {"low": 0.0, "high": 1.5, "init": 1.0},
            "params": {"scale": {"low": 0.1, "high": 1.0}},
        },
        "params": {},
    }
    summary = run_search(spec, zoo)
    best = summary["best"]["point"]
    assert set(best["layers"]) == set(groups) and set(best["params"]) == {"scale"}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"colour": 1}, "unknown search key"),
        ({"name": "a/b"}, "name must be"),
        ({"models": []}, "models must be"),
        ({"models": FTS + FTS[:1]}, "must not repeat"),
        ({"method": "nope"}, "method must be one of"),
        ({"method": "fisher"}, "data-dependent"),
        ({"method": "emr"}, "data-dependent or per-task"),
        ({"base": None}, "needs base"),
        ({"method": "slerp"}, "exactly 2 models"),
        ({"params": {"density": 0.5}}, "not hyperparameters"),
        ({"search": {}}, "at least one"),
        ({"search": {"weights": {"low": 1.0, "high": 0.0}}}, "low must be below high"),
        ({"search": {"weights": {"low": 0.0, "high": 1.0, "init": 2.0}}}, "init must lie"),
        ({"search": {"weights": {"low": 0, "high": 1, "step": 2}}}, "unknown key"),
        (
            {
                "search": {"layers": {"low": 0, "high": 1}},
                "base": None,
                "method": "average",
                "params": {},
            },
            "needs base",
        ),
        (
            {"method": "magmax", "search": {"weights": {"low": 0, "high": 1}}},
            "no per-model weights",
        ),
        ({"search": {"params": {"trim": {"low": 0, "high": 1}}}}, "float hyperparameter"),
        ({"budget": 0}, "budget must be"),
        ({"popsize": 1}, "popsize must be"),
        ({"sigma0": 2.0}, "sigma0 must be"),
        ({"objective": "f1"}, "objective must be"),
    ],
)
def test_invalid_specs_are_refused_before_any_evaluation(change: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        load_search_spec({**SPEC, **change})


def test_zoo_level_errors_come_before_the_first_evaluation(zoo: Zoo) -> None:
    with pytest.raises(KeyError):
        run_search({**SPEC, "models": ["nope", *FTS[1:]]}, zoo)
    with pytest.raises(ValueError, match="tasks"):
        run_search({**SPEC, "tasks": ["no-such-task"]}, zoo)
    with pytest.raises(ValueError, match="architecture"):
        run_search({**SPEC, "models": ["mlp-ft-mnist", "cnn-mnist-s1"]}, zoo)
    with pytest.raises(ValueError, match="scale must be"):
        run_search({**SPEC, "params": {"scale": float("nan")}}, zoo)
    assert _evals(zoo, "s") == []
    run_search({**SPEC, "budget": 4}, zoo)
    with pytest.raises(ValueError, match="another definition"):
        run_search({**SPEC, "budget": 4, "n_val": 61}, zoo)


def test_cli_runs_a_search_file(zoo: Zoo, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({**SPEC, "budget": 4}))
    assert main(["search", str(f), "--workspace", str(zoo.root)]) == 0
    out = capsys.readouterr().out
    assert "4 evaluations" in out and "best validation accuracy" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    assert main(["search", str(bad), "--workspace", str(zoo.root)]) == 2
    assert main(["search", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.slow
def test_ray_backend_matches_inprocess(zoo: Zoo, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    spec = {**SPEC, "budget": 4}
    local = run_search(spec, zoo)
    try:
        remote = run_search({**spec, "name": "r"}, zoo, backend="ray", num_cpus=2)
    finally:
        ray.shutdown()
    assert remote["best_so_far"] == pytest.approx(local["best_so_far"])


# ------------------------------------------------------------------ helpers of the Merge Search page
def test_searchable_methods_are_data_free_single_model_methods() -> None:
    from core.merge import METHODS
    from core.search import searchable_methods

    with_base = searchable_methods(True, 3)
    assert "task_arithmetic" in with_base and "ties" in with_base
    for m in with_base:
        assert not {"data_dependent", "per_task"} & set(METHODS[m].tags), m
    without = searchable_methods(False, 3)
    assert "average" in without and "task_arithmetic" not in without
    with pytest.raises(TypeError, match="has_base must be a bool"):
        searchable_methods(1, 3)  # type: ignore[arg-type]


def test_spec_mapping_and_stored_spec_round_trip(zoo: Zoo) -> None:
    from core.search import spec_mapping, stored_spec

    spec = load_search_spec(
        SPEC
        | {
            "method": "ties",
            "search": {
                "weights": {"low": 0.0, "high": 1.0, "init": 0.3},
                "layers": {"low": 0.5, "high": 1.5, "init": 1.0},
                "params": {"density": {"low": 0.05, "high": 0.5, "init": 0.2}},
            },
        }
    )
    assert load_search_spec(spec_mapping(spec)) == spec
    summary = run_search(SPEC | {"budget": 2, "popsize": 2}, zoo)
    assert stored_spec(summary) == load_search_spec(SPEC | {"budget": 2, "popsize": 2})
    with pytest.raises(TypeError, match="spec must be a SearchSpec"):
        spec_mapping(SPEC)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stored search record"):
        stored_spec({"search": "s"})


def test_best_point_table_lists_the_best_point_and_its_scores(zoo: Zoo) -> None:
    from core.search import best_point_table

    summary = run_search(SPEC, zoo)
    table = best_point_table(summary)
    weights = table[table["kind"] == "weight"]
    assert list(weights["name"]) == FTS
    assert list(weights["value"]) == pytest.approx(summary["best"]["point"]["weights"])
    val = table[table["kind"] == "validation accuracy"].set_index("name")["value"]
    assert val["mean"] == pytest.approx(summary["best"]["mean_val_accuracy"])
    assert set(val.index) == set(summary["best"]["val_accuracy"]) | {"mean"}
    test = table[table["kind"] == "test accuracy"].set_index("name")["value"]
    assert test["mean"] == pytest.approx(summary["test"]["mean_accuracy"])
    empty = best_point_table({"spec": summary["spec"], "best": None})
    assert empty.empty
    with pytest.raises(ValueError, match="stored search record"):
        best_point_table({"best": None})
