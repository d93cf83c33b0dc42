"""The Merge Lab: everything a slider move must not recompute, held once.

A :class:`MergeLab` holds the source state dicts and their task vectors (cached once), one
model instance per architecture evaluated with ``torch.func.functional_call`` (no model
rebuild, no ``load_state_dict`` copy), the fixed seeded evaluation subset of every task's test
set and the reference accuracies of the source models on the same samples.
``lab.run(method, hyper)`` merges with :func:`core.merge.merge` and returns a
:class:`MergeEval`; data-dependent inputs come from the methods' own ``prepare`` hooks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from .._checks import check_int, check_range
from ..data import get_task, stratified_subset
from ..device import resolve_device
from ..merge import METHODS, MergeData, merge, method_entry, recompute_batchnorm
from ..models import create_model
from ..params import StateDict, check_compatible, combine_task_vectors, is_mergeable
from .evalset import DEFAULT_N_PER_TASK, EvalSet, _check_tasks, make_eval_set
from .methods import SCALE_LINEAR, applicable_methods, effective_coefficients
from .results import MergeEval

MERGED_TV_CACHE = 8  # merged task vectors kept per lab
DATA_N_PER_TASK = 256  # training examples per task for Fisher, Gram matrices, BN statistics
ProgressFn = Callable[[int, int, str], None]


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

    def with_models(self, models: Sequence[Mapping[str, Tensor]]) -> MergeLab:
        """A new lab like this one (architecture, tasks, ids, base, evaluation samples) on
        other state dicts of the same models, such as permuted ones."""
        if len(models) != self.n_models:
            raise ValueError(f"models must hold {self.n_models} state dicts, got {len(models)}")
        return MergeLab(
            models,
            arch=self.arch,
            arch_kwargs=self.arch_kwargs,
            model_tasks=self.model_tasks,
            base=self.base,
            tasks=self.tasks,
            model_ids=self.model_ids,
            base_id=self.base_id,
            n_per_task=self.n_per_task,
            random_state=self.random_state,
            device=self.device,
        )

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
        return combine_task_vectors(self.base, self.task_vectors, coefficients, self._keys)

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
    return replace(ev, seconds=seconds)


def _on(sd: Mapping[str, Tensor], device: torch.device) -> StateDict:
    return {k: v.detach().to(device) for k, v in sd.items()}
