"""Every Streamlit cache in one place, each bounded.

``cache_resource`` only for read-only objects (datasets, loaded models); ``cache_data`` for small
result records. Pages call these instead of core directly when the result is worth keeping.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import streamlit as st

from core.data import Dataset, available_tasks, get_task
from core.models import Classifier
from core.zoo import Zoo


@st.cache_resource(max_entries=8, show_spinner=False)
def zoo(workspace: str) -> Zoo:
    """The zoo of a workspace (opened once per workspace)."""
    return Zoo(workspace)


@st.cache_resource(max_entries=16, show_spinner="Loading data…")
def task(name: str) -> Dataset:
    """A task's dataset (read-only tensors)."""
    return get_task(name)


@st.cache_data(max_entries=4, show_spinner=False, ttl=300)
def tasks_available() -> list[str]:
    return available_tasks()


@st.cache_resource(max_entries=32, show_spinner="Loading model…")
def model(workspace: str, model_id: str, sha256: str, device: str = "cpu") -> Classifier:
    """A zoo model in eval mode; ``sha256`` keys the cache so a replaced checkpoint reloads.
    Treat it as read-only."""
    return zoo(workspace).load_model(model_id, device=device)


# ## Recipes: the one cached caller of every ``core.recipes`` compute function.


@st.cache_data(max_entries=32, show_spinner="Computing…")
def _recipe_result(workspace: str, kind: str, args_json: str, shas: tuple[str, ...]) -> Any:
    """``core.recipes.compute`` of one request; ``shas`` (of the models the args name) keys the
    cache so that a replaced checkpoint recomputes."""
    from core.recipes import compute

    return compute(zoo(workspace), kind, json.loads(args_json))


def _recipe_request(workspace: str, kind: str, args: dict[str, Any]) -> tuple[Any, dict, tuple]:
    """(entry, compute args, shas) of a request: the checked args without the figure-only
    ones, and the checksums of the models they name (plus the kind's fingerprint)."""
    from core.recipes import check_args, get_recipe

    entry = get_recipe(kind)
    compute_args, _ = entry.split(check_args(kind, args))
    z = zoo(workspace)
    shas = tuple(z.get(mid).sha256 for mid in entry.model_ids(compute_args))
    if entry.fingerprint is not None:
        shas += tuple(entry.fingerprint(z, compute_args))
    return entry, compute_args, shas


def recipe_result(workspace: str, kind: str, args: dict[str, Any]) -> Any:
    """The cached result of recipe ``kind`` on ``args`` (``args`` as the page passes them to
    ``show_figure(fig, recipe=(kind, args))``; figure-only args are not part of the key, and kinds
    that share a compute function share its results)."""
    from core.recipes import shared_kind

    _, compute_args, shas = _recipe_request(workspace, kind, args)
    key = json.dumps(compute_args, sort_keys=True)
    return _recipe_result(workspace, shared_kind(kind), key, shas)


def recipe_live(workspace: str, kind: str, args: dict[str, Any], **runtime: Any) -> Any:
    """:func:`recipe_result` for panels that report progress or run on a prepared resource:
    ``runtime`` (``progress=``, ``on_level=``, the Merge Lab's ``lab=``; None values dropped)
    goes to the compute function but not into the key. Kept in the bounded LRU of slow
    results below (``st.cache_data`` cannot replay a progress bar), keyed like
    :func:`recipe_result`."""
    from core.recipes import shared_kind

    entry, compute_args, shas = _recipe_request(workspace, kind, args)
    key = ("recipe", workspace, shared_kind(kind), json.dumps(compute_args, sort_keys=True), shas)
    extra = {k: v for k, v in runtime.items() if v is not None}
    return _landscape_cached(key, lambda: entry.compute(zoo(workspace), **compute_args, **extra))


# ## Feature geometry (page 6)


@st.cache_resource(max_entries=1, show_spinner=False)
def umap_warm_up() -> bool:
    """Start UMAP's one-off JIT warm-up in a background thread (once per server process)."""
    from core.geometry import warm_up_umap

    warm_up_umap(background=True)
    return True


# ---------------------------------------------------------------- Interpolation and alignment
# Landscape results take seconds to minutes and report progress while they run, which
# st.cache_data cannot do (elements drawn inside a cached function are replayed, and a progress
# bar created outside it cannot be). They are kept in a small bounded LRU instead, keyed by every
# argument that changes the result; the progress callback is not part of the key.
_LANDSCAPE: OrderedDict[tuple, Any] = OrderedDict()
_LANDSCAPE_MAX = 24
_LANDSCAPE_LOCK = threading.Lock()


def _landscape_cached(key: tuple, compute: Callable[[], Any]) -> Any:
    with _LANDSCAPE_LOCK:
        if key in _LANDSCAPE:
            _LANDSCAPE.move_to_end(key)
            return _LANDSCAPE[key]
    value = compute()
    with _LANDSCAPE_LOCK:
        _LANDSCAPE[key] = value
        while len(_LANDSCAPE) > _LANDSCAPE_MAX:
            _LANDSCAPE.popitem(last=False)
    return value


def landscape_is_cached(key: tuple) -> bool:
    """True when a landscape result with this key is already computed."""
    with _LANDSCAPE_LOCK:
        return key in _LANDSCAPE


# The Interpolation page's panels (paths and barriers, plane, Bezier curve) are
# ``core.recipes.interpolation`` kinds through :func:`recipe_live` (they report progress).


# ---------------------------------------------------------------- Merge Lab (page 2)
# Every Merge Lab panel is a ``core.recipes.merge`` kind run on the page's cached lab (which holds
# the data-dependent inputs computed once); the args are the page's recipe args.
class MergeLabKey(NamedTuple):
    """Everything that identifies a Merge Lab selection (checkpoint hashes included)."""

    workspace: str
    model_ids: tuple[str, ...]
    base_id: str | None
    shas: tuple[str, ...]  # of model_ids, then base_id
    n_per_task: int
    seed: int
    device: str
    align: str = "none"  # "weight" / "activation": models 2..n permuted onto the first


def merge_lab_key(workspace: str, args: dict[str, Any]) -> MergeLabKey:
    """The cache key of the selection named by the lab args of a Merge Lab recipe (``models``,
    ``base``, ``n_per_task``, ``random_state``, ``device``, ``align``); a replaced checkpoint
    (new sha256) gives a new key."""
    from core.recipes.merge import check_lab_args

    check_lab_args(args)
    z = zoo(workspace)
    base_id = args.get("base")
    ids = (*args["models"], *([base_id] if base_id else []))
    return MergeLabKey(
        workspace,
        tuple(args["models"]),
        base_id,
        tuple(z.get(i).sha256 for i in ids),
        int(args["n_per_task"]),
        int(args.get("random_state", 0)),
        str(args.get("device", "cpu")),
        str(args.get("align", "none")),
    )


@st.cache_resource(
    max_entries=4, show_spinner="Preparing the merge lab (task vectors, evaluation data)…"
)
def merge_lab(key: MergeLabKey) -> Any:
    """A :class:`core.merge_eval.MergeLab` (source models, task vectors, evaluation subset)."""
    from core.merge_eval import align_lab, lab_from_zoo

    if key.align != "none":  # the aligned lab starts from the plain one (kept for the gain)
        return align_lab(merge_lab(key._replace(align="none")), key.align, random_state=key.seed)
    return lab_from_zoo(
        zoo(key.workspace),
        list(key.model_ids),
        base_id=key.base_id,
        n_per_task=key.n_per_task,
        random_state=key.seed,
        device=key.device,
    )


def _on_lab(key: MergeLabKey, kind: str, args: dict[str, Any]) -> Callable[[], Any]:
    """Recipe ``kind`` on the cached lab of ``key``, to call (the args are checked and the lab
    is looked up here, in the page's thread; the call may run in a worker)."""
    from functools import partial

    from core.recipes import check_args, get_recipe

    entry = get_recipe(kind)
    compute_args, _ = entry.split(check_args(kind, args))
    return partial(entry.compute, zoo(key.workspace), **compute_args, lab=merge_lab(key))


_COMPUTED = threading.local()  # set when a cached function really ran (a cache miss)


@st.cache_data(max_entries=256, show_spinner=False)
def merge_eval(key: MergeLabKey, args: dict[str, Any]) -> Any:
    """The slider path: the ``merge_accuracy`` recipe (a :class:`core.merge_eval.MergeEval`)."""
    _COMPUTED.merge_eval = True
    return _on_lab(key, "merge_accuracy", args)()


def merge_eval_cached(key: MergeLabKey, args: dict[str, Any]) -> tuple[Any, bool]:
    """:func:`merge_eval` and whether its result came from the cache (then ``seconds`` is the
    time of the original computation, not of this call)."""
    _COMPUTED.merge_eval = False
    ev = merge_eval(key, args)
    return ev, not _COMPUTED.merge_eval


# Slow merges (data-dependent methods such as AdaMerging) run in one background worker, so the
# page can show progress and a Cancel button while it waits; finished results are kept (bounded).
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="merge-run")
_JOBS: OrderedDict[tuple[Any, ...], Future[Any]] = OrderedDict()
_JOBS_MAX = 16
_JOBS_LOCK = threading.Lock()


def merge_eval_job(key: MergeLabKey, args: dict[str, Any]) -> Future[Any]:
    """Start (or find) the background ``merge_accuracy`` of one request; its Future gives a
    :class:`core.merge_eval.MergeEval` (or raises the method's error)."""
    job_key = (key, json.dumps(args, sort_keys=True, default=str))
    with _JOBS_LOCK:
        fut = _JOBS.get(job_key)
        if fut is not None and not fut.cancelled():
            _JOBS.move_to_end(job_key)
            return fut
        fut = _POOL.submit(_on_lab(key, "merge_accuracy", args))
        _JOBS[job_key] = fut
        while len(_JOBS) > _JOBS_MAX:
            old_key, old = next(iter(_JOBS.items()))
            if not old.done():
                break
            _JOBS.pop(old_key)
        return fut


def merge_data_inputs(
    key: MergeLabKey, method: str, progress: Callable[[int, int, str], None] | None = None
) -> None:
    """Compute (once per lab) the data-dependent inputs of ``method`` (Fisher, Grams, ...)."""
    merge_lab(key).data_arguments(method, progress=progress)


def merge_recipe(
    key: MergeLabKey,
    kind: str,
    args: dict[str, Any],
    progress: Callable[[int, int, str], None] | None = None,
) -> Any:
    """A Merge Lab panel (``merge_landscape``, ``merge_sweep``, ``merge_comparison``,
    ``merge_interference``) on the cached lab, kept in the bounded LRU of slow results."""
    return recipe_live(key.workspace, kind, args, lab=merge_lab(key), progress=progress)


def benchmark_results(workspace: str) -> dict[str, dict[str, Any]]:
    """Benchmark results stored in the workspace by ``python -m core benchmark`` (by key).

    Not cached: a few kB read from the index, and a benchmark that just finished must show."""
    from core.benchmark.report import stored_results

    return stored_results(zoo(workspace))


@st.cache_data(max_entries=4, show_spinner=False, ttl=60)
def suite_sources(suite: str) -> list[dict[str, Any]]:
    """Which sources of a benchmark suite are installed (task, ok, message)."""
    from core.data.suites import check_sources

    return [{"task": s.task, "ok": s.ok, "message": s.message} for s in check_sources(suite)]
