"""Caches of the pages' suite panels (a suite zoo built by ``python -m core zoo build --suite``).

Every key holds the suite's :func:`core.suite_lab.fingerprint` (ids, sha256, dates of its base
and fine-tunes), so a rebuilt or replaced model is never answered from a stale entry. Results
that take a progress callback live in one bounded in-process LRU (a callback cannot be part of
a ``st.cache_data`` key); the others in ``st.cache_data``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import streamlit as st

from .cache import zoo

_MEMO_MAX = 48
_MEMO: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_MEMO_LOCK = threading.Lock()
Progress = Callable[[int, int, str], None]


def _memo(key: tuple[Any, ...], compute: Callable[[], Any]) -> tuple[Any, bool]:
    """(value, whether it came from the cache)."""
    with _MEMO_LOCK:
        if key in _MEMO:
            _MEMO.move_to_end(key)
            return _MEMO[key], True
    value = compute()
    with _MEMO_LOCK:
        _MEMO[key] = value
        while len(_MEMO) > _MEMO_MAX:
            _MEMO.popitem(last=False)
    return value, False


def _frozen(d: Any) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def built_suites(workspace: str) -> list[str]:
    """The suites whose zoo is complete in the workspace (not cached: a build may just end)."""
    from core.suite_views import built_suites as core_built

    return core_built(zoo(workspace))


def other_models(workspace: str) -> bool:
    """Whether the zoo holds models besides the built suites' (the default model set then)."""
    from core.suite_views import suite_model_ids

    z = zoo(workspace)
    ours = suite_model_ids(z)
    return any(r.id not in ours for r in z.list())


def fingerprint(workspace: str, suite: str) -> str:
    from core.suite_lab import fingerprint as core_fp

    return _frozen(core_fp(zoo(workspace), suite))


def lab(workspace: str, suite: str, n_per_task: int, seed: int, device: str) -> Any:
    """The :class:`core.suite_lab.SuiteLab` of a suite (``core.suite_lab.lab_for`` keeps it and
    reloads it when a model was replaced)."""
    from core.suite_lab import lab_for

    return lab_for(zoo(workspace), suite, n_per_task=n_per_task, seed=seed, device=device)


def suite_eval(
    workspace: str,
    suite: str,
    n_per_task: int,
    seed: int,
    device: str,
    method: str,
    hyper: dict,
    recompute_bn: bool,
    progress: Progress | None = None,
) -> tuple[Any, bool]:
    """(:class:`core.suite_lab.SuiteEval`, cached?) of one slider setting."""
    key = (
        "eval",
        workspace,
        fingerprint(workspace, suite),
        suite,
        n_per_task,
        seed,
        device,
        method,
        _frozen(hyper),
        recompute_bn,
    )
    return _memo(
        key,
        lambda: lab(workspace, suite, n_per_task, seed, device).run(
            method, hyper, recompute_bn=recompute_bn, progress=progress
        ),
    )


def suite_comparison(
    workspace: str,
    suite: str,
    methods: tuple[str, ...],
    quick: bool,
    device: str,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The validation-tuned comparison (:func:`core.suite_lab.validation_tuned_comparison`),
    stored in the workspace for the Benchmark page."""
    from core.suite_lab import validation_tuned_comparison

    key = ("cmp", workspace, fingerprint(workspace, suite), suite, methods, quick, device)
    res, _ = _memo(
        key,
        lambda: validation_tuned_comparison(
            zoo(workspace),
            suite,
            methods=list(methods),
            quick=quick,
            device=device,
            progress=progress,
        ),
    )
    return res


def suite_path(
    workspace: str,
    suite: str,
    model_a: str,
    model_b: str,
    task: str,
    split: str,
    n_points: int,
    n_examples: int,
    recompute_bn: bool,
    device: str,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """:func:`core.suite_views.suite_interpolation` (a PathResult)."""
    from core.suite_views import suite_interpolation

    key = (
        "path",
        workspace,
        fingerprint(workspace, suite),
        suite,
        model_a,
        model_b,
        task,
        split,
        n_points,
        n_examples,
        recompute_bn,
        device,
    )
    res, _ = _memo(
        key,
        lambda: suite_interpolation(
            zoo(workspace),
            suite,
            model_a,
            model_b,
            task=task,
            split=split,
            n_points=n_points,
            n_examples=n_examples,
            recompute_bn=recompute_bn,
            device=device,
            progress=progress,
        ),
    )
    return res


@st.cache_data(max_entries=8, show_spinner="Computing the suite model's features…")
def suite_report(
    workspace: str,
    suite: str,
    fp: str,
    model: str,
    task: str,
    split: str,
    n: int,
    seed: int,
    device: str,
) -> dict:
    """:func:`core.suite_views.suite_feature_report` (``fp``: the suite's fingerprint)."""
    from core.suite_views import suite_feature_report

    return suite_feature_report(
        zoo(workspace), suite, model, task, split=split, n_examples=n, seed=seed, device=device
    )


@st.cache_data(max_entries=16, show_spinner="Projecting…")
def suite_projection(
    workspace: str,
    suite: str,
    fp: str,
    model: str,
    task: str,
    split: str,
    n: int,
    seed: int,
    method: str,
    device: str,
) -> dict:
    """2-D projection of :func:`suite_report`'s features."""
    from core.geometry import projection_report

    rep = suite_report(workspace, suite, fp, model, task, split, n, seed, device)
    return projection_report(rep, method, random_state=seed)


@st.cache_data(max_entries=8, show_spinner="Neural collapse of each model's features…")
def suite_nc(
    workspace: str,
    suite: str,
    fp: str,
    task: str,
    models: tuple[str, ...],
    split: str,
    n: int,
    device: str,
) -> dict:
    """:func:`core.suite_views.nc_across_finetuning`."""
    from core.suite_views import nc_across_finetuning

    return nc_across_finetuning(
        zoo(workspace), suite, task, models=list(models), split=split, n_examples=n, device=device
    )


@st.cache_data(max_entries=8, show_spinner="Clustering…")
def suite_cluster(
    workspace: str,
    suite: str,
    fp: str,
    model: str,
    task: str,
    n: int,
    seed: int,
    k_max: int,
    n_seeds: int,
    device: str,
) -> dict:
    """:func:`core.suite_views.suite_cluster` on training examples."""
    from core.suite_views import suite_cluster as core_cluster

    return core_cluster(
        zoo(workspace),
        suite,
        model,
        task,
        n_examples=n,
        k_max=k_max,
        n_seeds=n_seeds,
        seed=seed,
        device=device,
    )


def suite_models(workspace: str, suite: str) -> list[str]:
    """ "pretrained" and the suite's tasks (each naming its fine-tune)."""
    from core.suite_views import suite_models as core_models

    return core_models(zoo(workspace), suite)


def merging_at_scale(
    workspace: str,
    suite: str,
    methods: tuple[str, ...],
    n_orders: int,
    val_per_task: int,
    seed: int,
    device: str,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Any, bool]:
    """(:class:`core.papers.merging_at_scale.ScaleStudy`, cached?) of the sweep on ``suite``."""
    from core.papers.merging_at_scale import merging_at_scale_study

    key = _study_key("scale", workspace, (suite, methods, n_orders, val_per_task, seed, device))
    return _memo(
        key,
        lambda: merging_at_scale_study(
            zoo(workspace),
            suite,
            methods=list(methods),
            n_orders=n_orders,
            val_per_task=val_per_task,
            seed=seed,
            device=device,
            progress=progress,
        ),
    )


def merging_at_scale_is_cached(workspace: str, key_args: tuple[Any, ...]) -> bool:
    """Whether :func:`merging_at_scale` with these arguments (after ``workspace``) is cached."""
    return _is_memoised(_study_key("scale", workspace, key_args))


def _study_key(tag: str, workspace: str, key_args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The memo key of a suite study: ``key_args`` start with the suite, whose fingerprint
    goes into the key."""
    return (tag, workspace, fingerprint(workspace, key_args[0]), *key_args)


def _is_memoised(key: tuple[Any, ...]) -> bool:
    with _MEMO_LOCK:
        return key in _MEMO


def orthogonal_adaptation(
    workspace: str,
    suite: str,
    variants: tuple[str, ...],
    rank: int,
    steps: int,
    test_per_task: int,
    seed: int,
    device: str,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Any, bool]:
    """(:class:`core.papers.orthogonal_adaptation.OrthoStudy`, cached?) of the study on
    ``suite``."""
    from core.papers.orthogonal_adaptation import orthogonal_adaptation_study

    key_args = (suite, variants, rank, steps, test_per_task, seed, device)
    return _memo(
        _study_key("ortho", workspace, key_args),
        lambda: orthogonal_adaptation_study(
            zoo(workspace),
            suite,
            variants=list(variants),
            rank=rank,
            steps=steps,
            test_per_task=test_per_task,
            seed=seed,
            device=device,
            progress=progress,
        ),
    )


def orthogonal_adaptation_is_cached(workspace: str, key_args: tuple[Any, ...]) -> bool:
    """Whether :func:`orthogonal_adaptation` with these arguments (after ``workspace``) is
    cached."""
    return _is_memoised(_study_key("ortho", workspace, key_args))
