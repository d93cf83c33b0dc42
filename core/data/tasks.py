"""Tasks: named views of the datasets that models are trained on and merged across.

* domain tasks, one per dataset: ``mnist``, ``fashion``, ``digits``; derived domains that keep
  the digit labels: ``mnist_inverted`` (1 - pixel), ``mnist_rotated`` (rotated 90 degrees);
* class-split tasks: ``mnist_0-4`` / ``mnist_5-9`` (and the same for fashion and digits), which
  keep the 10-way label space but only half of the classes.

``get_task(name)`` returns a :class:`~core.data.datasets.Dataset`; it raises
``DatasetUnavailable`` (with install instructions) for a missing optional dataset.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .datasets import (
    MEAN,
    STD,
    Dataset,
    DatasetUnavailable,
    fashion_available,
    load_digits,
    load_fashion,
    load_mnist,
)
from .subset import stratified_subset


@dataclass(frozen=True)
class TaskSpec:
    """How a task is built: a dataset loader, a pixel transform and a class subset."""

    name: str
    dataset: str
    loader: Callable[[], Dataset]
    description: str
    transform: Callable[[Tensor], Tensor] | None = None
    classes: tuple[int, ...] | None = None
    optional: bool = False


def _invert(x: Tensor) -> Tensor:
    # in normalised space, 1 - x01 maps to -x exactly when MEAN = 0.5
    return (1.0 - (x * STD + MEAN) - MEAN) / STD


def _rotate90(x: Tensor) -> Tensor:
    return torch.rot90(x, k=1, dims=(-2, -1)).contiguous()


_LOADERS: dict[str, tuple[Callable[[], Dataset], bool]] = {
    "mnist": (load_mnist, False),
    "fashion": (load_fashion, True),
    "digits": (load_digits, False),
}


def _specs() -> dict[str, TaskSpec]:
    specs: dict[str, TaskSpec] = {}
    for ds, (loader, optional) in _LOADERS.items():
        specs[ds] = TaskSpec(ds, ds, loader, f"{ds}: all 10 classes", optional=optional)
        for lo, hi in ((0, 4), (5, 9)):
            nm = f"{ds}_{lo}-{hi}"
            specs[nm] = TaskSpec(
                nm,
                ds,
                loader,
                f"{ds}, classes {lo}-{hi} only (10-way labels kept)",
                classes=tuple(range(lo, hi + 1)),
                optional=optional,
            )
    specs["mnist_inverted"] = TaskSpec(
        "mnist_inverted",
        "mnist",
        load_mnist,
        "MNIST with inverted pixels (a new domain, same labels)",
        transform=_invert,
    )
    specs["mnist_rotated"] = TaskSpec(
        "mnist_rotated",
        "mnist",
        load_mnist,
        "MNIST rotated by 90 degrees (a new domain, same labels)",
        transform=_rotate90,
    )
    return specs


TASKS: dict[str, TaskSpec] = _specs()


def task_names() -> list[str]:
    """All task names, available or not."""
    return list(TASKS)


def available_tasks() -> list[str]:
    """Tasks whose data is present on this machine."""
    return [n for n, s in TASKS.items() if not (s.dataset == "fashion" and not fashion_available())]


@functools.lru_cache(maxsize=32)
def get_task(name: str) -> Dataset:
    """Build the dataset view for task ``name``.

    Raises:
        ValueError: unknown task name.
        DatasetUnavailable: the underlying optional dataset is not installed.
    """
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    spec = TASKS[name]
    base = spec.loader()
    xtr, ytr, xte, yte = base.x_train, base.y_train, base.x_test, base.y_test
    if spec.transform is not None:
        xtr, xte = spec.transform(xtr), spec.transform(xte)
    classes = base.classes
    if spec.classes is not None:
        keep = torch.tensor(spec.classes)
        mtr, mte = torch.isin(ytr, keep), torch.isin(yte, keep)
        xtr, ytr, xte, yte = xtr[mtr], ytr[mtr], xte[mte], yte[mte]
        classes = spec.classes
    return replace(
        base,
        name=name,
        x_train=xtr,
        y_train=ytr,
        x_test=xte,
        y_test=yte,
        description=spec.description,
        classes=tuple(classes),
    )


def mixture(
    names: list[str], *, n_per_task: int | None = None, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Training inputs of several tasks pooled (the "pre-training" mixture of domains).

    Args:
        names: task names.
        n_per_task: at most this many training examples from each task (None: all), a
            stratified subset (:func:`core.data.stratified_subset`).
        generator: seeds the subsets.

    Returns:
        x: (N, 1, 28, 28), y: (N,)
    """
    if not names:
        raise ValueError("names must list at least one task, got []")
    xs, ys = [], []
    for nm in names:
        ds = get_task(nm)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        idx = stratified_subset(ds.y_train, n_per_task, random_state=seed, key=nm)
        xs.append(ds.x_train[idx])
        ys.append(ds.y_train[idx])
    return torch.cat(xs), torch.cat(ys)


__all__ = [
    "TASKS",
    "TaskSpec",
    "DatasetUnavailable",
    "available_tasks",
    "get_task",
    "mixture",
    "task_names",
]
