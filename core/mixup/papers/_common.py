"""Shared plumbing of the paper studies: run records in the workspace, progress, cancelling and
a bootstrap CI of a mean (for errors and similarities, where ``core.stats`` covers accuracies)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...stats import BootstrapCI
from ...train import TrainingCancelled
from ...zoo import Zoo, slugify

RUN_KIND = "mix_paper_run"
# paper key -> display title (the studies that exist)
PAPERS: dict[str, str] = {
    "feature_learning": "Zou et al. 2023 — The Benefits of Mixup for Feature Learning",
    "neural_collapse": "Fisher et al. 2024 — Mixup's Influence on Neural Collapse",
    "supremix": "SupReMix — Mixup Your Own Pairs (contrastive regression)",
    "mochi": "MoCHi — Hard Negative Mixing for Contrastive Learning",
    "adamixup": "AdaMixUp — learned mixing policy + intrusion discriminator",
    "adautomix": "AdAutoMix — adversarial mixed-sample generator",
    "attention_labels": "TransMix / MixPro — attention labels on a small ViT",
    "dualmix": "DualMix — mixup for online class-incremental learning",
}

Cancelled = TrainingCancelled
ProgressFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], bool]


def check_stop(should_stop: StopFn | None, where: str) -> None:
    """Raise :class:`core.train.TrainingCancelled` when ``should_stop()`` says so."""
    if should_stop is not None and should_stop():
        raise TrainingCancelled(f"cancelled at {where}")


def report(progress: ProgressFn | None, **info: Any) -> None:
    if progress is not None:
        progress(info)


def store_run(zoo: Zoo, paper: str, record: Mapping[str, Any], run_id: str | None = None) -> str:
    """Store a study's record in the workspace; return its id (``<paper>-<time>`` by default)."""
    if paper not in PAPERS:
        raise ValueError(f"paper must be one of {sorted(PAPERS)}, got {paper!r}")
    if not isinstance(zoo, Zoo):
        raise TypeError(f"zoo must be a core.zoo.Zoo, got {type(zoo).__name__}")
    run_id = run_id or slugify(f"{paper}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6}")
    zoo.put_record(RUN_KIND, run_id, {**dict(record), "paper": paper, "run_id": run_id})
    return run_id


def load_paper_runs(zoo: Zoo, paper: str | None = None) -> dict[str, dict[str, Any]]:
    """Stored study records (run id -> record, oldest first), of one paper or all."""
    if paper is not None and paper not in PAPERS:
        raise ValueError(f"paper must be one of {sorted(PAPERS)}, got {paper!r}")
    runs = zoo.get_records(RUN_KIND)
    return {k: v for k, v in runs.items() if paper is None or v.get("paper") == paper}


def bootstrap_mean_ci(
    values: Any, *, n_boot: int = 2000, level: float = 0.95, random_state: int = 0
) -> BootstrapCI:
    """Percentile bootstrap CI of the mean of ``values`` (resampled with replacement).

    Args:
        values: (N,) finite numbers, N >= 2 (per-sample errors, per-seed scores...).
        n_boot: replicates; level: confidence level in (0, 1); random_state: numpy seed.
    """
    v = np.asarray(values, dtype=float).ravel()
    if v.size < 2 or not np.isfinite(v).all():
        raise ValueError(f"values must hold at least 2 finite numbers, got {v.size} ({v[:5]})")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if n_boot < 10:
        raise ValueError(f"n_boot must be >= 10, got {n_boot}")
    rng = np.random.default_rng(random_state)
    reps = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)  # (n_boot,)
    a = 1.0 - level
    lo, hi = np.quantile(reps, [a / 2, 1 - a / 2])
    return BootstrapCI(float(v.mean()), float(lo), float(hi), float(level), n_boot, int(v.size))


def random_subset(x: Any, y: Any, n: int | None, seed: int) -> tuple[Any, Any]:
    """A seeded subset of ``n`` rows of (x, y) (all rows when n is None or larger): stratified
    by class through :func:`core.data.stratified_subset` when ``y`` holds class labels, a
    seeded random sample when ``y`` is a continuous target.

    Needed because some splits are stored sorted by class (MNIST-5k): the first n rows would
    hold a few classes only.
    """
    import torch

    from ...data import stratified_subset

    if n is None or n >= len(x):
        return x, y
    labels = torch.as_tensor(y)
    if not labels.is_floating_point() and labels.ndim == 1:
        idx = stratified_subset(labels, n, random_state=seed)
    else:
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def accuracy_row(method: str, summary: Mapping[str, Any], label: str = "test acc") -> dict:
    """A headline row's start: the method, its pooled accuracy estimate and the 95% CI text,
    from a study summary entry holding an ``accuracy`` CI dict."""
    a = summary["accuracy"]
    return {"method": method, label: a["estimate"], "CI": f"[{a['low']:.3f}, {a['high']:.3f}]"}


def gap_text(gap: Mapping[str, float]) -> str:
    """A paired gap CI dict as ``+0.012 [-0.003, +0.027]``."""
    return f"{gap['estimate']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}]"
