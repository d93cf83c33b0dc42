"""Merge sweeps: a grid or random search over method x hyperparameters, each point merged
from zoo models and evaluated per task, results stored in the workspace.

A sweep file (YAML) looks like::

    name: ta-vs-ties
    models: [mlp-ft-mnist, mlp-ft-mnist_inverted, mlp-ft-mnist_rotated, mlp-ft-digits]
    base: mlp-base
    tasks: [mnist, mnist_inverted]     # default: the models' own tasks
    n_test: 1000                       # test examples per task (default: all)
    search: grid                       # or random (then n_samples points per method)
    n_samples: 8
    seed: 0                            # random search and the random methods (DARE)
    methods:
      - method: task_arithmetic
        params: {scale: [0.1, 0.3, 0.5, 1.0]}          # a list is a grid axis
      - method: ties
        params:
          scale: {low: 0.5, high: 1.5}                  # a range: random search, or num= in a grid
          density: [0.1, 0.2]
          weights: {value: [1.0, 1.0, 0.5, 0.5]}        # a fixed list-valued hyperparameter

Every point has a key ``<name>/<method>/<hash of everything that defines it>`` and is stored
with ``zoo.put_record("sweep", key, ...)`` as soon as it finishes, so a rerun of an interrupted
sweep skips what is done. :func:`load_sweep` gives the table the pages plot. ``backend="ray"``
runs the same points as Ray tasks (a local cluster by default, or ``address=`` of an existing
one) and gives the same numbers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .params import StateDict
from .zoo import Zoo

RECORD_KIND = "sweep"
MAX_POINTS = 100_000  # a sweep with more points is refused before anything runs
EVAL_VERSION = 2  # part of every point's key: 2 = the Merge Lab's seeded stratified subsets
ProgressFn = Callable[[dict[str, Any]], None]
BACKENDS = ("inprocess", "ray")


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep.

    Attributes:
        name: sweep name (records are grouped by it).
        models: zoo ids of the models to merge.
        base: zoo id of the pre-trained model, or None.
        tasks: tasks evaluated per point (empty: the models' own tasks).
        n_test: test examples per task (None: all).
        search: "grid" or "random".
        n_samples: points per method in a random search.
        seed: seeds the random search and the random merge methods.
        methods: ``(method, {param: space})`` pairs.
    """

    name: str
    models: tuple[str, ...]
    base: str | None = None
    tasks: tuple[str, ...] = ()
    n_test: int | None = None
    search: str = "grid"
    n_samples: int = 8
    seed: int = 0
    methods: tuple[tuple[str, dict[str, Any]], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Point:
    """One merge to run: its record key, method and hyperparameters."""

    key: str
    index: int
    method: str
    params: dict[str, Any]


def load_sweep_spec(source: str | Path | Mapping[str, Any]) -> SweepSpec:
    """Read a sweep from a YAML file or a mapping (see the module docstring).

    Raises:
        ValueError: missing or malformed fields, unknown methods or search kinds.
    """
    import yaml

    if isinstance(source, str | Path):
        p = Path(source)
        if not p.is_file():
            raise ValueError(f"sweep file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:  # syntax errors and tags such as !!python/object
            raise ValueError(f"sweep file {p} is not valid YAML: {err}") from None
    elif isinstance(source, Mapping):
        raw = dict(source)
    else:
        raise TypeError(f"source must be a path or a mapping, got {type(source).__name__}")
    if not isinstance(raw, dict):
        raise ValueError(f"sweep must be a mapping at the top level, got {type(raw).__name__}")
    known = {"name", "models", "base", "tasks", "n_test", "search", "n_samples", "seed", "methods"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown sweep key(s) {unknown}; expected some of {sorted(known)}")
    from .merge import METHODS

    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a non-empty string without '/', got {name!r}")
    models = raw.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ValueError(f"models must be a non-empty list of zoo ids, got {models!r}")
    search = raw.get("search", "grid")
    if search not in ("grid", "random"):
        raise ValueError(f"search must be 'grid' or 'random', got {search!r}")
    methods = []
    for i, m in enumerate(raw.get("methods") or []):
        if not isinstance(m, dict) or "method" not in m:
            raise ValueError(f"methods[{i}] must be a mapping with 'method', got {m!r}")
        if not isinstance(m["method"], str) or m["method"] not in METHODS:
            raise ValueError(
                f"methods[{i}].method must be one of {sorted(METHODS.names())}, got {m['method']!r}"
            )
        params = m.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError(f"methods[{i}].params must be a mapping, got {params!r}")
        for pname, space in params.items():
            _check_space(str(m["method"]), pname, space, f"methods[{i}].params.{pname}")
        methods.append((str(m["method"]), dict(params)))
    if not methods:
        raise ValueError("methods must list at least one {method, params} entry")
    n_test = raw.get("n_test")
    if n_test is not None and (
        not isinstance(n_test, int) or isinstance(n_test, bool) or n_test < 1
    ):
        raise ValueError(f"n_test must be a positive int or null, got {n_test!r}")
    n_samples = raw.get("n_samples", 8)
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    tasks = raw.get("tasks") or []
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"tasks must be a list of task names, got {tasks!r}")
    base = raw.get("base")
    if base is not None and not isinstance(base, str):
        raise ValueError(f"base must be a zoo id or null, got {base!r}")
    return SweepSpec(
        name, tuple(models), base, tuple(tasks), n_test, search, n_samples, seed, tuple(methods)
    )


def sweep_points(spec: SweepSpec, checkpoints: Mapping[str, str] | None = None) -> list[Point]:
    """Every point of the sweep, in a fixed order (grid: product order; random: seeded draws).

    ``checkpoints`` (zoo id -> sha256 of its file) enters every key, so a model replaced under
    the same id gets new points instead of the old model's results."""
    if not isinstance(spec, SweepSpec):
        raise TypeError(f"spec must be a SweepSpec, got {type(spec).__name__}")
    n = count_points(spec)
    if n > MAX_POINTS:
        raise ValueError(
            f"sweep {spec.name!r} has {n:,} points, more than the limit of {MAX_POINTS:,}; "
            "use fewer values (or search: random with n_samples)"
        )
    rng = np.random.default_rng(spec.seed)
    points: list[Point] = []
    for method, space in spec.methods:
        names = sorted(space)
        if spec.search == "grid":
            axes = [_grid_axis(method, n, space[n]) for n in names]
            combos = [dict(zip(names, c, strict=True)) for c in itertools.product(*axes)]
        else:
            combos = [
                {n: _draw(method, n, space[n], rng) for n in names} for _ in range(spec.n_samples)
            ]
        for params in combos:
            key = _key(spec, method, params, checkpoints)
            points.append(Point(key, len(points), method, params))
    return points


def _grid_axis(method: str, name: str, space: Any) -> list[Any]:
    if isinstance(space, list):
        if not space:
            raise ValueError(f"{method}.{name}: an empty list has no values")
        return list(space)
    if isinstance(space, dict):
        if "value" in space:
            return [space["value"]]
        if "values" in space:
            if not isinstance(space["values"], list) or not space["values"]:
                raise ValueError(f"{method}.{name}: values has no values, got {space['values']!r}")
            return list(space["values"])
        if "low" in space and "high" in space:
            num = space.get("num")
            if not isinstance(num, int) or num < 1:
                raise ValueError(
                    f"{method}.{name}: a range in a grid needs num (int >= 1), got {num!r}"
                )
            if space.get("log"):
                return [float(x) for x in np.geomspace(space["low"], space["high"], num)]
            return [float(x) for x in np.linspace(space["low"], space["high"], num)]
        raise ValueError(
            f"{method}.{name}: expected a list, value, values or low/high, got {space!r}"
        )
    return [space]


def _check_space(method: str, name: str, space: Any, where: str) -> None:
    """Refuse a hyperparameter space the sweep cannot run: unknown name, no values, a value
    of the wrong type or outside the hyperparameter's range, a log range reaching 0."""
    from .merge import METHODS

    hypers = {h.name: h for h in METHODS[method].params}
    if name not in hypers:
        raise ValueError(
            f"{where}: {method} has no hyperparameter {name!r}; expected one of {sorted(hypers)}"
        )
    h = hypers[name]
    values: list[Any]
    if isinstance(space, list):
        if not space:
            raise ValueError(f"{where}: an empty list has no values")
        values = list(space)
    elif isinstance(space, dict):
        known = {"value", "values", "low", "high", "num", "log"}
        if set(space) - known or not (
            {"value", "values"} & set(space) or {"low", "high"} <= set(space)
        ):
            raise ValueError(
                f"{where}: expected a list, {{value}}, {{values}} or {{low, high[, num, log]}}, "
                f"got {space!r}"
            )
        if "value" in space:
            values = [space["value"]]
        elif "values" in space:
            if not isinstance(space["values"], list) or not space["values"]:
                raise ValueError(f"{where}: values has no values, got {space['values']!r}")
            values = list(space["values"])
        else:
            lo, hi = space["low"], space["high"]
            for end, v in (("low", lo), ("high", hi)):
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise ValueError(f"{where}: {end} must be a finite number, got {v!r}")
            if lo > hi:
                raise ValueError(f"{where}: low must not exceed high, got low={lo}, high={hi}")
            num = space.get("num")
            if num is not None and (isinstance(num, bool) or not isinstance(num, int) or num < 1):
                raise ValueError(f"{where}: num must be an int >= 1, got {num!r}")
            if space.get("log") and not lo > 0:
                raise ValueError(f"{where}: a log range needs low > 0, got low={lo}")
            values = [lo, hi]
    else:
        values = [space]
    for v in values:
        _check_value(h, v, where)


def _check_value(h: Any, v: Any, where: str) -> None:
    if h.kind in ("float", "int"):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{where}: {h.name} must be a finite number, got {v!r}")
        if (h.low is not None and v < h.low) or (h.high is not None and v > h.high):
            raise ValueError(f"{where}: {h.name} must be in [{h.low}, {h.high}], got {v!r}")
    elif h.kind == "floats":
        if v is not None and (
            not isinstance(v, list)
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        ):
            raise ValueError(f"{where}: {h.name} must be a list of numbers, got {v!r}")
    elif h.kind == "choice" and h.choices and v not in h.choices:
        raise ValueError(f"{where}: {h.name} must be one of {list(h.choices)}, got {v!r}")
    elif h.kind == "bool" and not isinstance(v, bool):
        raise ValueError(f"{where}: {h.name} must be true or false, got {v!r}")


def count_points(spec: SweepSpec) -> int:
    """Points of the sweep, computed without building them."""
    if spec.search == "random":
        return spec.n_samples * len(spec.methods)
    total = 0
    for method, space in spec.methods:
        size = 1
        for name in space:
            s = space[name]
            if isinstance(s, list):
                size *= len(s)
            elif isinstance(s, dict) and "values" in s:
                size *= len(s["values"])
            elif isinstance(s, dict) and "low" in s and "value" not in s:
                num = s.get("num")
                if not isinstance(num, int) or num < 1:
                    raise ValueError(
                        f"{method}.{name}: a range in a grid needs num (int >= 1), got {num!r}"
                    )
                size *= num
        total += size
    return total


def _draw(method: str, name: str, space: Any, rng: np.random.Generator) -> Any:
    if isinstance(space, list):
        return space[int(rng.integers(len(space)))]
    if isinstance(space, dict):
        if "value" in space:
            return space["value"]
        if "values" in space:
            return space["values"][int(rng.integers(len(space["values"])))]
        if "low" in space and "high" in space:
            lo, hi = float(space["low"]), float(space["high"])
            if space.get("log"):
                return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
            return float(rng.uniform(lo, hi))
        raise ValueError(
            f"{method}.{name}: expected a list, value, values or low/high, got {space!r}"
        )
    return space


def _key(
    spec: SweepSpec,
    method: str,
    params: dict[str, Any],
    checkpoints: Mapping[str, str] | None = None,
) -> str:
    ident = {
        "checkpoints": dict(checkpoints or {}),
        "eval": EVAL_VERSION,
        "method": method,
        "params": params,
        "models": spec.models,
        "base": spec.base,
        "tasks": spec.tasks,
        "n_test": spec.n_test,
        "seed": spec.seed,
    }
    h = hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{spec.name}/{method}/{h}"


# ---------------------------------------------------------------------------------------------
# evaluating one point (the same function runs in-process and inside a Ray task)


@dataclass(frozen=True)
class _Context:
    arch: str
    arch_kwargs: dict[str, Any]
    tasks: tuple[str, ...]
    n_test: int | None
    seed: int
    device: str


def evaluate_point(
    point: Point, models: Sequence[StateDict], base: StateDict | None, ctx: _Context
) -> dict[str, Any]:
    """Merge the models at ``point`` and evaluate the merged model on each task's test set.

    Returns:
        The record stored for the point: method, params, ``task_accuracy`` per task,
        ``mean_accuracy``, ``task_loss`` and ``seconds``.
    """
    from .merge import merge
    from .merge_eval import make_eval_set
    from .models import create_model
    from .train import evaluate

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(ctx.seed)
    merged = merge(point.method, list(models), base=base, generator=gen, **point.params)
    model = create_model(ctx.arch, seed=None, **ctx.arch_kwargs)
    model.load_state_dict(merged)
    acc, loss = {}, {}
    # the Merge Lab's evaluation set: the same seeded, stratified subset of every test set
    es = make_eval_set(ctx.tasks, n_per_task=ctx.n_test, random_state=ctx.seed)
    bounds = np.cumsum([0, *es.sizes])
    for k, task in enumerate(es.tasks):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        res = evaluate(model, es.x[lo:hi], es.y[lo:hi], device=ctx.device)
        acc[task], loss[task] = float(res.accuracy), float(res.loss)
    return {
        "method": point.method,
        "params": point.params,
        "point": point.index,
        "task_accuracy": acc,
        "task_loss": loss,
        "mean_accuracy": float(np.mean(list(acc.values()))) if acc else float("nan"),
        "seconds": time.perf_counter() - t0,
    }


def _ray_evaluate(
    point: Point, models: Sequence[StateDict], base: StateDict | None, ctx: _Context
) -> dict[str, Any]:
    torch.set_num_threads(1)
    return evaluate_point(point, models, base, ctx)


# ---------------------------------------------------------------------------------------------
# running a sweep


def run_sweep(
    spec: SweepSpec | str | Path | Mapping[str, Any],
    zoo: Zoo,
    *,
    backend: str = "inprocess",
    address: str | None = None,
    num_cpus: int | None = None,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Any:
    """Run (or resume) a sweep; every finished point is stored at once.

    Args:
        spec: a :class:`SweepSpec`, a YAML path or a mapping.
        zoo: the workspace's zoo (models are read from it, records written to it).
        backend: "inprocess" (default) or "ray".
        address: Ray cluster address (e.g. "ray://head:10001" or "auto"); None starts a local
            cluster with ``num_cpus`` CPUs.
        num_cpus: CPUs of the local Ray cluster (default: all).
        device: where points are evaluated ("cpu", "cuda", "auto").
        progress: called after every point with ``done``, ``total``, ``key``, ``method``,
            ``params``, ``mean_accuracy`` and ``skipped`` (True for points already recorded).
        should_stop: polled between points; True stops the sweep (finished points are kept).

    Returns:
        :func:`load_sweep` of the sweep: one row per finished point.

    Raises:
        ValueError: unknown backend, zoo ids or tasks; KeyError for missing zoo models.
    """
    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a Zoo, got {type(zoo).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    spec = spec if isinstance(spec, SweepSpec) else load_sweep_spec(spec)
    ids = [*spec.models, *([spec.base] if spec.base is not None else [])]
    missing = [i for i in ids if i not in zoo]
    if missing:
        raise ValueError(
            f"sweep {spec.name!r} names models the zoo at {zoo.root} does not hold: {missing}"
        )
    checkpoints = {i: zoo.get(i).sha256 for i in ids}
    points = sweep_points(spec, checkpoints)  # refuses oversized grids before any work
    ctx, models, base = _context(spec, zoo, device)
    done_keys = set(zoo.get_records(RECORD_KIND))
    todo = [p for p in points if p.key not in done_keys]
    count = {"done": 0}

    def finished(p: Point, rec: dict[str, Any] | None, skipped: bool) -> None:
        count["done"] += 1
        if rec is not None:
            zoo.put_record(
                RECORD_KIND,
                p.key,
                {
                    **rec,
                    "sweep": spec.name,
                    "backend": backend,
                    "models": list(spec.models),
                    "base": spec.base,
                },
            )
        if progress is not None:
            progress(
                {
                    "done": count["done"],
                    "total": len(points),
                    "key": p.key,
                    "method": p.method,
                    "params": p.params,
                    "skipped": skipped,
                    "mean_accuracy": None if rec is None else rec["mean_accuracy"],
                }
            )

    for p in points:
        if p.key in done_keys:
            finished(p, None, True)
    if backend == "inprocess":
        for p in todo:
            if should_stop is not None and should_stop():
                break
            finished(p, evaluate_point(p, models, base, ctx), False)
    else:
        _run_ray(todo, models, base, ctx, address, num_cpus, finished, should_stop)
    return load_sweep(zoo, spec.name, keys=[p.key for p in points])


def _context(
    spec: SweepSpec, zoo: Zoo, device: str
) -> tuple[_Context, list[StateDict], StateDict | None]:
    recs = [zoo.get(m) for m in spec.models]
    archs = {(r.arch, json.dumps(r.arch_kwargs, sort_keys=True)) for r in recs}
    if len(archs) != 1:
        raise ValueError(f"models must share one architecture to be merged, got {sorted(archs)}")
    tasks = spec.tasks or tuple(dict.fromkeys(t for r in recs for t in r.task.split("+")))
    from .data import available_tasks

    bad = [t for t in tasks if t not in available_tasks()]
    if bad:
        raise ValueError(f"tasks {bad} are unknown; expected some of {available_tasks()}")
    ctx = _Context(
        recs[0].arch, dict(recs[0].arch_kwargs), tuple(tasks), spec.n_test, spec.seed, device
    )
    models = [zoo.state_dict(m) for m in spec.models]
    base = zoo.state_dict(spec.base) if spec.base is not None else None
    return ctx, models, base


def _run_ray(
    todo: list[Point],
    models: list[StateDict],
    base: StateDict | None,
    ctx: _Context,
    address: str | None,
    num_cpus: int | None,
    finished: Callable[[Point, dict[str, Any] | None, bool], None],
    should_stop: Callable[[], bool] | None,
) -> None:
    ray = require_ray()
    if not ray.is_initialized():
        if address is None:
            root = str(Path(__file__).resolve().parent.parent)
            path = os.pathsep.join(x for x in (root, os.environ.get("PYTHONPATH", "")) if x)
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": path}},
            )
        else:
            ray.init(address=address)
    remote = ray.remote(num_cpus=1)(_ray_evaluate)
    models_ref = ray.put(models)
    base_ref = ray.put(base)
    running = {remote.remote(p, models_ref, base_ref, ctx): p for p in todo}
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            finished(running.pop(ref), ray.get(ref), False)
        if should_stop is not None and should_stop():
            for ref in running:
                ray.cancel(ref)
            break


def require_ray() -> Any:
    """Import Ray or say how to get it."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            "the Ray backend needs Ray: pip install 'ray>=2.9' (or use --backend inprocess)"
        ) from None
    return ray


def load_sweep(zoo: Zoo, name: str, *, keys: Sequence[str] | None = None) -> Any:
    """The finished points of sweep ``name`` as a pandas DataFrame, one row per point.

    ``keys`` keeps only those points (:func:`run_sweep` passes the points of the sweep as it
    is now, so points edited out of the file, or results of replaced checkpoints, are not
    reported); None gives every stored point of the sweep.

    Columns: ``key``, ``method``, ``point``, ``mean_accuracy``, ``seconds``, ``backend``, one
    ``acc_<task>`` per task and one ``param_<name>`` per hyperparameter (lists as JSON text).
    """
    import pandas as pd

    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a Zoo, got {type(zoo).__name__}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    rows = []
    wanted = None if keys is None else set(keys)
    for key, rec in zoo.get_records(RECORD_KIND).items():
        if rec.get("sweep") != name or (wanted is not None and key not in wanted):
            continue
        row: dict[str, Any] = {
            "key": key,
            "method": rec["method"],
            "point": rec.get("point"),
            "mean_accuracy": rec["mean_accuracy"],
            "seconds": rec.get("seconds"),
            "backend": rec.get("backend"),
        }
        for t, a in rec.get("task_accuracy", {}).items():
            row[f"acc_{t}"] = a
        for p, v in rec.get("params", {}).items():
            row[f"param_{p}"] = json.dumps(v) if isinstance(v, list | dict) else v
        rows.append(row)
    cols = ["key", "method", "point", "mean_accuracy", "seconds", "backend"]
    df = pd.DataFrame(rows, columns=None if rows else cols)
    return df.sort_values("point", kind="stable").reset_index(drop=True) if rows else df


def spec_to_dict(spec: SweepSpec) -> dict[str, Any]:
    """The sweep as a plain mapping (for records and the UI)."""
    d = asdict(spec)
    d["methods"] = [{"method": m, "params": p} for m, p in spec.methods]
    return d
