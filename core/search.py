"""Evolutionary search (CMA-ES) over merge coefficients against a validation split.

The search merges zoo models with one method and tunes, by CMA-ES (Hansen's ``cma``
package), any of:

* ``weights`` — one weight per model (the method's ``weights`` hyperparameter);
* ``layers`` — one coefficient per layer (module) on the merged task vector,
  θₗ = θ₀,ₗ + cₗ (θ_merged,ₗ − θ₀,ₗ) (needs a base; as mergekit-evolve's layer granularity);
* ``params`` — numeric hyperparameters of the method (``scale``, ``density``, ...).

Every coordinate lives in [0, 1] inside CMA-ES (``bounds``) and maps linearly onto its
[low, high]; the objective is the mean validation accuracy (or minus the mean loss) over the
tasks, on a seeded subset of each task's *training* split that the models' test sets never
see. The best point is evaluated once on the test sets at the end.

A search file (YAML)::

    name: ta-layers
    models: [mlp-ft-mnist, mlp-ft-mnist_inverted, mlp-ft-mnist_rotated, mlp-ft-digits]
    base: mlp-base
    method: task_arithmetic
    params: {scale: 1.0}              # fixed hyperparameters of the method
    search:
      weights: {low: 0.0, high: 1.0, init: 0.3}
      layers: {low: 0.0, high: 1.5, init: 1.0}
      params: {}                      # e.g. {density: {low: 0.05, high: 0.5, init: 0.2}}
    objective: accuracy               # or loss
    n_val: 500                        # validation examples per task
    n_test: null                      # seeded test subset per task for the final report (null: all)
    budget: 64                        # evaluations
    popsize: 8
    sigma0: 0.2                       # initial step, in [0, 1] units
    seed: 0

Resumable: every evaluation is stored at once (``zoo.put_record("search_eval", ...)``, JSON).
A rerun replays the finished generations into a fresh CMA-ES with the same seed — ``ask``
gives the same candidates again (checked), ``tell`` gets the stored values — so nothing is
evaluated twice and no optimiser pickle is ever loaded. The summary record (kind ``"search"``)
holds the best-so-far curve. ``backend="ray"`` evaluates each generation's candidates as Ray
tasks (a local cluster, or ``address=``), with the same numbers.
"""

from __future__ import annotations

import hashlib
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
from torch import Tensor

from .params import StateDict
from .zoo import Zoo

RECORD_KIND = "search"
EVAL_KIND = "search_eval"
BACKENDS = ("inprocess", "ray")
OBJECTIVES = ("accuracy", "loss")
ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Range:
    """One searched coordinate (or a block of them): [low, high] and the starting value."""

    low: float
    high: float
    init: float


@dataclass(frozen=True)
class SearchSpec:
    """A parsed search file (see the module docstring for the fields and defaults)."""

    name: str
    models: tuple[str, ...]
    method: str
    base: str | None = None
    tasks: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    weights: Range | None = None
    layers: Range | None = None
    search_params: dict[str, Range] = field(default_factory=dict)
    objective: str = "accuracy"
    n_val: int = 500
    n_test: int | None = None
    budget: int = 64
    popsize: int = 8
    sigma0: float = 0.2
    seed: int = 0

    def ident(self) -> str:
        """Hash of everything that defines the search's evaluations."""
        d = asdict(self)
        return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


_TOP_KEYS = {
    "name",
    "models",
    "base",
    "method",
    "tasks",
    "params",
    "search",
    "objective",
    "n_val",
    "n_test",
    "budget",
    "popsize",
    "sigma0",
    "seed",
}


def load_search_spec(source: str | Path | Mapping[str, Any]) -> SearchSpec:
    """Read and validate a search file or mapping (everything that can be checked without the
    zoo: types, ranges, the method and its hyperparameter names).

    Raises:
        ValueError / TypeError naming the field, the expected and the actual value.
    """
    import yaml

    if isinstance(source, str | Path):
        p = Path(source)
        if not p.is_file():
            raise ValueError(f"search file not found: {p}")
        try:
            raw = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"search file {p} is not valid YAML: {err}") from None
    elif isinstance(source, Mapping):
        raw = dict(source)
    else:
        raise TypeError(f"source must be a path or a mapping, got {type(source).__name__}")
    if not isinstance(raw, dict):
        raise ValueError(f"search must be a mapping at the top level, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"unknown search key(s) {unknown}; expected some of {sorted(_TOP_KEYS)}")
    from .merge import METHODS, method_arguments

    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a non-empty string without '/', got {name!r}")
    models = raw.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ValueError(f"models must be a non-empty list of zoo ids, got {models!r}")
    if len(set(models)) != len(models):
        raise ValueError(f"models must not repeat, got {models}")
    base = raw.get("base")
    if base is not None and not isinstance(base, str):
        raise ValueError(f"base must be a zoo id or null, got {base!r}")
    method = raw.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS.names())}, got {method!r}")
    entry = METHODS[method]
    if "data_dependent" in entry.tags or "per_task" in entry.tags:
        raise ValueError(
            f"method {method!r} is data-dependent or per-task; the search merges with "
            "data-free methods that give one model"
        )
    if "needs_base" in entry.tags and base is None:
        raise ValueError(f"method {method!r} needs base (a zoo id), got null")
    if "two_models" in entry.tags and len(models) != 2:
        raise ValueError(f"method {method!r} merges exactly 2 models, got {len(models)}")
    accepted = method_arguments(method)
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise ValueError(f"params must be a mapping, got {params!r}")
    bad = sorted(set(params) - set(accepted))
    if bad:
        raise ValueError(f"params {bad} are not hyperparameters of {method!r}: {sorted(accepted)}")
    search = raw.get("search") or {}
    if not isinstance(search, dict):
        raise ValueError(f"search must be a mapping, got {search!r}")
    extra = sorted(set(search) - {"weights", "layers", "params"})
    if extra:
        raise ValueError(f"unknown search entries {extra}; expected weights, layers, params")
    weights = _range("search.weights", search["weights"]) if "weights" in search else None
    if weights is not None and "weights" not in accepted:
        raise ValueError(f"method {method!r} has no per-model weights to search")
    if weights is not None and "weights" in params:
        raise ValueError("weights are searched; remove them from params")
    layers = _range("search.layers", search["layers"]) if "layers" in search else None
    if layers is not None and base is None:
        raise ValueError("search.layers scales the merged task vector per layer and needs base")
    sp_raw = search.get("params") or {}
    if not isinstance(sp_raw, dict):
        raise ValueError(f"search.params must be a mapping, got {sp_raw!r}")
    hyper = {p.name: p for p in entry.params}
    search_params: dict[str, Range] = {}
    for pname, space in sp_raw.items():
        if pname not in hyper or hyper[pname].kind != "float":
            numeric = [n for n, p in hyper.items() if p.kind == "float"]
            raise ValueError(
                f"search.params.{pname}: expected a float hyperparameter of {method!r} "
                f"({numeric}), got {pname!r}"
            )
        if pname in params:
            raise ValueError(f"{pname} is searched; remove it from params")
        search_params[pname] = _range(f"search.params.{pname}", space, hyper[pname].default)
    if weights is None and layers is None and not search_params:
        raise ValueError("search must name at least one of weights, layers, params")
    objective = raw.get("objective", "accuracy")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    tasks = raw.get("tasks") or []
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"tasks must be a list of task names, got {tasks!r}")
    n_val = _int("n_val", raw.get("n_val", 500), 1)
    n_test = raw.get("n_test")
    if n_test is not None:
        n_test = _int("n_test", n_test, 1)
    budget = _int("budget", raw.get("budget", 64), 1)
    popsize = _int("popsize", raw.get("popsize", 8), 2)
    seed = _int("seed", raw.get("seed", 0), 0)
    sigma0 = raw.get("sigma0", 0.2)
    if isinstance(sigma0, bool) or not isinstance(sigma0, int | float) or not 0 < sigma0 <= 1:
        raise ValueError(f"sigma0 must be a number in (0, 1], got {sigma0!r}")
    return SearchSpec(
        name=name,
        models=tuple(models),
        method=str(method),
        base=base,
        tasks=tuple(tasks),
        params=dict(params),
        weights=weights,
        layers=layers,
        search_params=search_params,
        objective=str(objective),
        n_val=n_val,
        n_test=n_test,
        budget=budget,
        popsize=popsize,
        sigma0=float(sigma0),
        seed=seed,
    )


def _int(name: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return v


def _range(where: str, space: Any, default: Any = None) -> Range:
    if not isinstance(space, dict) or "low" not in space or "high" not in space:
        raise ValueError(f"{where} must be a mapping with low, high (and init), got {space!r}")
    bad = sorted(set(space) - {"low", "high", "init"})
    if bad:
        raise ValueError(f"{where}: unknown key(s) {bad}; expected low, high, init")
    vals = {}
    for k in ("low", "high", "init"):
        v = space.get(k, default if k == "init" else None)
        if v is None and k == "init":
            v = (space["low"] + space["high"]) / 2
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{where}.{k} must be a finite number, got {v!r}")
        vals[k] = float(v)
    if not vals["low"] < vals["high"]:
        raise ValueError(f"{where}: low must be below high, got {vals['low']} and {vals['high']}")
    if not vals["low"] <= vals["init"] <= vals["high"]:
        raise ValueError(f"{where}.init must lie in [low, high], got {vals['init']}")
    return Range(vals["low"], vals["high"], vals["init"])


# --------------------------------------------------------------------------------- the space
@dataclass(frozen=True)
class Space:
    """The searched coordinates in order: model weights, layer coefficients, hyperparameters."""

    names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    x0: np.ndarray  # start in [0, 1] units
    n_weights: int
    layer_names: tuple[str, ...]
    param_names: tuple[str, ...]

    @property
    def dim(self) -> int:
        return len(self.names)

    def decode(self, x: Sequence[float] | np.ndarray) -> dict[str, Any]:
        """[0, 1] coordinates -> {"weights": [...], "layers": {...}, "params": {...}}."""
        u = np.clip(np.asarray(x, dtype=float), 0.0, 1.0)
        v = self.low + u * (self.high - self.low)
        i = self.n_weights
        j = i + len(self.layer_names)
        return {
            "weights": [float(a) for a in v[:i]] or None,
            "layers": {n: float(a) for n, a in zip(self.layer_names, v[i:j], strict=True)},
            "params": {n: float(a) for n, a in zip(self.param_names, v[j:], strict=True)},
        }


def layer_groups(sd: Mapping[str, Tensor]) -> dict[str, list[str]]:
    """Floating keys grouped by module (the key without its last component), in key order."""
    out: dict[str, list[str]] = {}
    for k, v in sd.items():
        if v.is_floating_point():
            out.setdefault(k.rsplit(".", 1)[0] if "." in k else k, []).append(k)
    return out


def build_space(spec: SearchSpec, n_models: int, layers: Sequence[str]) -> Space:
    names: list[str] = []
    rng: list[Range] = []
    if spec.weights is not None:
        names += [f"weight[{i}]" for i in range(n_models)]
        rng += [spec.weights] * n_models
    layer_names = tuple(layers) if spec.layers is not None else ()
    if spec.layers is not None:
        names += [f"layer[{n}]" for n in layer_names]
        rng += [spec.layers] * len(layer_names)
    names += [f"param[{n}]" for n in spec.search_params]
    rng += list(spec.search_params.values())
    low = np.array([r.low for r in rng])
    high = np.array([r.high for r in rng])
    x0 = (np.array([r.init for r in rng]) - low) / (high - low)
    return Space(
        tuple(names),
        low,
        high,
        x0,
        n_models if spec.weights is not None else 0,
        layer_names,
        tuple(spec.search_params),
    )


def apply_point(
    method: str,
    models: Sequence[StateDict],
    base: StateDict | None,
    point: Mapping[str, Any],
    fixed: Mapping[str, Any],
    groups: Mapping[str, Sequence[str]],
    seed: int,
) -> StateDict:
    """The merged state dict at a decoded point (weights, per-layer coefficients, params)."""
    from .merge import merge

    hyper = {**fixed, **point["params"]}
    if point["weights"] is not None:
        hyper["weights"] = point["weights"]
    gen = torch.Generator().manual_seed(seed)
    merged = merge(method, list(models), base=base, generator=gen, **hyper)
    if point["layers"]:
        assert base is not None
        for name, c in point["layers"].items():
            for k in groups[name]:
                merged[k] = torch.add(base[k], merged[k] - base[k], alpha=c).to(merged[k].dtype)
    return merged


# --------------------------------------------------------------------------------- evaluation
@dataclass(frozen=True, eq=False)
class _Context:
    """What a worker needs to merge and evaluate one point (sent once to Ray workers)."""

    method: str
    fixed: dict[str, Any]
    groups: dict[str, list[str]]
    arch: str
    arch_kwargs: dict[str, Any]
    tasks: tuple[str, ...]
    val: tuple[tuple[Tensor, Tensor], ...]
    objective: str
    seed: int
    device: str


def evaluate_candidate(
    x: Sequence[float],
    space: Space,
    models: Sequence[StateDict],
    base: StateDict | None,
    ctx: _Context,
) -> dict[str, Any]:
    """Merge at ``x`` and score it on the validation subsets: per-task accuracy and loss, and
    the objective to minimise (−mean accuracy, or mean loss)."""
    t0 = time.perf_counter()
    point = space.decode(x)
    merged = apply_point(ctx.method, models, base, point, ctx.fixed, ctx.groups, ctx.seed)
    acc, loss = _score(ctx, merged, ctx.val)
    mean_acc, mean_loss = float(np.mean(list(acc.values()))), float(np.mean(list(loss.values())))
    value = -mean_acc if ctx.objective == "accuracy" else mean_loss
    if not math.isfinite(value):
        value = 1e9  # a diverged merge is the worst point, not a crash of the search
    return {
        "x": [float(v) for v in x],
        "point": point,
        "val_accuracy": acc,
        "val_loss": loss,
        "mean_val_accuracy": mean_acc,
        "mean_val_loss": mean_loss,
        "objective": float(value),
        "seconds": time.perf_counter() - t0,
    }


def _score(
    ctx: _Context, sd: StateDict, data: Sequence[tuple[Tensor, Tensor]]
) -> tuple[dict[str, float], dict[str, float]]:
    from torch.func import functional_call

    from .models import create_model

    module = create_model(ctx.arch, seed=None, **ctx.arch_kwargs).to(ctx.device).eval()
    params = {k: v.to(ctx.device) for k, v in sd.items()}
    acc, loss = {}, {}
    with torch.inference_mode():
        for task, (x, y) in zip(ctx.tasks, data, strict=True):
            correct, total = 0, 0.0
            for i in range(0, len(y), 2048):
                logits = functional_call(module, params, (x[i : i + 2048].to(ctx.device),))
                yb = y[i : i + 2048].to(ctx.device)
                correct += int((logits.argmax(1) == yb).sum())
                total += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            acc[task], loss[task] = correct / len(y), total / len(y)
    return acc, loss


def _ray_evaluate(
    x: Sequence[float], space: Space, models: Any, base: Any, ctx: _Context
) -> dict[str, Any]:
    torch.set_num_threads(1)
    return evaluate_candidate(x, space, models, base, ctx)


# --------------------------------------------------------------------------------- running
def run_search(
    spec: SearchSpec | str | Path | Mapping[str, Any],
    zoo: Zoo,
    *,
    backend: str = "inprocess",
    address: str | None = None,
    num_cpus: int | None = None,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a CMA-ES search; every evaluation is stored at once.

    Args:
        spec: a :class:`SearchSpec`, a YAML path or a mapping.
        zoo: the workspace's zoo (models read from it, records written to it).
        backend: "inprocess" or "ray" (one Ray task per candidate of a generation).
        address: Ray cluster address; None starts a local cluster with ``num_cpus`` CPUs.
        num_cpus: CPUs of a local Ray cluster.
        device: where candidates are evaluated.
        progress: called after each evaluation with ``done``, ``total``, ``generation``,
            ``objective``, ``best``, ``best_mean_val_accuracy`` and ``replayed`` (True while
            finished generations are replayed).
        should_stop: polled between evaluations; True stops (finished ones are kept).

    Returns:
        The summary record (:func:`load_search`'s ``summary``).
    """
    import cma

    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a Zoo, got {type(zoo).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    spec = spec if isinstance(spec, SearchSpec) else load_search_spec(spec)
    ctx, models, base, space = _prepare(spec, zoo, device)  # every check before any merge
    summary = zoo.get_records(RECORD_KIND).get(spec.name)
    if summary is not None and summary.get("ident") != spec.ident():
        raise ValueError(
            f"search {spec.name!r} already exists in this workspace with another definition; "
            "choose a new name (or delete its records)"
        )
    done = _stored(zoo, spec.name)
    opts = {
        "seed": spec.seed + 1,  # cma treats 0 as "seed from the clock"
        "popsize": spec.popsize,
        "bounds": [0.0, 1.0],
        "verbose": -9,
        "CMA_diagonal": False,
    }
    if summary is None:
        zoo.put_record(RECORD_KIND, spec.name, _summary(spec, [], status="running"))
    rng = _CmaRandom(spec.seed + 1)
    with rng:
        es = cma.CMAEvolutionStrategy(list(space.x0), spec.sigma0, opts)
    records: list[dict[str, Any]] = []
    runner = _Runner(backend, address, num_cpus, models, base, ctx, space)
    try:
        gen = 0
        while len(records) < spec.budget:
            if should_stop is not None and should_stop():
                break
            with rng:
                asked = es.ask()
            n = min(len(asked), spec.budget - len(records))
            stored = [done.get((gen, i)) for i in range(n)]
            for i, rec in enumerate(stored):
                if rec is not None and not np.allclose(rec["x"], asked[i], atol=1e-9):
                    raise ValueError(
                        f"search {spec.name!r} cannot be resumed: generation {gen} asks other "
                        "points than stored (another cma version?); choose a new name"
                    )
            todo = [i for i in range(n) if stored[i] is None]

            def finished(
                j: int,
                rec: dict[str, Any],
                gen: int = gen,
                todo: list[int] = todo,
                stored: list[dict[str, Any] | None] = stored,
            ) -> None:
                i = todo[j]
                rec = {**rec, "generation": gen, "index": i, "search": spec.name}
                zoo.put_record(EVAL_KIND, f"{spec.name}/{gen:05d}/{i:03d}", rec)
                stored[i] = rec

            runner.evaluate([asked[i] for i in todo], finished, should_stop)
            for i in range(n):
                rec = stored[i]
                if rec is None:  # stopped inside a generation
                    break
                records.append(rec)
                if progress is not None:
                    progress(_progress(spec, records, rec, replayed=i not in todo))
            if any(r is None for r in stored) or n < len(asked):
                break
            values = [float(r["objective"]) for r in stored if r is not None]
            with rng:
                es.tell(asked, values)
            gen += 1
    finally:
        runner.close()
    summary = _summary(spec, records, status="done" if len(records) >= spec.budget else "partial")
    if records and summary["status"] == "done":
        summary["test"] = _test_best(spec, ctx, models, base, space, summary["best"]["x"])
    zoo.put_record(RECORD_KIND, spec.name, summary)
    return summary


class _CmaRandom:
    """Gives cma (which draws from numpy's global RNG) a stream of its own: inside the block
    the global state is cma's, outside it is restored, so draws elsewhere in the process never
    change the candidates and a resumed search asks exactly the stored points again."""

    def __init__(self, seed: int) -> None:
        saved = np.random.get_state()  # noqa: NPY002 (cma's global stream)
        np.random.seed(seed)  # noqa: NPY002 (cma's global stream)
        self._mine = np.random.get_state()  # noqa: NPY002 (cma's global stream)
        np.random.set_state(saved)  # noqa: NPY002 (cma's global stream)
        self._outer: Any = None

    def __enter__(self) -> None:
        self._outer = np.random.get_state()  # noqa: NPY002 (cma's global stream)
        np.random.set_state(self._mine)  # noqa: NPY002 (cma's global stream)

    def __exit__(self, *exc: object) -> None:
        self._mine = np.random.get_state()  # noqa: NPY002 (cma's global stream)
        np.random.set_state(self._outer)  # noqa: NPY002 (cma's global stream)


class _Runner:
    """Evaluates candidates in-process or as Ray tasks (state sent once)."""

    def __init__(
        self,
        backend: str,
        address: str | None,
        num_cpus: int | None,
        models: list[StateDict],
        base: StateDict | None,
        ctx: _Context,
        space: Space,
    ) -> None:
        self.backend, self.models, self.base, self.ctx, self.space = (
            backend,
            models,
            base,
            ctx,
            space,
        )
        self._refs: Any = None
        self._address, self._num_cpus = address, num_cpus

    def evaluate(
        self,
        xs: Sequence[Sequence[float]],
        finished: Callable[[int, dict[str, Any]], None],
        should_stop: Callable[[], bool] | None,
    ) -> None:
        """Evaluate ``xs``; ``finished(j, record)`` is called as each one ends (stored at
        once); ``should_stop`` is polled between evaluations (Ray: between completions)."""
        if not xs:
            return
        if self.backend == "inprocess":
            for j, x in enumerate(xs):
                if should_stop is not None and should_stop():
                    return
                finished(j, evaluate_candidate(x, self.space, self.models, self.base, self.ctx))
            return
        ray = self._ray()
        remote, refs = self._refs
        running = {
            remote.remote(list(x), self.space, refs[0], refs[1], refs[2]): j
            for j, x in enumerate(xs)
        }
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                finished(running.pop(ref), ray.get(ref))
            if running and should_stop is not None and should_stop():
                for ref in running:
                    ray.cancel(ref)
                return

    def _ray(self) -> Any:
        from .sweep import require_ray

        ray = require_ray()
        if self._refs is None:
            if not ray.is_initialized():
                if self._address is None:
                    root = str(Path(__file__).resolve().parent.parent)
                    path = os.pathsep.join(x for x in (root, os.environ.get("PYTHONPATH", "")) if x)
                    ray.init(
                        num_cpus=self._num_cpus,
                        include_dashboard=False,
                        log_to_driver=False,
                        runtime_env={"env_vars": {"PYTHONPATH": path}},
                    )
                else:
                    ray.init(address=self._address)
            remote = ray.remote(num_cpus=1)(_ray_evaluate)
            self._refs = (remote, (ray.put(self.models), ray.put(self.base), ray.put(self.ctx)))
        return ray

    def close(self) -> None:
        self._refs = None


def _prepare(
    spec: SearchSpec, zoo: Zoo, device: str
) -> tuple[_Context, list[StateDict], StateDict | None, Space]:
    from .data import available_tasks, get_task, stratified_subset
    from .device import resolve_device
    from .merge import merge

    recs = [zoo.get(m) for m in spec.models]  # KeyError names a missing id
    archs = {(r.arch, json.dumps(r.arch_kwargs, sort_keys=True)) for r in recs}
    if len(archs) != 1:
        raise ValueError(f"models must share one architecture to be merged, got {sorted(archs)}")
    if spec.base is not None:
        b = zoo.get(spec.base)
        if (b.arch, json.dumps(b.arch_kwargs, sort_keys=True)) not in archs:
            raise ValueError(f"base {spec.base!r} has another architecture than the models")
    tasks = spec.tasks or tuple(dict.fromkeys(t for r in recs for t in r.task.split("+")))
    bad = [t for t in tasks if t not in available_tasks()]
    if bad:
        raise ValueError(f"tasks {bad} are unknown; expected some of {available_tasks()}")
    models = [zoo.state_dict(m) for m in spec.models]
    base = zoo.state_dict(spec.base) if spec.base is not None else None
    groups = layer_groups(models[0])
    space = build_space(spec, len(models), list(groups))
    val = []
    for t in tasks:
        ds = get_task(t)
        idx = stratified_subset(ds.y_train, spec.n_val, random_state=spec.seed, key=f"{t}/val")
        val.append((ds.x_train[idx], ds.y_train[idx]))
    ctx = _Context(
        spec.method,
        dict(spec.params),
        groups,
        recs[0].arch,
        dict(recs[0].arch_kwargs),
        tuple(tasks),
        tuple(val),
        spec.objective,
        spec.seed,
        str(resolve_device(device)),
    )
    # the method's own checks (hyperparameter values, weights) on the starting point, once
    probe = space.decode(space.x0)
    hyper = {**spec.params, **probe["params"]}
    if probe["weights"] is not None:
        hyper["weights"] = probe["weights"]
    merge(spec.method, models, base=base, generator=torch.Generator().manual_seed(0), **hyper)
    return ctx, models, base, space


def _stored(zoo: Zoo, name: str) -> dict[tuple[int, int], dict[str, Any]]:
    out = {}
    for rec in zoo.get_records(EVAL_KIND).values():
        if rec.get("search") == name:
            out[(int(rec["generation"]), int(rec["index"]))] = rec
    return out


def _progress(
    spec: SearchSpec, records: list[dict[str, Any]], rec: dict[str, Any], replayed: bool
) -> dict[str, Any]:
    best = min(records, key=lambda r: r["objective"])
    return {
        "done": len(records),
        "total": spec.budget,
        "generation": int(rec["generation"]),
        "objective": rec["objective"],
        "mean_val_accuracy": rec["mean_val_accuracy"],
        "best": best["objective"],
        "best_mean_val_accuracy": best["mean_val_accuracy"],
        "replayed": replayed,
    }


def _summary(spec: SearchSpec, records: list[dict[str, Any]], status: str) -> dict[str, Any]:
    curve, best = [], None
    for r in records:
        if best is None or r["objective"] < best["objective"]:
            best = r
        curve.append(best["objective"])
    return {
        "search": spec.name,
        "ident": spec.ident(),
        "spec": spec_to_dict(spec),
        "status": status,
        "n_evals": len(records),
        "objective": spec.objective,
        "best_so_far": curve,
        "best": None
        if best is None
        else {k: best[k] for k in ("x", "point", "objective", "mean_val_accuracy", "val_accuracy")},
    }


def _test_best(
    spec: SearchSpec,
    ctx: _Context,
    models: list[StateDict],
    base: StateDict | None,
    space: Space,
    x: Sequence[float],
) -> dict[str, Any]:
    from .data import get_task, stratified_subset

    merged = apply_point(
        spec.method, models, base, space.decode(x), spec.params, ctx.groups, spec.seed
    )
    data = []
    for t in ctx.tasks:
        ds = get_task(t)
        xt, yt = ds.x_test, ds.y_test
        if spec.n_test is not None and spec.n_test < len(yt):  # seeded subset (sorted splits)
            idx = stratified_subset(yt, spec.n_test, random_state=spec.seed, key=t)
            xt, yt = xt[idx], yt[idx]
        data.append((xt, yt))
    acc, loss = _score(ctx, merged, data)
    return {"accuracy": acc, "loss": loss, "mean_accuracy": float(np.mean(list(acc.values())))}


def load_search(zoo: Zoo, name: str) -> dict[str, Any]:
    """The stored search: ``summary`` (None before the first run finished a pass) and
    ``evals``, a DataFrame with one row per evaluation in order (``generation``, ``index``,
    ``objective``, ``mean_val_accuracy``, ``best_so_far`` and one ``x<j>`` column per
    coordinate) — the data of the best-so-far curve."""
    import pandas as pd

    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a Zoo, got {type(zoo).__name__}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    stored = sorted(_stored(zoo, name).items())
    rows = []
    best = math.inf
    for (g, i), rec in stored:
        best = min(best, rec["objective"])
        row = {
            "generation": g,
            "index": i,
            "objective": rec["objective"],
            "mean_val_accuracy": rec["mean_val_accuracy"],
            "best_so_far": best,
        }
        row.update({f"x{j}": v for j, v in enumerate(rec["x"])})
        rows.append(row)
    return {
        "summary": zoo.get_records(RECORD_KIND).get(name),
        "evals": pd.DataFrame(rows),
    }


def spec_to_dict(spec: SearchSpec) -> dict[str, Any]:
    """The search as a plain mapping (records, provenance)."""
    return json.loads(json.dumps(asdict(spec), default=str))


# --------------------------------------------------------------------------------- command line
def add_search_parser(sub: Any) -> None:
    """``search SEARCH.yaml [--backend inprocess|ray] [--address ...] [--workspace ...]``."""
    p = sub.add_parser(
        "search",
        help="CMA-ES search over merge weights / layer coefficients on zoo models",
        description="Evolutionary search of merge coefficients against a validation split; "
        "every evaluation is stored in the workspace, so a rerun resumes.",
    )
    p.add_argument("search", help="search file (YAML)")
    p.add_argument("--backend", choices=list(BACKENDS), default="inprocess")
    p.add_argument(
        "--address", default=None, help="Ray cluster address (default: start a local one)"
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray cluster")
    p.add_argument(
        "--workspace",
        default=None,
        help="workspace folder (default: $MIXMERGE_WORKSPACE or ./workspace)",
    )
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_search_command)


def _search_command(args: Any) -> int:
    import sys

    from tqdm import tqdm

    spec = load_search_spec(args.search)
    zoo = Zoo(args.workspace)
    bar = tqdm(total=spec.budget, desc=f"search {spec.name}", unit="eval")

    def on_progress(info: dict[str, Any]) -> None:
        bar.n = info["done"]
        bar.set_postfix_str(
            ("replay " if info["replayed"] else "")
            + f"val_acc={info['mean_val_accuracy']:.4f} best={info['best']:.4f}"
        )
        bar.refresh()

    try:
        summary = run_search(
            spec,
            zoo,
            backend=args.backend,
            address=args.address,
            num_cpus=args.num_cpus,
            device=args.device,
            progress=on_progress,
        )
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    best = summary["best"]
    print(f"search {spec.name}: {summary['n_evals']} evaluations, status {summary['status']}")
    if best is not None:
        print(f"best validation accuracy {best['mean_val_accuracy']:.4f} at {best['point']}")
    if "test" in summary:
        print(f"test accuracy of the best point {summary['test']['mean_accuracy']:.4f}")
    return 0


# --------------------------------------------------------------------------------- for the app
def searchable_methods(has_base: bool, n_models: int) -> list[str]:
    """The registered methods a search can merge with: data-free, one merged model, usable with
    (or without) a base and ``n_models`` models."""
    from .merge import METHODS
    from .merge_eval import applicable_methods

    if not isinstance(has_base, bool):
        raise TypeError(f"has_base must be a bool, got {type(has_base).__name__}")
    return [
        m
        for m in applicable_methods(has_base, n_models)
        if not {"data_dependent", "per_task"} & set(METHODS[m].tags)
    ]


def spec_mapping(spec: SearchSpec) -> dict[str, Any]:
    """The search as a search file's mapping (``load_search_spec(spec_mapping(s)) == s``)."""
    if not isinstance(spec, SearchSpec):
        raise TypeError(f"spec must be a SearchSpec, got {type(spec).__name__}")
    search: dict[str, Any] = {}
    if spec.weights is not None:
        search["weights"] = asdict(spec.weights)
    if spec.layers is not None:
        search["layers"] = asdict(spec.layers)
    if spec.search_params:
        search["params"] = {k: asdict(r) for k, r in spec.search_params.items()}
    out: dict[str, Any] = {
        "name": spec.name,
        "models": list(spec.models),
        "base": spec.base,
        "method": spec.method,
        "tasks": list(spec.tasks),
        "params": dict(spec.params),
        "search": search,
    }
    for k in ("objective", "n_val", "n_test", "budget", "popsize", "sigma0", "seed"):
        out[k] = getattr(spec, k)
    return out


def stored_spec(summary: Mapping[str, Any]) -> SearchSpec:
    """The :class:`SearchSpec` of a stored summary record (to resume a listed search)."""
    if not isinstance(summary, Mapping) or not isinstance(summary.get("spec"), Mapping):
        raise ValueError(f"summary must be a stored search record with its spec, got {summary!r}")
    d = dict(summary["spec"])
    search: dict[str, Any] = {}
    for k in ("weights", "layers"):
        if d.get(k) is not None:
            search[k] = d[k]
    if d.get("search_params"):
        search["params"] = d["search_params"]
    keys = _TOP_KEYS - {"search"}
    return load_search_spec({k: v for k, v in d.items() if k in keys} | {"search": search})


def best_point_table(summary: Mapping[str, Any]) -> Any:
    """The best point of a summary as a DataFrame: one row per searched coordinate
    (``kind`` weight / layer / param, ``name``, ``value``), then the best validation and
    (when measured) test accuracy per task and on average."""
    import pandas as pd

    if not isinstance(summary, Mapping) or "spec" not in summary:
        raise ValueError(f"summary must be a stored search record, got {summary!r}")
    best = summary.get("best")
    if best is None:
        return pd.DataFrame(columns=["kind", "name", "value"])
    point, models = best["point"], summary["spec"]["models"]
    rows = [
        {"kind": "weight", "name": m, "value": w}
        for m, w in zip(models, point["weights"] or [], strict=False)
    ]
    rows += [{"kind": "layer", "name": k, "value": v} for k, v in point["layers"].items()]
    rows += [{"kind": "param", "name": k, "value": v} for k, v in point["params"].items()]
    for task, acc in best["val_accuracy"].items():
        rows.append({"kind": "validation accuracy", "name": task, "value": acc})
    rows.append({"kind": "validation accuracy", "name": "mean", "value": best["mean_val_accuracy"]})
    test = summary.get("test")
    if test is not None:
        for task, acc in test["accuracy"].items():
            rows.append({"kind": "test accuracy", "name": task, "value": acc})
        rows.append({"kind": "test accuracy", "name": "mean", "value": test["mean_accuracy"]})
    return pd.DataFrame(rows)
