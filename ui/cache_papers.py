"""Caches of the merging-papers studies (Merging Papers page, singular-vector panel).

Same rules as :mod:`ui.cache`: bounded, keyed by every argument that changes the result (model
checksums included), the progress callback outside the key. Studies take seconds to minutes and
report progress, so they share ui.cache's bounded LRU instead of ``st.cache_data``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ui.cache import _landscape_cached, model, task, zoo

Progress = Callable[[int, int], None] | None


def _match_rows(task_name: str) -> Any:
    """1000 stratified training inputs of the task (its training set is sorted by class)."""
    from core.data.subset import stratified_subset

    ds = task(task_name)
    return ds.x_train[stratified_subset(ds.y_train, 1000, key="match")]


def singular_alignment(
    workspace: str,
    id_a: str,
    sha_a: str,
    id_b: str,
    sha_b: str,
    task_name: str,
    matchers: tuple[str, ...],
    top_k: int,
    seed: int,
    device: str = "cpu",
) -> dict[str, Any]:
    """Singular-vector alignment before/after each matcher (Ito et al.), per layer."""
    import torch

    from core.align import compare_singular_alignment

    key = ("singular", workspace, id_a, sha_a, id_b, sha_b, task_name, matchers, top_k, seed)
    z = zoo(workspace)
    return _landscape_cached(
        key,
        lambda: compare_singular_alignment(
            model(workspace, id_a, sha_a, device),
            z.state_dict(id_a),
            z.state_dict(id_b),
            matchers=matchers,
            x=_match_rows(task_name),
            top_k=top_k,
            generator=torch.Generator().manual_seed(seed),
            device=device,
        ),
    )


def sparse_model_soup(
    workspace: str,
    model_id: str,
    sha: str,
    task_name: str,
    cycles: int,
    prune_fraction: float,
    n_ingredients: int,
    epochs: int,
    lr: float,
    seed: int,
    device: str = "cpu",
    progress: Progress = None,
) -> Any:
    """Sparse Model Soups from a dense zoo model (Zimmer et al.)."""
    from core.papers.sparse_soups import SoupConfig
    from core.papers.sparse_soups import sparse_model_soup as run
    from core.train import TrainConfig

    key = (
        "sms",
        workspace,
        model_id,
        sha,
        task_name,
        cycles,
        prune_fraction,
        n_ingredients,
        epochs,
        lr,
        seed,
    )
    config = SoupConfig(
        cycles=cycles,
        prune_fraction=prune_fraction,
        n_ingredients=n_ingredients,
        retrain=TrainConfig(epochs=epochs, lr=lr),
    )
    return _landscape_cached(
        key,
        lambda: run(
            model(workspace, model_id, sha, device),
            zoo(workspace).state_dict(model_id),
            task(task_name),
            config,
            seed=seed,
            device=device,
            progress=progress,
        ),
    )


def bn_stream_study(
    workspace: str,
    id_a: str,
    sha_a: str,
    id_b: str,
    sha_b: str,
    task_name: str,
    align: str,
    classes_per_batch: tuple[int, ...],
    n_examples: int,
    batch_size: int,
    seed: int,
    device: str = "cpu",
) -> Any:
    """BN re-estimation of the A-B midpoint from shuffled vs label-sorted streams."""
    import torch

    from core.papers.unmix_bn import bn_stream_study as run
    from core.papers.unmix_bn import merged_pair

    key: tuple = ("bnstream", workspace, id_a, sha_a, id_b, sha_b, task_name, align)
    key += (classes_per_batch, n_examples, batch_size, seed)
    z = zoo(workspace)

    def compute() -> Any:
        net = model(workspace, id_a, sha_a, "cpu")
        merged = merged_pair(
            net,
            z.state_dict(id_a),
            z.state_dict(id_b),
            align=align,
            generator=torch.Generator().manual_seed(seed),
        )
        return run(
            net,
            merged,
            task(task_name),
            classes_per_batch=classes_per_batch,
            n_examples=n_examples,
            batch_size=batch_size,
            seed=seed,
        )

    return _landscape_cached(key, compute)


def different_init_study(
    workspace: str,
    id_a: str,
    sha_a: str,
    id_b: str,
    sha_b: str,
    task_name: str,
    ratios: tuple[float, ...],
    n_examples: int,
    seed: int,
    progress: Progress = None,
) -> Any:
    """ZipIt! and PLeaS vs permutation-only merging of two different-init MLPs."""
    from core.papers.different_init import different_init_study as run

    key = ("diffinit", workspace, id_a, sha_a, id_b, sha_b, task_name, ratios, n_examples, seed)
    z = zoo(workspace)
    return _landscape_cached(
        key,
        lambda: run(
            model(workspace, id_a, sha_a, "cpu"),
            z.state_dict(id_a),
            z.state_dict(id_b),
            task(task_name),
            ratios=ratios,
            n_examples=n_examples,
            seed=seed,
            progress=progress,
        ),
    )
