"""Studies built on a :class:`MergeLab`: the coefficient landscape (accuracy over a λ1 × λ2 grid
of two task vectors), sweeps of one hyperparameter and the honest comparison of methods
(bootstrap CI and McNemar p-value against task arithmetic). Each takes a
``progress(done, total, message)`` callback."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._checks import check_int, check_range
from ..merge import METHODS
from ..stats import bootstrap_ci, mcnemar
from .lab import MergeLab, ProgressFn
from .results import MergeEval


# ----------------------------------------------------------------------------- landscape
@dataclass(frozen=True, eq=False)
class LandscapeResult:
    """Accuracy over θ₀ + λ1 τ_i + λ2 τ_j.

    Attributes:
        lam1, lam2: (R1,), (R2,) grid coefficients of the first and second task vector.
        accuracy: (T, R1, R2) per-task accuracy; average: (R1, R2) mean over tasks.
        normalized: (R1, R2) mean normalised accuracy.
        tasks: task names; models: the two model ids.
    """

    lam1: np.ndarray
    lam2: np.ndarray
    accuracy: np.ndarray
    average: np.ndarray
    normalized: np.ndarray
    tasks: tuple[str, ...]
    models: tuple[str, str]

    def best(self) -> tuple[float, float, float]:
        """(λ1, λ2, average accuracy) at the best grid point."""
        i, j = np.unravel_index(int(np.argmax(self.average)), self.average.shape)
        return float(self.lam1[i]), float(self.lam2[j]), float(self.average[i, j])


def coefficient_landscape(
    lab: MergeLab,
    pair: tuple[int, int] = (0, 1),
    *,
    lams: Sequence[float] | None = None,
    full: bool = False,
    progress: ProgressFn | None = None,
) -> LandscapeResult:
    """Accuracy of θ₀ + λ1 τ_i + λ2 τ_j over a grid (other task vectors left out).

    Args:
        lab: a lab in the task-vector setting with at least two models.
        pair: indices (i, j) of the two task vectors.
        lams: grid values for both axes (default 11 points in [0, 1]).
        full: evaluate on the full test sets.
        progress: called as ``progress(done, total, message)``.
    """
    if lab.base is None or lab.n_models < 2:
        raise ValueError("the coefficient landscape needs a base and at least 2 fine-tuned models")
    i, j = pair
    for name, v in (("pair[0]", i), ("pair[1]", j)):
        check_int(name, v, 0, lab.n_models - 1)
    if i == j:
        raise ValueError(f"pair must name two different models, got {pair}")
    grid = np.linspace(0.0, 1.0, 11) if lams is None else np.asarray(lams, dtype=float)
    if grid.ndim != 1 or grid.size < 2 or not np.isfinite(grid).all():
        raise ValueError(f"lams must hold at least 2 finite values, got {lams!r}")
    acc = np.zeros((len(lab.tasks), grid.size, grid.size))
    norm = np.zeros((grid.size, grid.size))
    total = grid.size**2
    for a, l1 in enumerate(grid):
        for b, l2 in enumerate(grid):
            coeffs = [0.0] * lab.n_models
            coeffs[i], coeffs[j] = float(l1), float(l2)
            ev = lab.evaluate(lab.combine(coeffs), full=full)
            acc[:, a, b] = ev.accuracy
            norm[a, b] = ev.average_normalized
            if progress is not None:
                progress(a * grid.size + b + 1, total, f"λ1={l1:.2f}, λ2={l2:.2f}")
    return LandscapeResult(
        grid.copy(),
        grid.copy(),
        acc,
        acc.mean(axis=0),
        norm,
        lab.tasks,
        (lab.model_ids[i], lab.model_ids[j]),
    )


# ----------------------------------------------------------------------------- sweeps
@dataclass(frozen=True, eq=False)
class SweepResult:
    """One hyperparameter swept with the others fixed.

    Attributes:
        method, param: what was swept.
        values: (K,) swept values.
        accuracy: (T, K) per-task accuracy; average, normalized: (K,).
        tasks: task names; reference: per-task fine-tuned accuracy.
    """

    method: str
    param: str
    values: np.ndarray
    accuracy: np.ndarray
    average: np.ndarray
    normalized: np.ndarray
    tasks: tuple[str, ...]
    reference: tuple[float, ...]


def sweep(
    lab: MergeLab,
    method: str,
    param: str,
    values: Sequence[float],
    hyperparameters: Mapping[str, Any] | None = None,
    *,
    full: bool = False,
    data_args: Mapping[str, Any] | None = None,
    seed: int = 0,
    recompute_bn: bool = False,
    progress: ProgressFn | None = None,
) -> SweepResult:
    """Accuracy of ``method`` as ``param`` takes each of ``values`` (density or scale sweeps).

    Args:
        lab: the lab.
        method: a method with a hyperparameter named ``param``.
        values: at least one finite number.
        hyperparameters: the other hyperparameters (``param`` is overridden).
    """
    names = [p.name for p in METHODS[method].params]
    if param not in names:
        raise ValueError(f"param must be a hyperparameter of {method!r} ({names}), got {param!r}")
    vals = np.asarray(values, dtype=float)
    if vals.ndim != 1 or vals.size == 0 or not np.isfinite(vals).all():
        raise ValueError(f"values must be a non-empty list of finite numbers, got {values!r}")
    acc = np.zeros((len(lab.tasks), vals.size))
    norm = np.zeros(vals.size)
    ref: tuple[float, ...] = ()
    for k, v in enumerate(vals):
        hyper = {**dict(hyperparameters or {}), param: float(v)}
        ev = lab.run(
            method, hyper, full=full, data_args=data_args, seed=seed, recompute_bn=recompute_bn
        )
        acc[:, k], norm[k], ref = ev.accuracy, ev.average_normalized, ev.reference
        if progress is not None:
            progress(k + 1, vals.size, f"{param}={v:g}")
    return SweepResult(method, param, vals, acc, acc.mean(axis=0), norm, lab.tasks, ref)


# ----------------------------------------------------------------------------- comparison
@dataclass(frozen=True)
class ComparisonRow:
    """One method in a comparison.

    Attributes:
        method, title: registry name and title.
        average, ci_low, ci_high: average accuracy over tasks with its bootstrap CI
            (stratified by task).
        normalized: average normalised accuracy.
        per_task: accuracy per task.
        p_value, n01, n10: McNemar against the reference method (None for the reference).
        hyperparameters: what was used.
        seconds: merge + evaluation time.
        error: why the method could not run (other fields NaN), or None.
    """

    method: str
    title: str
    average: float
    ci_low: float
    ci_high: float
    normalized: float
    per_task: tuple[float, ...]
    p_value: float | None
    n01: int | None
    n10: int | None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class ComparisonResult:
    """Methods compared on the same models and samples."""

    rows: tuple[ComparisonRow, ...]
    tasks: tuple[str, ...]
    reference_method: str
    level: float
    full: bool
    reference: tuple[float, ...]  # fine-tuned accuracy per task
    base: tuple[float, ...] | None

    def table(self) -> list[dict[str, Any]]:
        """One dict per method (for a DataFrame)."""
        return [
            {
                "method": r.method,
                "average": r.average,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "normalized": r.normalized,
                "p_vs_" + self.reference_method: r.p_value,
                **{f"acc[{t}]": a for t, a in zip(self.tasks, r.per_task, strict=True)},
                "seconds": r.seconds,
                "error": r.error or "",
            }
            for r in self.rows
        ]


def compare_methods(
    lab: MergeLab,
    methods: Sequence[str] | None = None,
    *,
    hyperparameters: Mapping[str, Mapping[str, Any]] | None = None,
    data_args: Callable[[str], Mapping[str, Any]] | None = None,
    reference: str = "task_arithmetic",
    full: bool = True,
    n_boot: int = 2000,
    level: float = 0.95,
    random_state: int = 0,
    progress: ProgressFn | None = None,
) -> ComparisonResult:
    """Run every method on the same models and samples; CI and McNemar p-value for each.

    Args:
        lab: the lab.
        methods: method names (default: all that apply, :meth:`MergeLab.available_methods`).
        hyperparameters: per-method hyperparameters (default: each method's defaults).
        data_args: ``data_args(method) -> dict`` for data-dependent methods (called only for
            methods tagged ``data_dependent``).
        reference: method the McNemar tests compare against (task arithmetic, or the first
            method when it does not apply).
        full: evaluate on the full test sets (default) or the fast subset.
        n_boot, level, random_state: bootstrap settings.
        progress: ``progress(done, total, message)``.

    A method that fails is reported with its error message instead of stopping the rest.
    """
    names = list(methods) if methods is not None else lab.available_methods()
    if not names:
        raise ValueError("methods must name at least one method, got none")
    for m in names:
        if m not in lab.available_methods():
            raise ValueError(f"methods must be among {lab.available_methods()}, got {m!r}")
    check_range("level", level, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    ref_name = reference if reference in names else names[0]
    order = [ref_name] + [m for m in names if m != ref_name]
    hyper_all = dict(hyperparameters or {})
    evals: dict[str, MergeEval] = {}
    errors: dict[str, str] = {}
    for k, m in enumerate(order):
        if progress is not None:
            progress(k, len(order), f"merging with {m}")
        hyper = {**METHODS[m].defaults(), **dict(hyper_all.get(m, {}))}
        hyper = {h: v for h, v in hyper.items() if v is not None}
        try:
            extra = (
                data_args(m)
                if data_args is not None and "data_dependent" in METHODS[m].tags
                else None
            )
            evals[m] = lab.run(m, hyper, full=full, data_args=extra, seed=random_state)
        except (ValueError, TypeError, RuntimeError) as err:
            errors[m] = str(err) or type(err).__name__
    if progress is not None:
        progress(len(order), len(order), "done")
    ref_ev = evals.get(ref_name)
    rows = []
    for m in order:
        ev = evals.get(m)
        hyper = {**METHODS[m].defaults(), **dict(hyper_all.get(m, {}))}
        if ev is None:
            nan = math.nan
            rows.append(
                ComparisonRow(
                    m,
                    METHODS[m].title,
                    nan,
                    nan,
                    nan,
                    nan,
                    (nan,) * len(lab.tasks),
                    None,
                    None,
                    None,
                    hyper,
                    0.0,
                    errors[m],
                )
            )
            continue
        ci = bootstrap_ci(
            ev.correct, groups=ev.groups, n_boot=n_boot, level=level, random_state=random_state
        )
        test = mcnemar(ref_ev.correct, ev.correct) if ref_ev is not None and m != ref_name else None
        rows.append(
            ComparisonRow(
                m,
                METHODS[m].title,
                ev.average,
                ci.low,
                ci.high,
                ev.average_normalized,
                ev.accuracy,
                None if test is None else test.p_value,
                None if test is None else test.n01,
                None if test is None else test.n10,
                hyper,
                ev.seconds,
            )
        )
    ref, base = lab.references(full)
    return ComparisonResult(tuple(rows), lab.tasks, ref_name, float(level), full, ref, base)
