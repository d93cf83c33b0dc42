"""The merging benchmark: every applicable method of :data:`core.merge.METHODS` on a suite zoo.

``python -m core benchmark SUITE [--quick] --out results.json`` runs :func:`run_benchmark`:

1. rows ``pretrained`` (the backbone with each task's fixed head) and ``individual`` (each task
   scored by its own fine-tune);
2. for every registered merge method that applies to N fine-tunes of one base, each point of
   the method's grid (:data:`GRIDS`, the papers' search spaces; :data:`QUICK_GRIDS` for
   ``--quick``) is merged with :func:`core.merge.merge` and scored on the validation splits;
   the best point (highest mean validation accuracy) is scored on the test splits;
3. test accuracy is averaged over tasks, with a stratified bootstrap CI
   (:func:`core.stats.bootstrap_ci` with the task as group), normalised accuracy
   (merged / individual per task, averaged) and McNemar's test against task arithmetic on the
   pooled test samples (:func:`core.stats.mcnemar`).

Data-dependent methods get their inputs from the training and validation splits, never from
test: Fisher diagonals and RegMean Gram matrices from each fine-tune on its own training split,
greedy soup's held-out score and AdaMerging's unlabeled batches from the validation splits
(the AdaMerging paper adapts on unlabeled test inputs; this benchmark keeps test untouched).
"""

from __future__ import annotations

import copy
import itertools
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._checks import check_choice
from ..data.subset import stratified_subset
from ..data.suites import SUITES, SuiteTask, load_task
from ..device import configure_threads, cpu_model, resolve_device
from ..merge import METHODS, merge
from ..params import StateDict
from ..stats import bootstrap_ci, mcnemar
from ..zoo import Zoo
from .protocol import (
    Head,
    ProgressFn,
    TaskRouter,
    evaluate_backbone,
    new_backbone,
    router_inputs,
    tag_inputs,
    trunk_state,
)
from .zoo_build import load_suite_zoo

REFERENCE = "task_arithmetic"  # McNemar reference, as in the papers' comparisons


def _grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*axes.values())]


# The papers' search spaces (validation-tuned). Methods absent here run at their defaults.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "average": [{}],
    # Ilharco et al. 2023: λ from 0.05 to 1 on validation (step 0.1 here)
    "task_arithmetic": _grid(scale=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
    # Yadav et al. 2023: k in {10, 20, 30} %, λ in [0.8, 2.5] for the disjoint mean
    "ties": _grid(density=[0.1, 0.2, 0.3], scale=[0.8, 1.0, 1.5, 2.0, 2.5]),
    # Yu et al. 2024: drop rates up to 0.9, then task arithmetic's λ
    "dare": _grid(drop=[0.5, 0.9], scale=[0.3, 0.5, 0.7, 1.0]),
    "dare_ties": _grid(drop=[0.5, 0.9], scale=[1.0, 1.5, 2.0]),
    # Davari & Belilovsky 2024: keep 10 % (density), drop the top 1 % (γ), λ tuned
    "breadcrumbs": _grid(density=[0.1, 0.2], gamma=[0.01], scale=[0.5, 1.0, 1.5]),
    # Du et al. 2024: ratio {0.05, 0.1, 0.2}, λ tuned
    "pcb": _grid(density=[0.05, 0.1, 0.2], scale=[1.0, 1.5, 2.0]),
    # Jin et al. 2023: α tuned on validation
    "regmean": _grid(alpha=[0.1, 0.5, 0.9]),
    "fisher": [{}],
    "model_stock": [{}],
    "greedy_soup": [{}],
    # Yang et al. 2024: task-wise and layer-wise coefficients, λ₀ = 0.3, Adam lr 1e-3
    "adamerging": _grid(mode=["task", "layer"]),
}
QUICK_GRIDS: dict[str, list[dict[str, Any]]] = {
    "task_arithmetic": _grid(scale=[0.3, 0.5, 1.0]),
    "ties": _grid(density=[0.2], scale=[1.0, 2.0]),
    "dare": _grid(drop=[0.5], scale=[0.3, 0.5]),
    "dare_ties": _grid(drop=[0.5], scale=[1.0, 2.0]),
    "breadcrumbs": _grid(density=[0.1], gamma=[0.01], scale=[1.0]),
    "pcb": _grid(density=[0.1], scale=[1.0, 2.0]),
    "regmean": _grid(alpha=[0.9]),
    "adamerging": _grid(mode=["task", "layer"]),
}


@dataclass(frozen=True)
class BenchmarkSettings:
    """Costs of the data-dependent methods and of the statistics."""

    adamerging_steps: int = 100
    adamerging_batch: int = 16
    fisher_examples: int = 64
    gram_examples: int = 256
    n_boot: int = 2000
    seed: int = 0


FULL = BenchmarkSettings()
QUICK = BenchmarkSettings(adamerging_steps=10, fisher_examples=16, gram_examples=64, n_boot=500)


@dataclass
class _Context:
    suite: str
    names: list[str]
    tasks: list[SuiteTask]
    heads: list[Head]
    base: StateDict
    finetunes: list[StateDict]
    trunk: torch.nn.Module
    device: torch.device
    settings: BenchmarkSettings
    cache: dict[str, Any]

    def evaluate(self, sd: Mapping[str, Tensor] | None, split: str) -> dict[str, Tensor]:
        return evaluate_backbone(self.trunk, sd, self.heads, self.tasks, split, device=self.device)


def prepare(
    zoo: Zoo,
    suite: str,
    *,
    device: str | torch.device = "auto",
    settings: BenchmarkSettings = FULL,
) -> _Context:
    """Load a built suite zoo: tasks split exactly as the zoo was built (other split caps would
    move training examples into validation or test), heads, base and fine-tuned backbones."""
    sz = load_suite_zoo(zoo, suite)
    cfg = sz.config
    names = list(cfg.task_names)
    tasks = [
        load_task(n, sizes=cfg.sizes, resolution=cfg.resolution, max_length=cfg.max_length)
        for n in names
    ]
    base = trunk_state(zoo.state_dict(sz.base.id))
    heads, fts = [], []
    for n in names:
        sd = zoo.state_dict(sz.finetunes[n].id)
        heads.append(Head(sd["head.weight"].float(), sd["head.bias"].float()))
        fts.append(trunk_state(sd))
    dev = resolve_device(device)
    trunk = new_backbone(cfg, pretrained=False).trunk
    return _Context(suite, names, tasks, heads, base, fts, trunk, dev, settings, {})


# ---------------------------------------------------------------------------------- methods
def applicable_methods(n_models: int) -> dict[str, str | None]:
    """Every registered method -> None when the benchmark runs it, else the reason it doesn't."""
    out: dict[str, str | None] = {}
    for name in METHODS.names():
        tags = METHODS[name].tags
        if "two_models" in tags and n_models != 2:
            out[name] = f"merges exactly 2 models; the suite has {n_models} fine-tunes"
        elif "data_dependent" in tags and name not in _DATA_ARGS:
            out[name] = "needs data arguments this benchmark does not compute yet"
        else:
            out[name] = None
    return out


def _val_avg(ctx: _Context, sd: Mapping[str, Tensor]) -> float:
    res = ctx.evaluate(sd, "val")
    return float(np.mean([float(res[n].float().mean()) for n in ctx.names]))


def _router(ctx: _Context, sd: Mapping[str, Tensor], task: int | None) -> TaskRouter:
    trunk = copy.deepcopy(ctx.trunk)
    trunk.load_state_dict({k.removeprefix("trunk."): v for k, v in sd.items()})
    return TaskRouter(trunk, ctx.heads, ctx.suite, task).to("cpu").eval()


def _per_finetune(
    ctx: _Context, what: str, fn: Callable[[TaskRouter, SuiteTask], Any]
) -> list[Any]:
    """``fn(router of fine-tune k with head k, task k)`` for every task, computed once."""
    if what not in ctx.cache:
        ctx.cache[what] = [
            fn(_router(ctx, sd, k), task)
            for k, (task, sd) in enumerate(zip(ctx.tasks, ctx.finetunes, strict=True))
        ]
    return ctx.cache[what]


def _fishers(ctx: _Context) -> list[dict[str, Tensor]]:
    """Per-example empirical Fisher of each fine-tune on its own training examples."""
    from ..merge import fisher_diagonal

    n = ctx.settings.fisher_examples

    def fisher(model: TaskRouter, task: SuiteTask) -> dict[str, Tensor]:
        idx = stratified_subset(task.y_train, n, key=f"{task.name}/fisher")  # splits are sorted
        x = router_inputs(ctx.suite, task.x_train[idx])
        return fisher_diagonal(model, x, task.y_train[idx], n_examples=len(x), batch_size=8)

    return _per_finetune(ctx, "fishers", fisher)


def _grams(ctx: _Context) -> list[dict[str, Tensor]]:
    """Input Gram matrices of every linear layer of each fine-tune on its training examples."""
    from ..merge import gram_matrices

    n = ctx.settings.gram_examples

    def gram(model: TaskRouter, task: SuiteTask) -> dict[str, Tensor]:
        idx = stratified_subset(task.y_train, n, key=f"{task.name}/gram")  # splits are sorted
        return gram_matrices(model, router_inputs(ctx.suite, task.x_train[idx]), batch_size=64)

    return _per_finetune(ctx, "grams", gram)


def _adamerging_args(ctx: _Context) -> dict[str, Any]:
    s = ctx.settings
    xs = [
        tag_inputs(ctx.suite, router_inputs(ctx.suite, t.x_val), k) for k, t in enumerate(ctx.tasks)
    ]
    return {
        "model": _router(ctx, ctx.base, None),
        "x": xs,
        "steps": s.adamerging_steps,
        "batch_size": s.adamerging_batch,
    }


_DATA_ARGS: dict[str, Callable[[_Context], dict[str, Any]]] = {
    "fisher": lambda ctx: {"fishers": _fishers(ctx)},
    "regmean": lambda ctx: {"grams": _grams(ctx)},
    "greedy_soup": lambda ctx: {"evaluate": lambda sd: _val_avg(ctx, sd)},
    "adamerging": _adamerging_args,
}


def _merge(ctx: _Context, method: str, hp: Mapping[str, Any]) -> StateDict:
    entry = METHODS[method]
    data = _DATA_ARGS[method](ctx) if method in _DATA_ARGS else {}
    base = ctx.base if "needs_base" in entry.tags or method == "adamerging" else None
    gen = torch.Generator().manual_seed(ctx.settings.seed)
    return merge(method, ctx.finetunes, base=base, generator=gen, **data, **hp)


# ---------------------------------------------------------------------------------- rows
def _row(
    ctx: _Context,
    method: str,
    hp: Mapping[str, Any],
    val_avg: float,
    test: Mapping[str, Tensor],
    individual: Mapping[str, float] | None,
    seconds: float,
) -> dict[str, Any]:
    per_task = {n: float(test[n].float().mean()) for n in ctx.names}
    correct = torch.cat([test[n] for n in ctx.names])
    groups = torch.cat([torch.full((len(test[n]),), i) for i, n in enumerate(ctx.names)])
    ci = bootstrap_ci(
        correct, groups=groups, n_boot=ctx.settings.n_boot, random_state=ctx.settings.seed
    )
    normalized = (
        float(
            np.mean([per_task[n] / individual[n] if individual[n] > 0 else 0.0 for n in ctx.names])
        )
        if individual is not None
        else 1.0
    )
    return {
        "method": method,
        "hyperparameters": dict(hp),
        "val_avg": val_avg,
        "test_avg": ci.estimate,
        "test_avg_ci": [ci.low, ci.high],
        "normalized": normalized,
        "per_task": per_task,
        "seconds": seconds,
        "_correct": correct,  # removed before writing
    }


def run_benchmark(
    zoo: Zoo,
    suite: str,
    *,
    quick: bool = False,
    methods: Sequence[str] | None = None,
    device: str | torch.device = "auto",
    settings: BenchmarkSettings | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run the benchmark on a built suite zoo and return the results record (JSON-ready).

    Args:
        zoo: the workspace zoo holding ``<suite>-base`` and ``<suite>-ft-<task>``.
        suite: "vision" or "text".
        quick: smaller grids (:data:`QUICK_GRIDS`) and cheaper data-dependent methods.
        methods: restrict to these registered methods (default: every applicable one).
        device: "auto" uses CUDA when present.
        settings: overrides the costs (default :data:`FULL`, or :data:`QUICK` with ``quick``).
        progress: receives ``{"method", "k", "n", "message"}``.

    Returns:
        ``{"suite", "rows": [...], "skipped": {method: reason}, "tasks", "config", ...}``.
    """
    check_choice("suite", suite, list(SUITES))
    configure_threads()
    t_start = time.perf_counter()
    settings = settings or (QUICK if quick else FULL)
    ctx = prepare(zoo, suite, device=device, settings=settings)
    n = len(ctx.finetunes)
    status = applicable_methods(n)
    if methods is not None:
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; expected some of {METHODS.names()}")
        status = {m: r for m, r in status.items() if m in methods}
    todo = [m for m, r in status.items() if r is None]
    skipped = {m: r for m, r in status.items() if r is not None}
    if REFERENCE in todo:  # the McNemar reference runs first
        todo.remove(REFERENCE)
        todo.insert(0, REFERENCE)

    def say(method: str, k: int, message: str) -> None:
        if progress is not None:
            progress({"method": method, "k": k, "n": len(todo) + 2, "message": message})

    rows = []
    # pretrained: the base backbone with every task's head
    t0 = time.perf_counter()
    say("pretrained", 1, "pretrained backbone")
    pre_val = ctx.evaluate(ctx.base, "val")
    pre_test = ctx.evaluate(ctx.base, "test")
    pre_val_avg = float(np.mean([float(pre_val[m].float().mean()) for m in ctx.names]))
    # individual: each task by its own fine-tune
    say("individual", 2, "individual fine-tunes")
    ind_val, ind_test = {}, {}
    for k, name in enumerate(ctx.names):
        v = evaluate_backbone(
            ctx.trunk, ctx.finetunes[k], [ctx.heads[k]], [ctx.tasks[k]], "val", device=ctx.device
        )
        t = evaluate_backbone(
            ctx.trunk, ctx.finetunes[k], [ctx.heads[k]], [ctx.tasks[k]], "test", device=ctx.device
        )
        ind_val[name], ind_test[name] = v[name], t[name]
    individual = {m: float(ind_test[m].float().mean()) for m in ctx.names}
    ind_val_avg = float(np.mean([float(ind_val[m].float().mean()) for m in ctx.names]))
    rows.append(
        _row(ctx, "pretrained", {}, pre_val_avg, pre_test, individual, time.perf_counter() - t0)
    )
    rows.append(_row(ctx, "individual", {}, ind_val_avg, ind_test, individual, 0.0))
    grids = QUICK_GRIDS if quick else GRIDS
    searched: dict[str, list[dict[str, Any]]] = {}
    for k, method in enumerate(todo, start=3):
        t0 = time.perf_counter()
        grid = grids.get(method, GRIDS.get(method, [{}]))
        trials = []
        for hp in grid:
            say(method, k, f"{method} {hp}")
            sd = _merge(ctx, method, hp)
            trials.append((_val_avg(ctx, sd), hp, sd))
        best_val, best_hp, best_sd = max(trials, key=lambda t: t[0])
        searched[method] = [{"hyperparameters": hp, "val_avg": v} for v, hp, _ in trials]
        test = ctx.evaluate(best_sd, "test")
        rows.append(
            _row(ctx, method, best_hp, best_val, test, individual, time.perf_counter() - t0)
        )
    correct = {r["method"]: r.pop("_correct") for r in rows}
    for r in rows:
        if REFERENCE in correct and r["method"] != REFERENCE:
            m = mcnemar(correct[r["method"]], correct[REFERENCE])
            r["mcnemar_vs_task_arithmetic"] = {
                "statistic": m.statistic,
                "p_value": m.p_value,
                "n01": m.n01,
                "n10": m.n10,
                "method": m.method,
            }
    return {
        "suite": suite,
        "quick": quick,
        "rows": rows,
        "skipped": skipped,
        "searched": searched,
        "tasks": {
            t.name: {
                "classes": t.n_classes,
                "val": len(t.y_val),
                "test": len(t.y_test),
                "description": t.description,
            }
            for t in ctx.tasks
        },
        "config": load_suite_zoo(zoo, suite).config.to_dict(),
        "settings": settings.__dict__,
        "machine": {
            "cpu": cpu_model(),
            "threads": torch.get_num_threads(),
            "device": str(ctx.device),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": time.perf_counter() - t_start,
    }


__all__ = [
    "FULL",
    "GRIDS",
    "QUICK",
    "QUICK_GRIDS",
    "BenchmarkSettings",
    "applicable_methods",
    "prepare",
    "run_benchmark",
]
