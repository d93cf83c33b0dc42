"""Neural collapse over training, ERM vs mixup: runs trained by :func:`core.mixup.training.
train_mixers` with :func:`track_neural_collapse` as the epoch callback, stored as ``mixup_run``
records; NC metrics per epoch live in each method's ``history["extra"]``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .._checks import check_int, check_range
from ..train import TrainConfig
from ..zoo import Zoo
from .collapse import track_neural_collapse


def nc_histories(run: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Method label -> per-epoch NC dicts of a stored ``mixup_run`` record (methods trained
    without NC tracking are left out)."""
    if not isinstance(run, Mapping) or "methods" not in run:
        raise ValueError(
            f"run must be a mixup_run record with 'methods', got keys {sorted(run) if isinstance(run, Mapping) else type(run).__name__}"
        )
    out = {}
    for label, method in run["methods"].items():
        extra = method.get("history", {}).get("extra") or []
        rows = [dict(e) for e in extra if isinstance(e, Mapping) and "nc1" in e]
        if rows:
            out[label] = rows
    return out


def runs_with_nc(zoo: Zoo) -> dict[str, dict[str, Any]]:
    """Stored ``mixup_run`` records that carry NC metrics per epoch, run id -> record."""
    from ..mixup.training import load_runs

    return {k: r for k, r in load_runs(zoo).items() if nc_histories(r)}


def train_nc_comparison(
    zoo: Zoo,
    *,
    task: str,
    arch: str = "mlp",
    arch_kwargs: Mapping[str, Any] | None = None,
    epochs: int = 8,
    n_train: int = 2000,
    n_track: int = 1000,
    alpha: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ERM and mixup (same init, same order) with NC tracked every epoch; store the run.

    Returns:
        The stored ``mixup_run`` record (see :func:`core.mixup.training.train_mixers`).
    """
    from ..data import get_task, stratified_subset
    from ..mixup.training import MixMethod, train_mixers

    check_int("epochs", epochs, 1, 1000)
    check_int("n_train", n_train, 10)
    check_int("n_track", n_track, 10)
    check_range("alpha", alpha, 0.0, None, low_inclusive=False)
    ds = get_task(task)
    idx = stratified_subset(ds.y_train, n_train, random_state=seed, key=f"{task}/train")
    x, y = ds.x_train[idx], ds.y_train[idx]  # the rows train_mixers trains on
    callback = track_neural_collapse(x, y, n_max=n_track, random_state=seed, device=device)
    methods = [MixMethod(), MixMethod("mixup", {"alpha": alpha})]
    return train_mixers(
        zoo,
        task=task,
        methods=methods,
        arch=arch,
        arch_kwargs=arch_kwargs,
        config=TrainConfig(epochs=epochs, seed=seed),
        n_train=n_train,
        device=device,
        progress=progress,
        epoch_callback=callback,
    )
