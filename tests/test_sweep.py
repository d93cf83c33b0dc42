"""Merge sweeps (core.sweep): points, evaluation values, resume, CLI and the Ray backend."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from core.merge import merge
from core.sweep import load_sweep, load_sweep_spec, run_sweep, sweep_points
from core.train import evaluate
from core.zoo import Zoo

FTS = ["mlp-ft-mnist", "mlp-ft-mnist_inverted"]
SPEC = {
    "name": "t",
    "models": FTS,
    "base": "mlp-base",
    "tasks": ["mnist", "mnist_inverted"],
    "n_test": 200,
    "methods": [
        {"method": "task_arithmetic", "params": {"scale": [0.2, 0.5, 1.0]}},
        {"method": "average", "params": {"weights": {"value": [1.0, 3.0]}}},
    ],
}


@pytest.fixture
def zoo(tiny_zoo_dir: Path, tmp_path: Path) -> Zoo:
    """A private copy of the tiny zoo (sweeps write records)."""
    shutil.copytree(tiny_zoo_dir, tmp_path / "ws")
    return Zoo(tmp_path / "ws")


def test_points_grid_and_random() -> None:
    spec = load_sweep_spec(SPEC)
    pts = sweep_points(spec)
    assert [p.params for p in pts] == [
        {"scale": 0.2},
        {"scale": 0.5},
        {"scale": 1.0},
        {"weights": [1.0, 3.0]},
    ]
    assert len({p.key for p in pts}) == 4 and all(p.key.startswith("t/") for p in pts)
    rnd = load_sweep_spec(
        {
            **SPEC,
            "search": "random",
            "n_samples": 5,
            "seed": 3,
            "methods": [
                {"method": "task_arithmetic", "params": {"scale": {"low": 0.1, "high": 0.9}}}
            ],
        }
    )
    a, b = sweep_points(rnd), sweep_points(rnd)
    assert [p.params for p in a] == [p.params for p in b]
    assert all(0.1 <= p.params["scale"] <= 0.9 for p in a) and len({p.key for p in a}) == 5
    grid = load_sweep_spec(
        {
            **SPEC,
            "methods": [
                {
                    "method": "task_arithmetic",
                    "params": {
                        "scale": {"low": 0.5, "high": 1.5, "num": 3},
                        "weights": [[1, 1], [1, 2]],
                    },
                }
            ],
        }
    )
    assert len(sweep_points(grid)) == 6
    with pytest.raises(ValueError, match="methods\\[0\\].method must be one of"):
        load_sweep_spec({**SPEC, "methods": [{"method": "nope"}]})
    with pytest.raises(ValueError, match="search must be"):
        load_sweep_spec({**SPEC, "search": "bayes"})


def test_values_and_resume(zoo: Zoo) -> None:
    seen: list[dict] = []
    stop_after = {"n": 2}

    def should_stop() -> bool:
        return sum(not i["skipped"] for i in seen) >= stop_after["n"]

    df = run_sweep(SPEC, zoo, progress=seen.append, should_stop=should_stop)
    assert len(df) == 2  # interrupted after two points
    seen.clear()
    df = run_sweep(SPEC, zoo, progress=seen.append)
    assert [i["skipped"] for i in seen] == [True, True, False, False]  # resumed, nothing redone
    assert len(df) == 4 and sorted(df["point"]) == [0, 1, 2, 3]
    # the stored number is the merged model's accuracy, checked independently
    row = df[df["param_scale"] == 0.5].iloc[0]
    merged = merge(
        "task_arithmetic",
        [zoo.state_dict(m) for m in FTS],
        base=zoo.state_dict("mlp-base"),
        scale=0.5,
    )
    model = zoo.load_model("mlp-base")
    model.load_state_dict(merged)
    from core.merge_eval import make_eval_set

    es = make_eval_set(["mnist_inverted"], n_per_task=200, random_state=SPEC.get("seed", 0))
    acc = evaluate(model, es.x, es.y, device="cpu").accuracy  # the Merge Lab's subset
    assert row["acc_mnist_inverted"] == pytest.approx(acc)
    assert row["mean_accuracy"] == pytest.approx((row["acc_mnist"] + acc) / 2)
    assert load_sweep(zoo, "other").empty


def test_cli_sweep(zoo: Zoo, tmp_path: Path, capsys) -> None:
    import yaml

    from core.cli import main

    spec = {**SPEC, "name": "cli", "methods": SPEC["methods"][:1]}
    (tmp_path / "s.yml").write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(tmp_path / "s.yml"), "--workspace", str(zoo.root)]) == 0
    out = capsys.readouterr().out
    assert "task_arithmetic" in out and "mean_accuracy" in out
    assert len(load_sweep(zoo, "cli")) == 3


@pytest.mark.slow
def test_ray_backend_matches_inprocess(zoo: Zoo) -> None:
    ray = pytest.importorskip("ray")
    spec = {
        **SPEC,
        "name": "ray",
        "methods": [{"method": "task_arithmetic", "params": {"scale": [0.3, 1.0]}}],
    }
    local = run_sweep({**spec, "name": "local"}, zoo)
    try:
        remote = run_sweep(spec, zoo, backend="ray", num_cpus=2)
    finally:
        ray.shutdown()
    assert list(remote["backend"]) == ["ray", "ray"]
    torch.testing.assert_close(
        torch.tensor(remote["mean_accuracy"].to_numpy()),
        torch.tensor(local["mean_accuracy"].to_numpy()),
    )
    assert list(remote["acc_mnist"]) == list(local["acc_mnist"])
