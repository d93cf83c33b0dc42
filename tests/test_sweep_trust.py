"""Sweeps that tell the truth: the Merge Lab's sweep values, the sweep CLI's evaluation set and
result keys, and validation of a sweep before its first evaluation."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import pytest
import torch

from core.cli import main
from core.merge_eval import lab_from_zoo, sweep_values
from core.models import create_model
from core.sweep import run_sweep
from core.zoo import Zoo


def test_lab_sweep_values_include_zero_and_the_current_value() -> None:
    vals = sweep_values("task_arithmetic", "scale", 11, current=0.3)
    assert 0.0 in vals and 0.3 in vals
    assert vals == sorted(vals) and len(set(vals)) == len(vals)
    assert vals[0] == -1.0 and vals[-1] == 2.0
    dens = sweep_values("ties", "density", 5, current=0.37)
    assert 0.37 in dens and 0.0 not in dens  # 0 lies outside density's range
    with pytest.raises(ValueError, match="current"):
        sweep_values("task_arithmetic", "scale", 11, current=5.0)


# ---------------------------------------------------------------- a small zoo of untrained MLPs
@pytest.fixture
def small_zoo(tmp_path: Path) -> Zoo:
    zoo = Zoo(tmp_path / "ws")
    kw = {"width": 16, "depth": 1}
    base = create_model("mlp", seed=0, **kw)
    zoo.add(base, arch="mlp", arch_kwargs=kw, task="mnist+digits", role="base", name="b")
    for i, t in enumerate(["mnist", "digits"]):
        m = _perturbed(base, i + 1)
        zoo.add(m, arch="mlp", arch_kwargs=kw, task=t, role="finetune", name=f"ft-{t}")
    return zoo


def _perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    out = create_model("mlp", seed=None, width=16, depth=1)
    out.load_state_dict(
        {k: v + 0.5 * torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}
    )
    return out


def _spec(**over: object) -> dict:
    spec = {
        "name": "s",
        "models": ["ft-mnist", "ft-digits"],
        "base": "b",
        "n_test": 40,
        "methods": [{"method": "task_arithmetic", "params": {"scale": [0.2, 0.5]}}],
    }
    spec.update(over)
    return spec


def test_sweep_and_merge_lab_report_the_same_numbers(small_zoo: Zoo) -> None:
    df = run_sweep(_spec(seed=3), small_zoo)
    lab = lab_from_zoo(
        small_zoo, ["ft-mnist", "ft-digits"], base_id="b", n_per_task=40, random_state=3
    )
    for scale in (0.2, 0.5):
        row = df[df["param_scale"] == scale].iloc[0]
        ev = lab.run("task_arithmetic", {"scale": scale})
        assert [row["acc_mnist"], row["acc_digits"]] == pytest.approx(list(ev.accuracy))


def test_sweep_rows_follow_the_checkpoints_and_the_current_points(small_zoo: Zoo) -> None:
    first = run_sweep(_spec(), small_zoo)
    assert len(first) == 2
    fewer = run_sweep(
        _spec(methods=[{"method": "task_arithmetic", "params": {"scale": [0.5]}}]), small_zoo
    )
    assert fewer["param_scale"].tolist() == [0.5]  # the dropped point is not reported
    rec = small_zoo.get("ft-mnist")
    new = _perturbed(small_zoo.load_model("b"), 99)
    small_zoo.add(
        new,
        arch="mlp",
        arch_kwargs=rec.arch_kwargs,
        task="mnist",
        role="finetune",
        name="ft-mnist",
        replace=True,
    )
    again = run_sweep(_spec(), small_zoo)
    assert len(again) == 2 and set(again["key"]).isdisjoint(first["key"])
    lab = lab_from_zoo(small_zoo, ["ft-mnist", "ft-digits"], base_id="b", n_per_task=40)
    row = again[again["param_scale"] == 0.5].iloc[0]
    assert row["acc_mnist"] == pytest.approx(lab.run("task_arithmetic", {"scale": 0.5}).accuracy[0])


# ---------------------------------------------------------------- the sweep CLI refuses bad sweeps
def _cli(tmp_path: Path, text: str, zoo: Zoo) -> tuple[int, str]:
    f = tmp_path / "sweep.yaml"
    f.write_text(text)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["sweep", str(f), "--workspace", str(zoo.root)])
    return rc, err.getvalue()


GOOD = "name: s\nmodels: [ft-mnist, ft-digits]\nbase: b\nn_test: 20\n"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name: s\nmodels: [a, b\n", "not valid YAML"),
        (GOOD + "methods: !!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
        (GOOD + "methods:\n  - method: [ties]\n", "method must be one of"),
        (GOOD + "methods:\n  - method: ties\n    params: {density: {values: []}}\n", "no values"),
        (GOOD + "methods:\n  - method: ties\n    params: {density: []}\n", "no values"),
        (
            GOOD
            + "methods:\n  - method: ties\n    params: {scale: {low: 0, high: 1, num: 3, log: true}}\n",
            "log",
        ),
        (GOOD + "methods:\n  - method: ties\n    params: {densty: [0.1]}\n", "densty"),
        (GOOD + "methods:\n  - method: ties\n    params: {density: [1.5]}\n", "density"),
        (GOOD + "methods:\n  - method: ties\n    params: {density: [abc]}\n", "density"),
        (
            "name: s\nmodels: [ft-mnist, nope]\nbase: b\nmethods:\n  - method: average\n",
            "nope",
        ),
        (
            "name: s\nmodels: [ft-mnist, ft-digits]\nbase: gone\nmethods:\n  - method: ties\n",
            "gone",
        ),
    ],
)
def test_sweep_cli_gives_clear_messages(
    tmp_path: Path, small_zoo: Zoo, text: str, match: str
) -> None:
    rc, err = _cli(tmp_path, text, small_zoo)
    assert rc == 2 and match in err and "Traceback" not in err, err
    assert not small_zoo.get_records("sweep")


def test_huge_grid_with_a_missing_model_fails_before_any_work(
    tmp_path: Path, small_zoo: Zoo
) -> None:
    axis = "{low: 0.0, high: 1.0, num: 100}"
    text = (
        "name: s\nmodels: [ft-mnist, missing-model]\nbase: b\nmethods:\n  - method: dare_ties\n"
        f"    params: {{scale: {axis}, density: {{low: 0.01, high: 1.0, num: 100}}, drop: {{low: 0.0, high: 0.9, num: 300}}}}\n"
    )
    t0 = time.perf_counter()
    rc, err = _cli(tmp_path, text, small_zoo)
    assert rc == 2 and "missing-model" in err
    rc, err = _cli(tmp_path, text.replace("missing-model", "ft-digits"), small_zoo)
    assert rc == 2 and "3,000,000 points" in err
    assert time.perf_counter() - t0 < 5.0
