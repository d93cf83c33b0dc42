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


def recipe_result(workspace: str, kind: str, args: dict[str, Any]) -> Any:
    """The cached result of recipe ``kind`` on ``args`` (``args`` as the page passes them to
    ``show_figure(fig, recipe=(kind, args))``; figure-only args are not part of the key, and kinds
    that share a compute function share its results)."""
    from core.recipes import check_args, get_recipe, shared_kind

    entry = get_recipe(kind)
    compute_args, _ = entry.split(check_args(kind, args))
    z = zoo(workspace)
    shas = tuple(z.get(mid).sha256 for mid in entry.model_ids(compute_args))
    if entry.fingerprint is not None:
        shas += tuple(entry.fingerprint(z, compute_args))
    key = json.dumps(compute_args, sort_keys=True)
    return _recipe_result(workspace, shared_kind(kind), key, shas)


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


def interpolation_paths(
    workspace: str,
    id_a: str,
    sha_a: str,
    id_b: str,
    sha_b: str,
    task_name: str,
    methods: tuple[str, ...],
    n_points: int,
    recompute_bn: bool,
    max_examples: int | None,
    seed: int,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Naive / weight-matched / activation-matched paths between two zoo models (PathResults)."""
    import torch

    from core.landscape import compare_paths

    key = (
        "paths",
        workspace,
        id_a,
        sha_a,
        id_b,
        sha_b,
        task_name,
        methods,
        n_points,
        recompute_bn,
        max_examples,
        seed,
        device,
    )
    z = zoo(workspace)
    return _landscape_cached(
        key,
        lambda: compare_paths(
            model(workspace, id_a, sha_a, device),
            z.state_dict(id_a),
            z.state_dict(id_b),
            task(task_name),
            methods=methods,
            n_points=n_points,
            recompute_bn=recompute_bn,
            max_examples=max_examples,
            generator=torch.Generator().manual_seed(seed),
            device=device,
            progress=progress,
        ),
    )


def landscape_plane(
    workspace: str,
    ids: tuple[str, str, str],
    shas: tuple[str, str, str],
    task_name: str,
    resolution: int,
    recompute_bn: bool,
    max_examples: int | None,
    seed: int,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    on_level: Callable[[Any], None] | None = None,
) -> Any:
    """PlaneResult through three zoo models; the third id may be ``"wm:<B>"`` (B weight-matched
    to A) or ``"am:<B>"`` (activation-matched)."""
    import torch

    from core.landscape import align, plane

    key = (
        "plane",
        workspace,
        ids,
        shas,
        task_name,
        resolution,
        recompute_bn,
        max_examples,
        seed,
        device,
    )
    z = zoo(workspace)

    def compute() -> Any:
        net = model(workspace, ids[0], shas[0], device)
        sds, labels = [], []
        for mid in ids:
            if mid[:3] in ("wm:", "am:"):
                method = "weight matching" if mid.startswith("wm:") else "activation matching"
                sd = align(
                    net,
                    z.state_dict(ids[0]),
                    z.state_dict(mid[3:]),
                    method,
                    data=task(task_name),
                    generator=torch.Generator().manual_seed(seed),
                    device=device,
                )
                sds.append(sd)
                labels.append(f"π({mid[3:]})")
            else:
                sds.append(z.state_dict(mid))
                labels.append(mid)
        return plane(
            net,
            sds,
            task(task_name),
            resolution=resolution,
            labels=labels,
            recompute_bn=recompute_bn,
            max_examples=max_examples,
            device=device,
            progress=progress,
            on_level=on_level,
        )

    return _landscape_cached(key, compute)


def landscape_bezier(
    workspace: str,
    id_a: str,
    sha_a: str,
    id_b: str,
    sha_b: str,
    task_name: str,
    aligned: bool,
    steps: int,
    lr: float,
    n_points: int,
    max_examples: int | None,
    seed: int,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """CurveResult: a quadratic Bezier curve between two zoo models (B weight-matched first when
    ``aligned``) and the straight line."""
    import torch

    from core.landscape import align, bezier_curve

    key = (
        "bezier",
        workspace,
        id_a,
        sha_a,
        id_b,
        sha_b,
        task_name,
        aligned,
        steps,
        lr,
        n_points,
        max_examples,
        seed,
        device,
    )
    z = zoo(workspace)

    def compute() -> Any:
        net = model(workspace, id_a, sha_a, device)
        sd_a, sd_b = z.state_dict(id_a), z.state_dict(id_b)
        if aligned:
            sd_b = align(
                net, sd_a, sd_b, "weight matching", generator=torch.Generator().manual_seed(seed)
            )
        return bezier_curve(
            net,
            sd_a,
            sd_b,
            task(task_name),
            steps=steps,
            lr=lr,
            n_points=n_points,
            generator=torch.Generator().manual_seed(seed),
            max_examples=max_examples,
            device=device,
            progress=progress,
        )

    return _landscape_cached(key, compute)


# ---------------------------------------------------------------- Merge Lab (page 2)
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


def merge_lab_key(
    workspace: str,
    model_ids: tuple[str, ...],
    base_id: str | None,
    n_per_task: int,
    seed: int,
    device: str = "cpu",
    align: str = "none",
) -> MergeLabKey:
    """The cache key of a selection; a replaced checkpoint (new sha256) gives a new key."""
    z = zoo(workspace)
    ids = (*model_ids, *([base_id] if base_id else []))
    return MergeLabKey(
        workspace,
        tuple(model_ids),
        base_id,
        tuple(z.get(i).sha256 for i in ids),
        int(n_per_task),
        int(seed),
        device,
        align,
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


_COMPUTED = threading.local()  # set when a cached function really ran (a cache miss)


@st.cache_data(max_entries=256, show_spinner=False)
def merge_eval(
    key: MergeLabKey, method: str, hyper: dict, seed: int, recompute_bn: bool, full: bool
) -> Any:
    """Merge and evaluate (the slider path): a :class:`core.merge_eval.MergeEval`."""
    _COMPUTED.merge_eval = True
    return merge_lab(key).run(method, hyper, seed=seed, recompute_bn=recompute_bn, full=full)


def merge_eval_cached(
    key: MergeLabKey, method: str, hyper: dict, seed: int, recompute_bn: bool, full: bool
) -> tuple[Any, bool]:
    """:func:`merge_eval` and whether its result came from the cache (then ``seconds`` is the
    time of the original computation, not of this call)."""
    _COMPUTED.merge_eval = False
    ev = merge_eval(key, method, hyper, seed, recompute_bn, full)
    return ev, not _COMPUTED.merge_eval


# Slow merges (data-dependent methods such as AdaMerging) run in one background worker, so the
# page can show progress and a Cancel button while it waits; finished results are kept (bounded).
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="merge-run")
_JOBS: OrderedDict[tuple[Any, ...], Future[Any]] = OrderedDict()
_JOBS_MAX = 16
_JOBS_LOCK = threading.Lock()


def merge_eval_job(
    key: MergeLabKey, method: str, hyper: dict, seed: int, recompute_bn: bool, full: bool
) -> Future[Any]:
    """Start (or find) the background merge + evaluation of one request; its Future gives a
    :class:`core.merge_eval.MergeEval` (or raises the method's error)."""
    job_key = (
        key,
        method,
        json.dumps(hyper, sort_keys=True, default=str),
        seed,
        recompute_bn,
        full,
    )
    with _JOBS_LOCK:
        fut = _JOBS.get(job_key)
        if fut is not None and not fut.cancelled():
            _JOBS.move_to_end(job_key)
            return fut
        lab = merge_lab(key)
        fut = _POOL.submit(lab.run, method, hyper, seed=seed, recompute_bn=recompute_bn, full=full)
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


def merge_landscape(
    key: MergeLabKey,
    pair: tuple[int, int],
    lams: tuple[float, ...],
    full: bool,
    progress: Callable[[int, int, str], None] | None = None,
) -> Any:
    """LandscapeResult over θ₀ + λ1 τ_i + λ2 τ_j."""
    from core.merge_eval import coefficient_landscape

    return _landscape_cached(
        ("merge-landscape", key, pair, lams, full),
        lambda: coefficient_landscape(
            merge_lab(key), pair, lams=lams, full=full, progress=progress
        ),
    )


def merge_sweep(
    key: MergeLabKey,
    method: str,
    param: str,
    values: tuple[float, ...],
    hyper: dict,
    seed: int,
    recompute_bn: bool,
    progress: Callable[[int, int, str], None] | None = None,
) -> Any:
    """SweepResult of one hyperparameter of ``method``."""
    from core.merge_eval import sweep

    frozen = tuple(sorted((k, str(v)) for k, v in hyper.items()))
    return _landscape_cached(
        ("merge-sweep", key, method, param, values, frozen, seed, recompute_bn),
        lambda: sweep(
            merge_lab(key),
            method,
            param,
            values,
            hyper,
            seed=seed,
            recompute_bn=recompute_bn,
            progress=progress,
        ),
    )


def merge_comparison(
    key: MergeLabKey,
    methods: tuple[str, ...],
    hyper: dict,
    full: bool,
    seed: int,
    progress: Callable[[int, int, str], None] | None = None,
) -> Any:
    """ComparisonResult: every method in ``methods`` on the same samples, CI + McNemar."""
    from core.merge_eval import compare_methods

    frozen = tuple(sorted((m, str(h)) for m, h in hyper.items()))
    return _landscape_cached(
        ("merge-compare", key, methods, frozen, full, seed),
        lambda: compare_methods(
            merge_lab(key),
            list(methods),
            hyperparameters=hyper,
            full=full,
            random_state=seed,
            progress=progress,
        ),
    )


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


def merge_interference(key: MergeLabKey, density: float, drop: float, trim: str, seed: int) -> Any:
    """InterferenceReport of the lab's task vectors (cosine, conflicts, TIES/DARE keep)."""
    from core.merge.diagnostics import interference

    lab = merge_lab(key)
    return _landscape_cached(
        ("merge-interference", key, density, drop, trim, seed),
        lambda: interference(
            list(lab.task_vectors),
            names=lab.model_ids,
            density=density,
            drop=drop,
            trim=trim,
            seed=seed,
        ),
    )
