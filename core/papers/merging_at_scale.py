"""Held-in and held-out performance as the number of merged experts grows: the study of
"What Matters for Model Merging at Scale?" (Yadav et al., 2024, arXiv 2410.03617) on a suite zoo.

The paper merges 2, 4, 6 and 8 fully fine-tuned experts of one base (PaLM-2, 1B-64B, with and
without instruction tuning) with Averaging, Task Arithmetic, DARE-TIES and TIES, and reports

* **held-in** performance: the merged model on the experts' own tasks, normalised by each
  expert's score on its task (1.0 = no loss from merging), which falls as more experts are
  merged, less for stronger / larger bases;
* **held-out** performance: the merged model on tasks none of the merged experts saw, which
  rises with the number of experts (merging improves zero-shot generalisation);
* the base model's strength as a factor (instruction-tuned bases merge better).

Variant implemented here, on the workbench's suites (one pretrained backbone, task heads fixed
before fine-tuning, see :mod:`core.benchmark.protocol`):

* experts are the suite's fine-tunes; for each of ``n_orders`` seeded random orders of the
  tasks, the first k experts are merged, k = 1 .. N (every subset is merged once, whatever
  order it came from);
* each method's hyperparameters are chosen per subset on the held-in *validation* split (the
  grid of ``grids``, by default the benchmark's quick grids), then the chosen merge is scored on
  the *test* split: no test example informs a choice;
* held-in = mean over merged tasks t of acc(merged, t) / acc(expert t, t); held-out = mean over
  the other tasks u of acc(merged, u) / acc(pretrained, u) — the fixed head of an unseen task on
  the merged backbone against the same head on the pretrained backbone (the paper's held-out
  tasks are zero-shot prompts; a ratio above 1 means merging the others helped the unseen task);
* base strength is reported as the pretrained backbone's mean accuracy normalised by the
  experts' (:attr:`ScaleStudy.base_strength`); comparing suites (two backbones) is the factor we
  can vary offline. The paper's multitask baseline needs a multitask fine-tune the suites do not
  hold, and is not drawn.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._checks import check_int
from ..merge import METHODS, merge
from ..params import StateDict
from ..zoo import Zoo

Progress = Callable[[int, int], None] | None  # (done, total)

DEFAULT_METHODS = ("average", "task_arithmetic", "ties", "dare_ties")


def default_grids() -> dict[str, list[dict[str, Any]]]:
    """The benchmark's quick validation grids for the paper's four methods."""
    from ..benchmark.run import QUICK_GRIDS

    return {m: [dict(hp) for hp in QUICK_GRIDS.get(m, [{}])] for m in DEFAULT_METHODS}


@dataclass
class ScaleStudy:
    """The sweep's result.

    ``rows``: one per (order, k, method): ``order`` (index), ``k``, ``method``, ``tasks``
    (merged), ``held_in`` / ``held_out`` (normalised, ``held_out`` is NaN at k = N),
    ``held_in_acc`` / ``held_out_acc`` (mean raw test accuracy), ``hyperparameters`` (chosen on
    validation) and ``val_held_in``.
    """

    suite: str
    tasks: list[str]
    methods: list[str]
    orders: list[list[str]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    pretrained: dict[str, float] = field(default_factory=dict)  # test accuracy per task
    individual: dict[str, float] = field(default_factory=dict)  # each expert on its task, test
    n_per_task: dict[str, int] = field(default_factory=dict)  # test examples per task

    @property
    def base_strength(self) -> float:
        """Mean over tasks of pretrained / expert test accuracy (1.0: the base needs no fine-tune)."""
        return float(
            np.mean([self.pretrained[t] / max(self.individual[t], 1e-12) for t in self.tasks])
        )

    def summary(self) -> list[dict[str, Any]]:
        """Per (method, k): mean, min and max over orders of held-in and held-out."""
        out = []
        for method in self.methods:
            for k in range(1, len(self.tasks) + 1):
                sel = [r for r in self.rows if r["method"] == method and r["k"] == k]
                if not sel:
                    continue
                row: dict[str, Any] = {"method": method, "k": k, "orders": len(sel)}
                for col in ("held_in", "held_out"):
                    vals = [r[col] for r in sel if not math.isnan(r[col])]
                    row[col] = float(np.mean(vals)) if vals else float("nan")
                    row[col + "_min"] = float(np.min(vals)) if vals else float("nan")
                    row[col + "_max"] = float(np.max(vals)) if vals else float("nan")
                out.append(row)
        return out


def task_orders(tasks: Sequence[str], n_orders: int, seed: int) -> list[list[str]]:
    """``n_orders`` distinct seeded random orders of ``tasks`` (fewer when fewer exist)."""
    check_int("n_orders", n_orders, 1)
    check_int("seed", seed, 0, 2**31 - 1)
    n_orders = min(n_orders, math.factorial(len(tasks)))
    rng = np.random.default_rng(seed)
    seen: list[tuple[str, ...]] = []
    while len(seen) < n_orders:
        perm = tuple(tasks[i] for i in rng.permutation(len(tasks)))
        if perm not in seen:
            seen.append(perm)
    return [list(p) for p in seen]


def _check_methods(methods: Sequence[str], grids: Mapping[str, Any]) -> list[str]:
    if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
        raise ValueError(f"methods must be a non-empty list of method names, got {methods!r}")
    out = []
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"methods must name registered methods {METHODS.names()}, got {m!r}")
        tags = METHODS[m].tags
        if "data_dependent" in tags or "per_task" in tags or "two_models" in tags:
            raise ValueError(
                f"methods must be data-free merges of any number of models; {m!r} is tagged "
                f"{sorted(tags)}"
            )
        if m not in grids:
            raise ValueError(f"grids must have an entry for method {m!r}; it has {sorted(grids)}")
        out.append(m)
    return out


def merging_at_scale_study(
    zoo: Zoo,
    suite: str,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    n_orders: int = 3,
    val_per_task: int | None = 128,
    test_per_task: int | None = None,
    grids: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Progress = None,
) -> ScaleStudy:
    """Run the sweep on the built suite zoo ``suite`` of ``zoo``.

    Args:
        zoo: the workspace zoo holding ``<suite>-base`` and ``<suite>-ft-<task>``.
        suite: "vision" or "text".
        methods: data-free registered methods (default: the paper's four).
        n_orders: seeded random task orders (the paper's random expert subsets).
        val_per_task: validation examples per task for the hyperparameter choice (stratified;
            None: all).
        test_per_task: test examples per task for the reported numbers (None: all).
        grids: method -> hyperparameter settings to choose from (default :func:`default_grids`).
        seed: seed of the orders, the subsets and DARE's drops.
        device: where the backbone runs.
        progress: ``progress(done, total)`` after every merge scored.
    """
    from ..suite_lab import SuiteLab

    grids = default_grids() if grids is None else dict(grids)
    methods = _check_methods(methods, grids)
    for m in methods:
        if not isinstance(grids[m], Sequence) or not grids[m]:
            raise ValueError(f"grids[{m!r}] must be a non-empty list of settings, got {grids[m]!r}")
    val = SuiteLab(zoo, suite, split="val", n_per_task=val_per_task, seed=seed, device=device)
    test = SuiteLab(zoo, suite, split="test", n_per_task=test_per_task, seed=seed, device=device)
    tasks = list(val.tasks)
    orders = task_orders(tasks, n_orders, seed)
    refs_val, refs_test = val.references(), test.references()
    subsets = list(
        dict.fromkeys(frozenset(o[:k]) for o in orders for k in range(1, len(tasks) + 1))
    )
    total = len(subsets) * sum(len(grids[m]) + 1 for m in methods)
    done = 0

    def held(
        acc: Mapping[str, float], refs: Mapping[str, Mapping[str, float]], merged: frozenset[str]
    ) -> tuple[float, float, float, float]:
        ins = [t for t in tasks if t in merged]
        outs = [t for t in tasks if t not in merged]
        h_in = float(np.mean([acc[t] / max(refs["individual"][t], 1e-12) for t in ins]))
        h_out = (
            float(np.mean([acc[t] / max(refs["pretrained"][t], 1e-12) for t in outs]))
            if outs
            else float("nan")
        )
        raw_in = float(np.mean([acc[t] for t in ins]))
        raw_out = float(np.mean([acc[t] for t in outs])) if outs else float("nan")
        return h_in, h_out, raw_in, raw_out

    def scores(lab: SuiteLab, sd: StateDict) -> dict[str, float]:
        return {t: float(c.float().mean()) for t, c in lab.predict(sd).items()}

    results: dict[tuple[frozenset[str], str], dict[str, Any]] = {}
    for subset in subsets:
        idx = [tasks.index(t) for t in tasks if t in subset]
        for method in methods:
            base = val.base if "needs_base" in METHODS[method].tags else None
            trials = []
            for hp in grids[method]:
                gen = torch.Generator().manual_seed(seed)
                sd = merge(
                    method, [val.finetunes[i] for i in idx], base=base, generator=gen, **dict(hp)
                )
                trials.append((held(scores(val, sd), refs_val, subset)[0], dict(hp), sd))
                done += 1
                if progress is not None:
                    progress(done, total)
            best_val, best_hp, best_sd = max(trials, key=lambda t: t[0])
            h_in, h_out, raw_in, raw_out = held(scores(test, best_sd), refs_test, subset)
            done += 1
            if progress is not None:
                progress(done, total)
            results[(subset, method)] = {
                "held_in": h_in,
                "held_out": h_out,
                "held_in_acc": raw_in,
                "held_out_acc": raw_out,
                "hyperparameters": best_hp,
                "val_held_in": best_val,
            }
    rows = []
    for i, order in enumerate(orders):
        for k, method in itertools.product(range(1, len(tasks) + 1), methods):
            subset = frozenset(order[:k])
            rows.append(
                {
                    "order": i,
                    "k": k,
                    "method": method,
                    "tasks": order[:k],
                    **results[(subset, method)],
                }
            )
    return ScaleStudy(
        suite=suite,
        tasks=tasks,
        methods=list(methods),
        orders=orders,
        rows=rows,
        pretrained=dict(refs_test["pretrained"]),
        individual=dict(refs_test["individual"]),
        n_per_task=dict(test.n_per_task),
    )


__all__ = [
    "DEFAULT_METHODS",
    "ScaleStudy",
    "default_grids",
    "merging_at_scale_study",
    "task_orders",
]
