"""Model merging: one file per method/paper, registered in :data:`METHODS`.

``merge(method, models, base=base, **hyperparameters)`` validates the inputs and returns the
merged state dict. Each registry entry carries its paper link and its hyperparameters
(:class:`core._registry.Hyper`: kind, default, range, step, help), from which the UI builds its
sliders. Tags on entries:

* ``needs_base`` — the method works on task vectors and needs the pre-trained ``base``;
* ``per_tensor`` — the method works key by key (the entry's ``tensor`` kernel; the view
  :data:`TENSOR_METHODS` lists them);
* ``data_dependent`` — it takes data-derived arguments (evaluation function, Fisher diagonals,
  Gram matrices, unlabeled batches) computed by separate functions in the same file; the
  entry's ``prepare(modules, data)`` hook (:class:`MergeData`) computes them for the Merge Lab;
* ``scale_linear`` — the result is θ₀ + λ·f(τ; other hyperparameters) (a λ move alone may
  rescale a cached merged task vector);
* ``two_models`` — it merges exactly two models.

Every per-method fact lives in the method's file and its entry (:class:`MethodEntry`): a new
method, data-dependent or streamable, is one file plus its test.

Integer tensors (BatchNorm's ``num_batches_tracked``) are never averaged: they are copied from
the base (or the first model). Half-precision tensors are merged in float32 and cast back; NaN/Inf
in the inputs is refused, and so is a result that overflows its dtype on that cast (a float16
sum beyond ±65504) rather than stored as inf.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..params import StateDict, check_compatible, is_mergeable
from . import adamerging as _adamerging  # noqa: F401
from . import arcee_fusion as _arcee_fusion  # noqa: F401
from . import average as _average  # noqa: F401  (registers; order = menu order)
from . import breadcrumbs as _breadcrumbs  # noqa: F401
from . import breadcrumbs_ties as _breadcrumbs_ties  # noqa: F401
from . import consensus as _consensus  # noqa: F401
from . import dare as _dare  # noqa: F401
from . import dare_ties as _dare_ties  # noqa: F401
from . import della as _della  # noqa: F401
from . import emr as _emr  # noqa: F401
from . import fisher as _fisher  # noqa: F401
from . import greedy_soup as _greedy_soup  # noqa: F401
from . import iso_c as _iso_c  # noqa: F401
from . import iso_cts as _iso_cts  # noqa: F401
from . import karcher as _karcher  # noqa: F401
from . import localize_stitch as _localize_stitch  # noqa: F401
from . import magmax as _magmax  # noqa: F401
from . import model_stock as _model_stock  # noqa: F401
from . import multislerp as _multislerp  # noqa: F401
from . import nearswap as _nearswap  # noqa: F401
from . import nuslerp as _nuslerp  # noqa: F401
from . import pcb as _pcb  # noqa: F401
from . import ram as _ram  # noqa: F401
from . import regmean as _regmean  # noqa: F401
from . import regmean_pp as _regmean_pp  # noqa: F401
from . import sce as _sce  # noqa: F401
from . import slerp as _slerp  # noqa: F401
from . import tall_masks as _tall_masks  # noqa: F401
from . import task_arithmetic as _task_arithmetic  # noqa: F401
from . import ties as _ties  # noqa: F401
from . import tsv as _tsv  # noqa: F401
from . import wudi as _wudi  # noqa: F401
from ._base import (
    METHODS,
    TAGS,
    TENSOR_METHODS,
    MergeData,
    MergeFn,
    MethodEntry,
    ModuleFactory,
    PrepareFn,
    TensorFn,
    check_merged_finite,
    method_entry,
)
from .adamerging import AdaMergingResult, adamerging_coefficients
from .bn import recompute_batchnorm
from .emr import emr_merge
from .fisher import fisher_diagonal
from .greedy_soup import GreedySoupResult, greedy_soup_search
from .localize_stitch import localize_masks
from .per_task import PER_TASK_METHODS, TaskMerge, evaluate_per_task, merge_per_task
from .regmean import gram_matrices
from .tall_masks import tall_masks_merge
from .ties import ties_thresholds

__all__ = [
    "METHODS",
    "TAGS",
    "TENSOR_METHODS",
    "AdaMergingResult",
    "GreedySoupResult",
    "MergeData",
    "MergeFn",
    "MethodEntry",
    "ModuleFactory",
    "PrepareFn",
    "TensorFn",
    "adamerging_coefficients",
    "fisher_diagonal",
    "gram_matrices",
    "greedy_soup_search",
    "merge",
    "method_arguments",
    "method_entry",
    "recompute_batchnorm",
    "ties_thresholds",
    "PER_TASK_METHODS",
    "TaskMerge",
    "emr_merge",
    "evaluate_per_task",
    "localize_masks",
    "merge_per_task",
    "tall_masks_merge",
]

_FRAMEWORK_ARGS = ("base", "generator")


def merge(
    method: str,
    models: Sequence[Mapping[str, Tensor]],
    *,
    base: Mapping[str, Tensor] | None = None,
    generator: torch.Generator | None = None,
    **hyperparameters: Any,
) -> StateDict:
    """Merge state dicts with a registered method.

    Args:
        method: a name in :data:`METHODS` (e.g. "average", "task_arithmetic", "ties").
        models: the state dicts to merge (fine-tuned models for task-vector methods), all with
            the same keys, shapes and dtypes.
        base: the pre-trained state dict θ₀ (required by methods tagged ``needs_base``).
        generator: seeds the random methods (DARE); the same seed gives the same result.
        **hyperparameters: the method's hyperparameters (``weights``, ``scale``, ``density``,
            ``drop``, ``t``, ...) and data-dependent arguments; see ``METHODS[method].params``
            and :func:`method_arguments`.

    Returns:
        A new state dict with the keys, shapes and dtypes of ``models[0]``; inputs unchanged.
    """
    entry = METHODS[method]
    sds = _check_models(models)
    if base is not None:
        check_compatible([base, *sds], ["base", *[f"models[{i}]" for i in range(len(sds))]])
    if "needs_base" in entry.tags and base is None:
        raise ValueError(f"method {method!r} needs base= (the pre-trained state dict), got None")
    if "two_models" in entry.tags and len(sds) != 2:
        raise ValueError(f"method {method!r} merges exactly 2 models, got {len(sds)}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    _check_arguments(method, entry.fn, hyperparameters)
    base_sd = None if base is None else dict(base)
    _check_finite(sds, base_sd)
    merged = entry.fn(sds, base=base_sd, generator=generator, **hyperparameters)
    ref = base_sd if base_sd is not None else sds[0]
    out: StateDict = {}
    for k, v in sds[0].items():
        if v.is_floating_point():
            out[k] = merged[k].detach().to(v.dtype)
            check_merged_finite(k, out[k], hint="merge float32 copies of the models")
        else:
            out[k] = ref[k].detach().clone()
    return out


def method_arguments(method: str) -> dict[str, bool]:
    """Keyword arguments a method accepts (besides ``base`` and ``generator``) -> required."""
    return _keyword_arguments(METHODS[method].fn)


def _keyword_arguments(fn: MergeFn) -> dict[str, bool]:
    sig = inspect.signature(fn)
    return {
        name: p.default is inspect.Parameter.empty
        for name, p in sig.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in _FRAMEWORK_ARGS
    }


def _check_arguments(method: str, fn: MergeFn, given: Mapping[str, Any]) -> None:
    accepted = _keyword_arguments(fn)
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for method {method!r}; "
            f"expected some of {sorted(accepted)}"
        )
    missing = sorted(k for k, required in accepted.items() if required and k not in given)
    if missing:
        raise ValueError(f"method {method!r} needs argument(s) {missing}, got none")


def _check_models(models: object) -> list[StateDict]:
    if isinstance(models, Mapping) or not isinstance(models, Sequence):
        raise TypeError(f"models must be a list of state dicts, got {type(models).__name__}")
    if len(models) == 0:
        raise ValueError("models must hold at least one state dict, got 0")
    check_compatible(models)
    return [dict(m) for m in models]


def _check_finite(models: Sequence[StateDict], base: StateDict | None) -> None:
    named = [(f"models[{i}]", m) for i, m in enumerate(models)]
    if base is not None:
        named.append(("base", base))
    for name, sd in named:
        for k, v in sd.items():
            if is_mergeable(v) and not bool(torch.isfinite(v).all()):
                raise ValueError(f"{name}[{k!r}] has NaN/Inf values; expected finite tensors")
