"""Evaluation behind the Merge Lab: merge, evaluate on every task, compare methods honestly.

A :class:`MergeLab` holds what a slider move must not recompute: the source state dicts and
their task vectors (cached once), one model instance per architecture evaluated with
``torch.func.functional_call`` (no model rebuild, no ``load_state_dict`` copy), a fixed seeded
evaluation subset of every task's test set (the fast path for sliders) and the reference
accuracies of the source models on the same samples. ``lab.run(method, hyper)`` merges with
:func:`core.merge.merge` and returns a :class:`MergeEval` with per-task accuracy, average
accuracy, normalised accuracy (merged / fine-tuned, per task then averaged) and the per-sample
correctness that :mod:`core.stats` needs. ``full=True`` evaluates on the full test sets.

Built on top: :func:`coefficient_landscape` (accuracy over a λ1 × λ2 grid of two task
vectors), :func:`sweep` (one hyperparameter over values, e.g. density or scale) and
:func:`compare_methods` (every method on the same models, bootstrap CI and McNemar p-value
against task arithmetic). Each takes a ``progress(done, total, message)`` callback.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from ._checks import check_int, check_range
from .data import get_task, stratified_subset
from .device import resolve_device
from .merge import METHODS, MergeData, merge, method_entry, recompute_batchnorm
from .models import create_model
from .params import StateDict, check_compatible, is_mergeable
from .stats import bootstrap_ci, mcnemar

DEFAULT_N_PER_TASK = 250  # evaluation subset per task on the slider path
# Methods whose result is θ₀ + λ·f(τ; other hyperparameters) (tagged ``scale_linear``): a move
# of the λ slider alone reuses the cached merged task vector f (tests/test_merge_eval.py checks
# the identity).
SCALE_LINEAR = frozenset(n for n in METHODS if "scale_linear" in METHODS[n].tags)
MERGED_TV_CACHE = 8  # merged task vectors kept per lab
DATA_N_PER_TASK = 256  # training examples per task for Fisher, Gram matrices, BN statistics
ProgressFn = Callable[[int, int, str], None]


# ----------------------------------------------------------------------------- evaluation data
@dataclass(frozen=True, eq=False)
class EvalSet:
    """Test inputs of several tasks, concatenated in task order.

    Attributes:
        tasks: task names.
        x: (M, C, H, W) inputs; y: (M,) labels.
        sizes: samples per task (sum M).
        full: True for the full test sets, False for a seeded subset.
    """

    tasks: tuple[str, ...]
    x: Tensor
    y: Tensor
    sizes: tuple[int, ...]
    full: bool

    @property
    def groups(self) -> np.ndarray:
        """(M,) task index of every sample."""
        return np.repeat(np.arange(len(self.tasks)), self.sizes)

    def to(self, device: torch.device) -> EvalSet:
        return EvalSet(self.tasks, self.x.to(device), self.y.to(device), self.sizes, self.full)


def make_eval_set(
    tasks: Sequence[str], *, n_per_task: int | None = DEFAULT_N_PER_TASK, random_state: int = 0
) -> EvalSet:
    """The evaluation data of ``tasks``: a seeded, stratified subset of each test set, or all.

    The subset of a task depends only on the task name and ``random_state``, not on which
    other tasks are selected, so numbers stay comparable across selections.

    Args:
        tasks: task names (``core.data.get_task``), no duplicates.
        n_per_task: test samples per task (at most the test set), None for the full sets.
        random_state: seed of the subsets.
    """
    tasks = _check_tasks(tasks)
    if n_per_task is not None:
        check_int("n_per_task", n_per_task, 1)
    check_int("random_state", random_state, 0)
    xs, ys, sizes = [], [], []
    for name in tasks:
        ds = get_task(name)
        x, y = ds.x_test, ds.y_test
        if n_per_task is not None and n_per_task < len(y):
            idx = stratified_subset(y, n_per_task, random_state=random_state, key=name)
            x, y = x[idx], y[idx]
        xs.append(x)
        ys.append(y)
        sizes.append(len(y))
    return EvalSet(tuple(tasks), torch.cat(xs), torch.cat(ys), tuple(sizes), n_per_task is None)


def _check_tasks(tasks: Sequence[str]) -> list[str]:
    if isinstance(tasks, str) or not isinstance(tasks, Sequence) or not tasks:
        raise ValueError(f"tasks must be a non-empty list of task names, got {tasks!r}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must not repeat, got {list(tasks)}")
    return list(tasks)


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class MergeEval:
    """A merged model evaluated on every task.

    Attributes:
        tasks: task names.
        accuracy: per-task accuracy of the merged model.
        loss: per-task mean cross-entropy.
        reference: per-task accuracy of the fine-tuned (individual) model of that task on the
            same samples (the best source model of the task when several share it).
        base: per-task accuracy of the base model (None without a base).
        correct: (M,) per-sample correctness, tasks concatenated.
        groups: (M,) task index of each sample.
        full: evaluated on the full test sets (else the seeded subset).
        seconds: wall time of merge + evaluation.
    """

    tasks: tuple[str, ...]
    accuracy: tuple[float, ...]
    loss: tuple[float, ...]
    reference: tuple[float, ...]
    base: tuple[float, ...] | None
    correct: np.ndarray
    groups: np.ndarray
    full: bool
    seconds: float = 0.0

    @property
    def average(self) -> float:
        """Mean of the per-task accuracies."""
        return float(np.mean(self.accuracy))

    @property
    def normalized(self) -> tuple[float, ...]:
        """Per-task merged / fine-tuned accuracy (NaN where the reference is 0)."""
        return tuple(
            a / r if r > 0 else math.nan for a, r in zip(self.accuracy, self.reference, strict=True)
        )

    @property
    def average_normalized(self) -> float:
        """Mean of the per-task normalised accuracies (the literature's "normalized accuracy")."""
        return float(np.nanmean(self.normalized))

    @property
    def base_average(self) -> float | None:
        """Mean per-task accuracy of the base model (None without a base)."""
        return None if self.base is None else float(np.mean(self.base))

    def average_ci(self, *, n_boot: int = 2000, level: float = 0.95, random_state: int = 0) -> Any:
        """Bootstrap CI of the average accuracy, resampling within each task."""
        return bootstrap_ci(
            self.correct, groups=self.groups, n_boot=n_boot, level=level, random_state=random_state
        )

    def to_dict(self) -> dict[str, Any]:
        """Numbers only (no per-sample arrays), JSON-ready."""
        return {
            "tasks": list(self.tasks),
            "accuracy": dict(zip(self.tasks, self.accuracy, strict=True)),
            "loss": dict(zip(self.tasks, self.loss, strict=True)),
            "reference": dict(zip(self.tasks, self.reference, strict=True)),
            "base": None if self.base is None else dict(zip(self.tasks, self.base, strict=True)),
            "normalized": dict(zip(self.tasks, self.normalized, strict=True)),
            "average": self.average,
            "average_normalized": self.average_normalized,
            "full": self.full,
            "n": int(self.correct.size),
        }


def applicable_methods(has_base: bool, n_models: int) -> list[str]:
    """Registered merge methods usable with (or without) a base and ``n_models`` models.

    Methods tagged ``needs_base`` need a base; ``two_models`` ones need exactly 2 models.
    """
    check_int("n_models", n_models, 0)
    out = []
    for e in METHODS.entries():
        if "needs_base" in e.tags and not has_base:
            continue
        if "two_models" in e.tags and n_models != 2:
            continue
        out.append(e.name)
    return out


def effective_coefficients(
    method: str, hyperparameters: Mapping[str, Any], n_models: int
) -> list[float] | None:
    """λ·wᵢ of each task vector for task arithmetic (where it is a point of the coefficient
    landscape), else None."""
    if method != "task_arithmetic":
        return None
    scale = float(hyperparameters.get("scale", METHODS[method].defaults().get("scale", 1.0)))
    weights = hyperparameters.get("weights") or [1.0] * n_models
    if len(weights) != n_models:
        raise ValueError(f"weights must have {n_models} entries, got {len(weights)}")
    return [scale * float(w) for w in weights]


def linear_grid(low: float, high: float, n_points: int) -> tuple[float, ...]:
    """``n_points`` evenly spaced values from ``low`` to ``high`` (a landscape axis)."""
    check_range("low", low)
    check_range("high", high)
    check_int("n_points", n_points, 2, 1000)
    if not low < high:
        raise ValueError(f"low must be below high, got low={low}, high={high}")
    return tuple(float(v) for v in np.linspace(low, high, n_points))


def sweep_values(
    method: str, param: str, n_points: int = 11, *, current: float | None = None
) -> list[float]:
    """``n_points`` evenly spaced values over a hyperparameter's slider range, plus 0 (λ = 0 is
    the base model) when the range holds it and the ``current`` slider value, sorted."""
    check_int("n_points", n_points, 2, 1000)
    hyper = {p.name: p for p in METHODS[method].params}
    if param not in hyper or hyper[param].kind not in ("float", "int"):
        numeric = [n for n, p in hyper.items() if p.kind in ("float", "int")]
        raise ValueError(
            f"param must be a numeric hyperparameter of {method!r} ({numeric}), got {param!r}"
        )
    p = hyper[param]
    if p.low is None or p.high is None:
        raise ValueError(f"hyperparameter {param!r} of {method!r} has no range to sweep")
    low, high = float(p.low), float(p.high)
    vals = np.linspace(low, high, n_points)
    extra = [0.0] if low <= 0.0 <= high else []
    if current is not None:
        cur = check_range("current", current, low, high)
        extra.append(float(round(cur)) if p.kind == "int" else float(cur))
    vals = np.concatenate([vals, extra])
    if p.kind == "int":
        vals = np.round(vals)
    return [float(v) for v in np.unique(vals)]


# ----------------------------------------------------------------------------- the lab
class MergeLab:
    """Everything a slider move needs, computed once.

    Args:
        models: the source state dicts (fine-tuned models, or independently trained ones).
        arch, arch_kwargs: their architecture (``core.models.create_model``).
        model_tasks: the task each model was trained on (sets the evaluated tasks and the
            fine-tuned reference of each task).
        base: the pre-trained state dict (the task-vector setting), or None.
        tasks: tasks to evaluate (default: the models' tasks, in order of first appearance).
        model_ids, base_id: zoo ids, for provenance.
        n_per_task: evaluation subset per task on the fast path.
        random_state: seed of the evaluation subset.
        device: "cpu", "cuda" or "auto".

    Inputs are never modified; evaluation is serialised by a lock (the shared model instance
    is re-parametrised during a call), so one lab may serve several threads.
    """

    def __init__(
        self,
        models: Sequence[Mapping[str, Tensor]],
        *,
        arch: str,
        arch_kwargs: Mapping[str, Any],
        model_tasks: Sequence[str],
        base: Mapping[str, Tensor] | None = None,
        tasks: Sequence[str] | None = None,
        model_ids: Sequence[str] | None = None,
        base_id: str | None = None,
        n_per_task: int = DEFAULT_N_PER_TASK,
        random_state: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(models, Mapping) or not isinstance(models, Sequence) or not models:
            raise ValueError(
                f"models must be a non-empty list of state dicts, got {type(models).__name__}"
            )
        if len(model_tasks) != len(models):
            raise ValueError(
                f"model_tasks must have one task per model ({len(models)}), got {len(model_tasks)}"
            )
        ids = (
            list(model_ids) if model_ids is not None else [f"model{i}" for i in range(len(models))]
        )
        if len(ids) != len(models):
            raise ValueError(
                f"model_ids must have one id per model ({len(models)}), got {len(ids)}"
            )
        sds = [dict(m) for m in models]
        check_compatible(
            [*sds, base] if base is not None else sds, [*ids, "base"] if base is not None else ids
        )
        check_int("n_per_task", n_per_task, 1)
        self.device = resolve_device(device)
        self.arch, self.arch_kwargs = arch, dict(arch_kwargs)
        self.module = create_model(arch, seed=None, **self.arch_kwargs).to(self.device).eval()
        keys = set(self.module.state_dict())
        if keys != set(sds[0]):
            raise ValueError(
                f"models do not fit {arch} {self.arch_kwargs}: missing {sorted(keys - set(sds[0]))[:5]}, "
                f"unexpected {sorted(set(sds[0]) - keys)[:5]}"
            )
        self.models: tuple[StateDict, ...] = tuple(_on(sd, self.device) for sd in sds)
        self.base: StateDict | None = None if base is None else _on(dict(base), self.device)
        self.model_ids, self.base_id = tuple(ids), base_id
        self.model_tasks = tuple(model_tasks)
        self.tasks = tuple(
            _check_tasks(list(tasks) if tasks is not None else list(dict.fromkeys(model_tasks)))
        )
        self.n_per_task, self.random_state = n_per_task, random_state
        # τᵢ = θᵢ − θ₀ over floating tensors, once: (N,) state dicts and one (N, P) matrix
        self.task_vectors: tuple[StateDict, ...] = ()
        self._keys = [k for k, v in self.models[0].items() if is_mergeable(v)]
        if self.base is not None:
            b = self.base
            self.task_vectors = tuple({k: m[k] - b[k] for k in self._keys} for m in self.models)
        self._sets: dict[bool, EvalSet] = {}
        self._refs: dict[bool, tuple[tuple[float, ...], tuple[float, ...] | None]] = {}
        self._lock = threading.RLock()
        self._data: dict[str, dict[str, Any]] = {}
        self._merged_tv: dict[tuple[Any, ...], StateDict] = {}
        self._train: dict[str, tuple[Tensor, Tensor]] = {}

    # ---------------------------------------------------------------- properties
    @property
    def setting(self) -> str:
        """ "task_vectors" (with a base) or "independent"."""
        return "task_vectors" if self.base is not None else "independent"

    @property
    def n_models(self) -> int:
        return len(self.models)

    def available_methods(self) -> list[str]:
        """Registered methods that apply here (base present, model count)."""
        return applicable_methods(self.base is not None, self.n_models)

    def eval_set(self, full: bool = False) -> EvalSet:
        """The fast-path subset (``full=False``) or the full test sets, built once."""
        if full not in self._sets:
            es = make_eval_set(
                self.tasks,
                n_per_task=None if full else self.n_per_task,
                random_state=self.random_state,
            )
            self._sets[full] = es.to(self.device)
        return self._sets[full]

    # ---------------------------------------------------------------- merging
    def merge(
        self,
        method: str,
        hyperparameters: Mapping[str, Any] | None = None,
        *,
        data_args: Mapping[str, Any] | None = None,
        seed: int = 0,
        recompute_bn: bool = False,
        exact: bool = False,
    ) -> StateDict:
        """Merge the source models with ``method`` (see :func:`core.merge.merge`).

        The slider path is incremental where the method allows it: task arithmetic is
        θ₀ + Σ λwᵢ τᵢ from the cached task vectors, and for the methods in
        :data:`SCALE_LINEAR` a change of λ alone rescales the cached merged task vector.
        The result equals :func:`core.merge.merge` up to float rounding; ``exact=True``
        always calls it (saving does).

        Args:
            method: a registered method that applies here (:meth:`available_methods`).
            hyperparameters: the method's hyperparameters (from the sliders).
            data_args: data-dependent arguments (Fisher diagonals, Gram matrices, ...); for
                a ``data_dependent`` method without them, :meth:`data_arguments` computes
                (and caches) them.
            seed: seeds the random methods (DARE).
            recompute_bn: re-estimate BatchNorm statistics on training inputs after merging.
        """
        if method not in self.available_methods():
            raise ValueError(
                f"method must be one of {self.available_methods()} for this selection, got {method!r}"
            )
        if data_args is None and "data_dependent" in METHODS[method].tags:
            data_args = self.data_arguments(method, hyperparameters)
        hyper = {**dict(hyperparameters or {}), **dict(data_args or {})}
        if not exact and not data_args and self.base is not None and method in SCALE_LINEAR:
            out = self._incremental(method, hyper, seed)
        else:
            gen = torch.Generator(device="cpu").manual_seed(int(seed))
            out = merge(method, list(self.models), base=self.base, generator=gen, **hyper)
        if recompute_bn:
            x = torch.cat([self.train_data(t)[0] for t in self.tasks])
            out = recompute_batchnorm(self._fresh_module(), out, x)
        return out

    def _incremental(self, method: str, hyper: Mapping[str, Any], seed: int) -> StateDict:
        """θ₀ + λ·f(τ) with f cached per (method, other hyperparameters, seed)."""
        assert self.base is not None
        scale = check_range(
            "scale", hyper.get("scale", METHODS[method].defaults().get("scale", 1.0))
        )
        rest = {k: v for k, v in hyper.items() if k != "scale"}
        if method == "task_arithmetic":
            return self.combine(
                effective_coefficients(method, {**rest, "scale": scale}, self.n_models) or []
            )
        key = (method, repr(sorted(rest.items())), int(seed))
        with self._lock:
            tau = self._merged_tv.get(key)
        if tau is None:
            gen = torch.Generator(device="cpu").manual_seed(int(seed))
            merged = merge(
                method, list(self.models), base=self.base, generator=gen, scale=1.0, **rest
            )
            tau = {k: merged[k] - self.base[k] for k in self._keys}
            with self._lock:
                self._merged_tv[key] = tau
                while len(self._merged_tv) > MERGED_TV_CACHE:
                    self._merged_tv.pop(next(iter(self._merged_tv)))
        out = dict(self.base)
        for k in self._keys:
            out[k] = torch.add(self.base[k], tau[k], alpha=scale)
        return out

    @property
    def has_batchnorm(self) -> bool:
        """Whether the architecture has BatchNorm statistics (merging then shifts them)."""
        return any("running_mean" in k for k in self.models[0])

    def _fresh_module(self) -> torch.nn.Module:
        return create_model(self.arch, seed=None, **self.arch_kwargs).to(self.device).eval()

    def train_data(self, task: str) -> tuple[Tensor, Tensor]:
        """A seeded, stratified subset of ``task``'s training split (DATA_N_PER_TASK examples),
        cached."""
        if task not in self._train:
            ds = get_task(task)
            idx = stratified_subset(
                ds.y_train, DATA_N_PER_TASK, random_state=self.random_state, key=f"{task}/train"
            )
            self._train[task] = (ds.x_train[idx].to(self.device), ds.y_train[idx].to(self.device))
        return self._train[task]

    def has_data_arguments(self, method: str) -> bool:
        """Whether the data-dependent inputs of ``method`` are computed (or not needed).

        For Localize-and-Stitch, whose masks depend on ``density``, any density counts (the
        masks of another density are learnt on the next merge, in about a second)."""
        if "data_dependent" not in METHODS[method].tags:
            return True
        return any(k == method or k.startswith(method + "@") for k in self._data)

    def data_arguments(
        self,
        method: str,
        hyperparameters: Mapping[str, Any] | None = None,
        *,
        progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """The data-dependent inputs of ``method``, computed once and cached in the lab.

        The method's ``prepare(modules, data)`` hook (:class:`core.merge.MethodEntry`)
        computes them from :meth:`_merge_data`: Fisher diagonals and Gram matrices on each
        model's training subset, Localize-and-Stitch masks per ``density`` (its
        ``prepare_keys``: one cached set per value), greedy soup's held-out score, AdaMerging's
        unlabeled test inputs, ...; a method without a hook gets ``{}``.
        """
        entry = method_entry(method)
        hyper = {**entry.defaults(), **dict(hyperparameters or {})}
        key = method
        if entry.prepare_keys:
            key += "@" + ",".join(repr(hyper[k]) for k in entry.prepare_keys)
        if key in self._data:
            return self._data[key]
        n = self.n_models
        report = progress or (lambda d, t, m: None)
        out: dict[str, Any] = {}
        if entry.prepare is not None:
            out = dict(entry.prepare(self._module_for, self._merge_data(hyper, report)))
        report(n, n, f"{method}: inputs ready")
        with self._lock:
            self._data[key] = out
            kept = [k for k in self._data if k.startswith(method + "@")]
            for k in kept[:-MERGED_TV_CACHE]:  # bounded: one input set per prepare_keys value
                del self._data[k]
        return out

    def _module_for(self, sd: Mapping[str, Tensor] | None = None) -> torch.nn.Module:
        module = self._fresh_module()
        if sd is not None:
            module.load_state_dict(sd)
        return module

    def _merge_data(self, hyper: Mapping[str, Any], report: ProgressFn) -> MergeData:
        """What the methods' prepare hooks draw on: each model's task's training subset, the
        fast-path test inputs (unlabeled) and the held-out accuracy on the training subsets
        (the zoo keeps no validation split; the test sets stay unseen)."""

        def unlabeled() -> list[Tensor]:
            es = self.eval_set(False)
            bounds = np.cumsum([0, *es.sizes])
            return [es.x[bounds[k] : bounds[k + 1]] for k in range(len(es.tasks))]

        def evaluate(sd: Mapping[str, Tensor]) -> float:
            return self._held_out_accuracy(sd, [self.train_data(t) for t in self.tasks])

        return MergeData(
            models=self.models,
            base=self.base,
            names=self.model_ids,
            train=lambda i: self.train_data(self.model_tasks[i]),
            unlabeled=unlabeled,
            evaluate=evaluate,
            hyperparameters=hyper,
            progress=report,
        )

    @torch.inference_mode()
    def _held_out_accuracy(
        self, sd: Mapping[str, Tensor], held: Sequence[tuple[Tensor, Tensor]]
    ) -> float:
        params = {k: v.to(self.device) for k, v in sd.items()}
        accs = []
        with self._lock:
            for x, y in held:
                accs.append(
                    float(
                        (functional_call(self.module, params, (x,)).argmax(1) == y).float().mean()
                    )
                )
        return float(np.mean(accs))

    def combine(self, coefficients: Sequence[float]) -> StateDict:
        """θ₀ + Σᵢ cᵢ τᵢ from the cached task vectors (the landscape's fast path)."""
        if self.base is None:
            raise ValueError("combine needs the task-vector setting (a base model), got none")
        if len(coefficients) != self.n_models:
            raise ValueError(
                f"coefficients must have {self.n_models} entries, got {len(coefficients)}"
            )
        out = dict(self.base)
        for k in self._keys:
            acc = self.base[k].clone()
            for c, tv in zip(coefficients, self.task_vectors, strict=True):
                if c != 0.0:
                    acc.add_(tv[k], alpha=float(c))
            out[k] = acc
        return out

    # ---------------------------------------------------------------- evaluation
    @torch.inference_mode()
    def predict(self, sd: Mapping[str, Tensor], *, full: bool = False) -> tuple[Tensor, Tensor]:
        """Predictions and per-sample losses of the model with parameters ``sd``.

        Returns:
            (M,) predicted classes and (M,) cross-entropy losses on :meth:`eval_set`.
        """
        es = self.eval_set(full)
        params = {k: v.to(self.device) for k, v in sd.items()}
        preds, losses = [], []
        with self._lock:
            for i in range(0, len(es.y), 4096):
                logits = functional_call(self.module, params, (es.x[i : i + 4096],))  # (B, C)
                preds.append(logits.argmax(1))
                losses.append(F.cross_entropy(logits, es.y[i : i + 4096], reduction="none"))
        return torch.cat(preds), torch.cat(losses)

    def references(self, full: bool = False) -> tuple[tuple[float, ...], tuple[float, ...] | None]:
        """Per-task accuracy of the fine-tuned reference and of the base, on the same data."""
        if full not in self._refs:
            es = self.eval_set(full)
            per_model = [
                self._task_accuracy(self.predict(sd, full=full)[0], es)[0] for sd in self.models
            ]
            ref = []
            for j, t in enumerate(self.tasks):
                own = [
                    acc[j] for acc, mt in zip(per_model, self.model_tasks, strict=True) if mt == t
                ]
                ref.append(max(own) if own else max(acc[j] for acc in per_model))
            base = None
            if self.base is not None:
                base = tuple(self._task_accuracy(self.predict(self.base, full=full)[0], es)[0])
            self._refs[full] = (tuple(ref), base)
        return self._refs[full]

    def _task_accuracy(self, pred: Tensor, es: EvalSet) -> tuple[list[float], np.ndarray]:
        correct = (pred == es.y).cpu().numpy()
        groups = es.groups
        acc = np.bincount(groups, weights=correct, minlength=len(es.tasks)) / np.array(es.sizes)
        return acc.tolist(), correct

    def evaluate(self, sd: Mapping[str, Tensor], *, full: bool = False) -> MergeEval:
        """Evaluate a (merged) state dict on every task."""
        t0 = time.perf_counter()
        es = self.eval_set(full)
        pred, loss = self.predict(sd, full=full)
        acc, correct = self._task_accuracy(pred, es)
        groups = es.groups
        lsum = np.bincount(groups, weights=loss.cpu().numpy(), minlength=len(es.tasks))
        ref, base = self.references(full)
        return MergeEval(
            tasks=self.tasks,
            accuracy=tuple(acc),
            loss=tuple((lsum / np.array(es.sizes)).tolist()),
            reference=ref,
            base=base,
            correct=correct,
            groups=groups,
            full=full,
            seconds=time.perf_counter() - t0,
        )

    def run(
        self,
        method: str,
        hyperparameters: Mapping[str, Any] | None = None,
        *,
        full: bool = False,
        data_args: Mapping[str, Any] | None = None,
        seed: int = 0,
        recompute_bn: bool = False,
    ) -> MergeEval:
        """Merge with ``method`` and evaluate: the slider path."""
        t0 = time.perf_counter()
        sd = self.merge(
            method, hyperparameters, data_args=data_args, seed=seed, recompute_bn=recompute_bn
        )
        ev = self.evaluate(sd, full=full)
        return _with_seconds(ev, time.perf_counter() - t0)


def _with_seconds(ev: MergeEval, seconds: float) -> MergeEval:
    from dataclasses import replace

    return replace(ev, seconds=seconds)


def _on(sd: Mapping[str, Tensor], device: torch.device) -> StateDict:
    return {k: v.detach().to(device) for k, v in sd.items()}


# ----------------------------------------------------------------------------- zoo glue
def lab_from_zoo(
    zoo: Any,
    model_ids: Sequence[str],
    *,
    base_id: str | None = None,
    tasks: Sequence[str] | None = None,
    n_per_task: int = DEFAULT_N_PER_TASK,
    random_state: int = 0,
    device: str | torch.device = "cpu",
) -> MergeLab:
    """A :class:`MergeLab` over zoo models (all of one architecture).

    Args:
        zoo: a :class:`core.zoo.Zoo`.
        model_ids: the models to merge (at least one).
        base_id: the pre-trained model for the task-vector setting, or None.
    """
    if isinstance(model_ids, str) or not model_ids:
        raise ValueError(f"model_ids must be a non-empty list of zoo ids, got {model_ids!r}")
    if len(set(model_ids)) != len(model_ids):
        raise ValueError(f"model_ids must not repeat, got {list(model_ids)}")
    if base_id is not None and base_id in model_ids:
        raise ValueError(f"base_id {base_id!r} must not also be one of model_ids")
    recs = [zoo.get(i) for i in model_ids]
    brec = zoo.get(base_id) if base_id is not None else None
    for r in [*recs[1:], *([brec] if brec else [])]:
        if (r.arch, r.arch_kwargs) != (recs[0].arch, recs[0].arch_kwargs):
            raise ValueError(
                f"all models must share one architecture: {recs[0].id} is {recs[0].arch} "
                f"{recs[0].arch_kwargs}, {r.id} is {r.arch} {r.arch_kwargs}"
            )
    return MergeLab(
        [zoo.state_dict(i) for i in model_ids],
        arch=recs[0].arch,
        arch_kwargs=recs[0].arch_kwargs,
        model_tasks=[r.task for r in recs],
        base=zoo.state_dict(base_id) if base_id else None,
        tasks=tasks,
        model_ids=model_ids,
        base_id=base_id,
        n_per_task=n_per_task,
        random_state=random_state,
        device=device,
    )


def save_merged(
    zoo: Any,
    lab: MergeLab,
    method: str,
    hyperparameters: Mapping[str, Any],
    *,
    name: str | None = None,
    seed: int = 0,
    recompute_bn: bool = False,
    note: str = "",
) -> Any:
    """Merge, evaluate on the full test sets and store the result in the zoo (role "merged").

    The recipe records the method, its hyperparameters, the source ids, the base id, the seed
    and which data-dependent inputs were used, so the model can be rebuilt; metrics hold the
    per-task, average and normalised accuracy on the full test sets.

    Returns:
        The stored :class:`core.zoo.ModelRecord`.
    """
    hyper = dict(hyperparameters)
    sd = lab.merge(method, hyper, seed=seed, recompute_bn=recompute_bn, exact=True)
    ev = lab.evaluate(sd, full=True)
    data = (
        sorted(lab.data_arguments(method, hyper))
        if "data_dependent" in METHODS[method].tags
        else []
    )
    recipe = {
        "method": method,
        "hyperparameters": hyper,
        "source_ids": list(lab.model_ids),
        "base_id": lab.base_id,
        "seed": seed,
        "setting": lab.setting,
        "recompute_bn": recompute_bn,
        "data_inputs": data,
        "data_n_per_task": DATA_N_PER_TASK if data or recompute_bn else None,
    }
    metrics = {
        "test_accuracy": ev.average,
        "task_accuracy": dict(zip(ev.tasks, ev.accuracy, strict=True)),
        "normalized_accuracy": ev.average_normalized,
    }
    return zoo.add(
        sd,
        arch=lab.arch,
        arch_kwargs=lab.arch_kwargs,
        task="+".join(lab.tasks),
        role="merged",
        name=name or f"merged-{method}",
        base_id=lab.base_id,
        recipe=recipe,
        metrics=metrics,
        note=note,
    )


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


__all__ = [
    "DEFAULT_N_PER_TASK",
    "applicable_methods",
    "effective_coefficients",
    "linear_grid",
    "sweep_values",
    "ComparisonResult",
    "ComparisonRow",
    "EvalSet",
    "LandscapeResult",
    "MergeEval",
    "MergeLab",
    "SweepResult",
    "coefficient_landscape",
    "compare_methods",
    "lab_from_zoo",
    "make_eval_set",
    "save_merged",
    "sweep",
]
