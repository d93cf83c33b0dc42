"""Merge Lab recipes: a merge's per-task accuracy, the coefficient landscape, a sweep of one
hyperparameter, the comparison of methods and the interference diagnostics.

Every compute function starts from the lab args (``models``, ``base``, ``n_per_task``,
``random_state``, ``align``, ``device``: the page's selection and its seeded evaluation subset)
and builds the :class:`core.merge_eval.MergeLab` from the zoo, or takes the page's prepared one
(``lab=``, which holds the data-dependent inputs already computed). ``progress`` and ``lab`` are
runtime arguments: never part of the JSON args.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.figures.interference import interference_figure
from core.figures.merge import (
    merge_accuracy_figure,
    merge_comparison_figure,
    merge_landscape_figure,
    merge_sweep_figure,
)

from . import register_recipe
from ._args import choice, need_ids, need_int, need_names, need_number, need_str, optional

RUNTIME_ARGS = ("lab", "progress")  # passed by the page, never stored in a recipe
LAB_ARGS = ("models", "base", "n_per_task", "random_state", "align", "device")


# ---------------------------------------------------------------------------- the lab
def check_lab_args(args: Mapping[str, Any]) -> None:
    """The lab args of every Merge Lab recipe, checked without loading anything."""
    bad = [name for name in RUNTIME_ARGS if name in args]
    if bad:
        raise ValueError(f"recipe args must not name the runtime arguments {bad} (JSON only)")
    need_names(args, "models")
    choice(args, "align", ("none", "weight", "activation"), "none")
    if args.get("base") is not None:
        need_str(args, "base")
    if args.get("device") is not None:
        need_str(args, "device")
    optional(args, n_per_task=1, random_state=0)


def lab_for(
    zoo: Any,
    lab: Any,
    models: list[str],
    base: str | None,
    n_per_task: int | None,
    random_state: int,
    align: str,
    device: str,
) -> Any:
    """``lab`` after checking that it is the lab of these args, or a new one from the zoo."""
    from core.merge_eval import DEFAULT_N_PER_TASK, lab_from_zoo

    n = DEFAULT_N_PER_TASK if n_per_task is None else n_per_task
    if lab is None:
        return lab_from_zoo(
            zoo,
            list(models),
            base_id=base,
            n_per_task=n,
            random_state=random_state,
            device=device,
            align=align,
        )
    want = (tuple(models), base, n, random_state)
    got = (tuple(lab.model_ids), lab.base_id, lab.n_per_task, lab.random_state)
    if got != want:
        raise ValueError(
            f"lab must be the lab of the recipe args (models, base, n_per_task, random_state) "
            f"{want}, got {got}"
        )
    return lab


# ---------------------------------------------------------------------------- accuracy
def check_accuracy_args(args: Mapping[str, Any]) -> None:
    check_lab_args(args)
    need_str(args, "method")
    _check_hyper(args.get("hyperparameters", {}), "hyperparameters")
    optional(args, seed=0)
    choice(args, "chart", ("bars", "radar"), "bars")


def merged_accuracy(
    zoo: Any,
    *,
    models: list[str],
    method: str,
    hyperparameters: dict[str, Any] | None = None,
    seed: int = 0,
    recompute_bn: bool = False,
    full: bool = False,
    base: str | None = None,
    n_per_task: int | None = None,
    random_state: int = 0,
    align: str = "none",
    device: str = "cpu",
    lab: Any = None,
) -> Any:
    """Merge the lab's models with ``method`` and its ``hyperparameters`` (``seed`` seeds the
    random methods) and evaluate each task, on the seeded subset or the ``full`` test sets.

    Returns a :class:`core.merge_eval.MergeEval`."""
    lab = lab_for(zoo, lab, models, base, n_per_task, random_state, align, device)
    return lab.run(
        method, dict(hyperparameters or {}), full=full, seed=seed, recompute_bn=recompute_bn
    )


# ---------------------------------------------------------------------------- landscape
def check_landscape_args(args: Mapping[str, Any]) -> None:
    check_lab_args(args)
    need_str(args, "base")
    pair = need_ids(args, "pair", 2)
    if pair[0] == pair[1] or not set(pair) <= set(args["models"]):
        raise ValueError(
            f"recipe args['pair'] must be two different ids of args['models'], got {pair!r}"
        )
    if not need_number(args, "low") < need_number(args, "high"):
        raise ValueError(
            f"recipe args['low'] must be below args['high'], got {args['low']!r}, {args['high']!r}"
        )
    need_int(args, "n_points", 2)
    if "method" in args:
        need_str(args, "method")
    _check_hyper(args.get("hyperparameters", {}), "hyperparameters")


def coefficient_landscape(
    zoo: Any,
    *,
    models: list[str],
    base: str,
    pair: list[str],
    low: float,
    high: float,
    n_points: int,
    full: bool = False,
    n_per_task: int | None = None,
    random_state: int = 0,
    align: str = "none",
    device: str = "cpu",
    lab: Any = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Accuracy of θ₀ + λ1·τ_i + λ2·τ_j over the ``n_points`` × ``n_points`` grid from ``low``
    to ``high`` of the two task vectors of ``pair`` (the other task vectors left out).

    Returns ``landscape`` (a :class:`core.merge_eval.LandscapeResult`), ``pair`` (the indices
    of the two models) and ``n_models`` (for the sliders' point of task arithmetic)."""
    from core.merge_eval import coefficient_landscape as landscape
    from core.merge_eval import linear_grid

    lab = lab_for(zoo, lab, models, base, n_per_task, random_state, align, device)
    idx = (list(models).index(pair[0]), list(models).index(pair[1]))
    lams = linear_grid(low, high, n_points)
    land = landscape(lab, idx, lams=lams, full=full, progress=progress)
    return {"landscape": land, "pair": idx, "n_models": len(models)}


# ---------------------------------------------------------------------------- sweep
def check_sweep_args(args: Mapping[str, Any]) -> None:
    check_lab_args(args)
    need_str(args, "method")
    need_str(args, "param")
    need_int(args, "n_points", 2)
    _check_hyper(args.get("hyperparameters", {}), "hyperparameters")
    optional(args, seed=0)


def hyperparameter_sweep(
    zoo: Any,
    *,
    models: list[str],
    method: str,
    param: str,
    n_points: int,
    hyperparameters: dict[str, Any] | None = None,
    seed: int = 0,
    recompute_bn: bool = False,
    base: str | None = None,
    n_per_task: int | None = None,
    random_state: int = 0,
    align: str = "none",
    device: str = "cpu",
    lab: Any = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Accuracy of ``method`` as ``param`` takes ``n_points`` values over its slider range
    (plus 0 and the current value, ``hyperparameters[param]``), the others held fixed.

    Returns ``sweep`` (a :class:`core.merge_eval.SweepResult`) and ``current``."""
    from core.merge_eval import sweep, sweep_values

    lab = lab_for(zoo, lab, models, base, n_per_task, random_state, align, device)
    hyper = dict(hyperparameters or {})
    current = hyper.get(param)
    values = sweep_values(method, param, n_points, current=current)
    result = sweep(
        lab, method, param, values, hyper, seed=seed, recompute_bn=recompute_bn, progress=progress
    )
    return {"sweep": result, "current": current}


# ---------------------------------------------------------------------------- comparison
def check_comparison_args(args: Mapping[str, Any]) -> None:
    check_lab_args(args)
    need_names(args, "methods")
    hyper = args.get("hyperparameters", {})
    if not isinstance(hyper, Mapping) or not all(isinstance(h, Mapping) for h in hyper.values()):
        raise ValueError(
            f"recipe args['hyperparameters'] must map method names to dicts, got {hyper!r}"
        )
    optional(args, seed=0)
    choice(args, "chart", ("methods", "tasks"), "methods")


def method_comparison(
    zoo: Any,
    *,
    models: list[str],
    methods: list[str],
    hyperparameters: dict[str, dict[str, Any]] | None = None,
    full: bool = True,
    seed: int = 0,
    base: str | None = None,
    n_per_task: int | None = None,
    random_state: int = 0,
    align: str = "none",
    device: str = "cpu",
    lab: Any = None,
    progress: Any = None,
) -> Any:
    """Every method of ``methods`` on the same models and samples (``hyperparameters``: method
    -> its hyperparameters, the others use their defaults), with bootstrap CIs seeded by
    ``seed`` and McNemar p-values against task arithmetic.

    Returns a :class:`core.merge_eval.ComparisonResult`."""
    from core.merge_eval import compare_methods

    lab = lab_for(zoo, lab, models, base, n_per_task, random_state, align, device)
    return compare_methods(
        lab,
        list(methods),
        hyperparameters=dict(hyperparameters or {}),
        full=full,
        random_state=seed,
        progress=progress,
    )


# ---------------------------------------------------------------------------- interference
def check_interference_args(args: Mapping[str, Any]) -> None:
    check_lab_args(args)
    need_str(args, "base")
    for name in ("density", "drop"):
        if args.get(name) is not None:
            need_number(args, name)
    choice(args, "trim", ("global", "tensor"), "global")
    choice(args, "chart", ("cosine", "layers", "keep"), "cosine")
    choice(args, "method", ("ties", "dare", "dare_ties"), "ties")
    optional(args, seed=0)


def task_vector_interference(
    zoo: Any,
    *,
    models: list[str],
    base: str,
    density: float = 0.2,
    drop: float = 0.5,
    trim: str = "global",
    seed: int = 0,
    n_per_task: int | None = None,
    random_state: int = 0,
    align: str = "none",
    device: str = "cpu",
    lab: Any = None,
) -> Any:
    """Where the lab's task vectors agree or fight: cosine similarities, sign conflicts and
    ‖τ‖ per layer, and what TIES (``density``, ``trim``) and DARE (``drop``, ``seed``) keep.

    Returns a :class:`core.merge.diagnostics.InterferenceReport`."""
    from core.merge.diagnostics import interference

    lab = lab_for(zoo, lab, models, base, n_per_task, random_state, align, device)
    return interference(
        list(lab.task_vectors),
        names=lab.model_ids,
        density=density,
        drop=drop,
        trim=trim,
        seed=seed,
    )


def _check_hyper(value: Any, name: str) -> None:
    if not isinstance(value, Mapping):
        raise ValueError(f"recipe args[{name!r}] must be a dict of hyperparameters, got {value!r}")


_LAB = dict(model_args=("models", "base"))
register_recipe(
    "merge_accuracy",
    compute=merged_accuracy,
    figure=merge_accuracy_figure,
    description="Per-task accuracy of a merged model",
    figure_args=("chart", "title"),
    check=check_accuracy_args,
    **_LAB,  # type: ignore[arg-type]
)
register_recipe(
    "merge_landscape",
    compute=coefficient_landscape,
    figure=merge_landscape_figure,
    description="Accuracy over the λ1 × λ2 grid of two task vectors",
    figure_args=("metric", "method", "hyperparameters"),  # the sliders' point: drawn, not computed
    check=check_landscape_args,
    **_LAB,  # type: ignore[arg-type]
)
register_recipe(
    "merge_sweep",
    compute=hyperparameter_sweep,
    figure=merge_sweep_figure,
    description="Accuracy of a merge as one hyperparameter varies",
    check=check_sweep_args,
    **_LAB,  # type: ignore[arg-type]
)
register_recipe(
    "merge_comparison",
    compute=method_comparison,
    figure=merge_comparison_figure,
    description="Merge methods compared: accuracy with bootstrap CI and McNemar p-values",
    figure_args=("chart",),
    check=check_comparison_args,
    **_LAB,  # type: ignore[arg-type]
)
register_recipe(
    "merge_interference",
    compute=task_vector_interference,
    figure=interference_figure,
    description="Interference between task vectors: cosine, sign conflicts, what TIES/DARE keep",
    figure_args=("chart", "method"),
    check=check_interference_args,
    **_LAB,  # type: ignore[arg-type]
)
