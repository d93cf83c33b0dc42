"""Two-dimensional slices of the loss landscape.

* :func:`plane` — the plane through three models (Garipov et al. 2018, ``plane.py``; Git
  Re-Basin's contour through Theta_A, Theta_B, pi(Theta_B)). Orthonormal basis by Gram-Schmidt:
  u = (theta_1 - theta_0) / ||theta_1 - theta_0||, v = the normalised part of theta_2 - theta_0
  orthogonal to u. Coordinates are in units of d = ||theta_1 - theta_0||, so theta_0 sits at
  (0, 0) and theta_1 at (1, 0); grid point (x, y) is theta_0 + d (x u + y v).
* :func:`random_directions` — 1-D and 2-D slices around one model along Gaussian directions
  with filter-wise normalisation (Li et al., "Visualizing the Loss Landscape of Neural Nets",
  NeurIPS 2018): every output filter (row) of the direction gets the norm of the model's
  filter; 1-D tensors (biases, BatchNorm) and BatchNorm statistics are not perturbed.

Grids are evaluated coarse to fine: sub-grids of 5, 9, 17, ... points per side first (each
point is computed once), so a caller can draw a coarse picture within a second and refine it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_int, check_range
from ..data import Dataset
from ._eval import EvalData, PrivateNet, ProgressFn, device_of, float_state, prepare_data
from .path import PathResult


@dataclass
class PlaneResult:
    """Loss and accuracy on a grid over a plane.

    Attributes:
        x: (nx,) grid coordinates along the first axis.
        y: (ny,) grid coordinates along the second axis.
        loss: split -> (ny, nx) nested lists, row j is y[j] (NaN where not evaluated).
        accuracy: split -> (ny, nx) nested lists.
        positions: (x, y) of each anchor model (three models; one for random directions).
        labels: one label per anchor model.
        scale: length of one coordinate unit in weight space.
        n_examples / n_total: split -> examples evaluated / available.
        recompute_bn: whether BatchNorm statistics were re-estimated at every point.
        complete: False for the coarse pictures handed to ``on_level``.
        seconds: wall time so far.
        meta: kind of slice and its settings.
    """

    x: list[float]
    y: list[float]
    loss: dict[str, list[list[float]]]
    accuracy: dict[str, list[list[float]]]
    positions: list[tuple[float, float]]
    labels: list[str]
    scale: float
    n_examples: dict[str, int]
    n_total: dict[str, int]
    recompute_bn: bool = False
    complete: bool = True
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def splits(self) -> list[str]:
        return list(self.loss)


def _levels(n: int) -> list[list[int]]:
    """Index sub-grids of sizes 5, 9, 17, ... (< n), then the full 0..n-1."""
    out: list[list[int]] = []
    m = 5
    while m < n:
        out.append(sorted({round(v) for v in torch.linspace(0, n - 1, m).tolist()}))
        m = 2 * m - 1
    out.append(list(range(n)))
    return out


def grid_evaluate(
    net: PrivateNet,
    origin: Mapping[str, Tensor],
    u: Mapping[str, Tensor],
    v: Mapping[str, Tensor],
    xs: list[float],
    ys: list[float],
    data: EvalData,
    *,
    recompute_bn: bool,
    batch_size: int,
    head: int,
    base: PlaneResult,
    progress: ProgressFn | None,
    on_level: Callable[[PlaneResult], None] | None,
) -> PlaneResult:
    """Evaluate origin + x u + y v on the grid, coarse to fine. ``u``/``v`` hold only the
    tensors that move; the others stay at ``origin``."""
    start = time.perf_counter()
    nx, ny = len(xs), len(ys)
    loss = {s: torch.full((ny, nx), math.nan, dtype=torch.float64) for s in data.splits}
    acc = {s: torch.full((ny, nx), math.nan, dtype=torch.float64) for s in data.splits}
    done = torch.zeros(ny, nx, dtype=torch.bool)
    lx, ly = _levels(nx), _levels(ny)
    levels = [
        (lx[min(i, len(lx) - 1)], ly[min(i, len(ly) - 1)]) for i in range(max(len(lx), len(ly)))
    ]
    count = 0

    def write(key: str, out: Tensor, *, a: float, b: float) -> None:
        if key in u:
            torch.add(origin[key], u[key], alpha=a, out=out)
            out.add_(v[key], alpha=b)
        else:
            out.copy_(origin[key])

    for li, (ix, iy) in enumerate(levels):
        for j in iy:
            for i in ix:
                if done[j, i]:
                    continue
                a, b = xs[i], ys[j]
                net.write(partial(write, a=a, b=b))
                res = net.evaluate(
                    data, recompute_bn=recompute_bn, batch_size=batch_size, head=head
                )
                for s, (lo, ac) in res.items():
                    loss[s][j, i], acc[s][j, i] = lo, ac
                done[j, i] = True
                count += 1
                if progress is not None:
                    progress(count, nx * ny)
        if on_level is not None and li < len(levels) - 1:
            sub_x, sub_y = torch.tensor(ix), torch.tensor(iy)
            on_level(
                replace(
                    base,
                    x=[xs[i] for i in ix],
                    y=[ys[j] for j in iy],
                    loss={s: t[sub_y][:, sub_x].tolist() for s, t in loss.items()},
                    accuracy={s: t[sub_y][:, sub_x].tolist() for s, t in acc.items()},
                    complete=False,
                    seconds=time.perf_counter() - start,
                )
            )
    return replace(
        base,
        x=list(xs),
        y=list(ys),
        loss={s: t.tolist() for s, t in loss.items()},
        accuracy={s: t.tolist() for s, t in acc.items()},
        complete=True,
        seconds=time.perf_counter() - start,
    )


def _dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    return sum(float(torch.dot(a[k].reshape(-1).double(), b[k].reshape(-1).double())) for k in a)


def plane(
    model: nn.Module,
    sds: Sequence[Mapping[str, Tensor]],
    data: Dataset | Mapping[str, tuple[Tensor, Tensor]],
    *,
    resolution: int = 25,
    margin: float = 0.2,
    labels: Sequence[str] | None = None,
    recompute_bn: bool = False,
    max_examples: int | None = 500,
    bn_examples: int = 1000,
    batch_size: int = 2048,
    device: str | torch.device = "cpu",
    head: int = 0,
    progress: ProgressFn | None = None,
    on_level: Callable[[PlaneResult], None] | None = None,
) -> PlaneResult:
    """Loss and accuracy on a resolution x resolution grid over the plane through three models.

    Args:
        model: the architecture of the three state dicts (never modified).
        sds: three state dicts theta_0, theta_1, theta_2 (not collinear).
        data: a Dataset or split name -> (x, y).
        resolution: grid points per side.
        margin: the grid covers the models' bounding box widened by this fraction per side.
        labels: one label per model (default "theta_0", "theta_1", "theta_2").
        recompute_bn: re-estimate BatchNorm statistics at every point; otherwise they are
            combined like the weights (variances clamped at 0).
        max_examples: examples per split, a fixed seeded subset (reported); None for all.
        bn_examples: training examples per BatchNorm reset.
        batch_size: forward-pass batch size.
        device: "cpu", "cuda" or "auto".
        head: which head of a multi-head model.
        progress: ``progress(done, total)`` after every grid point.
        on_level: called with the coarse sub-grid results (5x5, 9x9, ...) before the full grid.

    Returns:
        A :class:`PlaneResult` with the models' (x, y) positions.
    """
    if isinstance(sds, Mapping) or len(sds) != 3:
        raise ValueError(
            f"sds must be a sequence of three state dicts, got {type(sds).__name__} of length {len(sds)}"
        )
    check_int("resolution", resolution, 2, 501)
    check_range("margin", margin, 0.0, 10.0)
    labels = list(labels) if labels is not None else ["θ₀", "θ₁", "θ₂"]
    if len(labels) != 3:
        raise ValueError(f"labels must have 3 entries, got {len(labels)}")
    dev = device_of(device)
    t0, t1, t2 = float_state(list(sds), ["sds[0]", "sds[1]", "sds[2]"], dev)
    d1 = {k: t1[k] - t0[k] for k in t0}
    d2 = {k: t2[k] - t0[k] for k in t0}
    scale = math.sqrt(_dot(d1, d1))
    if scale < 1e-12:
        raise ValueError("sds[0] and sds[1] are identical: the plane is undefined")
    u = {k: d1[k] / scale for k in d1}
    c = _dot(d2, u)
    vp = {k: d2[k] - c * u[k] for k in d2}
    h = math.sqrt(_dot(vp, vp))
    if h < 1e-4 * scale:  # float32 differences: relative noise ~1e-6
        raise ValueError("the three models are collinear: the plane is undefined")
    # directions in coordinate units (one unit = scale): origin + x * U + y * V
    big_u = {k: u[k] * scale for k in u}
    big_v = {k: vp[k] * (scale / h) for k in vp}
    pos = [(0.0, 0.0), (1.0, 0.0), (c / scale, h / scale)]
    lo_x, hi_x = min(p[0] for p in pos), max(p[0] for p in pos)
    lo_y, hi_y = min(p[1] for p in pos), max(p[1] for p in pos)
    span = max(hi_x - lo_x, hi_y - lo_y)
    xs = torch.linspace(lo_x - margin * span, hi_x + margin * span, resolution).tolist()
    ys = torch.linspace(lo_y - margin * span, hi_y + margin * span, resolution).tolist()
    evdata = prepare_data(data, max_examples=max_examples, bn_examples=bn_examples, device=dev)
    net = PrivateNet(model, sds[0], dev)
    base = PlaneResult(
        x=xs,
        y=ys,
        loss={},
        accuracy={},
        positions=pos,
        labels=labels,
        scale=scale,
        n_examples=evdata.n_examples,
        n_total=evdata.n_total,
        recompute_bn=recompute_bn and net.has_bn,
        meta={"kind": "three models", "resolution": resolution, "margin": margin, "subset_seed": 0},
    )
    return grid_evaluate(
        net,
        t0,
        big_u,
        big_v,
        xs,
        ys,
        evdata,
        recompute_bn=recompute_bn,
        batch_size=batch_size,
        head=head,
        base=base,
        progress=progress,
        on_level=on_level,
    )


# --------------------------------------------------------------------------- random directions
def filter_normalized_direction(
    sd: Mapping[str, Tensor], *, generator: torch.Generator, normalization: str = "filter"
) -> dict[str, Tensor]:
    """A Gaussian direction, normalised filter by filter to the model's filters (Li et al.).

    Args:
        sd: the model's floating tensors.
        generator: source of the Gaussian draws.
        normalization: "filter" (per output row), "layer" (per tensor) or "none".

    Returns:
        key -> direction for weights with >= 2 dimensions (1-D tensors and BatchNorm statistics
        are left out: they are not perturbed).
    """
    check_choice("normalization", normalization, ("filter", "layer", "none"))
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    out: dict[str, Tensor] = {}
    for k, w in sd.items():
        if w.ndim < 2 or not w.is_floating_point():
            continue
        d = torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w.device)
        if normalization == "filter":
            wn = w.reshape(w.shape[0], -1).norm(dim=1)  # (out,)
            dn = d.reshape(d.shape[0], -1).norm(dim=1)
            d = d * (wn / (dn + 1e-10)).reshape(-1, *([1] * (w.ndim - 1)))
        elif normalization == "layer":
            d = d * (w.norm() / (d.norm() + 1e-10))
        out[k] = d
    return out


def random_directions(
    model: nn.Module,
    sd: Mapping[str, Tensor],
    data: Dataset | Mapping[str, tuple[Tensor, Tensor]],
    *,
    dims: int = 1,
    distance: float = 1.0,
    resolution: int = 25,
    normalization: str = "filter",
    generator: torch.Generator,
    max_examples: int | None = 1000,
    batch_size: int = 2048,
    device: str | torch.device = "cpu",
    head: int = 0,
    progress: ProgressFn | None = None,
    on_level: Callable[[PlaneResult], None] | None = None,
) -> PathResult | PlaneResult:
    """Loss around one model along one or two filter-normalised random directions (Li et al.).

    Args:
        model: the architecture (never modified).
        sd: the model's state dict (the centre, at 0).
        data: a Dataset or split name -> (x, y).
        dims: 1 (a line, returns a PathResult with ``t`` the step) or 2 (a PlaneResult).
        distance: steps run over [-distance, distance] in units of the normalised direction.
        resolution: points per axis.
        normalization: "filter", "layer" or "none".
        generator: source of the random directions.
        max_examples: examples per split (fixed seeded subset); None for all.
        batch_size, device, head, progress, on_level: as in :func:`plane`.
    """
    check_choice("dims", dims, (1, 2))
    check_range("distance", distance, 0.0, 1e3, low_inclusive=False)
    check_int("resolution", resolution, 2, 501)
    dev = device_of(device)
    (centre,) = float_state([sd], ["sd"], dev)
    dirs = [
        filter_normalized_direction(centre, generator=generator, normalization=normalization)
        for _ in range(dims)
    ]
    if not dirs[0]:
        raise ValueError("sd has no weight with two or more dimensions to perturb")
    steps = torch.linspace(-distance, distance, resolution).tolist()
    evdata = prepare_data(data, max_examples=max_examples, bn_examples=1, device=dev)
    net = PrivateNet(model, sd, dev)
    meta = {
        "kind": "random directions",
        "normalization": normalization,
        "distance": distance,
        "subset_seed": 0,
        "cosine": _cos(dirs) if dims == 2 else None,
    }
    zero = {k: torch.zeros_like(v) for k, v in dirs[0].items()}
    start = time.perf_counter()
    if dims == 1:
        base = PlaneResult(
            x=steps,
            y=[0.0],
            loss={},
            accuracy={},
            positions=[(0.0, 0.0)],
            labels=["model"],
            scale=1.0,
            n_examples=evdata.n_examples,
            n_total=evdata.n_total,
            meta=meta,
        )
        res = grid_evaluate(
            net,
            centre,
            dirs[0],
            zero,
            steps,
            [0.0],
            evdata,
            recompute_bn=False,
            batch_size=batch_size,
            head=head,
            base=base,
            progress=progress,
            on_level=None,
        )
        return PathResult(
            t=steps,
            loss={s: r[0] for s, r in res.loss.items()},
            accuracy={s: r[0] for s, r in res.accuracy.items()},
            n_examples=evdata.n_examples,
            n_total=evdata.n_total,
            label=f"random direction ({normalization})",
            seconds=time.perf_counter() - start,
            meta=meta,
        )
    base = PlaneResult(
        x=steps,
        y=steps,
        loss={},
        accuracy={},
        positions=[(0.0, 0.0)],
        labels=["model"],
        scale=1.0,
        n_examples=evdata.n_examples,
        n_total=evdata.n_total,
        meta=meta,
    )
    return grid_evaluate(
        net,
        centre,
        dirs[0],
        dirs[1],
        steps,
        steps,
        evdata,
        recompute_bn=False,
        batch_size=batch_size,
        head=head,
        base=base,
        progress=progress,
        on_level=on_level,
    )


def _cos(dirs: list[dict[str, Tensor]]) -> float:
    a, b = dirs
    return _dot(a, b) / math.sqrt(_dot(a, a) * _dot(b, b))
