"""Loss and accuracy along the straight line between two models, and barrier definitions.

theta(t) = (1 - t) theta_A + t theta_B for t in linspace(0, 1, n_points), endpoints included,
on every split (train and test). BatchNorm networks: by default the running statistics are
interpolated like the weights ("naive"); ``recompute_bn=True`` re-estimates them at every point
from a fixed training subset (the BN reset of Jordan et al., REPAIR, arXiv 2211.08403, and of
Garipov et al.'s ``update_bn``), without which interpolated BN networks look far worse.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_int
from ..data import Dataset
from ._eval import EvalData, PrivateNet, ProgressFn, device_of, float_state, prepare_data


@dataclass
class PathResult:
    """Loss and accuracy along a path.

    Attributes:
        t: (n_points,) path parameter (0 = model A, 1 = model B); for random directions, the
            step along the direction.
        loss: split -> (n_points,) mean cross-entropy.
        accuracy: split -> (n_points,) fraction correct.
        n_examples: split -> examples evaluated (a fixed seeded subset unless ``exact``).
        n_total: split -> examples available.
        recompute_bn: whether BatchNorm statistics were re-estimated at every point.
        distance: ||theta_A - theta_B|| over floating tensors (NaN where not meaningful).
        label: what the path is ("naive", "weight matching", "Bezier", ...).
        seconds: wall time of the evaluation.
        meta: anything else worth reporting (kind of path, subset seed...).
    """

    t: list[float]
    loss: dict[str, list[float]]
    accuracy: dict[str, list[float]]
    n_examples: dict[str, int]
    n_total: dict[str, int]
    recompute_bn: bool = False
    distance: float = math.nan
    label: str = ""
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def splits(self) -> list[str]:
        return list(self.loss)

    @property
    def exact(self) -> bool:
        """True when every split was evaluated on all of its examples."""
        return self.n_examples == self.n_total


def evaluate_path(
    net: PrivateNet,
    ts: list[float],
    write_at: Any,
    data: EvalData,
    *,
    recompute_bn: bool,
    batch_size: int,
    head: int = 0,
    progress: ProgressFn | None = None,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Evaluate ``net`` at every t after ``write_at(t)`` has written its weights."""
    loss: dict[str, list[float]] = {s: [] for s in data.splits}
    acc: dict[str, list[float]] = {s: [] for s in data.splits}
    for i, t in enumerate(ts):
        write_at(t)
        for s, (lo, ac) in net.evaluate(
            data, recompute_bn=recompute_bn, batch_size=batch_size, head=head
        ).items():
            loss[s].append(lo)
            acc[s].append(ac)
        if progress is not None:
            progress(i + 1, len(ts))
    return loss, acc


def interpolate(
    model: nn.Module,
    sd_a: Mapping[str, Tensor],
    sd_b: Mapping[str, Tensor],
    data: Dataset | Mapping[str, tuple[Tensor, Tensor]],
    *,
    n_points: int = 25,
    recompute_bn: bool = False,
    max_examples: int | None = 5000,
    bn_examples: int = 2000,
    batch_size: int = 2048,
    device: str | torch.device = "cpu",
    head: int = 0,
    label: str = "",
    progress: ProgressFn | None = None,
) -> PathResult:
    """Loss and accuracy along the straight line from ``sd_a`` to ``sd_b``.

    The caller's model and state dicts are never modified: a private copy of the model has its
    tensors overwritten in place at each point.

    Args:
        model: the architecture of both state dicts.
        sd_a: model A (t = 0).
        sd_b: model B (t = 1).
        data: a Dataset (splits "train" and "test") or split name -> (x, y).
        n_points: points on [0, 1], endpoints included.
        recompute_bn: re-estimate BatchNorm statistics at every point (no-op without BN).
        max_examples: examples per split, a fixed seeded subset (reported); None for all.
        bn_examples: training examples used for each BatchNorm reset.
        batch_size: forward-pass batch size.
        device: "cpu", "cuda" or "auto".
        head: which head of a multi-head model.
        label: name of the path (kept in the result).
        progress: called as ``progress(done, n_points)`` after each point.

    Returns:
        A :class:`PathResult`.
    """
    check_int("n_points", n_points, 2, 10_001)
    check_int("batch_size", batch_size, 1)
    if not isinstance(recompute_bn, bool):
        raise TypeError(f"recompute_bn must be a bool, got {type(recompute_bn).__name__}")
    dev = device_of(device)
    start = time.perf_counter()
    a, b = float_state([sd_a, sd_b], ["sd_a", "sd_b"], dev)
    evdata = prepare_data(data, max_examples=max_examples, bn_examples=bn_examples, device=dev)
    net = PrivateNet(model, sd_a, dev)
    ts = torch.linspace(0, 1, n_points, dtype=torch.float64).tolist()

    def write_at(t: float) -> None:
        net.write(lambda k, out: torch.lerp(a[k], b[k], t, out=out))

    loss, acc = evaluate_path(
        net,
        ts,
        write_at,
        evdata,
        recompute_bn=recompute_bn,
        batch_size=batch_size,
        head=head,
        progress=progress,
    )
    dist = math.sqrt(
        sum(float((a[k] - b[k]).double().pow(2).sum()) for k in a if "running" not in k)
    )
    return PathResult(
        t=ts,
        loss=loss,
        accuracy=acc,
        n_examples=evdata.n_examples,
        n_total=evdata.n_total,
        recompute_bn=recompute_bn and net.has_bn,
        distance=dist,
        label=label,
        seconds=time.perf_counter() - start,
        meta={"kind": "linear", "subset_seed": 0, "bn_examples": bn_examples},
    )


# --------------------------------------------------------------------------- barriers
BARRIER_COLUMNS: dict[str, str] = {
    "loss_barrier": "max_t L(t) - (L(0) + L(1)) / 2  [Git Re-Basin, Ainsworth et al. 2023]",
    "loss_barrier_linear": "max_t [L(t) - ((1 - t) L(0) + t L(1))]  [Entezari et al. 2022]",
    "accuracy_barrier": "(acc(0) + acc(1)) / 2 - min_t acc(t)",
    "midpoint_accuracy": "acc(0.5) (linear interpolation between grid points if 0.5 is not on the grid)",
    "midpoint_loss": "L(0.5)",
    "argmax_t": "t of the highest loss",
}


@dataclass(frozen=True)
class BarrierReport:
    """Every barrier definition for every split of a path, labelled.

    ``float(report)`` is the Git Re-Basin loss barrier on the first split ("train" when
    present); the table (:meth:`rows`) holds all definitions side by side.

    Attributes:
        label: the path's label.
        values: split -> column (see ``BARRIER_COLUMNS``) -> value.
        n_points: grid size (barriers on a grid are lower bounds of the sup over t).
    """

    label: str
    values: dict[str, dict[str, float]]
    n_points: int

    def __float__(self) -> float:
        split = "train" if "train" in self.values else next(iter(self.values))
        return self.values[split]["loss_barrier"]

    def rows(self) -> list[dict[str, Any]]:
        """One row per split: ``{"path", "split", <columns>...}``."""
        return [{"path": self.label, "split": s, **v} for s, v in self.values.items()]


def _at_half(ts: list[float], vals: list[float]) -> float:
    t = torch.tensor(ts, dtype=torch.float64)
    v = torch.tensor(vals, dtype=torch.float64)
    j = int(torch.searchsorted(t, torch.tensor(0.5, dtype=torch.float64)))
    if j < len(ts) and abs(ts[j] - 0.5) < 1e-12:
        return float(v[j])
    if j == 0 or j >= len(ts):
        return math.nan
    w = (0.5 - ts[j - 1]) / (ts[j] - ts[j - 1])
    return float((1 - w) * v[j - 1] + w * v[j])


def barrier(result: PathResult) -> BarrierReport:
    """All barrier definitions of a path, per split, labelled (see ``BARRIER_COLUMNS``).

    Args:
        result: a path whose first point is model A and last point model B.

    Raises:
        TypeError: ``result`` is not a PathResult.
        ValueError: fewer than two points, or t not increasing from 0 to 1.
    """
    if not isinstance(result, PathResult):
        raise TypeError(f"result must be a PathResult, got {type(result).__name__}")
    ts = list(result.t)
    if len(ts) < 2 or abs(ts[0]) > 1e-9 or abs(ts[-1] - 1) > 1e-9:
        raise ValueError(
            f"result.t must run from 0 to 1 with >= 2 points, got {ts[:1]}...{ts[-1:]}"
        )
    t = torch.tensor(ts, dtype=torch.float64)
    values: dict[str, dict[str, float]] = {}
    for s in result.loss:
        lo = torch.tensor(result.loss[s], dtype=torch.float64)  # (T,)
        ac = torch.tensor(result.accuracy[s], dtype=torch.float64)
        line = (1 - t) * lo[0] + t * lo[-1]
        values[s] = {
            "loss_barrier": float(lo.max() - 0.5 * (lo[0] + lo[-1])),
            "loss_barrier_linear": float((lo - line).max()),
            "accuracy_barrier": float(0.5 * (ac[0] + ac[-1]) - ac.min()),
            "midpoint_accuracy": _at_half(ts, result.accuracy[s]),
            "midpoint_loss": _at_half(ts, result.loss[s]),
            "argmax_t": float(t[int(lo.argmax())]),
        }
    return BarrierReport(label=result.label, values=values, n_points=len(ts))
