"""Merges whose result is one model per task: shared weights plus per-task masks and scalers.

EMR-Merging (``emr``) and TALL masks (``tall_masks``) do not produce one merged model. They
store one shared task vector τ_s and, for every task t, a binary mask mₜ and a rescaler sₜ;
the model of task t is

    θₜ = θ₀ + sₜ · (mₜ ⊙ τ_s).

:class:`TaskMerge` holds exactly that (masks as bool tensors, one per floating key; a key
without a mask counts as all ones). ``for_task(t)`` builds θₜ, ``shared_model()`` builds
θ₀ + τ_s (what the registered state-dict function returns, so ``merge()`` keeps its contract),
and :func:`evaluate_per_task` evaluates each task's model with a caller's evaluation function,
which is how the Merge Lab scores these methods: task t is scored with ``for_task(t)`` only.

:data:`PER_TASK_METHODS` maps the registered names tagged ``per_task`` to the function that
returns the structure; :func:`merge_per_task` validates the inputs like ``merge()`` and calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from .._checks import check_int
from ..params import StateDict
from ._base import compute_dtype

T = TypeVar("T")

# name -> fn(models, *, base, generator, **hyper) -> TaskMerge (same arguments as METHODS[name])
PER_TASK_METHODS: dict[str, Callable[..., TaskMerge]] = {}


@dataclass(frozen=True, eq=False)
class TaskMerge:
    """Shared merged weights plus per-task masks and rescalers.

    Attributes:
        method: registry name of the method that made it.
        base: θ₀, every key (integer buffers are copied into each task's model from here).
        shared: τ_s, the shared task vector, one tensor per floating key of ``base``.
        masks: per task, key -> bool mask shaped like the key's tensor (missing key: all ones).
        scales: per task, the rescaler sₜ.
        info: method-specific extras (e.g. TALL masks' λ), JSON-ready numbers only.
    """

    method: str
    base: StateDict
    shared: StateDict
    masks: tuple[StateDict, ...]
    scales: tuple[float, ...]
    info: Mapping[str, Any]

    def __post_init__(self) -> None:
        if len(self.masks) != len(self.scales):
            raise ValueError(
                f"masks and scales must have one entry per task, got {len(self.masks)} masks "
                f"and {len(self.scales)} scales"
            )
        for t, mask in enumerate(self.masks):
            for k, m in mask.items():
                if k not in self.shared:
                    raise ValueError(f"masks[{t}] has key {k!r}, which the shared vector lacks")
                if m.dtype != torch.bool or m.shape != self.shared[k].shape:
                    raise ValueError(
                        f"masks[{t}][{k!r}] must be a bool tensor of shape "
                        f"{tuple(self.shared[k].shape)}, got {m.dtype} {tuple(m.shape)}"
                    )

    @property
    def n_tasks(self) -> int:
        """Number of tasks (one per merged model, in the order the models were given)."""
        return len(self.masks)

    def for_task(self, task: int) -> StateDict:
        """θₜ = θ₀ + sₜ · (mₜ ⊙ τ_s) for task index ``task``; a new state dict."""
        check_int("task", task, 0, self.n_tasks - 1)
        mask, s = self.masks[task], self.scales[task]
        out: StateDict = {}
        for k, b in self.base.items():
            if k not in self.shared:
                out[k] = b.detach().clone()
                continue
            cd = compute_dtype(b)
            tau = self.shared[k].to(cd)
            delta = tau * mask[k] if k in mask else tau
            out[k] = torch.add(b.to(cd), delta, alpha=s).to(b.dtype)
        return out

    def shared_model(self) -> StateDict:
        """θ₀ + τ_s (no masks, no rescaling); a new state dict."""
        return {
            k: (b.to(compute_dtype(b)) + self.shared[k].to(compute_dtype(b))).to(b.dtype)
            if k in self.shared
            else b.detach().clone()
            for k, b in self.base.items()
        }

    def density(self, task: int) -> float:
        """Fraction of the shared vector's entries that task ``task``'s mask keeps."""
        check_int("task", task, 0, self.n_tasks - 1)
        kept = total = 0
        for k, tau in self.shared.items():
            m = self.masks[task].get(k)
            kept += tau.numel() if m is None else int(m.sum())
            total += tau.numel()
        return kept / max(total, 1)


def evaluate_per_task(result: TaskMerge, evaluate: Callable[[int, StateDict], T]) -> list[T]:
    """Evaluate each task's own model: ``[evaluate(t, result.for_task(t)) for t in tasks]``.

    Args:
        result: the structure from :func:`merge_per_task` (or ``emr_merge`` / ``tall_masks_merge``).
        evaluate: called with the task index and that task's state dict; returns any score
            (e.g. the accuracy on task t's test split).

    Returns:
        One score per task, in task order. Each model is built, evaluated and dropped in turn,
        so at most one extra model is in memory.
    """
    if not isinstance(result, TaskMerge):
        raise TypeError(f"result must be a TaskMerge, got {type(result).__name__}")
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable, got {type(evaluate).__name__}")
    return [evaluate(t, result.for_task(t)) for t in range(result.n_tasks)]


def merge_per_task(
    method: str,
    models: Sequence[Mapping[str, Tensor]],
    *,
    base: Mapping[str, Tensor] | None = None,
    generator: torch.Generator | None = None,
    **hyperparameters: Any,
) -> TaskMerge:
    """Run a ``per_task`` method and return its :class:`TaskMerge` (inputs checked as in
    :func:`core.merge.merge`: keys, shapes, dtypes, finiteness, hyperparameter names)."""
    from ..params import check_compatible
    from . import METHODS, _check_arguments, _check_finite, _check_models

    if method not in PER_TASK_METHODS:
        raise ValueError(
            f"method must be one of the per-task methods {sorted(PER_TASK_METHODS)}, got {method!r}"
        )
    entry = METHODS[method]
    sds = _check_models(models)
    if base is None:
        raise ValueError(f"method {method!r} needs base= (the pre-trained state dict), got None")
    check_compatible([base, *sds], ["base", *[f"models[{i}]" for i in range(len(sds))]])
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    _check_arguments(method, entry.fn, hyperparameters)
    base_sd = dict(base)
    _check_finite(sds, base_sd)
    return PER_TASK_METHODS[method](sds, base=base_sd, generator=generator, **hyperparameters)


def build_task_merge(
    method: str,
    base: StateDict,
    shared: StateDict,
    masks: Sequence[StateDict],
    scales: Sequence[float],
    info: Mapping[str, Any] | None = None,
) -> TaskMerge:
    """A :class:`TaskMerge` from plain sequences (the shared vector stays in its compute
    dtype; :meth:`TaskMerge.for_task` casts each sum to the base's dtype)."""
    return TaskMerge(
        method=method,
        base={k: v for k, v in base.items()},
        shared=dict(shared),
        masks=tuple(dict(m) for m in masks),
        scales=tuple(float(s) for s in scales),
        info=dict(info or {}),
    )
