"""The evaluation data of the Merge Lab: a seeded, stratified subset of every task's test set
(the fast path for sliders), or the full test sets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int
from ..data import get_task, stratified_subset

DEFAULT_N_PER_TASK = 250  # evaluation subset per task on the slider path


@dataclass(frozen=True, eq=False)
class EvalSet:
    """Test inputs of several tasks, concatenated in task order.

    Attributes:
        tasks: task names.
        x: (M, C, H, W) inputs; y: (M,) labels.
        sizes: samples per task (sum M).
        full: True for the full test sets, False for a seeded subset.
    """

    tasks: tuple[str, ...]
    x: Tensor
    y: Tensor
    sizes: tuple[int, ...]
    full: bool

    @property
    def groups(self) -> np.ndarray:
        """(M,) task index of every sample."""
        return np.repeat(np.arange(len(self.tasks)), self.sizes)

    def to(self, device: torch.device) -> EvalSet:
        return EvalSet(self.tasks, self.x.to(device), self.y.to(device), self.sizes, self.full)


def make_eval_set(
    tasks: Sequence[str], *, n_per_task: int | None = DEFAULT_N_PER_TASK, random_state: int = 0
) -> EvalSet:
    """The evaluation data of ``tasks``: a seeded, stratified subset of each test set, or all.

    The subset of a task depends only on the task name and ``random_state``, not on which
    other tasks are selected, so numbers stay comparable across selections.

    Args:
        tasks: task names (``core.data.get_task``), no duplicates.
        n_per_task: test samples per task (at most the test set), None for the full sets.
        random_state: seed of the subsets.
    """
    tasks = _check_tasks(tasks)
    if n_per_task is not None:
        check_int("n_per_task", n_per_task, 1)
    check_int("random_state", random_state, 0)
    xs, ys, sizes = [], [], []
    for name in tasks:
        ds = get_task(name)
        x, y = ds.x_test, ds.y_test
        if n_per_task is not None and n_per_task < len(y):
            idx = stratified_subset(y, n_per_task, random_state=random_state, key=name)
            x, y = x[idx], y[idx]
        xs.append(x)
        ys.append(y)
        sizes.append(len(y))
    return EvalSet(tuple(tasks), torch.cat(xs), torch.cat(ys), tuple(sizes), n_per_task is None)


def _check_tasks(tasks: Sequence[str]) -> list[str]:
    if isinstance(tasks, str) or not isinstance(tasks, Sequence) or not tasks:
        raise ValueError(f"tasks must be a non-empty list of task names, got {tasks!r}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must not repeat, got {list(tasks)}")
    return list(tasks)
