"""A merged model evaluated on every task: :class:`MergeEval`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..stats import bootstrap_ci


@dataclass(frozen=True, eq=False)
class MergeEval:
    """A merged model evaluated on every task.

    Attributes:
        tasks: task names.
        accuracy: per-task accuracy of the merged model.
        loss: per-task mean cross-entropy.
        reference: per-task accuracy of the fine-tuned (individual) model of that task on the
            same samples (the best source model of the task when several share it).
        base: per-task accuracy of the base model (None without a base).
        correct: (M,) per-sample correctness, tasks concatenated.
        groups: (M,) task index of each sample.
        full: evaluated on the full test sets (else the seeded subset).
        seconds: wall time of merge + evaluation.
    """

    tasks: tuple[str, ...]
    accuracy: tuple[float, ...]
    loss: tuple[float, ...]
    reference: tuple[float, ...]
    base: tuple[float, ...] | None
    correct: np.ndarray
    groups: np.ndarray
    full: bool
    seconds: float = 0.0

    @property
    def average(self) -> float:
        """Mean of the per-task accuracies."""
        return float(np.mean(self.accuracy))

    @property
    def normalized(self) -> tuple[float, ...]:
        """Per-task merged / fine-tuned accuracy (NaN where the reference is 0)."""
        return tuple(
            a / r if r > 0 else math.nan for a, r in zip(self.accuracy, self.reference, strict=True)
        )

    @property
    def average_normalized(self) -> float:
        """Mean of the per-task normalised accuracies (the literature's "normalized accuracy")."""
        return float(np.nanmean(self.normalized))

    @property
    def base_average(self) -> float | None:
        """Mean per-task accuracy of the base model (None without a base)."""
        return None if self.base is None else float(np.mean(self.base))

    def average_ci(self, *, n_boot: int = 2000, level: float = 0.95, random_state: int = 0) -> Any:
        """Bootstrap CI of the average accuracy, resampling within each task."""
        return bootstrap_ci(
            self.correct, groups=self.groups, n_boot=n_boot, level=level, random_state=random_state
        )

    def to_dict(self) -> dict[str, Any]:
        """Numbers only (no per-sample arrays), JSON-ready."""
        return {
            "tasks": list(self.tasks),
            "accuracy": dict(zip(self.tasks, self.accuracy, strict=True)),
            "loss": dict(zip(self.tasks, self.loss, strict=True)),
            "reference": dict(zip(self.tasks, self.reference, strict=True)),
            "base": None if self.base is None else dict(zip(self.tasks, self.base, strict=True)),
            "normalized": dict(zip(self.tasks, self.normalized, strict=True)),
            "average": self.average,
            "average_normalized": self.average_normalized,
            "full": self.full,
            "n": int(self.correct.size),
        }
