"""The one way the workbench takes a subset of labelled data: seeded and stratified.

The bundled datasets are stored sorted by class, so ``x[:n]`` holds a few classes only (the
first 1000 MNIST training rows are digits 0-2). Every subset of labelled data in ``core``,
``ui`` and ``pages`` goes through :func:`stratified_subset`: each class keeps its share of the
``n`` rows (largest remainder, ties broken at random), rows within a class are drawn at
random, and the draw depends only on ``random_state`` and ``key`` (e.g. the task name), so a
task's subset is the same whatever else is selected.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int


def subset_seed(random_state: int, key: str = "") -> int:
    """The seed of the subset named ``key`` under ``random_state`` (stable across runs)."""
    check_int("random_state", random_state, 0)
    if not isinstance(key, str):
        raise TypeError(f"key must be a string, got {type(key).__name__}")
    return (random_state * 1_000_003 + zlib.crc32(key.encode())) % 2**63


def stratified_subset(
    y: Tensor | np.ndarray, n: int | None, *, random_state: int = 0, key: str = ""
) -> Tensor:
    """Sorted indices of a seeded, stratified random sample of ``n`` of the labels ``y``.

    Args:
        y: (N,) integer class labels.
        n: rows to keep (at least 1); None or n >= N keeps all rows.
        random_state: seed.
        key: names the subset (a task name, "train"), so different subsets under one seed
            are drawn independently.

    Returns:
        (n,) int64 indices into ``y``, ascending; class c gets ⌊n·N_c/N⌋ or one more.
    """
    labels = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"y must be a 1-d array of labels, got shape {tuple(labels.shape)}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {labels.dtype}")
    total = labels.size
    if n is not None:
        check_int("n", n, 1)
    if n is None or n >= total:
        return torch.arange(total, dtype=torch.int64)
    rng = np.random.default_rng(subset_seed(random_state, key))
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / total  # (C,) each class's share
    quota = np.floor(exact).astype(np.int64)
    order = rng.permutation(len(classes))  # random tie-break among equal remainders
    rest = order[np.argsort(-(exact - quota)[order], kind="stable")]
    quota[rest[: n - int(quota.sum())]] += 1
    picked = [
        rng.permutation(np.flatnonzero(labels == c))[:q]
        for c, q in zip(classes, quota, strict=True)
    ]
    return torch.from_numpy(np.sort(np.concatenate(picked))).to(torch.int64)


__all__ = ["stratified_subset", "subset_seed"]
